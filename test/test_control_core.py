"""ROS-free closed-loop tests of ControlCore against a simple first-order robot."""

import time

import numpy as np
import pytest

from pi0_ros.control.controller import ControlConfig, ControlCore
from pi0_ros.control.safety import SafetyConfig, WatchdogConfig
from pi0_ros.control.scripted_policy import ScriptedPolicy, ScriptedPolicyConfig
from pi0_ros.embodiment import load_embodiment
from pi0_ros.policy_api import PolicyInputError

DT = 0.02
GROUPS = ("left_arm", "left_gripper", "right_arm", "right_gripper")


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


class Bench:
    """Drives a ControlCore with simulated time: the robot follows each command with a lag."""

    def __init__(self, emb, mode="policy", policy=None, space="joint_position", **config):
        self.emb = emb
        self.config = ControlConfig(
            execute_steps=10,
            safety=SafetyConfig(ramp_s=0.2),
            watchdog=WatchdogConfig(joint_state_max_age_s=0.1, policy_max_age_s=1.0, teleop_max_age_s=0.2),
            **config,
        )
        self.core = ControlCore(emb, emb.action_layout(space), self.config, policy=policy, requested_mode=mode)
        self.q = {g: emb.groups[g].home.copy() for g in GROUPS}
        self.q["left_gripper"] = np.array([50.0])
        self.now = 100.0
        self.sent = []  # (mode, {group: position})
        self.feed_images = True
        self.feed_joints = True

    def step(self, n=1, wait_worker=True):
        for _ in range(n):
            self.now += DT
            if self.feed_joints:
                for g in GROUPS:
                    joints = self.emb.groups[g].joints
                    self.core.on_joint_state(g, list(reversed(joints)), list(reversed(self.q[g])), self.now)
            if self.feed_images:
                for cam in self.emb.cameras:
                    self.core.on_image(cam, np.zeros((8, 8, 3), np.uint8), self.now)
            result = self.core.tick(self.now)
            for g, cmd in result.commands.items():
                self.q[g] = self.q[g] + 0.8 * (cmd.position - self.q[g])
            self.sent.append((result.mode, {g: c.position.copy() for g, c in result.commands.items()}, result))
            if wait_worker and self.core.worker is not None:
                deadline = time.monotonic() + 5.0
                while self.core.worker.busy and time.monotonic() < deadline:
                    time.sleep(0.001)
        return self.sent[-1][2]

    def max_speed_ratio(self, start=0):
        """Largest |step| / (velocity limit * dt) over consecutive commands (<= 1 is within limits)."""
        worst = 0.0
        for (_, a, _), (_, b, _) in zip(self.sent[start:-1], self.sent[start + 1:], strict=True):
            for g in a.keys() & b.keys():
                limit = self.emb.groups[g].velocity_limits * self.config.safety.speed_scale * DT
                worst = max(worst, float(np.max(np.abs(b[g] - a[g]) / limit)))
        return worst


def scripted(emb, space="joint_position", **kw):
    return ScriptedPolicy(emb, space, ScriptedPolicyConfig(horizon=20, dt=DT, **kw))


@pytest.mark.parametrize("space", ["joint_position", "joint_delta"])
def test_policy_moves_toward_target_within_limits(emb, space):
    policy = scripted(emb, space, max_speed=0.5)
    target = policy.config.target.copy()
    target[:7] += 0.3
    target[7] = 0.0
    policy.config.target = target
    bench = Bench(emb, policy=policy, space=space)
    bench.step(150)
    assert bench.sent[-1][0] == "policy"
    np.testing.assert_allclose(bench.q["left_arm"], emb.groups["left_arm"].home + 0.3, atol=0.02)
    assert bench.q["left_gripper"][0] < 5.0
    assert bench.max_speed_ratio() <= 1.0 + 1e-9
    assert bench.core.chunks_received >= 10


def test_stale_camera_and_stale_joint_state_hold_and_recover(emb):
    bench = Bench(emb, policy=scripted(emb))
    bench.step(30)
    assert bench.sent[-1][0] == "policy"
    bench.feed_images = False
    result = bench.step(40)
    assert result.mode == "hold" and any(f.startswith("image_stale") for f in result.faults)
    bench.feed_images = True
    bench.step(60)
    assert bench.sent[-1][0] == "policy"
    bench.feed_joints = False
    result = bench.step(10)
    assert result.mode == "hold" and any(f.startswith("joint_state_stale") for f in result.faults)
    held = bench.sent[-1][1]["left_arm"]
    bench.step(5)
    np.testing.assert_allclose(bench.sent[-1][1]["left_arm"], held)  # holding still
    bench.feed_joints = True
    bench.step(60)
    assert bench.sent[-1][0] == "policy"
    assert bench.max_speed_ratio() <= 1.0 + 1e-9


def test_nan_policy_output_and_nan_joint_state_hold(emb):
    policy = scripted(emb)
    bench = Bench(emb, policy=policy)
    bench.step(20)
    policy.config.nan_output = True
    bench.step(40)
    assert bench.sent[-1][0] == "hold" and "policy_output" in bench.sent[-1][2].faults
    assert all(np.all(np.isfinite(p)) for _, cmds, _ in bench.sent for p in cmds.values())
    policy.config.nan_output = False
    bench.step(60)
    assert bench.sent[-1][0] == "policy"
    bench.core.on_joint_state("right_arm", emb.groups["right_arm"].joints, [np.nan] * 7, bench.now)
    result = bench.core.tick(bench.now + 0.001)
    assert result.mode == "hold" and "joint_state_invalid:right_arm" in result.faults


def test_policy_exceptions_become_faults_not_crashes(emb):
    policy = scripted(emb, raise_error=PolicyInputError("bad image"))
    bench = Bench(emb, policy=policy)
    bench.step(30)
    assert bench.sent[-1][0] == "hold" and "policy_input" in bench.sent[-1][2].faults
    assert "bad image" in bench.core.diagnostics(bench.now)["last_error"]

    class Gone(RuntimeError):
        pass

    Gone.__name__ = "PolicyServerUnavailable"
    policy.config.raise_error = Gone("connection refused")
    bench.step(60)
    assert "policy_server_unavailable" in bench.sent[-1][2].faults
    policy.config.raise_error = None
    bench.step(80)
    assert bench.sent[-1][0] == "policy"


def test_mode_switches_mid_motion_are_bumpless(emb):
    policy = scripted(emb, max_speed=2.0)
    target = policy.config.target.copy()
    target[:7] += 0.8
    policy.config.target = target
    bench = Bench(emb, policy=policy)
    bench.step(25)
    assert bench.core.request_mode("teleop") == (True, "")
    far = {"names": list(emb.groups["left_arm"].joints), "q": emb.groups["left_arm"].home - 0.8}
    for _ in range(20):
        bench.core.on_teleop_joints(far["names"], far["q"], bench.now)
        bench.step(1)
    assert bench.sent[-1][0] == "teleop"
    teleop_positions = [cmds["left_arm"][0] for mode, cmds, _ in bench.sent if mode == "teleop"]
    assert teleop_positions[-1] < teleop_positions[0] - 0.05  # reversed toward the teleop target
    bench.core.request_mode("hold")
    bench.step(10)
    bench.core.request_mode("policy")
    bench.step(40)
    assert [m for m, _, _ in bench.sent[-1:]] == ["policy"]
    assert bench.max_speed_ratio() <= 1.0 + 1e-9
    assert bench.core.request_mode("fly")[0] is False


def test_teleop_without_input_holds_and_hold_commands_are_measured_position(emb):
    bench = Bench(emb, mode="teleop")
    result = bench.step(5)
    assert result.mode == "hold" and "teleop_stale" in result.faults
    final = bench.core.hold_commands(bench.now)
    for g in GROUPS:
        np.testing.assert_allclose(final[g].position, bench.q[g])
