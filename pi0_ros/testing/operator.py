"""An in-process "operator" node that watches and steers a running graph: the demo's and the tests' hands.

It subscribes the robot feedback, the commands the policy node sends, the simulator's task state, the
policy node's mode and diagnostics; it publishes teleop targets and sets the policy node's parameters
through the standard SetParameters service. Everything it receives is kept with its arrival time, so
callers can assert on rates, steps and convergence after the fact.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Int32, String

from pi0_ros.embodiment import Embodiment

HISTORY = 20000
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Stamped:
    """A received value with its arrival time (monotonic seconds)."""

    t: float
    value: Any


class Operator:
    """Owns an rclpy context and a spinning node; use as a context manager."""

    def __init__(self, embodiment: Embodiment, policy_node: str = "/policy_node", sim_node: str = "/sim_robot",
                 teleop_prefix: str = "/teleop", image_camera: Optional[str] = "head"):
        self.embodiment = embodiment
        self.policy_node = policy_node
        self.sim_node = sim_node
        self.teleop_prefix = teleop_prefix.rstrip("/")
        self.image_camera = image_camera
        self.lock = threading.Lock()
        self.feedback: Dict[str, Deque[Stamped]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.commands: Dict[str, Deque[Stamped]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.task_state: Deque[Stamped] = deque(maxlen=1000)
        self.modes: Deque[Stamped] = deque(maxlen=1000)
        self.diagnostics: Deque[Stamped] = deque(maxlen=1000)
        self.images: Deque[Stamped] = deque(maxlen=4)

    def __enter__(self) -> "Operator":
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("pi0_ros_operator", context=self.context)
        for group in self.embodiment.groups.values():
            self.node.create_subscription(JointState, group.feedback_topic,
                                          lambda m, g=group.name: self._store(self.feedback[g], _positions(m)),
                                          RELIABLE)
            self.node.create_subscription(JointState, group.command_topic,
                                          lambda m, g=group.name: self._store(self.commands[g], _positions(m)),
                                          RELIABLE)
        self.node.create_subscription(String, f"{self.sim_node}/task_state",
                                      lambda m: self._store(self.task_state, json.loads(m.data)), RELIABLE)
        self.node.create_subscription(String, f"{self.policy_node}/mode",
                                      lambda m: self._store(self.modes, m.data), LATCHED)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self._store(self.diagnostics, _diagnostic_values(m)), RELIABLE)
        if self.image_camera:
            camera = self.embodiment.cameras[self.image_camera]
            if camera.transport == "compressed":
                self.node.create_subscription(CompressedImage, camera.topic,
                                              lambda m: self._store(self.images, bytes(m.data)), 2)
        self.joint_pub = self.node.create_publisher(JointState, f"{self.teleop_prefix}/joint_targets", RELIABLE)
        self.pose_pubs = {g.name: self.node.create_publisher(PoseStamped, f"{self.teleop_prefix}/{g.name}/target_pose",
                                                             RELIABLE)
                          for g in self.embodiment.groups_of_kind("arm")}
        self.instruction_pub = self.node.create_publisher(String, "instruction", LATCHED)
        self.reset_pub = self.node.create_publisher(Int32, f"{self.sim_node}/reset_seed", RELIABLE)
        self.param_client = self.node.create_client(SetParameters, f"{self.policy_node}/set_parameters")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.context.try_shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down mid-spin raises; nothing to recover
                if not self.context.ok():
                    return
                raise

    def _store(self, queue: Deque[Stamped], value: Any) -> None:
        with self.lock:
            queue.append(Stamped(time.monotonic(), value))

    # --- reading -----------------------------------------------------------------------------
    def latest(self, queue: Deque[Stamped]) -> Optional[Stamped]:
        """The newest entry of one of the history queues."""
        with self.lock:
            return queue[-1] if queue else None

    def since(self, queue: Deque[Stamped], t0: float) -> List[Stamped]:
        """Entries that arrived at or after `t0`."""
        with self.lock:
            return [s for s in queue if s.t >= t0]

    def positions(self, group: str) -> Optional[np.ndarray]:
        """The group's latest measured positions in embodiment joint order (None before feedback)."""
        entry = self.latest(self.feedback[group])
        if entry is None:
            return None
        names = self.embodiment.groups[group].joints
        by_name = entry.value
        if not all(n in by_name for n in names):
            return None
        return np.array([by_name[n] for n in names])

    def wait_for(self, predicate: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
        """Poll until `predicate()` is truthy; return it, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"condition not met within {timeout:.1f} s")

    # --- steering ----------------------------------------------------------------------------
    def set_parameters(self, timeout: float = 30.0, **values: Any) -> List[Tuple[bool, str]]:
        """Set policy-node parameters; returns (successful, reason) per parameter."""
        if not self.param_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{self.policy_node}/set_parameters not available")
        request = SetParameters.Request(parameters=[_parameter_msg(k, v) for k, v in values.items()])
        future = self.param_client.call_async(request)
        self.wait_for(future.done, timeout)
        return [(r.successful, r.reason) for r in future.result().results]

    def send_joint_targets(self, targets: Dict[str, Sequence[float]]) -> None:
        """Teleop joint targets, by joint name, for any groups."""
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        names, positions = [], []
        for group, values in targets.items():
            names += list(self.embodiment.groups[group].joints)
            positions += [float(v) for v in values]
        msg.name, msg.position = names, positions
        self.joint_pub.publish(msg)

    def send_pose(self, arm: str, xyz: Sequence[float], quat_xyzw: Sequence[float]) -> None:
        """A teleop end-effector goal for one arm, in the embodiment's base frame."""
        msg = PoseStamped()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = self.embodiment.base_frame
        (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) = map(float, xyz)
        (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
         msg.pose.orientation.w) = map(float, quat_xyzw)
        self.pose_pubs[arm].publish(msg)

    def send_instruction(self, text: str) -> None:
        """Publish the language instruction (transient local, like a user's console)."""
        self.instruction_pub.publish(String(data=text))

    def reset_simulator(self, seed: int) -> None:
        """Ask the simulator to reset to ``seed`` (robot home, objects placed by the seed)."""
        self.reset_pub.publish(Int32(data=int(seed)))


def _positions(msg: JointState) -> Dict[str, float]:
    if msg.name:
        return dict(zip(msg.name, msg.position, strict=False))
    return {str(i): p for i, p in enumerate(msg.position)}


def _diagnostic_values(msg: DiagnosticArray) -> Dict[str, Dict[str, str]]:
    statuses = {}
    for status in msg.status:
        values = {kv.key: kv.value for kv in status.values}
        values["_message"] = status.message
        statuses[status.name] = values
    return statuses


def _parameter_msg(name: str, value: Any) -> ParameterMsg:
    pv = ParameterValue()
    if isinstance(value, bool):
        pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
    else:
        pv.type, pv.string_value = ParameterType.PARAMETER_STRING, str(value)
    return ParameterMsg(name=name, value=pv)
