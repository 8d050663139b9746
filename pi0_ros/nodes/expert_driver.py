"""expert_driver: the ROS side of ``pi0-collect``'s scripted expert (planning: :mod:`pi0_ros.sim.expert`).

Streams end-effector pose goals on the policy node's teleop topics (``<prefix>/<arm>/target_pose``,
PoseStamped in the embodiment's base frame) at ``goal_hz``: the arm with a task follows the expert's
path, every other arm (and every arm between episodes) its start pose, so the policy node never falls
back to an old hold target after a simulator reset. Publishes the task as ``instruction`` (String,
transient local), resets the simulator through ``/sim_robot/reset_seed``, watches
``/sim_robot/task_state`` for the touch, and calls the recorder's Trigger services.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Dict, Iterator, Optional

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from pi0_ros.control.kinematics import arm_fk
from pi0_ros.embodiment import Embodiment
from pi0_ros.sim.expert import PosePath, TouchTask, touched

LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
GOAL_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class ExpertDriver(Node):
    """Streams pose goals, talks to the recorder and the simulator (node name ``expert_driver``)."""

    def __init__(self, embodiment: Embodiment, goal_hz: float = 20.0, teleop_prefix: str = "/teleop"):
        super().__init__("expert_driver")
        self.embodiment = embodiment
        self.arms = [g.name for g in embodiment.groups_of_kind("arm")]
        self.home_pose = {arm: arm_fk(embodiment, embodiment.groups[arm]).forward(embodiment.groups[arm].home)
                          for arm in self.arms}
        self._lock = threading.Lock()
        self._paths: Dict[str, Optional[PosePath]] = {arm: None for arm in self.arms}
        self._path_start = 0.0
        self.task_state: Optional[dict] = None
        self.task_state_received = 0.0
        self._touched = False
        self._task: Optional[TouchTask] = None
        self.goal_pubs = {arm: self.create_publisher(PoseStamped, f"{teleop_prefix}/{arm}/target_pose", GOAL_QOS)
                          for arm in self.arms}
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.reset_pub = self.create_publisher(Int32, "/sim_robot/reset_seed", 10)
        self.create_subscription(String, "/sim_robot/task_state", self._on_task_state, 10)
        self.recorder_clients = {name: self.create_client(Trigger, f"/recorder/{name}")
                        for name in ("start_episode", "stop_episode", "discard_episode")}
        self.create_timer(1.0 / goal_hz, self._publish_goals)

    # -- streams ---------------------------------------------------------------------------------

    def _on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        with self._lock:
            self.task_state = state
            self.task_state_received = time.monotonic()
            if self._task is not None and touched(state, self._task):
                self._touched = True

    def _publish_goals(self) -> None:
        now = time.monotonic()
        with self._lock:
            goals = {arm: (path.pose(now - self._path_start) if path is not None else self.home_pose[arm])
                     for arm, path in self._paths.items()}
        stamp = self.get_clock().now().to_msg()
        for arm, pose in goals.items():
            msg = PoseStamped()
            msg.header.stamp = stamp
            msg.header.frame_id = self.embodiment.base_frame
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose[:3])
            (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
             msg.pose.orientation.w) = (float(v) for v in pose[3:])
            self.goal_pubs[arm].publish(msg)

    def follow(self, arm: Optional[str], path: Optional[PosePath], task: Optional[TouchTask]) -> None:
        """Start streaming ``path`` for ``arm`` (None: every arm holds its start pose)."""
        with self._lock:
            self._paths = {a: (path if a == arm else None) for a in self.arms}
            self._path_start = time.monotonic()
            self._task = task
            self._touched = False

    @property
    def touched(self) -> bool:
        """The current task's touch was seen in the task state."""
        with self._lock:
            return self._touched

    # -- requests (the executor spins in another thread) -----------------------------------------

    def call(self, service: str, timeout: float = 10.0) -> Trigger.Response:
        """Call a recorder Trigger service; raises TimeoutError."""
        client = self.recorder_clients[service]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"/recorder/{service} is not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"/recorder/{service} did not answer within {timeout} s")
            time.sleep(0.01)
        return future.result()

    def reset(self, seed: int, timeout: float = 10.0) -> dict:
        """Reset the simulator with ``seed``; returns the first task state of the new scene."""
        sent = time.monotonic()
        self.reset_pub.publish(Int32(data=int(seed)))
        deadline = sent + timeout
        while time.monotonic() < deadline:
            with self._lock:
                state, received = self.task_state, self.task_state_received
            if state is not None and received > sent and state.get("seed") == seed:
                return state
            time.sleep(0.02)
        raise TimeoutError(f"no task state with seed {seed} within {timeout} s")

    def publish_instruction(self, text: str) -> None:
        """The task as the ``instruction`` the recorder (and the policy node) read."""
        self.instruction_pub.publish(String(data=text))

    @property
    def recorder_ready(self) -> bool:
        """Every recorder service is available."""
        return all(c.service_is_ready() for c in self.recorder_clients.values())


@contextlib.contextmanager
def driver_session(embodiment: Embodiment) -> Iterator[ExpertDriver]:
    """rclpy up, an :class:`ExpertDriver` spinning in a background thread; everything down on exit."""
    rclpy.init()
    driver = ExpertDriver(embodiment)
    executor = SingleThreadedExecutor()  # a multi-threaded one would keep a core busy (see recorder.main)
    executor.add_node(driver)
    threading.Thread(target=executor.spin, name="expert_driver_spin", daemon=True).start()
    try:
        yield driver
    finally:
        executor.shutdown()
        driver.destroy_node()
        rclpy.try_shutdown()
