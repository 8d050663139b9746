"""Arm kinematics for the policy node: URDF chain forward kinematics and a checked IK adapter.

Poses are ``x y z qx qy qz qw`` of an arm's ``ee_link`` in the embodiment's ``base_frame``.
:class:`ArmIK` wraps one ``relaxed_ik_bindings.RelaxedIK`` instance per arm and checks every solution
with forward kinematics, because the solver returns its previous solution (not an error) when the
optimizer fails: a solution whose FK misses the goal by more than ``position_tolerance_m`` /
``rotation_tolerance_rad`` is reported as a failure (None) and the caller keeps its last safe target.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from pi0_ros.embodiment import Embodiment, JointGroup


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    c, s, t = np.cos(angle), np.sin(angle), 1.0 - np.cos(angle)
    return np.array([[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                     [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                     [t * x * z - s * y, t * y * z + s * x, t * z * z + c]])


def matrix_to_quat_xyzw(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), normalized here, -> rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_angle_between(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """Smallest rotation angle (rad) taking orientation ``q_a`` to ``q_b`` (both xyzw)."""
    a = np.asarray(q_a, dtype=np.float64) / np.linalg.norm(q_a)
    b = np.asarray(q_b, dtype=np.float64) / np.linalg.norm(q_b)
    return float(2.0 * np.arccos(np.clip(abs(np.dot(a, b)), 0.0, 1.0)))


def apply_increment(pose: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``pose`` moved by ``delta`` = dx dy dz rx ry rz: position += d, orientation = exp(r) * orientation."""
    rotvec = np.asarray(delta[3:6], dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    rot = _axis_angle_matrix(rotvec / angle, angle) if angle > 1e-12 else np.eye(3)
    out = np.empty(7)
    out[:3] = pose[:3] + delta[:3]
    out[3:] = matrix_to_quat_xyzw(rot @ quat_xyzw_to_matrix(pose[3:]))
    return out


def pose_increment(pose_from: np.ndarray, pose_to: np.ndarray) -> np.ndarray:
    """The ``dx dy dz rx ry rz`` increment with ``apply_increment(pose_from, inc) == pose_to``."""
    rot = quat_xyzw_to_matrix(pose_to[3:]) @ quat_xyzw_to_matrix(pose_from[3:]).T
    angle = float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-9:
        rotvec = np.zeros(3)
    else:
        axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
        norm = np.linalg.norm(axis)
        if norm < 1e-9:  # angle near pi: axis from the symmetric part
            axis = np.sqrt(np.clip((np.diag(rot) + 1.0) / 2.0, 0.0, None))
            norm = np.linalg.norm(axis)
        rotvec = axis / norm * angle
    return np.concatenate([np.asarray(pose_to[:3]) - pose_from[:3], rotvec])


@dataclass(frozen=True)
class _ChainJoint:
    origin: np.ndarray  # 4x4 parent -> joint frame at zero angle
    axis: Optional[np.ndarray]  # None for fixed joints
    name: str


class ChainFK:
    """Forward kinematics of the serial chain from ``base_link`` to ``ee_link`` of a URDF."""

    def __init__(self, urdf: Path, base_link: str, ee_link: str, joint_names: Tuple[str, ...]):
        root = ET.parse(urdf).getroot()
        by_child = {j.find("child").get("link"): j for j in root.findall("joint")}
        chain: List[_ChainJoint] = []
        link = ee_link
        while link != base_link:
            joint = by_child.get(link)
            if joint is None:
                raise ValueError(f"{urdf}: no chain from {base_link!r} to {ee_link!r}")
            origin = joint.find("origin")
            xyz = [float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]
            rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
            tf = np.eye(4)
            tf[:3, :3] = _rpy_matrix(*rpy)
            tf[:3, 3] = xyz
            axis = None
            if joint.get("type") in ("revolute", "continuous"):
                axis_el = joint.find("axis")
                axis = np.array([float(v) for v in (axis_el.get("xyz") if axis_el is not None else "1 0 0").split()])
                axis /= np.linalg.norm(axis)
            elif joint.get("type") != "fixed":
                raise ValueError(f"{urdf}: joint {joint.get('name')!r} of type {joint.get('type')} unsupported")
            chain.append(_ChainJoint(tf, axis, joint.get("name")))
            link = joint.find("parent").get("link")
        self.chain = list(reversed(chain))
        movable = [j.name for j in self.chain if j.axis is not None]
        if tuple(movable) != tuple(joint_names):
            raise ValueError(f"{urdf}: chain joints {movable} differ from the group's {list(joint_names)}")

    def forward(self, q: np.ndarray) -> np.ndarray:
        """Pose ``x y z qx qy qz qw`` of the ee link for joint positions ``q``."""
        tf = np.eye(4)
        i = 0
        for joint in self.chain:
            tf = tf @ joint.origin
            if joint.axis is not None:
                rot = np.eye(4)
                rot[:3, :3] = _axis_angle_matrix(joint.axis, float(q[i]))
                tf = tf @ rot
                i += 1
        return np.concatenate([tf[:3, 3], matrix_to_quat_xyzw(tf[:3, :3])])


def arm_fk(embodiment: Embodiment, group: JointGroup) -> ChainFK:
    """The FK of one arm group from the embodiment's URDF."""
    return ChainFK(embodiment.robot_description, embodiment.base_frame, group.ee_link, group.joints)


@dataclass
class IKCheck:
    """How IK solutions are accepted; the ``tolerances`` are passed to the solver (6 per chain)."""

    solver_tolerance: float = 0.001  # flat-bottom band of the ranged objectives, all six axes
    position_tolerance_m: float = 0.01  # an FK miss beyond this is an IK failure
    rotation_tolerance_rad: float = 0.05


class ArmIK:
    """One relaxed-IK solver for one arm, checked by FK, safe to share between threads (one lock)."""

    def __init__(self, group: JointGroup, fk: ChainFK, solver: Any, check: Optional[IKCheck] = None):
        self.group = group
        self.fk = fk
        self.solver = solver
        self.check = check or IKCheck()
        self.lock = threading.RLock()  # the solver is not thread-safe per instance
        self.failures = 0
        self._goal: Optional[np.ndarray] = None  # our copy of the solver's goal, for increments
        self._tol = np.full(6, self.check.solver_tolerance)

    @classmethod
    def from_embodiment(cls, embodiment: Embodiment, group: JointGroup, check: Optional[IKCheck] = None) -> "ArmIK":
        """Build the arm's FK and its ``RelaxedIK`` from the group's ``ik_settings`` (imported lazily)."""
        from relaxed_ik_bindings import RelaxedIK  # heavy, and only needed for ee action spaces

        if group.ik_settings is None:
            raise ValueError(f"group {group.name} has no ik_settings")
        return cls(group, arm_fk(embodiment, group), RelaxedIK(str(group.ik_settings)), check)

    def forward(self, q: np.ndarray) -> np.ndarray:
        """FK pose of the arm's ee link."""
        return self.fk.forward(q)

    def reset(self, q: np.ndarray) -> None:
        """Restart the solver from measured joints ``q`` (its goal becomes FK(q))."""
        q = np.asarray(q, dtype=np.float64)
        with self.lock:
            self.solver.reset(q)
            self._goal = self.fk.forward(q)

    def solve_pose(self, pose: np.ndarray) -> Optional[np.ndarray]:
        """Joints reaching an absolute ee pose, or None when the solver failed (FK check)."""
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-6:
            self.failures += 1
            return None
        quat = pose[3:] / np.linalg.norm(pose[3:])
        with self.lock:
            try:
                q = np.asarray(self.solver.solve_position(pose[:3], quat, self._tol), dtype=np.float64)
            except (ValueError, RuntimeError):
                q = None
            self._goal = np.concatenate([pose[:3], quat])
            return self._checked(q, self._goal)

    def solve_increment(self, delta: np.ndarray) -> Optional[np.ndarray]:
        """Joints after moving the goal by ``dx dy dz rx ry rz`` (solve_velocity), or None on failure."""
        delta = np.asarray(delta, dtype=np.float64)
        if delta.shape != (6,) or not np.all(np.isfinite(delta)):
            self.failures += 1
            return None
        with self.lock:
            if self._goal is None:
                raise RuntimeError("solve_increment before reset(): the goal is unknown")
            try:
                q = np.asarray(self.solver.solve_velocity(delta[:3], delta[3:], self._tol), dtype=np.float64)
            except (ValueError, RuntimeError):
                q = None
            self._goal = apply_increment(self._goal, delta)
            return self._checked(q, self._goal)

    def _checked(self, q: Optional[np.ndarray], goal: np.ndarray) -> Optional[np.ndarray]:
        if q is None or q.shape != (self.group.size,) or not np.all(np.isfinite(q)):
            self.failures += 1
            return None
        reached = self.fk.forward(q)
        if (np.linalg.norm(reached[:3] - goal[:3]) > self.check.position_tolerance_m
                or rotation_angle_between(reached[3:], goal[3:]) > self.check.rotation_tolerance_rad):
            self.failures += 1
            return None
        return q

    def close(self) -> None:
        """Free the native solver."""
        close = getattr(self.solver, "close", None)
        if close is not None:
            close()
