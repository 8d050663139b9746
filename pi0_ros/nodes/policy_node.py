"""The policy node: cameras + joint states + instruction -> pi0 / pi0-FAST -> safe R1 Pro commands.

A thin rclpy adapter around :class:`pi0_ros.control.controller.ControlCore`. Subscriptions only
store the newest message (images are decoded later, in the inference worker); a dedicated control
thread ticks the core on a monotonic clock at ``control_hz`` and publishes what it returns, so
neither inference nor image traffic can delay the command stream. Every command passed the safety
layer; the last command sent at shutdown is a hold.

Topics (names from the embodiment file unless noted)
  subscribed: each group's ``feedback_topic`` (JointState), each camera's ``topic`` (Image or
  CompressedImage), ``instruction`` (String, transient local), ``<teleop_topic_prefix>/joint_targets``
  (JointState, matched by joint name), ``<teleop_topic_prefix>/<arm>/target_pose`` (PoseStamped).
  published: each commanded group's ``command_topic`` (JointState: position = target, velocity =
  per-joint speed limit) or one ``trajectory_topic`` (JointTrajectory), ``~/action_chunk``
  (JointTrajectory of the chunk being executed, after IK), ``/diagnostics`` (DiagnosticArray),
  ``~/mode`` (String, transient local: effective mode and reason).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_ros.control.action_codec import needs_ik
from pi0_ros.control.backends import BACKENDS, BackendOptions, make_policy
from pi0_ros.control.chunking import STRATEGIES, Chunk
from pi0_ros.control.controller import ControlConfig, ControlCore, TickResult
from pi0_ros.control.kinematics import ArmIK
from pi0_ros.control.modes import MODES, mode_problem
from pi0_ros.control.safety import GroupCommand, SafetyConfig, WatchdogConfig
from pi0_ros.embodiment import Embodiment, load_embodiment

OUTPUTS = ("r1pro", "joint_trajectory")
CONTROL_LOOPS = ("thread", "timer")
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _float(description: str, low: float, high: float, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high)])


def _int(description: str, low: int, high: int) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True,
                               integer_range=[IntegerRange(from_value=low, to_value=high, step=1)])


def _text(description: str, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only)


# name -> (default, descriptor). Defaults also live in config/policy_node.yaml.
PARAMETERS: Dict[str, Any] = {
    "embodiment": ("", _text("embodiment YAML; empty: the package's config/r1pro.yaml")),
    "policy_backend": ("", _text(f"policy implementation: one of {list(BACKENDS)}; "
                                 "empty: none (teleop and hold only)")),
    "checkpoint": ("", _text("checkpoint directory (pi0 / pi0_fast backends)")),
    "server_uri": ("", _text("ws://host:port of an openpi-protocol policy server (remote backend)")),
    "action_space": ("", _text("action layout name from the embodiment; empty: the checkpoint's, else "
                               "joint_position")),
    "control_mode": ("hold", _text(f"one of {list(MODES)}; invalid values are refused", read_only=False)),
    "instruction": ("", _text("language instruction (the 'instruction' topic overrides it too)", read_only=False)),
    "paused": (False, _text("true: hold the current position in any mode", read_only=False)),
    "control_hz": (0.0, _float("command rate in Hz; 0: the embodiment's rates.control_hz", 0.0, 500.0)),
    "chunk_strategy": ("sync", _text(f"chunk execution strategy: one of {sorted(STRATEGIES)}")),
    "execute_steps": (25, _int("actions executed open-loop from each chunk (N of H)", 1, 1000)),
    "inference_margin_steps": (3, _int("start the next inference this many ticks before it is needed", 0, 1000)),
    "speed_scale": (0.5, _float("fraction of the embodiment velocity limits the node may command", 0.01, 1.0)),
    "acceleration_scale": (1.0, _float("fraction of the embodiment acceleration limits", 0.01, 1.0)),
    "max_step_arm_rad": (0.25, _float("max |arm command - measured position| per joint (rad)", 0.001, 3.0)),
    "max_step_gripper": (100.0, _float("max |gripper command - measured stroke|", 0.1, 100.0)),
    "position_margin_rad": (0.01, _float("keep arm commands this far inside the joint limits (rad)", 0.0, 0.5)),
    "switch_ramp_s": (1.0, _float("after a mode switch, speed limits ramp up over this time (s)", 0.0, 10.0)),
    "switch_ramp_start": (0.1, _float("speed-limit fraction right after a mode switch", 0.01, 1.0)),
    "joint_state_timeout_s": (0.2, _float("hold when joint states are older than this (s)", 0.01, 10.0)),
    "image_timeout_s": (0.0, _float("hold when an image is older than this (s); 0: each camera's max_age_s",
                                    0.0, 10.0)),
    "policy_timeout_s": (2.0, _float("hold when no new chunk was computed for this long (s)", 0.1, 60.0)),
    "teleop_timeout_s": (0.5, _float("hold in teleop when no teleop target arrived for this long (s)", 0.01, 10.0)),
    "control_loop": ("thread", _text("'thread': a dedicated thread on a monotonic clock; 'timer': an rclpy "
                                     "timer (see BENCHMARKS.md, Policy node)")),
    "output": ("r1pro", _text(f"command output: one of {list(OUTPUTS)}")),
    "trajectory_topic": ("/joint_trajectory_controller/joint_trajectory",
                         _text("JointTrajectory topic when output is joint_trajectory")),
    "teleop_topic_prefix": ("/teleop", _text("prefix of the teleop input topics")),
    "diagnostics_hz": (1.0, _float("rate of /diagnostics and ~/mode updates (Hz)", 0.1, 50.0)),
    "scripted_speed": (0.5, _float("speed of the scripted backend (state units/s)", 0.01, 5.0)),
    "inject_delay_s": (0.0, _float("testing/benchmarks only: seconds added to every inference of any backend; "
                                   "0: off", 0.0, 10.0)),
}


def decode_image(msg: Any) -> np.ndarray:
    """RGB uint8 pixels of an Image or CompressedImage (cv_bridge when importable; imported lazily)."""
    from pi0_ros.nodes.ros_image import msg_to_rgb

    return msg_to_rgb(msg)


class PolicyNode(Node):
    """ROS adapter of the control core (node name ``policy_node``)."""

    def __init__(self, **node_kwargs: Any):
        super().__init__("policy_node", **node_kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._check_choices(p)
        self.embodiment: Embodiment = load_embodiment(p["embodiment"] or None)
        control_hz = p["control_hz"] or self.embodiment.rates.control_hz
        self.dt = 1.0 / control_hz
        policy = None
        if p["policy_backend"]:
            policy = make_policy(BackendOptions(p["policy_backend"], p["action_space"] or "joint_position",
                                                p["checkpoint"], p["server_uri"], self.dt, p["scripted_speed"],
                                                p["inject_delay_s"]),
                                 self.embodiment)
        action_space = p["action_space"] or self._checkpoint_action_space(policy) or "joint_position"
        layout = self.embodiment.action_layout(action_space)
        self._check_delta_convention(policy, layout)
        self.ik = self._make_ik(layout)
        watchdog = WatchdogConfig(
            joint_state_max_age_s=p["joint_state_timeout_s"],
            image_max_age_s={name: p["image_timeout_s"] or cam.max_age_s
                             for name, cam in self.embodiment.cameras.items()},
            policy_max_age_s=p["policy_timeout_s"],
            teleop_max_age_s=p["teleop_timeout_s"],
        )
        safety = SafetyConfig(
            speed_scale=p["speed_scale"], acceleration_scale=p["acceleration_scale"],
            max_step_arm_rad=p["max_step_arm_rad"], max_step_gripper=p["max_step_gripper"],
            position_margin_rad=p["position_margin_rad"], ramp_s=p["switch_ramp_s"], ramp_start=p["switch_ramp_start"],
        )
        config = ControlConfig(control_hz=control_hz, strategy=p["chunk_strategy"], execute_steps=p["execute_steps"],
                               inference_margin_steps=p["inference_margin_steps"], safety=safety, watchdog=watchdog)
        self.core = ControlCore(self.embodiment, layout, config, policy=policy, ik=self.ik,
                                image_decoder=decode_image, requested_mode=p["control_mode"],
                                instruction=p["instruction"])
        self.core.set_paused(p["paused"])
        self.add_on_set_parameters_callback(self._on_parameters)
        self._make_publishers(p)
        self._make_subscriptions(p)
        self._last_tick: Optional[TickResult] = None
        self.ticks = 0
        self.missed_ticks = 0
        self.tick_times: deque = deque(maxlen=100_000)  # monotonic send times (benchmarks read them)
        self.camera_to_command_s: deque = deque(maxlen=10_000)  # newest frame arrival -> first command using it
        self._stop = threading.Event()
        self._sending = threading.Lock()  # the final hold must come after the last tick's commands
        self.create_timer(1.0 / p["diagnostics_hz"], self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._thread: Optional[threading.Thread] = None
        if p["control_loop"] == "thread":
            self._thread = threading.Thread(target=self._control_loop, name="policy_node_control", daemon=True)
            self._thread.start()
        else:
            self.create_timer(self.dt, lambda: self._tick(time.monotonic()),
                              callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"policy_node: {p['policy_backend'] or 'no'} policy, action space {action_space}, {control_hz:g} Hz, "
            f"mode {p['control_mode']}, output {p['output']}, commanding {self.core.groups}"
        )

    # -- setup ---------------------------------------------------------------------------------

    def _check_choices(self, p: Dict[str, Any]) -> None:
        problems = []
        if p["policy_backend"] and p["policy_backend"] not in BACKENDS:
            problems.append(f"policy_backend must be one of {list(BACKENDS)}, got {p['policy_backend']!r}")
        if p["output"] not in OUTPUTS:
            problems.append(f"output must be one of {list(OUTPUTS)}, got {p['output']!r}")
        if p["control_loop"] not in CONTROL_LOOPS:
            problems.append(f"control_loop must be one of {list(CONTROL_LOOPS)}, got {p['control_loop']!r}")
        if p["chunk_strategy"] not in STRATEGIES:
            problems.append(f"chunk_strategy must be one of {sorted(STRATEGIES)}, got {p['chunk_strategy']!r}")
        problem = mode_problem(p["control_mode"])
        if problem:
            problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))

    def _make_ik(self, layout: Any) -> Dict[str, ArmIK]:
        """One solver per commanded arm: ee action spaces need them, teleop pose goals use them."""
        solvers: Dict[str, ArmIK] = {}
        for seg in layout.segments:
            group = self.embodiment.groups[seg.group]
            if group.kind != "arm" or group.ik_settings is None:
                continue
            try:
                solvers[seg.group] = ArmIK.from_embodiment(self.embodiment, group)
            except (ImportError, OSError, ValueError, RuntimeError) as exc:  # RuntimeError: RelaxedIKError
                if needs_ik(layout):
                    raise
                self.get_logger().warning(f"no IK for {seg.group} ({exc}); teleop pose goals are ignored")
        return solvers

    def _check_delta_convention(self, policy: Any, layout: Any) -> None:
        """Refuse adding the state twice: a policy that reports a ``delta_mask`` returns absolute actions."""
        if policy is None or not layout.delta_mask.any():
            return
        try:
            metadata = policy.metadata
        except Exception:  # noqa: BLE001 - unknown (remote server down): trust the configuration
            return
        if isinstance(metadata, dict) and "delta_mask" in metadata:
            raise ValueError(
                f"action_space {layout.name!r} adds the chunk-start state to joint dims, but this policy already "
                "converts its delta dims to absolute targets (its metadata has 'delta_mask'); use an absolute "
                "action space such as joint_position"
            )

    def _checkpoint_action_space(self, policy: Any) -> Optional[str]:
        if policy is None:
            return None
        try:
            metadata = policy.metadata
        except Exception as exc:  # noqa: BLE001 - a remote server may be down at start-up
            self.get_logger().warning(f"cannot read the policy's metadata ({exc}); using joint_position")
            return None
        space = metadata.get("action_space") if isinstance(metadata, dict) else None
        return space if isinstance(space, str) and space in self.embodiment.action_spaces else None

    def _make_publishers(self, p: Dict[str, Any]) -> None:
        self.output = p["output"]
        self.command_pubs = {}
        if self.output == "r1pro":
            for group in self.core.groups:
                topic = self.embodiment.groups[group].command_topic
                self.command_pubs[group] = self.create_publisher(JointState, topic, COMMAND_QOS)
        else:
            self.trajectory_pub = self.create_publisher(JointTrajectory, p["trajectory_topic"], COMMAND_QOS)
        self.chunk_pub = self.create_publisher(JointTrajectory, "~/action_chunk", 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.mode_pub = self.create_publisher(String, "~/mode", LATCHED_QOS)

    def _make_subscriptions(self, p: Dict[str, Any]) -> None:
        # Reentrant: feedback, images and teleop may be handled in parallel; each callback only stores.
        inputs = ReentrantCallbackGroup()
        for group in self.core.tracker.groups:
            topic = self.embodiment.groups[group].feedback_topic
            self.create_subscription(JointState, topic, lambda msg, g=group: self._on_feedback(g, msg),
                                     qos_profile_sensor_data, callback_group=inputs)
        for name, cam in self.embodiment.cameras.items():
            msg_type = CompressedImage if cam.transport == "compressed" else Image
            self.create_subscription(msg_type, cam.topic,
                                     lambda msg, c=name: self.core.on_image(c, msg, time.monotonic()),
                                     qos_profile_sensor_data, callback_group=inputs)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED_QOS, callback_group=inputs)
        prefix = p["teleop_topic_prefix"].rstrip("/")
        self.create_subscription(JointState, f"{prefix}/joint_targets", self._on_teleop_joints, COMMAND_QOS,
                                 callback_group=inputs)
        for group in self.core.groups:
            if self.embodiment.groups[group].kind == "arm":
                self.create_subscription(PoseStamped, f"{prefix}/{group}/target_pose",
                                         lambda msg, g=group: self._on_teleop_pose(g, msg), COMMAND_QOS,
                                         callback_group=inputs)

    # -- callbacks -----------------------------------------------------------------------------

    def _on_feedback(self, group: str, msg: JointState) -> None:
        problem = self.core.on_joint_state(group, list(msg.name), list(msg.position), time.monotonic())
        if problem:
            self.get_logger().warning(f"joint state refused: {problem}", throttle_duration_sec=2.0)

    def _on_instruction(self, msg: String) -> None:
        self.core.set_instruction(msg.data)

    def _on_teleop_joints(self, msg: JointState) -> None:
        if not self.core.on_teleop_joints(list(msg.name), list(msg.position), time.monotonic()):
            self.get_logger().warning("teleop joint targets matched no commanded group by name",
                                      throttle_duration_sec=2.0)

    def _on_teleop_pose(self, group: str, msg: PoseStamped) -> None:
        frame = msg.header.frame_id
        if frame and frame != self.embodiment.base_frame:
            self.get_logger().warning(f"teleop pose for {group} in frame {frame!r} refused; expected "
                                      f"{self.embodiment.base_frame!r}", throttle_duration_sec=2.0)
            return
        pos, ori = msg.pose.position, msg.pose.orientation
        self.core.on_teleop_pose(group, [pos.x, pos.y, pos.z, ori.x, ori.y, ori.z, ori.w], time.monotonic())

    def _on_parameters(self, params: List[Parameter]) -> SetParametersResult:
        # Validate everything first, then apply: a refused batch changes nothing.
        for param in params:
            if param.name == "control_mode":
                # The core's check: 'policy' is refused here, not silently ignored, when no policy is configured.
                problem = self.core.mode_problem(param.value)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
            elif param.name == "paused" and not isinstance(param.value, bool):
                return SetParametersResult(successful=False, reason="paused must be a bool")
            elif param.name == "instruction" and not isinstance(param.value, str):
                return SetParametersResult(successful=False, reason="instruction must be a string")
        for param in params:
            if param.name == "control_mode":
                self.core.request_mode(param.value)
                self.get_logger().info(f"control_mode -> {param.value}")
            elif param.name == "paused":
                self.core.set_paused(param.value)
            elif param.name == "instruction":
                self.core.set_instruction(param.value)
        return SetParametersResult(successful=True)

    # -- control loop (own thread, monotonic clock) ----------------------------------------------

    def _control_loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_tick:
                self._stop.wait(next_tick - now)
                continue
            late = int((now - next_tick) / self.dt)
            if late:  # skip the ticks we cannot make up instead of bursting commands
                self.missed_ticks += late
                next_tick += late * self.dt
            next_tick += self.dt
            self._tick(now)

    def _tick(self, now: float) -> None:
        if self._stop.is_set():
            return
        try:
            result = self.core.tick(now)
            with self._sending:
                if self._stop.is_set():
                    return  # the final hold was sent: nothing may follow it
                self._send(result.commands)
                self.tick_times.append(time.monotonic())
            self._last_tick = result
            self.ticks += 1
            if result.new_chunk is not None:
                if result.new_chunk.inputs_received:
                    self.camera_to_command_s.append(now - max(result.new_chunk.inputs_received.values()))
                self._publish_chunk(result.new_chunk)
            if result.switched:
                self._publish_mode(result)
        except Exception as exc:  # noqa: BLE001 - the loop must keep holding, whatever failed
            self.get_logger().error(f"control tick failed: {exc!r}", throttle_duration_sec=1.0)

    def _send(self, commands: Dict[str, GroupCommand]) -> None:
        if not commands:
            return
        stamp = self.get_clock().now().to_msg()
        if self.output == "r1pro":
            for group, cmd in commands.items():
                msg = JointState()
                msg.header.stamp = stamp
                msg.name = list(self.embodiment.groups[group].joints)
                msg.position = cmd.position.tolist()
                msg.velocity = cmd.speed_limit.tolist()
                self.command_pubs[group].publish(msg)
        else:
            msg = JointTrajectory()
            msg.header.stamp = stamp
            names: List[str] = []
            positions: List[float] = []
            for group, cmd in commands.items():
                names += self.embodiment.groups[group].joints
                positions += cmd.position.tolist()
            msg.joint_names = names
            point = JointTrajectoryPoint(positions=positions)
            # Reach the target one period from now: the controller interpolates at its own rate.
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(int(self.dt * 1e9), 1_000_000_000)
            msg.points = [point]
            self.trajectory_pub.publish(msg)

    def _publish_chunk(self, chunk: Chunk) -> None:
        msg = JointTrajectory()
        msg.header.stamp = self.get_clock().now().to_msg()
        groups = list(chunk.decoded.targets)
        msg.joint_names = [j for group in groups for j in self.embodiment.groups[group].joints]
        for k in range(chunk.decoded.horizon):
            point = JointTrajectoryPoint()
            point.positions = np.concatenate([chunk.decoded.targets[g][k] for g in groups]).tolist()
            t = k * self.dt
            point.time_from_start.sec = int(t)
            point.time_from_start.nanosec = int((t - int(t)) * 1e9)
            msg.points.append(point)
        self.chunk_pub.publish(msg)

    def _publish_mode(self, result: TickResult) -> None:
        self.mode_pub.publish(String(data=f"{result.mode} ({result.reason})"))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        values = self.core.diagnostics(now)
        values["ticks"] = self.ticks
        values["missed_ticks"] = self.missed_ticks
        latest = self.camera_to_command_s[-1] if self.camera_to_command_s else float("nan")
        values["camera_to_command_ms"] = latest * 1e3
        if values["observes_a_chunk_late"]:
            self.get_logger().warning(
                "sync: each chunk is observed before the previous one moved the arm (the inference lead covers "
                "the whole execution): the arm may alternate between two poses; lower inference_margin_steps, "
                "raise execute_steps or use an asynchronous chunk_strategy", throttle_duration_sec=60.0)
        status = DiagnosticStatus(name="policy_node", hardware_id=self.embodiment.name)
        status.level = DiagnosticStatus.OK if not values["faults"] else DiagnosticStatus.WARN
        if values["mode"] == "hold" and values["requested_mode"] != "hold" and not values["paused"]:
            status.level = DiagnosticStatus.ERROR if "policy_missing" in values["faults"] else DiagnosticStatus.WARN
        status.message = f"{values['mode']} ({values['reason']})"
        status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self.diag_pub.publish(array)

    # -- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the control loop, then send a hold at the measured position as the very last command."""
        with self._sending:
            self._stop.set()
            commands = self.core.hold_commands(time.monotonic())
            try:
                self._send(commands)
            except Exception as exc:  # noqa: BLE001 - the context may already be gone
                self.get_logger().error(f"final hold not sent: {exc!r}")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.core.close()
        for ik in self.ik.values():
            ik.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _init_ros(args: Optional[List[str]]) -> None:
    """rclpy.init without rclpy's own SIGINT handler where possible: that handler shuts the context
    down before our code runs, and the final hold could no longer be published."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # very old rclpy: its handler stays; the hold is then best effort
        rclpy.init(args=args)
        return
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except TypeError:  # an rclpy whose init() does not take the option
        rclpy.init(args=args)


_STOP_SIGNALS: List[int] = []  # SIGINT / SIGTERM received, in order


def _interrupt(signum: int, frame: Any) -> None:
    _STOP_SIGNALS.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: Optional[List[str]] = None) -> None:
    """Entry point: ``ros2 run pi0_ros policy_node`` / ``python -m pi0_ros.nodes.policy_node``.

    SIGINT and SIGTERM both end in the same path: stop the control loop, publish a hold, shut down.
    """
    _init_ros(args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    node = None
    # Single-threaded on purpose: rclpy's MultiThreadedExecutor (Jazzy) keeps a core busy polling its
    # futures (bench/graph_cpu.py: this node took 31-97 % of a core with it, 15-16 % without). The control
    # loop has its own thread and the inference its worker; the callbacks only store inputs or answer.
    executor = SingleThreadedExecutor()
    exit_code = 0
    try:
        node = PolicyNode()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, KeyError, InvalidParameterValueException, InvalidParameterTypeException) as exc:
        # a configuration problem (out-of-range / mistyped parameters included): say what, without a traceback
        print(f"policy_node: cannot start: {exc}", file=sys.stderr)
        exit_code = 2
    except RuntimeError:
        # A stop signal that lands inside rclpy's take_message comes out of pybind11 as "Unable to convert call
        # argument" instead of KeyboardInterrupt (seen in the simulator tests): still a requested stop.
        if not _STOP_SIGNALS:
            raise
    finally:
        if node is not None:
            node.shutdown()
            # Give the final hold a moment to leave the process before the middleware goes down.
            time.sleep(0.2)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    if exit_code:
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
