"""The launched sim graph (MuJoCo sim_robot + policy_node, real processes, loopback DDS) in closed loop.

Teleop joint targets move the simulated arm; switching to the policy (scripted: back to home) through
the node's parameter service continues from the measured state; every command stays within the speed
limit; an invalid mode is refused with a reason; SIGINT ends with a hold at the measured position.
"""

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.launch_graph import GraphOptions, sim_graph  # noqa: E402
from pi0_ros.testing.graph_process import GraphProcesses  # noqa: E402

pytestmark = pytest.mark.ros
EMB = load_embodiment()
ARM = EMB.groups["left_arm"]
SPEED_SCALE = 0.5  # config/policy_node.yaml
DT = 1.0 / EMB.rates.control_hz


class Observer(Node):
    """Records left-arm commands and feedback; publishes teleop targets; sets node parameters."""

    def __init__(self):
        super().__init__("policy_node_sim_observer")
        self.lock = threading.Lock()
        self.commands = []
        self.feedback = None
        self.create_subscription(JointState, ARM.command_topic, self.on_command, 10)
        self.create_subscription(JointState, ARM.feedback_topic, self.on_feedback, 10)
        self.teleop = self.create_publisher(JointState, "/teleop/joint_targets", 10)
        self.params = self.create_client(SetParameters, "/policy_node/set_parameters")

    def on_command(self, msg):
        with self.lock:
            self.commands.append(np.asarray(msg.position))

    def on_feedback(self, msg):
        index = {n: i for i, n in enumerate(msg.name)}
        with self.lock:
            self.feedback = np.array([msg.position[index[j]] for j in ARM.joints])

    def measured(self):
        with self.lock:
            return None if self.feedback is None else self.feedback.copy()

    def set_mode(self, mode, timeout=10.0):
        request = SetParameters.Request(parameters=[ParameterMsg(
            name="control_mode", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=mode))])
        future = self.params.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), "parameter service did not answer"
        return future.result().results[0]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sim_teleop_policy_switch_and_final_hold(tmp_path):
    rclpy.init()
    observer = Observer()
    executor = SingleThreadedExecutor()
    executor.add_node(observer)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    options = GraphOptions(control_mode="teleop", policy_backend="scripted")
    goal = ARM.home + np.array([0.3, 0.2, -0.2, 0.2, 0.2, 0.2, 0.2])
    try:
        with GraphProcesses(sim_graph(options), log_dir=tmp_path) as graph:
            wait_for(lambda: observer.measured() is not None, 60, "sim feedback")
            assert observer.params.wait_for_service(timeout_sec=30), graph.node("policy_node").log()[-3000:]

            def at(target, tol):
                q = observer.measured()
                return q is not None and np.max(np.abs(q - target)) < tol

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not at(goal, 0.03):
                observer.teleop.publish(JointState(name=list(ARM.joints), position=goal.tolist()))
                time.sleep(0.02)
            graph.check_alive()
            assert at(goal, 0.03), f"teleop did not reach the goal: {observer.measured()}"

            refused = observer.set_mode("dance")
            assert not refused.successful and "control_mode must be one of" in refused.reason
            assert observer.set_mode("policy").successful
            wait_for(lambda: at(ARM.home, 0.03), 40, "policy back at home")

            with observer.lock:
                commands = np.stack(observer.commands)
            steps = np.abs(np.diff(commands, axis=0))
            assert np.all(steps <= ARM.velocity_limits * SPEED_SCALE * DT * (1 + 1e-6))

            node = graph.node("policy_node")
            node.process.send_signal(2)  # SIGINT
            assert node.process.wait(timeout=20) == 0, node.log()[-3000:]
            time.sleep(0.5)
            with observer.lock:
                last = observer.commands[-1]
            np.testing.assert_allclose(last, observer.measured(), atol=0.01)
    finally:
        stop.set()
        spinner.join(timeout=5)
        observer.destroy_node()
        rclpy.try_shutdown()
