"""sim_robot: the MuJoCo R1 Pro-style robot behind the R1 Pro controller and camera topics.

Speaks exactly the embodiment's topics (config/r1pro.yaml), so the policy node cannot tell it from the
robot:

- subscribes each group's ``command_topic`` (sensor_msgs/JointState): arm and torso targets with
  ``velocity`` as per-joint maximum speed, gripper targets as stroke in [0, 100] (0 closed). Targets are
  matched by name, any order; a subset of names is allowed (other joints keep their target); without
  names, one value per joint in group order. Malformed targets (unknown/duplicate names, length
  mismatch, NaN/inf, out of limits) are rejected whole with a throttled warning and counted; the
  simulator keeps tracking its last valid target (rules: :mod:`pi0_ros.sim.targets`).
- publishes each group's ``feedback_topic`` (JointState: name, position, velocity, effort) at
  ``feedback_hz`` and each camera (CompressedImage JPEG/PNG and/or raw Image) with header stamps and the
  camera's frame id;
- ``~/task_state`` (std_msgs/String, JSON): seed, object poses, gripper positions, gripper-object
  distances, touched objects (frame: the embodiment's base_frame), target and camera counters;
- ``~/reset`` (std_srvs/Trigger): robot to home, objects re-randomized with the ``seed`` parameter, which
  then increments; ``~/reset_seed`` (std_msgs/Int32): the same with the given seed.

Threads: physics + feedback run in one thread at fixed wall-clock pace; rendering + image encoding in
another, on a snapshot of the state, so a slow frame never delays feedback; the executor handles
targets, services and the task-state timer. Parameters are read at start-up (``seed`` at every reset).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from pi0_ros.embodiment import Camera, Embodiment, load_embodiment
from pi0_ros.nodes.ros_image import rgb_to_compressed_msg, rgb_to_image_msg
from pi0_ros.nodes.runner import spin_node
from pi0_ros.paths import config_path
from pi0_ros.sim.config import load_sim_config
from pi0_ros.sim.robot import SimRobot
from pi0_ros.sim.targets import TargetRejected

TRANSPORTS = ("embodiment", "compressed", "raw", "both", "none")
# Reliable publishers reach reliable and best-effort subscribers alike; best-effort subscriptions
# accept targets from reliable and best-effort publishers alike.
FEEDBACK_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
TARGET_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
WARN_THROTTLE_S = 2.0
# A feedback tick that is late by less than this many periods is made up at once, so a loaded CPU
# costs jitter rather than rate; later than that, the schedule restarts.
CATCH_UP_TICKS = 5


@dataclass
class CameraStream:
    """One camera as this node publishes it."""

    camera: Camera
    width: int
    height: int
    period: float
    compressed_format: Optional[str]  # jpeg/png, or None when not published compressed
    raw_encoding: Optional[str]  # rgb8/bgr8/..., or None when not published raw
    compressed_pub: Optional[object] = None
    raw_pub: Optional[object] = None
    next_due: float = 0.0
    frames: int = 0


def _describe(text: str, *, lo: Optional[float] = None, hi: Optional[float] = None,
              integer: bool = False) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=text)
    if lo is not None:
        if integer:
            descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return descriptor


class SimRobotNode(Node):
    """The simulated robot node (see the module docstring for its interface)."""

    def __init__(self) -> None:
        super().__init__("sim_robot")
        self.declare_parameter("embodiment", str(config_path("r1pro.yaml")),
                               _describe("embodiment YAML (joints, limits, topics, cameras)"))
        self.declare_parameter("sim_config", str(config_path("sim.yaml")),
                               _describe("simulator settings file (its `scene` block: table, objects, optics)"))
        self.embodiment: Embodiment = load_embodiment(self._param("embodiment"))
        self.sim_config = load_sim_config(self._param("sim_config"))
        self._declare_parameters()

        self.streams = self._camera_streams()
        render_sizes = {s.camera.name: (s.width, s.height) for s in self.streams}
        self.sim = SimRobot(self.embodiment, self.sim_config, render_sizes=render_sizes or None)
        self.lock = threading.Lock()  # guards self.sim
        self.stop_event = threading.Event()
        self.accepted = {name: 0 for name in self.sim.group_names}
        self.rejected = {name: 0 for name in self.sim.group_names}
        self.last_rejection = ""
        self.render_error = ""
        self.physics_dropped_steps = 0
        self.seed = int(self._param("seed"))
        with self.lock:
            self.sim.reset(self.seed)

        self.feedback_pubs = {g.name: self.create_publisher(JointState, g.feedback_topic, FEEDBACK_QOS)
                              for g in self.embodiment.groups.values()}
        for group in self.embodiment.groups.values():
            self.create_subscription(JointState, group.command_topic,
                                     lambda msg, name=group.name: self._on_target(name, msg), TARGET_QOS)
        for stream in self.streams:
            if stream.compressed_format:
                stream.compressed_pub = self.create_publisher(CompressedImage, _compressed_topic(stream.camera),
                                                              IMAGE_QOS)
            if stream.raw_encoding:
                stream.raw_pub = self.create_publisher(Image, _raw_topic(stream.camera), IMAGE_QOS)
        self.task_pub = self.create_publisher(String, "~/task_state", FEEDBACK_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_subscription(Int32, "~/reset_seed", self._on_reset_seed, 10)
        self.create_timer(1.0 / self._param("task_state_hz"), self._publish_task_state)

        self.threads = [threading.Thread(target=self._physics_loop, name="sim_physics", daemon=True)]
        if self.streams:
            self.threads.append(threading.Thread(target=self._render_loop, name="sim_render", daemon=True))
        for thread in self.threads:
            thread.start()
        self.get_logger().info(
            f"simulating {self.embodiment.name}: physics {1.0 / self.sim.dt:.0f} Hz, feedback "
            f"{self._param('feedback_hz'):g} Hz, cameras "
            + (", ".join(f"{s.camera.name} {s.width}x{s.height}@{1.0 / s.period:g}Hz" for s in self.streams)
               or "off") + f", seed {self.seed}")

    # -- parameters -----------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        self.declare_parameter("feedback_hz", float(self.embodiment.rates.feedback_hz),
                               _describe("joint-state feedback rate (Hz)", lo=1.0, hi=1000.0))
        self.declare_parameter("camera_rate_hz", 0.0,
                               _describe("camera publish rate (Hz); 0: each camera's rate_hz", lo=0.0, hi=60.0))
        self.declare_parameter("camera_width", 0, _describe("image width; 0: each camera's width", lo=0, hi=4096,
                                                            integer=True))
        self.declare_parameter("camera_height", 0, _describe("image height; 0: each camera's height", lo=0,
                                                             hi=4096, integer=True))
        self.declare_parameter("camera_transport", "embodiment",
                               _describe("embodiment (each camera's transport), compressed, raw, both or none"))
        self.declare_parameter("cameras", list(self.embodiment.cameras),
                               _describe("names of the embodiment cameras to render"))
        self.declare_parameter("jpeg_quality", 90, _describe("JPEG quality", lo=1, hi=100, integer=True))
        self.declare_parameter("seed", 0, _describe("seed of the next reset (increments after each reset)"))
        self.declare_parameter("task_state_hz", 2.0, _describe("~/task_state rate (Hz)", lo=0.1, hi=50.0))

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _camera_streams(self) -> List[CameraStream]:
        transport = self._param("camera_transport")
        if transport not in TRANSPORTS:
            raise ValueError(f"camera_transport must be one of {TRANSPORTS}, got {transport!r}")
        if transport == "none":
            return []
        names = list(self._param("cameras"))
        unknown = [n for n in names if n not in self.embodiment.cameras]
        if unknown:
            raise ValueError(f"cameras: unknown {unknown}; the embodiment has {list(self.embodiment.cameras)}")
        streams = []
        for name in names:
            camera = self.embodiment.cameras[name]
            chosen = camera.transport if transport == "embodiment" else transport
            compressed = raw = None
            if chosen in ("compressed", "both"):
                compressed = camera.format if camera.transport == "compressed" else "jpeg"
            if chosen in ("raw", "both"):
                raw = camera.format if camera.transport == "raw" else "rgb8"
            rate = self._param("camera_rate_hz") or camera.rate_hz
            streams.append(CameraStream(camera=camera, width=self._param("camera_width") or camera.width,
                                        height=self._param("camera_height") or camera.height, period=1.0 / rate,
                                        compressed_format=compressed, raw_encoding=raw))
        return streams

    # -- targets and resets -----------------------------------------------------------------------

    def _on_target(self, group: str, msg: JointState) -> None:
        try:
            with self.lock:
                self.sim.command(group, list(msg.name), list(msg.position), list(msg.velocity))
            self.accepted[group] += 1
        except TargetRejected as exc:
            self.rejected[group] += 1
            self.last_rejection = str(exc)
            self.get_logger().warning(f"target rejected (holding the last valid one): {exc}",
                                      throttle_duration_sec=WARN_THROTTLE_S)

    def _reset(self, seed: int) -> str:
        with self.lock:
            self.sim.reset(seed)
        self.seed = seed
        self.set_parameters([Parameter("seed", Parameter.Type.INTEGER, seed + 1)])
        message = f"reset with seed {seed}"
        self.get_logger().info(message)
        return message

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self._reset(int(self._param("seed")))
        response.success = True
        return response

    def _on_reset_seed(self, msg: Int32) -> None:
        self._reset(int(msg.data))

    # -- publishing ---------------------------------------------------------------------------------

    def _publish_task_state(self) -> None:
        with self.lock:
            state = self.sim.task_state().as_dict()
        state["targets"] = {"accepted": dict(self.accepted), "rejected": dict(self.rejected),
                            "last_rejection": self.last_rejection}
        state["cameras"] = {s.camera.name: s.frames for s in self.streams}
        state["render_error"] = self.render_error
        state["physics_dropped_steps"] = self.physics_dropped_steps
        self.task_pub.publish(String(data=json.dumps(state)))

    def _physics_loop(self) -> None:
        period = 1.0 / float(self._param("feedback_hz"))
        dt = self.sim.dt
        max_steps = self.sim_config.physics.max_catch_up_steps
        start = time.monotonic()
        steps_done = 0
        next_tick = start
        while not self.stop_event.is_set():
            due = int((time.monotonic() - start) / dt) - steps_done
            if due > max_steps:  # we were starved of CPU: drop the backlog rather than spiral
                self.physics_dropped_steps += due - max_steps
                steps_done += due - max_steps
                due = max_steps
            with self.lock:
                self.sim.step(due)
                feedback = [(name, self.sim.joint_state(name)) for name in self.sim.group_names]
            steps_done += due
            stamp = self.get_clock().now().to_msg()
            for name, fb in feedback:
                msg = JointState()
                msg.header.stamp = stamp
                msg.name = list(fb.names)
                msg.position, msg.velocity, msg.effort = fb.position.tolist(), fb.velocity.tolist(), fb.effort.tolist()
                self._publish(self.feedback_pubs[name], msg)
            next_tick += period
            now = time.monotonic()
            if now - next_tick > CATCH_UP_TICKS * period:
                next_tick = now  # far behind (CPU starved): restart the schedule rather than burst
            self.stop_event.wait(max(0.0, next_tick - now))

    def _render_loop(self) -> None:
        # Imported here: the GL context must be created in the thread that renders.
        from pi0_ros.sim.cameras import CameraRenderer, CameraSpec

        try:
            renderer = CameraRenderer(self.sim.model, [CameraSpec(s.camera.name, s.width, s.height)
                                                       for s in self.streams])
        except Exception as exc:  # no GL: keep the robot running without cameras, and say so
            self.render_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"camera rendering unavailable, publishing no images: {self.render_error}")
            return
        quality = int(self._param("jpeg_quality"))
        now = time.monotonic()
        for stream in self.streams:
            stream.next_due = now
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                due = [s for s in self.streams if s.next_due <= now]
                if not due:
                    self.stop_event.wait(min(s.next_due for s in self.streams) - now)
                    continue
                with self.lock:
                    qpos = self.sim.qpos()
                stamp = self.get_clock().now().to_msg()
                renderer.set_state(qpos)
                for stream in due:
                    self._publish_frame(stream, renderer.render(stream.camera.name), stamp, quality)
                    stream.next_due += stream.period
                    if stream.next_due < now:  # rendering fell behind: skip frames, keep the rate
                        stream.next_due = now + stream.period
        finally:
            renderer.close()

    def _publish_frame(self, stream: CameraStream, rgb, stamp, quality: int) -> None:
        frame = stream.camera.frame
        if stream.compressed_pub is not None:
            self._publish(stream.compressed_pub,
                          rgb_to_compressed_msg(rgb, stamp, frame, stream.compressed_format, quality))
        if stream.raw_pub is not None:
            self._publish(stream.raw_pub, rgb_to_image_msg(rgb, stamp, frame, stream.raw_encoding))
        stream.frames += 1

    def _publish(self, publisher, msg) -> None:
        # On SIGINT rclpy invalidates the context at once, while our threads may be mid-publish: that
        # is a shutdown, not an error. Any other publish failure is logged and the loop goes on.
        try:
            publisher.publish(msg)
        except Exception as exc:  # rclpy raises RCLError (not importable on every distribution)
            if not self.context.ok():
                self.stop_event.set()
                return
            self.get_logger().error(f"publish on {publisher.topic_name} failed: {exc}",
                                    throttle_duration_sec=WARN_THROTTLE_S)

    def shutdown(self) -> None:
        """Stop the physics and render threads (bounded wait)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=2.0)


def _compressed_topic(camera: Camera) -> str:
    return camera.topic if camera.transport == "compressed" else camera.topic.rstrip("/") + "/compressed"


def _raw_topic(camera: Camera) -> str:
    if camera.transport == "raw":
        return camera.topic
    # image_transport naming: <base>/compressed carries the compressed form of <base>.
    return camera.topic[: -len("/compressed")] if camera.topic.endswith("/compressed") else camera.topic + "/raw"


def camera_topics(camera: Camera) -> Tuple[str, str]:
    """(compressed topic, raw topic) the node uses for a camera."""
    return _compressed_topic(camera), _raw_topic(camera)


def main(args: Optional[List[str]] = None) -> None:
    """Entry point: ``ros2 run pi0_ros sim_robot``."""
    spin_node(SimRobotNode, args)


if __name__ == "__main__":
    main()
