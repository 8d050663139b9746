"""One control tick of the policy node, without ROS: inputs in, safe commands out.

:class:`ControlCore` owns the state tracker, the mode machine, the chunk strategy, the inference
worker, the teleop targets and the safety layer. The node calls the ``on_*`` methods from its
subscriptions and :meth:`ControlCore.tick` from its control loop, and publishes the returned
commands. Everything it sends passed :class:`~pi0_ros.control.safety.SafetyLimiter`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pi0_ros.control.action_codec import ActionDecoder
from pi0_ros.control.chunking import Chunk, ChunkStrategy, make_strategy
from pi0_ros.control.inference import InferenceRequest, InferenceWorker
from pi0_ros.control.kinematics import ArmIK, ChainFK, arm_fk
from pi0_ros.control.modes import ModeMachine, mode_problem
from pi0_ros.control.robot_state import RobotStateTracker, build_state_vector
from pi0_ros.control.safety import (
    GroupCommand,
    SafetyConfig,
    SafetyLimiter,
    Watchdog,
    WatchdogConfig,
    hold_target,
)
from pi0_ros.embodiment import Embodiment, Layout
from pi0_ros.policy_api import Observation, Policy

ImageDecoder = Callable[[Any], np.ndarray]  # raw message -> RGB uint8 [H, W, 3]


@dataclass
class ControlConfig:
    """Settings of the control core (the node fills it from its parameters)."""

    control_hz: float = 50.0
    strategy: str = "sync"
    execute_steps: int = 25  # N of H actions executed open-loop per chunk
    inference_margin_steps: int = 3  # start the next inference this many ticks earlier than needed
    retry_s: float = 0.5  # pause between inference attempts after a failure
    latency_smoothing: float = 0.3  # EMA weight of the newest latency
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)

    @property
    def dt(self) -> float:
        """Control period."""
        return 1.0 / self.control_hz


@dataclass
class TickResult:
    """What one tick decided."""

    commands: Dict[str, GroupCommand]  # per commanded group; empty before the first joint states
    mode: str
    reason: str
    faults: List[str]
    switched: bool
    new_chunk: Optional[Chunk] = None  # a chunk that started executing at this tick


@dataclass
class _Timed:
    value: Any
    received: float


class ControlCore:
    """Inputs -> mode -> targets -> safety -> commands, once per tick."""

    def __init__(
        self,
        embodiment: Embodiment,
        layout: Layout,
        config: ControlConfig,
        policy: Optional[Policy] = None,
        ik: Optional[Mapping[str, ArmIK]] = None,
        image_decoder: Optional[ImageDecoder] = None,
        requested_mode: str = "hold",
        instruction: str = "",
    ):
        self.embodiment = embodiment
        self.layout = layout
        self.config = config
        self.ik = dict(ik or {})
        self._fks: Dict[str, ChainFK] = {}
        self.image_decoder = image_decoder or (lambda image: image)
        self.groups = [seg.group for seg in layout.segments]
        feedback_groups = dict.fromkeys(self.groups + [s.group for s in embodiment.state_layout.segments])
        self.tracker = RobotStateTracker([embodiment.groups[g] for g in feedback_groups])
        if requested_mode == "policy" and policy is None:
            raise ValueError("control_mode 'policy' needs a policy: set policy_backend")
        self.modes = ModeMachine(requested_mode)
        self.limiter = SafetyLimiter({g: embodiment.groups[g] for g in self.groups}, config.safety, config.dt)
        if not config.watchdog.image_max_age_s:
            config.watchdog.image_max_age_s = {name: cam.max_age_s for name, cam in embodiment.cameras.items()}
        self.watchdog = Watchdog(config.watchdog)
        self.strategy: ChunkStrategy = make_strategy(
            config.strategy, config.dt, config.execute_steps, config.inference_margin_steps
        )
        self.decoder = ActionDecoder(embodiment, layout, self.ik)
        self.policy = policy
        self.worker = InferenceWorker(policy, self.decoder) if policy is not None else None
        self._lock = threading.Lock()  # inputs arrive on executor threads, ticks on the control thread
        self._images: Dict[str, _Timed] = {}
        self._teleop_joints: Dict[str, _Timed] = {}
        self._teleop_poses: Dict[str, _Timed] = {}
        self.instruction = instruction
        self.epoch = 0
        self._request_id = 0
        self._hold: Dict[str, np.ndarray] = {}
        self._teleop_solution: Dict[str, Tuple[float, np.ndarray]] = {}  # group -> (pose stamp, joints)
        # arm -> the solver's use count after it produced the last teleop target (nobody used it since)
        self._solver_drives: Dict[str, int] = {}
        self._policy_errors: Dict[str, str] = {}  # fault -> last message; cleared by the next good chunk
        self._retry_at = 0.0
        self._last_chunk_obs_time = float("-inf")
        self._policy_requested_at = float("-inf") if requested_mode != "policy" else None
        self._started_chunks = 0
        self.latency_s = 0.0  # smoothed observation -> decoded chunk
        self.last_latency_s = float("nan")
        self.last_infer_s = float("nan")
        self.chunks_received = 0
        self.errors = 0
        self.last_error = ""

    # -- inputs (any thread) -------------------------------------------------------------------

    def on_joint_state(self, group: str, names: Sequence[str], positions: Sequence[float], now: float) -> Optional[str]:
        """Joint feedback of one group; returns why it was refused, or None."""
        with self._lock:
            return self.tracker.update(group, names, positions, now)

    def on_image(self, camera: str, image: Any, now: float) -> None:
        """The newest raw image of a camera (decoded only when an observation is built)."""
        with self._lock:
            self._images[camera] = _Timed(image, now)

    def on_teleop_joints(self, names: Sequence[str], positions: Sequence[float], now: float) -> List[str]:
        """Teleop joint targets, matched by name onto commanded groups; returns the groups updated."""
        index = {n: i for i, n in enumerate(names)}
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        if len(names) != values.size:
            return []
        updated = []
        with self._lock:
            for group in self.groups:
                joints = self.embodiment.groups[group].joints
                if all(j in index and names.count(j) == 1 for j in joints):  # a repeated joint is ambiguous
                    self._teleop_joints[group] = _Timed(values[[index[j] for j in joints]], now)
                    updated.append(group)
        return updated

    def on_teleop_pose(self, group: str, pose: Sequence[float], now: float) -> None:
        """A teleop ee pose goal (x y z qx qy qz qw in the base frame) for an arm."""
        with self._lock:
            self._teleop_poses[group] = _Timed(np.asarray(pose, dtype=np.float64), now)

    def set_instruction(self, text: str) -> None:
        """The language instruction for the next observations."""
        with self._lock:
            self.instruction = text

    def mode_problem(self, mode: object) -> Optional[str]:
        """Why ``mode`` cannot be requested on this core (None when it can)."""
        if mode == "policy" and self.worker is None:
            return "no policy configured (set policy_backend at start-up); teleop and hold work without one"
        return mode_problem(mode)

    def request_mode(self, mode: object) -> Tuple[bool, str]:
        """Change the requested mode (validated)."""
        with self._lock:
            problem = self.mode_problem(mode)
            if problem:
                return False, problem
            before = self.modes.requested
            accepted, reason = self.modes.request(mode)
            if accepted and mode == "policy" and before != "policy":
                self._policy_requested_at = None  # the staleness clock starts at the next tick
            return accepted, reason

    def set_paused(self, paused: bool) -> None:
        """Pause (hold) or resume."""
        with self._lock:
            self.modes.paused = bool(paused)

    # -- the tick (control thread) -------------------------------------------------------------

    def tick(self, now: float) -> TickResult:
        """Decide this period's commands."""
        with self._lock:
            self._collect_outcomes(now)
            faults = self._faults(now)
            self.watchdog.evaluate(faults)
            state, switched = self.modes.update(faults, now)
            if switched:
                self._on_switch(now)
            ramp = self.modes.ramp(now, self.config.safety.ramp_s, self.config.safety.ramp_start)
            new_chunk = None
            if state.mode == "policy":
                targets, new_chunk = self._policy_targets(now)
            elif state.mode == "teleop":
                targets = self._teleop_targets(now)
            else:
                targets = dict(self._hold)
            if self.modes.requested == "policy":
                self._maybe_request(now, policy_active=state.mode == "policy")
            commands = {}
            for group in self.groups:
                measured = self.tracker.measured(group)
                last = self.limiter.last_command(group)
                if measured is None or (last is None and not self._trusted(group, now)):
                    continue  # never commanded before the first trusted feedback
                target = targets.get(group)
                if target is None:
                    target = measured if last is None else last
                commands[group] = self.limiter.limit(group, target, measured, ramp)
            return TickResult(commands, state.mode, state.reason, faults, switched, new_chunk)

    def hold_commands(self, now: float) -> Dict[str, GroupCommand]:
        """Commands that hold the current measured position (the last commands sent at shutdown)."""
        with self._lock:
            commands = {}
            for group in self.groups:
                target = self._hold_position(group, now)
                if target is not None:
                    limits = self.limiter.limits[group]  # a measured position may lie just beyond a limit
                    commands[group] = GroupCommand(np.clip(target, limits.lower, limits.upper),
                                                   self.limiter.speed_limits(group, ramp=1.0))
            return commands

    def close(self) -> None:
        """Stop the inference worker."""
        if self.worker is not None:
            self.worker.stop()

    # -- internals -----------------------------------------------------------------------------

    def _faults(self, now: float) -> List[str]:
        wd = self.config.watchdog
        faults = self.tracker.faults(now, wd.joint_state_max_age_s, list(self.tracker.groups))
        requested = self.modes.requested
        if requested == "policy":
            if self.worker is None:
                faults.append("policy_missing")
            ages = {name: now - timed.received for name, timed in self._images.items()}
            faults += self.watchdog.image_faults(ages)
            faults += sorted(self._policy_errors)
            if self._policy_requested_at is None:
                self._policy_requested_at = now
            # Only a new chunk clears this fault, so a silent policy cannot make the mode flap.
            if now - max(self._last_chunk_obs_time, self._policy_requested_at) > wd.policy_max_age_s:
                faults.append("policy_stale")
        elif requested == "teleop":
            # A teleop source may drive only some groups (the others stay where they are), but with
            # no fresh input at all the operator is gone: hold.
            stamps = [t.received for t in (*self._teleop_joints.values(), *self._teleop_poses.values())]
            if not stamps or now - max(stamps) > wd.teleop_max_age_s:
                faults.append("teleop_stale")
        return faults

    def _on_switch(self, now: float) -> None:
        """Bumpless: restart every source from the measured state; nothing stale survives."""
        self.epoch += 1
        self.strategy.reset()
        self._teleop_solution.clear()
        self._solver_drives.clear()
        self._hold.clear()
        for group in self.groups:
            target = self._hold_position(group, now)
            if target is None:
                continue
            self._hold[group] = target
            if group in self.ik and self._trusted(group, now):
                self.ik[group].reset(target)

    def _trusted(self, group: str, now: float) -> bool:
        """The group's measured position is good and fresh."""
        return (self.tracker.measured(group) is not None and self.tracker.bad_reason(group) is None
                and self.tracker.age(group, now) <= self.config.watchdog.joint_state_max_age_s)

    def _hold_position(self, group: str, now: float) -> Optional[np.ndarray]:
        """The trusted measured position, else the last command; None when there is neither."""
        trusted = self._trusted(group, now)
        last = self.limiter.last_command(group)
        if not trusted and last is None:
            return None
        gripper = self.embodiment.groups[group].kind == "gripper"
        return hold_target(self.tracker.measured(group), last, trusted, prefer_command=gripper)

    def _collect_outcomes(self, now: float) -> None:
        if self.worker is None:
            return
        for outcome in self.worker.outcomes():
            if outcome.epoch != self.epoch:
                continue  # computed before a mode switch: stale
            if outcome.chunk is None:
                self.errors += 1
                self.last_error = f"{outcome.error_kind}: {outcome.error}"
                self._policy_errors[f"policy_{outcome.error_kind}"] = outcome.error
                self._retry_at = now + self.config.retry_s
                continue
            self._policy_errors.clear()
            chunk = outcome.chunk
            self.chunks_received += 1
            self.last_latency_s = now - chunk.obs_time
            self.last_infer_s = outcome.infer_s
            a = self.config.latency_smoothing
            self.latency_s = self.last_latency_s if self.chunks_received == 1 else (
                (1 - a) * self.latency_s + a * self.last_latency_s)
            self._last_chunk_obs_time = chunk.obs_time
            if self.modes.current == "policy":
                self.strategy.add(chunk)

    def _policy_targets(self, now: float) -> Tuple[Dict[str, np.ndarray], Optional[Chunk]]:
        started = getattr(self.strategy, "started", None)
        targets = self.strategy.next_targets(now)
        new_chunk = None
        if started is not None and self.strategy.started != started:
            new_chunk = self.strategy.current
        return (targets if targets is not None else {}), new_chunk

    def _teleop_targets(self, now: float) -> Dict[str, np.ndarray]:
        targets: Dict[str, np.ndarray] = {}
        max_age = self.config.watchdog.teleop_max_age_s
        for group in self.groups:
            joints, pose = self._teleop_joints.get(group), self._teleop_poses.get(group)
            use_pose = pose is not None and (joints is None or pose.received >= joints.received)
            if use_pose and now - pose.received <= max_age and group in self.ik:
                targets[group] = self._solve_teleop_pose(group, pose)
            elif joints is not None and now - joints.received <= max_age:
                self._solver_drives.pop(group, None)  # the next pose goal must restart the solver
                targets[group] = joints.value
        return targets

    def _solve_teleop_pose(self, group: str, pose: _Timed) -> np.ndarray:
        """IK for a teleop pose goal, solved once per goal; a failure keeps the last safe target."""
        solved = self._teleop_solution.get(group)
        if solved is not None and solved[0] == pose.received:
            return solved[1]
        last = self.limiter.last_command(group)
        ik = self.ik[group]
        with ik.lock:  # shared with the inference worker's decoder (a request from before a switch)
            if self._solver_drives.get(group) != ik.uses:  # not our last solution: restart from the robot
                measured = self.tracker.measured(group)
                ik.reset(measured if measured is not None else last)
            q = ik.solve_pose(pose.value)
            if q is None:
                q = solved[1] if solved is not None else last
                self._solver_drives.pop(group, None)  # the solver's state is not what we command
            else:
                self._solver_drives[group] = ik.uses
        self._teleop_solution[group] = (pose.received, q)
        return q

    def _maybe_request(self, now: float, policy_active: bool) -> None:
        """Start an inference when the schedule needs one and the inputs are usable."""
        if self.worker is None or self.worker.busy or now < self._retry_at:
            return
        if policy_active and not self.strategy.wants_inference(now, self.latency_s):
            return
        wd = self.config.watchdog
        state_groups = [s.group for s in self.embodiment.state_layout.segments]
        if self.tracker.faults(now, wd.joint_state_max_age_s, list(self.tracker.groups)):
            return
        ages = {name: now - timed.received for name, timed in self._images.items()}
        if self.watchdog.image_faults(ages):
            return
        measured = {g: self.tracker.measured(g) for g in self.tracker.groups}
        images = {name: timed.value for name, timed in self._images.items()}
        prompt = self.instruction
        fk = self._fk
        decode = self.image_decoder
        embodiment, state_layout = self.embodiment, self.embodiment.state_layout

        # Strategies that guide the next chunk (rtc) add fields for the observation taken now.
        request = getattr(self.strategy, "inference_request", None)
        extra = request(now, self.latency_s) if request is not None and policy_active else {}

        def build() -> Observation:
            state = build_state_vector(embodiment, state_layout, {g: measured[g] for g in state_groups}, fk)
            images_rgb = {name: decode(raw) for name, raw in images.items()}
            return {"images": images_rgb, "state": state, "prompt": prompt, **extra}

        self._request_id += 1
        received = {name: timed.received for name, timed in self._images.items()}
        self.worker.submit(InferenceRequest(self._request_id, self.epoch, now, build, measured, received))

    def _fk(self, group: str, q: np.ndarray) -> np.ndarray:
        if group in self.ik:
            return self.ik[group].forward(q)
        if group not in self._fks:  # ee-pose state with a joint action space: FK only, no solver
            self._fks[group] = arm_fk(self.embodiment, self.embodiment.groups[group])
        return self._fks[group].forward(q)

    def diagnostics(self, now: float) -> Dict[str, Any]:
        """Values for /diagnostics."""
        with self._lock:
            current = self.strategy.current
            return {
                "mode": self.modes.current or "?",
                "requested_mode": self.modes.requested,
                "paused": self.modes.paused,
                "reason": self.modes.reason,
                "faults": self.watchdog.active,
                "watchdog_trips": self.watchdog.trips,
                "inference_latency_ms": self.latency_s * 1e3,
                "last_inference_latency_ms": self.last_latency_s * 1e3,
                "last_infer_ms": self.last_infer_s * 1e3,
                "chunk_age_ms": (now - current.obs_time) * 1e3 if current is not None else float("nan"),
                "observes_a_chunk_late": bool(getattr(self.strategy, "observes_a_chunk_late", False)),
                "queue_depth": self.strategy.queue_depth,
                "chunks_received": self.chunks_received,
                "ik_failures": sum(ik.failures for ik in self.ik.values()),
                "policy_errors": self.errors,
                "last_error": self.last_error,
                "rejected_targets": self.limiter.rejected,
                "clamped_commands": self.limiter.clamped,
                "refused_joint_states": self.tracker.refused,
                "switches": self.modes.switches,
            }
