"""Did the IK answer reach its goal? A forward-kinematics check of a joint vector against goal
poses with ranged (flat-bottomed) tolerances, measured as upstream ranged-ik measures them:
position and rotation errors along the goal frame's axes, counting only what lies outside the
tolerance. Plain-float math: it runs after every solve, and numpy's per-call overhead would
dominate for 3-vectors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .urdf_chain import KinematicChain


@dataclass(frozen=True)
class SolutionCheck:
    """Verdict on one solution. ``ok`` is what a safety layer should act on."""

    ok: bool
    position_errors: Tuple[float, ...]  # per chain, metres outside the position tolerance
    rotation_errors: Tuple[float, ...]  # per chain, radians outside the rotation tolerance
    within_limits: bool
    unchanged: bool  # the library returned exactly the previous solution
    reason: str  # empty when ok


def _outside_norm(errors: Sequence[float], tolerances: Sequence[float]) -> float:
    total = 0.0
    for error, tolerance in zip(errors, tolerances, strict=True):
        excess = abs(error) - tolerance
        if excess > 0.0:
            total += excess * excess
    return math.sqrt(total)


def _rotation_vector(m: Sequence[float]) -> Tuple[float, float, float]:
    """Rotation vector of a row-major 3x3 rotation matrix (angle in [0, pi])."""
    trace = m[0] + m[4] + m[8]
    if trace > max(m[0], m[4], m[8]):
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        x, y, z, w = (m[7] - m[5]) / s, (m[2] - m[6]) / s, (m[3] - m[1]) / s, 0.25 * s
    elif m[0] >= m[4] and m[0] >= m[8]:
        s = 2.0 * math.sqrt(max(1.0 + m[0] - m[4] - m[8], 0.0))
        x, y, z, w = 0.25 * s, (m[1] + m[3]) / s, (m[2] + m[6]) / s, (m[7] - m[5]) / s
    elif m[4] >= m[8]:
        s = 2.0 * math.sqrt(max(1.0 + m[4] - m[0] - m[8], 0.0))
        x, y, z, w = (m[1] + m[3]) / s, 0.25 * s, (m[5] + m[7]) / s, (m[2] - m[6]) / s
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[8] - m[0] - m[4], 0.0))
        x, y, z, w = (m[2] + m[6]) / s, (m[5] + m[7]) / s, 0.25 * s, (m[3] - m[1]) / s
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    sin_half = math.sqrt(x * x + y * y + z * z)
    if sin_half < 1e-12:
        return 2.0 * x, 2.0 * y, 2.0 * z
    scale = 2.0 * math.atan2(sin_half, w) / sin_half
    return x * scale, y * scale, z * scale


def pose_errors(
    chain: KinematicChain,
    q: Sequence[float],
    goal_position: Sequence[float],
    goal_quaternion_xyzw: Sequence[float],
    tolerance: Sequence[float],
) -> Tuple[float, float]:
    """Position (m) and rotation (rad) error of chain at q outside the 6 tolerances."""
    position, r = chain.forward_scalar(q)
    x, y, z, w = goal_quaternion_xyzw
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    # Rows of the goal rotation's transpose = columns of the goal rotation.
    g = (
        1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w),
        2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w),
        2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y),
    )
    dx, dy, dz = position[0] - goal_position[0], position[1] - goal_position[1], position[2] - goal_position[2]
    position_error = (g[0] * dx + g[1] * dy + g[2] * dz, g[3] * dx + g[4] * dy + g[5] * dz,
                      g[6] * dx + g[7] * dy + g[8] * dz)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r
    g0, g1, g2, g3, g4, g5, g6, g7, g8 = g
    relative = (
        g0 * r00 + g1 * r10 + g2 * r20, g0 * r01 + g1 * r11 + g2 * r21, g0 * r02 + g1 * r12 + g2 * r22,
        g3 * r00 + g4 * r10 + g5 * r20, g3 * r01 + g4 * r11 + g5 * r21, g3 * r02 + g4 * r12 + g5 * r22,
        g6 * r00 + g7 * r10 + g8 * r20, g6 * r01 + g7 * r11 + g8 * r21, g6 * r02 + g7 * r12 + g8 * r22,
    )
    rotation_error = _rotation_vector(relative)
    return _outside_norm(position_error, tolerance[:3]), _outside_norm(rotation_error, tolerance[3:])


def check_solution(
    chains: Sequence[KinematicChain],
    q: np.ndarray,
    goal_positions: np.ndarray,
    goal_quaternions_xyzw: np.ndarray,
    tolerances: np.ndarray,
    position_slack: float,
    rotation_slack: float,
    previous: np.ndarray,
) -> SolutionCheck:
    """Check q (all chains concatenated) against per-chain goals (3N, 4N) and tolerances (6N)."""
    values = q.tolist()
    positions, quaternions, tols = goal_positions.tolist(), goal_quaternions_xyzw.tolist(), tolerances.tolist()
    finite = all(math.isfinite(v) for v in values)
    within_limits = finite
    position_errors: List[float] = []
    rotation_errors: List[float] = []
    offset = 0
    for i, chain in enumerate(chains):
        joints = values[offset : offset + chain.dof]
        offset += chain.dof
        if not finite:
            position_errors.append(math.inf)
            rotation_errors.append(math.inf)
            continue
        # 1e-9 absorbs the rounding of a solution clamped exactly onto a limit.
        for value, low, high in zip(joints, chain.lower_list, chain.upper_list, strict=True):
            if value < low - 1e-9 or value > high + 1e-9:
                within_limits = False
        p_err, r_err = pose_errors(chain, joints, positions[3 * i : 3 * i + 3], quaternions[4 * i : 4 * i + 4],
                                   tols[6 * i : 6 * i + 6])
        position_errors.append(p_err)
        rotation_errors.append(r_err)
    unchanged = values == previous.tolist()
    reasons = []
    if not finite:
        reasons.append("solution is not finite")
    elif not within_limits:
        reasons.append("solution is outside the joint limits")
    for i, (p_err, r_err) in enumerate(zip(position_errors, rotation_errors, strict=True)):
        if finite and (p_err > position_slack or r_err > rotation_slack):
            reasons.append(
                f"chain {i} misses its goal by {p_err:.4g} m / {r_err:.4g} rad"
                + (" (the library returned the previous solution)" if unchanged else "")
            )
    return SolutionCheck(not reasons, tuple(position_errors), tuple(rotation_errors), within_limits, unchanged,
                         "; ".join(reasons))
