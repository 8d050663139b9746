"""Validation of joint targets as they arrive on the controller topics (names, positions, velocities).

Rules (the same for arms, torso and grippers):
- No names: ``position`` must hold exactly one value per joint of the group, in the group's order.
- Names: matched by name in any order; a subset is allowed (unnamed joints keep their last target);
  names must be unique, known to the group and as many as the positions.
- ``velocity`` (per-joint maximum speed) is empty or one value per position; a value <= 0 means
  "unspecified" (the joint's velocity limit), values above the limit are capped by the tracker.
- Every number must be finite, and every position within the group's limits (a hair of slack,
  ``LIMIT_TOLERANCE``, absorbs float round-off of targets computed exactly at a limit).
A message that breaks any rule is rejected whole with a :class:`TargetRejected` naming the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from pi0_ros.embodiment import JointGroup

LIMIT_TOLERANCE = 1e-6


class TargetRejected(ValueError):
    """A target message is malformed; the message says why."""


@dataclass(frozen=True)
class JointTarget:
    """A validated target: joint indices within the group, positions and optional speed caps."""

    indices: np.ndarray
    positions: np.ndarray
    speeds: Optional[np.ndarray] = None


def validate_target(group: JointGroup, names: Sequence[str], positions: Sequence[float],
                    velocities: Sequence[float] = ()) -> JointTarget:
    """Check one target message for ``group``; returns it in group indices or raises TargetRejected."""
    names = list(names)
    try:
        pos = np.asarray(positions, dtype=np.float64).reshape(-1)
        vel = np.asarray(velocities, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TargetRejected(f"{group.name}: positions and velocities must be numbers") from None
    if pos.size == 0:
        raise TargetRejected(f"{group.name}: empty position")
    if names:
        if len(names) != pos.size:
            raise TargetRejected(f"{group.name}: {len(names)} names but {pos.size} positions")
        if len(set(names)) != len(names):
            raise TargetRejected(f"{group.name}: duplicate joint names {names}")
        unknown = [n for n in names if n not in group.joints]
        if unknown:
            raise TargetRejected(f"{group.name}: unknown joints {unknown}; expected names from {list(group.joints)}")
        indices = np.array([group.joints.index(n) for n in names], dtype=np.intp)
    else:
        if pos.size != group.size:
            raise TargetRejected(f"{group.name}: {pos.size} unnamed positions, the group has {group.size} joints")
        indices = np.arange(group.size, dtype=np.intp)
    if vel.size not in (0, pos.size):
        raise TargetRejected(f"{group.name}: {vel.size} velocities for {pos.size} positions")
    if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(vel)):
        raise TargetRejected(f"{group.name}: non-finite value in position {pos.tolist()} or velocity {vel.tolist()}")
    lower, upper = group.position_limits[indices, 0], group.position_limits[indices, 1]
    outside = (pos < lower - LIMIT_TOLERANCE) | (pos > upper + LIMIT_TOLERANCE)
    if np.any(outside):
        bad = [f"{group.joints[i]}={p:.4g} not in [{lo:.4g}, {hi:.4g}]"
               for i, p, lo, hi, o in zip(indices, pos, lower, upper, outside, strict=True) if o]
        raise TargetRejected(f"{group.name}: outside limits: " + ", ".join(bad))
    return JointTarget(indices=indices, positions=np.clip(pos, lower, upper), speeds=vel if vel.size else None)
