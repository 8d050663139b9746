"""Policy node regressions from the adversarial review of the command path (rclpy, loopback)."""

import os
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from pi0_ros.control.safety import GroupCommand  # noqa: E402
from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.nodes.policy_node import PolicyNode  # noqa: E402

pytestmark = pytest.mark.ros
EMB = load_embodiment()


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_joint_trajectory_time_from_start_is_a_valid_duration_at_low_control_rates(ros):
    # control_hz is allowed down to (but excluding) 0; a period of 5 s is 5 s + 0 ns, not 5e9 ns.
    node = PolicyNode(parameter_overrides=[Parameter("control_hz", value=0.2), Parameter("policy_backend", value=""),
                                           Parameter("output", value="joint_trajectory")])
    try:
        sent = []
        node.trajectory_pub.publish = sent.append
        arm = EMB.groups["left_arm"]
        node._send({"left_arm": GroupCommand(arm.home.copy(), arm.velocity_limits.copy())})
        duration = sent[0].points[0].time_from_start
        assert (duration.sec, duration.nanosec) == (5, 0)
    finally:
        node.shutdown()
        node.destroy_node()


def test_out_of_range_parameter_is_a_configuration_error_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pi0_ros.nodes.policy_node", "--ros-args", "-p", "speed_scale:=5.0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "speed_scale" in proc.stderr and "Traceback" not in proc.stderr



@pytest.mark.parametrize("override, expected", [(None, "ee_pose"), ("joint_position", "joint_position")])
def test_the_checkpoint_trained_action_space_is_used_unless_overridden(ros, tmp_path, override, expected):
    from pi0_ros.model import make_checkpoint

    ckpt = tmp_path / "ckpt"
    assert make_checkpoint.main(["--config", "pi0_tiny", "--out", str(ckpt), "--state-dim", "16", "--action-dim", "16",
                                 "--cameras", "head,left_wrist,right_wrist"]) == 0
    (ckpt / "training.json").write_text('{"action_space": "ee_pose"}')
    params = [Parameter("policy_backend", value="pi0"), Parameter("checkpoint", value=str(ckpt))]
    if override:
        params.append(Parameter("action_space", value=override))
    node = PolicyNode(parameter_overrides=params)
    try:
        assert node.core.layout.name == expected
    finally:
        node.shutdown()
        node.destroy_node()
