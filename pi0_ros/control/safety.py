"""The safety layer every command passes, in policy and teleop mode alike, and the watchdogs.

:class:`SafetyLimiter` turns a wanted target into the command actually sent, per group and tick:

1. NaN/inf targets are rejected: the last safe command is kept (counted in ``rejected``).
2. The target is clamped into the joint position limits and into ``measured +- max_step``
   (the robot's motor protection trips on large jumps between command and position).
3. The step from the last command is limited by the velocity limit (times ``speed_scale`` and the
   bumpless ``ramp``) and the acceleration limit. Braking is never delayed by the acceleration limit:
   any velocity between zero and the previous one is allowed, so a hold cannot overshoot.

4. The command is clamped into the position limits and the ``measured +- max_step`` window once more:
   a last command that the measured position moved away from (arm pushed, feedback back after an
   outage) would otherwise be brought back at bounded speed, with the gap beyond ``max_step`` meanwhile.

:class:`Watchdog` collects the reasons the node must hold; :func:`hold_target` says where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np

from pi0_ros.embodiment import JointGroup


@dataclass
class SafetyConfig:
    """Limits beyond the embodiment's own; every field is a policy-node parameter."""

    speed_scale: float = 0.5  # fraction of the embodiment's velocity limits the node may use
    acceleration_scale: float = 1.0  # fraction of the embodiment's acceleration limits
    max_step_arm_rad: float = 0.25  # max |command - measured| per arm joint
    max_step_gripper: float = 100.0  # max |command - measured| for grippers (stroke units)
    position_margin_rad: float = 0.01  # keep commands this far inside arm joint limits
    ramp_s: float = 1.0  # after a mode switch, speed limits ramp from ramp_start to 1 over this time
    ramp_start: float = 0.1

    def validate(self) -> List[str]:
        """Problems with the values (empty when valid)."""
        problems = []
        for name in ("speed_scale", "acceleration_scale", "ramp_start"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                problems.append(f"{name} must be in (0, 1], got {value}")
        for name in ("max_step_arm_rad", "max_step_gripper"):
            if not getattr(self, name) > 0.0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.position_margin_rad >= 0.0:
            problems.append(f"position_margin_rad must be >= 0, got {self.position_margin_rad}")
        if not self.ramp_s >= 0.0:
            problems.append(f"ramp_s must be >= 0, got {self.ramp_s}")
        return problems


@dataclass
class GroupCommand:
    """One group's command after the safety layer."""

    position: np.ndarray
    speed_limit: np.ndarray  # per joint, what the robot's tracker may use (JointState.velocity)
    clamped: bool = False  # any limit changed the wanted target
    rejected: bool = False  # the wanted target was NaN/inf


@dataclass
class _GroupLimits:
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    max_step: float


@dataclass
class _GroupHistory:
    command: np.ndarray
    velocity: np.ndarray


class SafetyLimiter:
    """Position, step, velocity and acceleration limits with NaN rejection, per group."""

    def __init__(self, groups: Mapping[str, JointGroup], config: SafetyConfig, dt: float):
        problems = config.validate()
        if problems:
            raise ValueError("; ".join(problems))
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self.config = config
        self.dt = dt
        self.limits: Dict[str, _GroupLimits] = {}
        for name, g in groups.items():
            margin = config.position_margin_rad if g.kind != "gripper" else 0.0
            self.limits[name] = _GroupLimits(
                lower=g.position_limits[:, 0] + margin,
                upper=g.position_limits[:, 1] - margin,
                velocity=g.velocity_limits * config.speed_scale,
                acceleration=g.acceleration_limits * config.acceleration_scale,
                max_step=config.max_step_gripper if g.kind == "gripper" else config.max_step_arm_rad,
            )
        self._history: Dict[str, _GroupHistory] = {}
        self.rejected = 0
        self.clamped = 0

    def reset(self, group: str, measured: np.ndarray) -> None:
        """Start the group's command stream from the measured position, at rest (bumpless)."""
        q = np.clip(np.asarray(measured, dtype=np.float64), self.limits[group].lower, self.limits[group].upper)
        self._history[group] = _GroupHistory(q, np.zeros_like(q))

    def last_command(self, group: str) -> Optional[np.ndarray]:
        """The last command issued for a group (None before the first)."""
        history = self._history.get(group)
        return None if history is None else history.command.copy()

    def speed_limits(self, group: str, ramp: float = 1.0) -> np.ndarray:
        """Per-joint speed limits in force (what goes into JointState.velocity)."""
        return self.limits[group].velocity * ramp

    def limit(self, group: str, target: np.ndarray, measured: np.ndarray, ramp: float = 1.0) -> GroupCommand:
        """The command to send for ``target`` given the ``measured`` position (both robot units)."""
        lim = self.limits[group]
        if group not in self._history:
            self.reset(group, measured)
        history = self._history[group]
        wanted = np.asarray(target, dtype=np.float64).reshape(-1)
        rejected = wanted.shape != history.command.shape or not np.all(np.isfinite(wanted))
        if rejected:
            self.rejected += 1
            wanted = history.command.copy()
        measured = np.asarray(measured, dtype=np.float64)
        lower = np.maximum(lim.lower, measured - lim.max_step)
        upper = np.minimum(lim.upper, measured + lim.max_step)
        # Where the windows do not overlap (measured beyond a limit) the position limit wins.
        lower = np.minimum(lower, lim.upper)
        upper = np.maximum(upper, lim.lower)
        goal = np.clip(wanted, lower, upper)
        v_max = lim.velocity * max(ramp, 1e-3)
        velocity = np.clip((goal - history.command) / self.dt, -v_max, v_max)
        dv = lim.acceleration * self.dt
        velocity = np.clip(velocity, np.minimum(history.velocity, 0.0) - dv, np.maximum(history.velocity, 0.0) + dv)
        command = np.clip(history.command + velocity * self.dt, lower, upper)
        clamped = bool(np.any(np.abs(command - wanted) > 1e-9))
        if clamped and not rejected:
            self.clamped += 1
        self._history[group] = _GroupHistory(command, (command - history.command) / self.dt)
        return GroupCommand(command.copy(), v_max, clamped=clamped, rejected=rejected)


@dataclass
class WatchdogConfig:
    """Age limits (seconds) beyond which the node holds."""

    joint_state_max_age_s: float = 0.2
    image_max_age_s: Dict[str, float] = field(default_factory=dict)  # per camera (from the embodiment)
    policy_max_age_s: float = 1.0  # longest time without an executable policy action in policy mode
    teleop_max_age_s: float = 0.5  # longest time without a teleop target in teleop mode

    def validate(self) -> List[str]:
        """Problems with the values (empty when valid): each age must be finite and > 0."""
        ages = {name: getattr(self, name) for name in ("joint_state_max_age_s", "policy_max_age_s", "teleop_max_age_s")}
        ages.update({f"image_max_age_s[{camera}]": age for camera, age in self.image_max_age_s.items()})
        # ``age > nan`` is never true: a NaN (or inf) limit would silently switch the watchdog off.
        return [f"{name} must be finite and > 0, got {age}" for name, age in ages.items()
                if not (np.isfinite(age) and age > 0.0)]


class Watchdog:
    """Collects the faults that force ``hold``; each fault is a short ``kind:detail`` string."""

    def __init__(self, config: WatchdogConfig):
        problems = config.validate()
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        self.trips = 0
        self._active: List[str] = []

    def evaluate(self, faults: List[str]) -> List[str]:
        """Record this tick's faults; counts a trip whenever the set goes from empty to non-empty."""
        if faults and not self._active:
            self.trips += 1
        self._active = list(faults)
        return self._active

    @property
    def active(self) -> List[str]:
        """The faults of the last evaluation."""
        return list(self._active)

    def image_faults(self, ages: Mapping[str, float]) -> List[str]:
        """Faults for cameras whose newest image is older than its limit (or missing)."""
        found = []
        for camera, limit in self.config.image_max_age_s.items():
            age = ages.get(camera, float("inf"))
            if age > limit:
                found.append(f"image_stale:{camera}" if np.isfinite(age) else f"image_missing:{camera}")
        return found


def hold_target(measured: Optional[np.ndarray], last_command: Optional[np.ndarray], measured_ok: bool,
                prefer_command: bool = False) -> np.ndarray:
    """Where to hold: the measured position when it can be trusted, else the last safe command.

    ``prefer_command`` (grippers): hold the last safe command whenever there is one. A position-controlled
    gripper closed on an object measures wider than it was commanded; commanding the measured stroke
    would stop the squeeze and drop the object.
    """
    if prefer_command and last_command is not None:
        return np.asarray(last_command, dtype=np.float64).copy()
    if measured is not None and measured_ok:
        return np.asarray(measured, dtype=np.float64).copy()
    if last_command is not None:
        return np.asarray(last_command, dtype=np.float64).copy()
    raise ValueError("nothing to hold: no trusted measurement and no previous command")
