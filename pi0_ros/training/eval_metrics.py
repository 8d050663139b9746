"""pi0-eval's per-episode measures, ROS-free: command smoothness (jerk) and the language-following case.

- **Jerk** of the commands the policy node sent to the arms while the policy acted: the third finite
  difference of each joint's commanded position at the node's command period, as an RMS over joints and
  time (rad/s^3). Chunk switches that jump show up here; a smooth executor keeps it low.
- **Language following**: an episode is a language-following case when the instruction names an object
  other than the one nearest to the instructed hand when the policy starts (the simulator's ``distances``
  from each arm's grasp point). A policy that ignores the object word goes to the nearest cube and fails
  exactly these episodes.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np


def command_period(times: Sequence[float]) -> Optional[float]:
    """The median spacing of command arrival times (s), or None with fewer than two commands."""
    t = np.asarray(times, dtype=np.float64)
    if t.size < 2:
        return None
    period = float(np.median(np.diff(t)))
    return period if period > 0 else None


def rms_jerk(positions: np.ndarray, period: float) -> Optional[float]:
    """RMS third derivative (rad/s^3) of a ``[steps, joints]`` command stream sampled every ``period`` s.

    Arrival times jitter with the transport, so the node's nominal spacing (the median) is used rather than
    each gap: jerk of the commanded path itself, not of its delivery. None with fewer than four commands.
    """
    q = np.asarray(positions, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] < 4 or not period or period <= 0:
        return None
    third = np.diff(q, n=3, axis=0) / period ** 3
    return float(np.sqrt(np.mean(third ** 2)))


def episode_jerk(commands: Mapping[str, Sequence[tuple]]) -> Optional[float]:
    """RMS jerk over all arm groups of ``{group: [(t, positions), ...]}`` (None when too short).

    Each group's jerk is weighted by its number of jerk samples, so the result is the RMS over every
    joint and step of every group."""
    total, count = 0.0, 0
    for samples in commands.values():
        if len(samples) < 4:
            continue
        times = [t for t, _ in samples]
        period = command_period(times)
        value = rms_jerk(np.stack([np.asarray(p, dtype=np.float64) for _, p in samples]), period or 0.0)
        if value is None:
            continue
        n = (len(samples) - 3) * len(samples[0][1])
        total += value ** 2 * n
        count += n
    return math.sqrt(total / count) if count else None


def nearest_object(task_state: Mapping, arm: str) -> Optional[str]:
    """The object nearest to ``arm``'s grasp point in a task-state message, or None if it has no distances."""
    distances: Dict[str, float] = task_state.get("distances", {}).get(arm, {})
    finite = {name: d for name, d in distances.items() if isinstance(d, (int, float)) and math.isfinite(d)}
    if not finite:
        return None
    return min(finite, key=finite.get)


def is_language_case(task_state: Mapping, arm: str, named_object: str) -> Optional[bool]:
    """True when ``named_object`` is not the object nearest ``arm`` at the start (None: unknown)."""
    nearest = nearest_object(task_state, arm)
    return None if nearest is None else nearest != named_object
