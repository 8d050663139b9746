"""Joint feedback by name, its age and health, and the policy's state vector built from it.

Joint states are matched by joint NAME, never by their position in the message: a driver that
publishes the joints in another order, or extra joints, still maps correctly. A message that cannot
be mapped, carries NaN/inf or puts a joint beyond its limits (by more than a tolerance) is refused with
a reason and leaves the last good reading in place; the group is then reported as faulted until a good
message arrives.

A reading that jumps further from the last good one than the joints' velocity limits allow in the time
between them is held back, not used, until the next reading confirms it: one glitched encoder sample
must not drag the commands (which stay within a step of the measured position) across the workspace,
while a real displacement (the arm pushed, a reset in simulation) is taken one message later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from pi0_ros.control.units import gripper_to_policy
from pi0_ros.embodiment import Embodiment, JointGroup, Layout


@dataclass(frozen=True)
class GroupReading:
    """The latest good feedback of one group, in the group's joint order."""

    positions: np.ndarray
    received: float  # monotonic time of arrival


@dataclass(frozen=True)
class FeedbackPlausibility:
    """What joint feedback may look like before it is believed."""

    limit_tolerance: float = 0.05  # a reading may lie this fraction of the joint's range beyond a limit
    # A reading may differ from the previous one by velocity limit x factor x (arrival gap + slack). Arrival
    # gaps only shrink for messages queued behind a stalled executor, and those are consecutive samples
    # (at most one driver period apart), so the slack covers any driver publishing at 20 Hz or faster.
    jump_speed_factor: float = 1.0
    jump_slack_s: float = 0.05


class RobotStateTracker:
    """Latest joint feedback per group, mapped by name, with ages and faults for refused messages."""

    def __init__(self, groups: Sequence[JointGroup], plausibility: FeedbackPlausibility = FeedbackPlausibility()):
        self.groups: Dict[str, JointGroup] = {g.name: g for g in groups}
        self.plausibility = plausibility
        self._latest: Dict[str, GroupReading] = {}
        self._unconfirmed: Dict[str, GroupReading] = {}  # group -> a jumped reading waiting for the next one
        self._bad: Dict[str, str] = {}  # group -> why its last message was refused
        self.refused = 0
        self.held_back = 0

    def update(self, group: str, names: Sequence[str], positions: Sequence[float], now: float) -> Optional[str]:
        """Take one JointState's names/positions; return None, or why the message was refused."""
        spec = self.groups.get(group)
        if spec is None:
            return f"unknown group {group!r}"
        problem = None
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        if not names:
            # Only a single-value message is unambiguous without names (the gripper stroke).
            if spec.size == 1 and values.size == 1:
                mapped = values.copy()
            else:
                problem = f"{group}: message has no joint names ({values.size} positions); cannot map by name"
        elif len(names) != values.size:
            problem = f"{group}: {len(names)} names but {values.size} positions"
        else:
            index = {name: i for i, name in enumerate(names)}
            missing = [j for j in spec.joints if j not in index]
            repeated = [j for j in spec.joints if list(names).count(j) > 1]
            if missing:
                problem = f"{group}: joints missing from message: {missing}"
            elif repeated:
                problem = f"{group}: joints named more than once in message: {repeated}"
            else:
                mapped = values[[index[j] for j in spec.joints]]
        if problem is None and not np.all(np.isfinite(mapped)):
            problem = f"{group}: non-finite joint position {mapped.tolist()}"
        if problem is None:
            problem = self._beyond_limits(spec, mapped)
        if problem is not None:
            self._bad[group] = problem
            self.refused += 1
            return problem
        self._bad.pop(group, None)
        reading = GroupReading(mapped, now)
        jump = self._implausible_jump(spec, self._latest.get(group), reading)
        pending = self._unconfirmed.get(group)
        if jump is not None and (pending is None or self._implausible_jump(spec, pending, reading) is not None):
            self._unconfirmed[group] = reading
            self.held_back += 1
            return jump
        self._unconfirmed.pop(group, None)
        self._latest[group] = reading
        return None

    def _beyond_limits(self, spec: JointGroup, q: np.ndarray) -> Optional[str]:
        lower, upper = spec.position_limits[:, 0], spec.position_limits[:, 1]
        tolerance = self.plausibility.limit_tolerance * (upper - lower)
        outside = np.flatnonzero((q < lower - tolerance) | (q > upper + tolerance))
        if outside.size == 0:
            return None
        return f"{spec.name}: " + ", ".join(f"{spec.joints[i]} at {q[i]:.4g} beyond its limits "
                                            f"[{lower[i]:.4g}, {upper[i]:.4g}]" for i in outside)

    def _implausible_jump(self, spec: JointGroup, before: Optional[GroupReading], after: GroupReading
                          ) -> Optional[str]:
        """Why ``after`` cannot follow ``before`` at the joints' speeds (None when it can, or without ``before``)."""
        if before is None:
            return None  # the first reading: only the limits apply
        p = self.plausibility
        allowed = spec.velocity_limits * p.jump_speed_factor * (max(after.received - before.received, 0.0)
                                                                + p.jump_slack_s)
        jumped = np.flatnonzero(np.abs(after.positions - before.positions) > allowed)
        if jumped.size == 0:
            return None
        i = int(jumped[0])
        return (f"{spec.name}: {spec.joints[i]} jumped {after.positions[i] - before.positions[i]:+.4g} in "
                f"{after.received - before.received:.3f} s; held back until the next message confirms it")

    def reading(self, group: str) -> Optional[GroupReading]:
        """The latest good reading of a group, or None before the first one."""
        return self._latest.get(group)

    def measured(self, group: str) -> Optional[np.ndarray]:
        """The latest good positions of a group (a copy), or None."""
        reading = self._latest.get(group)
        return None if reading is None else reading.positions.copy()

    def age(self, group: str, now: float) -> float:
        """Seconds since the group's last good message (inf before the first)."""
        reading = self._latest.get(group)
        return float("inf") if reading is None else now - reading.received

    def faults(self, now: float, max_age_s: float, groups: Optional[Sequence[str]] = None) -> List[str]:
        """Why the given groups' feedback cannot be trusted now (empty: all fresh and good)."""
        found = []
        for name in groups if groups is not None else self.groups:
            if name in self._bad:
                found.append(f"joint_state_invalid:{name}")
            age = self.age(name, now)
            if age > max_age_s:
                found.append(f"joint_state_stale:{name}" if np.isfinite(age) else f"joint_state_missing:{name}")
        return found

    def bad_reason(self, group: str) -> Optional[str]:
        """The reason the group's last message was refused, or None."""
        return self._bad.get(group)


FkFunction = Callable[[str, np.ndarray], np.ndarray]  # (arm group, joints) -> pose xyz + quat xyzw


def build_state_vector(
    embodiment: Embodiment, layout: Layout, measured: Mapping[str, np.ndarray], fk: Optional[FkFunction] = None
) -> np.ndarray:
    """The policy's state vector: joints in rad, grippers in policy units, ee poses from FK."""
    state = np.zeros(layout.dim, dtype=np.float32)
    for seg in layout.segments:
        group = embodiment.groups[seg.group]
        q = measured[seg.group]
        if seg.kind == "joint_position":
            state[seg.slice] = q
        elif seg.kind == "gripper":
            state[seg.slice] = gripper_to_policy(group, q)
        elif seg.kind == "ee_pose":
            if fk is None:
                raise ValueError(f"state segment {seg.group}/ee_pose needs forward kinematics")
            state[seg.slice] = fk(seg.group, q)
        else:
            raise ValueError(f"unsupported state kind {seg.kind!r}")
    return state
