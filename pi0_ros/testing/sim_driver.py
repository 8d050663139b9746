"""pi0-eval's rclpy side: reset the simulator to a seed, watch its task state and the policy
node's diagnostics. Imported lazily by ``evaluate`` (the rest of ``pi0_ros.training`` is ROS-free).

Topics: ``/sim_robot/reset_seed`` (std_msgs/Int32, published), ``/sim_robot/task_state``
(std_msgs/String JSON, subscribed), ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, the policy
node's status with its ``faults`` value).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Int32, String


class SimDriver:
    """A node on its own executor thread; all waits are bounded."""

    def __init__(self, sim_name: str = "sim_robot", policy_name: str = "policy_node"):
        if not rclpy.ok():
            rclpy.init()
        self.node = Node("pi0_eval_driver")
        self.policy_name = policy_name
        self._lock = threading.Lock()
        self.task_state: Optional[Dict[str, Any]] = None
        self.faults: List[str] = []  # distinct fault names seen since the last reset, in order
        self.reset_pub = self.node.create_publisher(Int32, f"/{sim_name}/reset_seed", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.instruction_pub = self.node.create_publisher(String, "instruction", latched)
        self.node.create_subscription(String, f"/{sim_name}/task_state", self._on_task, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_task(self, msg: String) -> None:
        with self._lock:
            self.task_state = json.loads(msg.data)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name != self.policy_name:
                continue
            values = {kv.key: kv.value for kv in status.values}
            faults = [f for f in values.get("faults", "").split(",") if f]
            with self._lock:
                self.faults.extend(f for f in faults if f not in self.faults)

    def wait_for(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float) -> Optional[Dict[str, Any]]:
        """The first task state satisfying ``predicate`` within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                state = self.task_state
            if state is not None and predicate(state):
                return state
            time.sleep(0.05)
        return None

    def reset(self, seed: int, timeout: float = 20.0) -> bool:
        """Reset the simulator to ``seed`` and wait until its task state reports it."""
        with self._lock:
            self.task_state = None
            self.faults = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reset_pub.publish(Int32(data=int(seed)))
            if self.wait_for(lambda s: int(s.get("seed", -1)) == seed, 2.0) is not None:
                with self._lock:
                    self.faults = []
                return True
        return False

    def publish_instruction(self, text: str) -> None:
        """The language instruction (the policy node's latched ``instruction`` topic)."""
        self.instruction_pub.publish(String(data=text))

    def current_state(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            return self.task_state

    def faults_since_reset(self) -> List[str]:
        with self._lock:
            return list(self.faults)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
