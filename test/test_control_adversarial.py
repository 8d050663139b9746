"""ROS-free regression tests from the adversarial review of the command path (one test per finding)."""

import threading
import time

import numpy as np
import pytest

from pi0_ros.control.controller import ControlConfig, ControlCore
from pi0_ros.control.safety import SafetyConfig, SafetyLimiter, WatchdogConfig
from pi0_ros.embodiment import load_embodiment

DT = 0.02
GROUPS = ("left_arm", "left_gripper", "right_arm", "right_gripper")


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


def test_command_stays_within_max_step_of_a_measured_position_that_jumped_away(emb):
    # The robot's motor protection trips on a large gap between command and position, so the gap bound
    # holds for every command, also when the measured position moved away from the last command (arm
    # pushed, moved by another controller, feedback resumed after an outage).
    arm = emb.groups["left_arm"]
    lim = SafetyLimiter({"left_arm": arm}, SafetyConfig(max_step_arm_rad=0.25, ramp_s=0.0), DT)
    home = arm.home.copy()
    lim.limit("left_arm", home, home)
    measured = home + 0.5
    for _ in range(3):
        out = lim.limit("left_arm", home, measured, ramp=0.1)
        assert np.all(np.abs(out.position - measured) <= 0.25 + 1e-9)
        assert np.all(out.position >= arm.position_limits[:, 0] + 0.01 - 1e-12)
        assert np.all(out.position <= arm.position_limits[:, 1] - 0.01 + 1e-12)


def _core(emb, mode="hold", space="joint_position", **kwargs):
    return ControlCore(emb, emb.action_layout(space), ControlConfig(), requested_mode=mode, **kwargs)


def _feed(core, emb, now, groups=GROUPS):
    for g in groups:
        core.on_joint_state(g, emb.groups[g].joints, emb.groups[g].home, now)


def test_refused_feedback_before_the_first_command_neither_crashes_the_tick_nor_the_final_hold(emb):
    # left_arm: one good message, then a NaN one, all before the first tick: nothing trusted to hold
    # and nothing commanded yet. The other groups must still be commanded and held at shutdown.
    core = _core(emb)
    _feed(core, emb, 1.0)
    core.on_joint_state("left_arm", emb.groups["left_arm"].joints, [np.nan] * 7, 1.0)
    final = core.hold_commands(1.01)
    assert set(final) == set(GROUPS) - {"left_arm"}
    result = core.tick(1.01)
    assert result.mode == "hold" and "joint_state_invalid:left_arm" in result.faults
    assert set(result.commands) == set(GROUPS) - {"left_arm"}
    for g, cmd in result.commands.items():
        np.testing.assert_allclose(cmd.position, emb.groups[g].home)


def test_final_hold_at_shutdown_stays_inside_the_position_limits(emb):
    # Measured positions slightly beyond the limits (sensor noise at an end stop, a gripper reading 100.5)
    # must not become commands beyond them: the shutdown hold passes the position limits too.
    core = _core(emb)
    q = {g: emb.groups[g].home.copy() for g in GROUPS}
    arm = emb.groups["left_arm"]
    q["left_arm"][0] = arm.position_limits[0, 0] - 0.005
    q["left_gripper"] = np.array([100.5])
    for g in GROUPS:
        core.on_joint_state(g, emb.groups[g].joints, q[g], 1.0)
    core.tick(1.0)
    final = core.hold_commands(1.01)
    for g in GROUPS:
        limits = core.limiter.limits[g]
        assert np.all(final[g].position >= limits.lower - 1e-12) and np.all(final[g].position <= limits.upper + 1e-12)
    np.testing.assert_allclose(final["right_arm"].position, q["right_arm"])  # inside: the measured position


class _SolverSpy:
    """Records which thread reset or solved the wrapped relaxed-IK solver, in call order."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []  # (method, called from the test's (control) thread)

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in ("reset", "solve_position", "solve_velocity"):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, threading.current_thread() is threading.main_thread()))
            return attr(*args, **kwargs)

        return call


class _GatedPolicy:
    """Returns a fixed chunk once ``gate`` is set (an inference in flight across a mode switch)."""

    def __init__(self, actions):
        self.actions = actions
        self.gate = threading.Event()
        self.entered = threading.Event()

    def infer(self, observation):
        self.entered.set()
        self.gate.wait(10.0)
        return {"actions": self.actions}


def _wait(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert predicate()


def test_teleop_pose_restarts_the_solver_after_the_inference_worker_used_it(emb):
    # An inference started in policy mode may still decode ee poses (reset + solves on the shared
    # solver) after a switch to teleop. The teleop IK must not continue from the chunk's solution.
    from pi0_ros.control.kinematics import ArmIK

    ik = {g: ArmIK.from_embodiment(emb, emb.groups[g]) for g in ("left_arm", "right_arm")}
    spy = _SolverSpy(ik["left_arm"].solver)
    ik["left_arm"].solver = spy
    far = {g: ik[g].forward(emb.groups[g].home + 0.3) for g in ik}
    actions = np.tile(np.concatenate([far["left_arm"], [0.5], far["right_arm"], [0.5]]), (5, 1))
    policy = _GatedPolicy(actions)
    core = ControlCore(emb, emb.action_layout("ee_pose"), ControlConfig(), policy=policy, ik=ik,
                       requested_mode="policy")
    try:
        now = 1.0

        def step(pose=None):
            nonlocal now
            now += DT
            _feed(core, emb, now)
            for cam in emb.cameras:
                core.on_image(cam, np.zeros((8, 8, 3), np.uint8), now)
            if pose is not None:
                core.on_teleop_pose("left_arm", pose, now)
            return core.tick(now)

        assert step().mode == "policy"
        _wait(policy.entered.is_set)
        core.request_mode("teleop")
        goal = ik["left_arm"].forward(emb.groups["left_arm"].home)
        goal[0] += 0.01
        assert step(goal).mode == "teleop"
        policy.gate.set()
        _wait(lambda: not core.worker.busy)
        assert any(not control for _, control in spy.calls)  # the worker decoded with the shared solver
        goal[0] += 0.01
        assert step(goal).mode == "teleop"
        last_solve = max(i for i, (name, control) in enumerate(spy.calls) if name == "solve_position" and control)
        assert spy.calls[last_solve - 1] == ("reset", True)
    finally:
        policy.gate.set()
        core.close()
        for solver in ik.values():
            solver.close()


def test_joint_names_given_twice_are_refused(emb):
    # Which of two readings of one joint is right cannot be told: refuse (feedback) / ignore (teleop).
    core = _core(emb, mode="teleop")
    arm = emb.groups["left_arm"]
    names = list(arm.joints) + [arm.joints[0]]
    _feed(core, emb, 1.0)
    problem = core.on_joint_state("left_arm", names, list(arm.home) + [arm.home[0] + 1.0], 1.01)
    assert problem is not None and "left_arm_joint1" in problem
    np.testing.assert_allclose(core.tracker.measured("left_arm"), arm.home)
    assert core.on_teleop_joints(names, list(arm.home) + [arm.home[0] + 1.0], 1.01) == []


@pytest.mark.parametrize("field", ["joint_state_max_age_s", "policy_max_age_s", "teleop_max_age_s", "camera"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_watchdog_ages_that_would_disable_or_always_trip_a_watchdog_are_refused(emb, field, value):
    # ``age > nan`` is never true: a NaN limit would silently turn the watchdog off.
    watchdog = WatchdogConfig(image_max_age_s={"head": 0.5})
    if field == "camera":
        watchdog.image_max_age_s["head"] = value
    else:
        setattr(watchdog, field, value)
    with pytest.raises(ValueError, match="head" if field == "camera" else field):
        ControlCore(emb, emb.action_layout("joint_position"), ControlConfig(watchdog=watchdog))


def test_gripper_hold_keeps_squeezing_a_grasped_object(emb):
    # Teleop closes the left gripper on an object: the command says 0 (closed), the fingers stop at 30.
    # A hold (here: a mode switch) must keep commanding the squeeze, not the measured stroke.
    core = _core(emb, mode="teleop")
    _feed(core, emb, 1.0)
    core.tick(1.0)
    now = 1.0
    for _ in range(300):
        now += DT
        _feed(core, emb, now, groups=("left_arm", "right_arm", "right_gripper"))
        core.on_joint_state("left_gripper", emb.groups["left_gripper"].joints, [30.0], now)
        core.on_teleop_joints(emb.groups["left_gripper"].joints, [0.0], now)
        commanded = core.tick(now).commands["left_gripper"].position[0]
    assert commanded < 30.0  # the squeeze is being commanded (within the max step from measured)
    assert core.request_mode("hold")[0]
    for _ in range(20):
        now += DT
        _feed(core, emb, now, groups=("left_arm", "right_arm", "right_gripper"))
        core.on_joint_state("left_gripper", emb.groups["left_gripper"].joints, [30.0], now)
        result = core.tick(now)
        assert result.mode == "hold"
        assert result.commands["left_gripper"].position[0] == pytest.approx(commanded)
    np.testing.assert_allclose(core.hold_commands(now)["left_gripper"].position, [commanded])
    # Arms still hold at the measured position.
    np.testing.assert_allclose(result.commands["left_arm"].position, emb.groups["left_arm"].home)


def test_policy_mode_needs_a_policy(emb):
    # A node started for teleop only (no policy_backend) refuses `policy` with a reason instead of
    # holding forever on a policy watchdog; starting in policy mode without a policy is a config error.
    core = _core(emb, mode="teleop")
    accepted, reason = core.request_mode("policy")
    assert not accepted and "policy_backend" in reason
    assert core.request_mode("hold") == (True, "")
    with pytest.raises(ValueError, match="policy_backend"):
        _core(emb, mode="policy")


@pytest.mark.parametrize("glitch", [1.0, 100.0], ids=["jump-within-limits", "beyond-limits"])
def test_one_glitched_feedback_sample_moves_no_command(emb, glitch):
    # Commands stay within a step of the measured position, so a believed encoder glitch would drag them
    # (and open a gripper squeezing an object) in one tick. The glitch must not be believed.
    core = _core(emb)
    held = {g: emb.groups[g].home.copy() for g in GROUPS}
    held["left_gripper"] = np.array([0.0])
    now = 1.0
    for _ in range(50):
        now += DT
        for g in GROUPS:
            core.on_joint_state(g, emb.groups[g].joints, held[g], now)
        before = {g: c.position.copy() for g, c in core.tick(now).commands.items()}
    bad_arm = held["left_arm"].copy()
    bad_arm[0] += glitch
    for reading in ({"left_arm": bad_arm, "left_gripper": np.array([100.0 * glitch])}, {}):
        now += DT
        for g in GROUPS:
            core.on_joint_state(g, emb.groups[g].joints, reading.get(g, held[g]), now)
        result = core.tick(now)
        assert result.mode == "hold"
        for g in GROUPS:
            allowed = emb.groups[g].velocity_limits * core.config.safety.speed_scale * DT
            assert np.all(np.abs(result.commands[g].position - before[g]) <= allowed + 1e-9), g
            before[g] = result.commands[g].position.copy()
    np.testing.assert_allclose(before["left_gripper"], [0.0])
