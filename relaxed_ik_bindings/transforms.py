"""Rotation helpers in the conventions of the relaxed-IK ABI: quaternions are x, y, z, w and
rotation increments are rotation vectors (axis * angle), both in numpy float64."""

from __future__ import annotations

import math

import numpy as np


def quat_xyzw_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion (x, y, z, w); the quaternion is normalized first."""
    x, y, z, w = (float(v) for v in quaternion)
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not norm > 0.0:
        raise ValueError("zero quaternion has no rotation")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0 of a rotation matrix."""
    m = [[float(v) for v in row] for row in rotation]
    trace = m[0][0] + m[1][1] + m[2][2]
    # Pick the largest of w, x, y, z to divide by (Shepperd's method) so no branch loses precision.
    if trace > max(m[0][0], m[1][1], m[2][2]):
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = [(m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s, 0.25 * s]
    elif m[0][0] >= m[1][1] and m[0][0] >= m[2][2]:
        s = 2.0 * math.sqrt(max(1.0 + m[0][0] - m[1][1] - m[2][2], 0.0))
        q = [0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s, (m[2][1] - m[1][2]) / s]
    elif m[1][1] >= m[2][2]:
        s = 2.0 * math.sqrt(max(1.0 + m[1][1] - m[0][0] - m[2][2], 0.0))
        q = [(m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s, (m[0][2] - m[2][0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2][2] - m[0][0] - m[1][1], 0.0))
        q = [(m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s, (m[1][0] - m[0][1]) / s]
    out = np.array(q)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0.0 else out


def matrix_to_rotvec(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    x, y, z, w = matrix_to_quat_xyzw(rotation)
    sin_half = math.sqrt(x * x + y * y + z * z)
    if sin_half < 1e-12:
        return np.array([2.0 * x, 2.0 * y, 2.0 * z])
    angle = 2.0 * math.atan2(sin_half, w)
    return np.array([x, y, z]) * (angle / sin_half)


def rotvec_to_quat_xyzw(rotation_vector: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation vector."""
    vx, vy, vz = (float(v) for v in rotation_vector)
    angle = math.sqrt(vx * vx + vy * vy + vz * vz)
    if angle < 1e-12:
        q = np.array([0.5 * vx, 0.5 * vy, 0.5 * vz, 1.0])
        return q / np.linalg.norm(q)
    scale = math.sin(0.5 * angle) / angle
    return np.array([vx * scale, vy * scale, vz * scale, math.cos(0.5 * angle)])


def rotvec_to_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (Rodrigues)."""
    return quat_xyzw_to_matrix(rotvec_to_quat_xyzw(rotation_vector))


def quat_multiply_xyzw(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of two quaternions in x, y, z, w order."""
    ax, ay, az, aw = (float(v) for v in a)
    bx, by, bz, bw = (float(v) for v in b)
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes x, y, z) to a rotation matrix: Rz(yaw) Ry(pitch) Rx(roll)."""
    roll, pitch, yaw = (float(v) for v in rpy)
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )
