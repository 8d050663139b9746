"""Gripper unit conversion between the policy's units (``policy_range``) and the robot's stroke.

The embodiment maps a gripper's policy range linearly onto its position limits (R1 Pro: 0..1 ->
0..100). State and action use the same mapping, so the recorder and the policy node agree.
"""

from __future__ import annotations

import numpy as np

from pi0_ros.embodiment import JointGroup


def gripper_to_policy(group: JointGroup, stroke: np.ndarray) -> np.ndarray:
    """Robot stroke (``position_limits``) -> policy units (``policy_range``)."""
    lo, hi = group.position_limits[:, 0], group.position_limits[:, 1]
    p_lo, p_hi = group.policy_range
    return p_lo + (np.asarray(stroke, dtype=np.float64) - lo) / (hi - lo) * (p_hi - p_lo)


def gripper_to_robot(group: JointGroup, value: np.ndarray) -> np.ndarray:
    """Policy units (``policy_range``) -> robot stroke (``position_limits``), not clipped."""
    lo, hi = group.position_limits[:, 0], group.position_limits[:, 1]
    p_lo, p_hi = group.policy_range
    return lo + (np.asarray(value, dtype=np.float64) - p_lo) / (p_hi - p_lo) * (hi - lo)
