"""Arm kinematics for the policy node: URDF chain forward kinematics and a checked IK adapter.

Poses are ``x y z qx qy qz qw`` of an arm's ``ee_link`` in the embodiment's ``base_frame``.
:class:`ArmIK` wraps one ``relaxed_ik_bindings.RelaxedIK`` instance per arm and checks every solution
with forward kinematics, because the solver returns its previous solution (not an error) when the
optimizer fails: a solution whose FK misses the goal by more than ``position_tolerance_m`` /
``rotation_tolerance_rad`` is reported as a failure (None) and the caller keeps its last safe target.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from pi0_ros.embodiment import Embodiment, JointGroup
from relaxed_ik_bindings.transforms import matrix_to_quat_xyzw, matrix_to_rotvec, quat_xyzw_to_matrix, rotvec_to_matrix
from relaxed_ik_bindings.urdf_chain import load_chain


def rotation_angle_between(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """Smallest rotation angle (rad) taking orientation ``q_a`` to ``q_b`` (both xyzw)."""
    a = np.asarray(q_a, dtype=np.float64) / np.linalg.norm(q_a)
    b = np.asarray(q_b, dtype=np.float64) / np.linalg.norm(q_b)
    return float(2.0 * np.arccos(np.clip(abs(np.dot(a, b)), 0.0, 1.0)))


def apply_increment(pose: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``pose`` moved by ``delta`` = dx dy dz rx ry rz: position += d, orientation = exp(r) * orientation."""
    out = np.empty(7)
    out[:3] = np.asarray(pose[:3]) + delta[:3]
    out[3:] = matrix_to_quat_xyzw(rotvec_to_matrix(np.asarray(delta[3:6], dtype=np.float64))
                                  @ quat_xyzw_to_matrix(np.asarray(pose[3:], dtype=np.float64)))
    return out


def pose_increment(pose_from: np.ndarray, pose_to: np.ndarray) -> np.ndarray:
    """The ``dx dy dz rx ry rz`` increment with ``apply_increment(pose_from, inc) == pose_to``."""
    rot = quat_xyzw_to_matrix(np.asarray(pose_to[3:])) @ quat_xyzw_to_matrix(np.asarray(pose_from[3:])).T
    return np.concatenate([np.asarray(pose_to[:3]) - pose_from[:3], matrix_to_rotvec(rot)])


class ChainFK:
    """Forward kinematics of one arm as 7-vector poses (the bindings' URDF chain underneath)."""

    def __init__(self, urdf: Path, base_link: str, ee_link: str, joint_names: Tuple[str, ...]):
        self.chain = load_chain(Path(urdf), base_link, ee_link)
        if tuple(self.chain.joint_names) != tuple(joint_names):
            raise ValueError(f"{urdf}: chain joints {self.chain.joint_names} differ from the group's "
                             f"{list(joint_names)}")

    def forward(self, q: np.ndarray) -> np.ndarray:
        """Pose ``x y z qx qy qz qw`` of the ee link for joint positions ``q``."""
        position, rotation = self.chain.forward(np.asarray(q, dtype=np.float64))
        return np.concatenate([position, matrix_to_quat_xyzw(rotation)])


def arm_fk(embodiment: Embodiment, group: JointGroup) -> ChainFK:
    """The FK of one arm group from the embodiment's URDF."""
    return ChainFK(embodiment.robot_description, embodiment.base_frame, group.ee_link, group.joints)


@dataclass
class IKCheck:
    """How IK solutions are accepted; the ``tolerances`` are passed to the solver (6 per chain)."""

    solver_tolerance: float = 0.001  # flat-bottom band of the ranged objectives, all six axes
    position_tolerance_m: float = 0.01  # an FK miss beyond this is an IK failure
    rotation_tolerance_rad: float = 0.05
    # A solution this far (any joint) from the solver's previous one is a jump to another IK branch, not a
    # motion: consecutive goals are one control period apart. Refused (hold) and the solver is put back.
    max_joint_step_rad: float = 1.0
    # An increment beyond these is not one control period's motion (a rotation past pi wraps around to
    # an arbitrary orientation): refused as an IK failure, the goal unchanged.
    max_increment_m: float = 0.5
    max_increment_rad: float = np.pi


class ArmIK:
    """One relaxed-IK solver for one arm, checked by FK, safe to share between threads (one lock)."""

    def __init__(self, group: JointGroup, fk: ChainFK, solver: Any, check: Optional[IKCheck] = None):
        self.group = group
        self.fk = fk
        self.solver = solver
        self.check = check or IKCheck()
        self.lock = threading.RLock()  # the solver is not thread-safe per instance
        self.failures = 0
        self.uses = 0  # resets and solves so far: a caller can tell whether another one moved the solver
        self._goal: Optional[np.ndarray] = None  # our copy of the solver's goal, for increments
        self._last_q: Optional[np.ndarray] = None  # the solver's state: last reset or accepted solution
        self._tol = np.full(6, self.check.solver_tolerance)

    @classmethod
    def from_embodiment(cls, embodiment: Embodiment, group: JointGroup, check: Optional[IKCheck] = None) -> "ArmIK":
        """Build the arm's FK and its ``RelaxedIK`` from the group's ``ik_settings`` (imported lazily)."""
        from relaxed_ik_bindings import RelaxedIK  # heavy, and only needed for ee action spaces

        if group.ik_settings is None:
            raise ValueError(f"group {group.name} has no ik_settings")
        fk = arm_fk(embodiment, group)
        # The bindings' own FK verdict is stricter (solver tolerance + 1 mm); ours decides what we send.
        solver = RelaxedIK(str(group.ik_settings), verify=False)
        chains = solver.settings.chains
        # Settings for another arm (or a chain through the torso) would build and then fail every solve.
        if len(chains) != 1 or (chains[0].base_link, chains[0].ee_link, tuple(chains[0].joint_names)) != (
                embodiment.base_frame, group.ee_link, tuple(group.joints)):
            solver.close()
            raise ValueError(f"{group.ik_settings}: IK chains {[(c.base_link, c.ee_link) for c in chains]} are not "
                             f"{group.name}'s {embodiment.base_frame} -> {group.ee_link} over {list(group.joints)}")
        return cls(group, fk, solver, check)

    def forward(self, q: np.ndarray) -> np.ndarray:
        """FK pose of the arm's ee link."""
        return self.fk.forward(q)

    def reset(self, q: np.ndarray) -> None:
        """Restart the solver from measured joints ``q`` (its goal becomes FK(q))."""
        q = np.asarray(q, dtype=np.float64)
        with self.lock:
            self.uses += 1
            self.solver.reset(q)
            self._goal = self.fk.forward(q)
            self._last_q = q.copy()

    def solve_pose(self, pose: np.ndarray) -> Optional[np.ndarray]:
        """Joints reaching an absolute ee pose, or None when the solver failed (FK check)."""
        pose = np.asarray(pose, dtype=np.float64)
        norm = np.linalg.norm(pose[3:]) if pose.shape == (7,) else 0.0
        # A finite quaternion can still have a norm that overflows to inf (and normalizes to zeros).
        if pose.shape != (7,) or not np.all(np.isfinite(pose)) or not 1e-6 <= norm < np.inf:
            self.failures += 1
            return None
        quat = pose[3:] / norm
        with self.lock:
            self.uses += 1
            try:
                q = np.asarray(self.solver.solve_position(pose[:3], quat, self._tol), dtype=np.float64)
            except (ValueError, RuntimeError):  # refused input or a RelaxedIKError
                q = None
            self._goal = np.concatenate([pose[:3], quat])
            return self._checked(q, self._goal)

    def solve_increment(self, delta: np.ndarray) -> Optional[np.ndarray]:
        """Joints after moving the goal by ``dx dy dz rx ry rz`` (solve_velocity), or None on failure."""
        delta = np.asarray(delta, dtype=np.float64)
        if (delta.shape != (6,) or not np.all(np.isfinite(delta))
                or not np.linalg.norm(delta[:3]) <= self.check.max_increment_m
                or not np.linalg.norm(delta[3:]) <= self.check.max_increment_rad):
            self.failures += 1
            return None
        with self.lock:
            if self._goal is None:
                raise RuntimeError("solve_increment before reset(): the goal is unknown")
            self.uses += 1
            try:
                q = np.asarray(self.solver.solve_velocity(delta[:3], delta[3:], self._tol), dtype=np.float64)
            except (ValueError, RuntimeError):
                q = None
            self._goal = apply_increment(self._goal, delta)
            return self._checked(q, self._goal)

    def _checked(self, q: Optional[np.ndarray], goal: np.ndarray) -> Optional[np.ndarray]:
        if self._acceptable(q, goal):
            self._last_q = q.copy()
            return q
        self.failures += 1
        if self._last_q is not None:
            # A failed optimization leaves the solver wherever it stopped (possibly another branch, or
            # pulled toward an unreachable goal): continue from the last accepted configuration instead,
            # and drop the failed increment from the goal (the solver's goal is FK(last) after a reset).
            self.solver.reset(self._last_q)
            self._goal = self.fk.forward(self._last_q)
        return None

    def _acceptable(self, q: Optional[np.ndarray], goal: np.ndarray) -> bool:
        if q is None or q.shape != (self.group.size,) or not np.all(np.isfinite(q)):
            return False
        # The IK URDF's limits may be wider than the embodiment's: a solution the safety layer would clip
        # is not the pose that FK checked.
        limits = self.group.position_limits
        if np.any(q < limits[:, 0]) or np.any(q > limits[:, 1]):
            return False
        reached = self.fk.forward(q)
        # Written so that NaN (a degenerate goal) fails: NaN > tol is False.
        if not (np.linalg.norm(reached[:3] - goal[:3]) <= self.check.position_tolerance_m
                and rotation_angle_between(reached[3:], goal[3:]) <= self.check.rotation_tolerance_rad):
            return False
        return self._last_q is None or np.max(np.abs(q - self._last_q)) <= self.check.max_joint_step_rad

    def close(self) -> None:
        """Free the native solver."""
        close = getattr(self.solver, "close", None)
        if close is not None:
            close()
