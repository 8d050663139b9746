"""recorder: demonstrations -> a LeRobot v3.0 dataset, with the policy node's own mappings.

A thin rclpy adapter around :class:`pi0_ros.data.frames.FrameAssembler` and
:class:`pi0_ros.data.lerobot_dataset.DatasetWriter`. Everything it records comes from the embodiment file
the policy node reads: the state layout, the action space, the cameras and the topics.

Topics (names from the embodiment file unless noted)
  subscribed: each state/action group's ``feedback_topic`` (JointState), each action group's
  ``command_topic`` (JointState: the targets the policy node sends in any mode, matched by name),
  each recorded camera's ``topic`` (CompressedImage or Image), ``instruction`` (String, transient
  local; the task when the ``task`` parameter is empty).
  published: ``~/status`` (String, JSON, transient local): recording, episode, frames, skipped counts.
Services (std_srvs/Trigger): ``~/start_episode``, ``~/stop_episode`` (commit), ``~/discard_episode``.

A timer at ``fps`` takes one frame from the newest inputs; a frame whose inputs are missing or stale is
skipped and counted (``skipped`` in the status and the stop reply), never filled in. Shutting down
mid-episode discards the episode; a crash leaves nothing a reader sees (the writer repairs on start).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Dict, List, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from pi0_ros.data.features import make_spec
from pi0_ros.data.frames import IMAGE_STORAGES, Frame, FrameAssembler, FrameLimits
from pi0_ros.data.lerobot_dataset import DatasetError, DatasetWriter
from pi0_ros.embodiment import Embodiment, load_embodiment
from pi0_ros.nodes.runner import spin_node

LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Commands are sent reliably by the policy node; best effort accepts reliable and best-effort senders.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
DEFAULT_ROOT = "~/pi0_ros_data/demos"


def _float(description: str, low: float, high: float) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high)])


def _int(description: str, low: int, high: int) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True,
                               integer_range=[IntegerRange(from_value=low, to_value=high, step=1)])


# name -> (default, descriptor); ``cameras`` is declared separately (its default is the embodiment's list).
PARAMETERS: Dict[str, Any] = {
    "embodiment": ("", ParameterDescriptor(description="embodiment YAML; empty: the package's config/r1pro.yaml",
                                           read_only=True)),
    "root": (DEFAULT_ROOT, ParameterDescriptor(description="dataset directory (created, or appended to)",
                                               read_only=True)),
    "action_space": ("joint_position", ParameterDescriptor(description="action layout name from the embodiment",
                                                           read_only=True)),
    "fps": (15, _int("frames per second", 1, 100)),
    "task": ("", ParameterDescriptor(description="language instruction of the next episodes; empty: the last "
                                                 "'instruction' message")),
    "image_width": (0, _int("stored image width; 0: each camera's width from the embodiment", 0, 4096)),
    "image_height": (0, _int("stored image height; 0: each camera's height from the embodiment", 0, 4096)),
    "image_storage": ("keep", ParameterDescriptor(
        description=f"one of {list(IMAGE_STORAGES)}: keep the camera's JPEG/PNG bytes when no resize is needed, "
                    "or always store PNG", read_only=True)),
    "state_timeout_s": (0.2, _float("skip frames whose joint feedback is older than this (s)", 0.001, 10.0)),
    "command_timeout_s": (0.2, _float("skip frames whose latest command is older than this (s)", 0.001, 10.0)),
    "image_timeout_s": (0.0, _float("skip frames whose image is older than this (s); 0: each camera's max_age_s",
                                    0.0, 10.0)),
}


class RecorderNode(Node):
    """ROS adapter of the frame assembler and dataset writer (node name ``recorder``)."""

    def __init__(self, **node_kwargs: Any):
        super().__init__("recorder", **node_kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.embodiment: Embodiment = load_embodiment(p["embodiment"] or None)
        self.declare_parameter("cameras", list(self.embodiment.cameras),
                               ParameterDescriptor(description="embodiment cameras to record", read_only=True))
        cameras = list(self.get_parameter("cameras").value)
        unknown = [c for c in cameras if c not in self.embodiment.cameras]
        if unknown:
            raise ValueError(f"cameras: unknown {unknown}; the embodiment has {list(self.embodiment.cameras)}")
        sizes = {c: (p["image_height"] or self.embodiment.cameras[c].height,
                     p["image_width"] or self.embodiment.cameras[c].width) for c in cameras}
        self.spec = make_spec(self.embodiment, p["action_space"], p["fps"], sizes)
        limits = FrameLimits(p["state_timeout_s"], p["command_timeout_s"], p["image_timeout_s"] or None)
        self.assembler = FrameAssembler(self.embodiment, p["action_space"], sizes, limits, p["image_storage"])
        self.root = os.path.expanduser(p["root"])
        self.writer = DatasetWriter(self.root, self.spec)
        if not self.writer.recovery.clean:
            self.get_logger().warning(f"repaired {self.root} after an interrupted run: {self.writer.recovery}")
        self._lock = threading.Lock()  # the writer and the assembler's frame state
        self._instruction = ""
        self._skipped_in_episode = 0
        self._episode_started_at = 0.0
        self.add_on_set_parameters_callback(self._on_parameters)
        self._make_interfaces(cameras)
        self.get_logger().info(
            f"recorder: {self.root}, action space {p['action_space']}, {p['fps']} fps, cameras {cameras}, "
            f"{len(self.writer.episodes)} episode(s) already there")

    def _make_interfaces(self, cameras: List[str]) -> None:
        inputs = ReentrantCallbackGroup()
        for group in self.assembler.state_groups:
            topic = self.embodiment.groups[group].feedback_topic
            self.create_subscription(JointState, topic, lambda msg, g=group: self._on_feedback(g, msg),
                                     qos_profile_sensor_data, callback_group=inputs)
        for group in self.assembler.command_groups:
            topic = self.embodiment.groups[group].command_topic
            self.create_subscription(JointState, topic, lambda msg, g=group: self._on_command(g, msg),
                                     COMMAND_QOS, callback_group=inputs)
        for name in cameras:
            cam = self.embodiment.cameras[name]
            msg_type = CompressedImage if cam.transport == "compressed" else Image
            self.create_subscription(msg_type, cam.topic,
                                     lambda msg, c=name: self.assembler.on_image(c, msg, time.monotonic()),
                                     qos_profile_sensor_data, callback_group=inputs)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED_QOS, callback_group=inputs)
        self.status_pub = self.create_publisher(String, "~/status", LATCHED_QOS)
        control = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start_episode", self._on_start, callback_group=control)
        self.create_service(Trigger, "~/stop_episode", self._on_stop, callback_group=control)
        self.create_service(Trigger, "~/discard_episode", self._on_discard, callback_group=control)
        self.create_timer(1.0 / self.spec.fps, self._on_frame_timer, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_status, callback_group=control)
        self._publish_status()

    # -- inputs ----------------------------------------------------------------------------------

    def _on_feedback(self, group: str, msg: JointState) -> None:
        problem = self.assembler.on_feedback(group, list(msg.name), list(msg.position), time.monotonic())
        if problem:
            self.get_logger().warning(f"feedback refused: {problem}", throttle_duration_sec=2.0)

    def _on_command(self, group: str, msg: JointState) -> None:
        problem = self.assembler.on_command(group, list(msg.name), list(msg.position), time.monotonic())
        if problem:
            self.get_logger().warning(f"command refused: {problem}", throttle_duration_sec=2.0)

    def _on_instruction(self, msg: String) -> None:
        self._instruction = msg.data

    def _on_parameters(self, params: List[Any]) -> SetParametersResult:
        for param in params:
            if param.name == "task" and not isinstance(param.value, str):
                return SetParametersResult(successful=False, reason="task must be a string")
        return SetParametersResult(successful=True)

    # -- frames ----------------------------------------------------------------------------------

    def _on_frame_timer(self) -> None:
        with self._lock:
            if not self.writer.recording:
                return
            result = self.assembler.assemble(time.monotonic())
            if isinstance(result, Frame):
                self.writer.add_frame(result.state, result.action, result.images)
            else:
                self._skipped_in_episode += 1
                self.get_logger().warning(f"frame skipped: {', '.join(result)}", throttle_duration_sec=2.0)

    # -- services --------------------------------------------------------------------------------

    def _task(self) -> str:
        return self.get_parameter("task").value or self._instruction

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        task = self._task()
        with self._lock:
            if self.writer.recording:
                response.success, response.message = False, "an episode is already being recorded"
            elif not task:
                response.success, response.message = False, "no task: set the 'task' parameter or publish 'instruction'"
            else:
                episode = self.writer.start_episode(task)
                self.assembler.reset_episode()
                self._skipped_in_episode = 0
                self._episode_started_at = time.monotonic()
                response.success, response.message = True, f"episode {episode} started: {task}"
        self._respond(response)
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if not self.writer.recording:
                response.success, response.message = False, "no episode is being recorded"
            else:
                skipped = self._skipped_in_episode
                try:
                    record = self.writer.finish_episode()
                    response.success = True
                    response.message = (f"episode {record.episode_index} saved: {record.length} frames, "
                                        f"{skipped} skipped")
                except DatasetError as exc:
                    response.success, response.message = False, str(exc)
        self._respond(response)
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if not self.writer.recording:
                response.success, response.message = False, "no episode is being recorded"
            else:
                frames = self.writer.frames_in_episode
                self.writer.discard_episode()
                response.success, response.message = True, f"episode discarded ({frames} frames)"
        self._respond(response)
        return response

    def _respond(self, response: Trigger.Response) -> None:
        # rclpy refuses one call site logging at two severities: two calls.
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().warning(response.message)
        self._publish_status()

    def status(self) -> Dict[str, Any]:
        """What the recorder is doing (also ``~/status``)."""
        with self._lock:
            return {
                "root": self.root,
                "recording": self.writer.recording,
                "episode": len(self.writer.episodes) if self.writer.recording else None,
                "frames": self.writer.frames_in_episode,
                "episodes": len(self.writer.episodes),
                "total_frames": self.writer.total_frames,
                "skipped": self._skipped_in_episode,
                "skipped_by_reason": dict(self.assembler.skipped),
                "task": self._task(),
            }

    def _publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.status())))

    def shutdown(self) -> None:
        """Discard an unfinished episode: only stopped episodes are kept."""
        with self._lock:
            if self.writer.recording:
                self.get_logger().warning(f"shutting down mid-episode: {self.writer.frames_in_episode} frames dropped")
            self.writer.close()


def main(args: Optional[List[str]] = None) -> None:
    """Entry point: ``ros2 run pi0_ros recorder``."""
    # Single-threaded on purpose: rclpy's MultiThreadedExecutor (Jazzy) keeps a core busy polling its
    # futures (bench/graph_cpu.py: the recorder took 80-87 % of a core with it, 14-16 % without), and on a
    # 2-core robot computer that starved the other nodes. Every callback here only stores or answers quickly.
    spin_node(RecorderNode, args)


if __name__ == "__main__":
    main()
