"""The serial chain base link -> end-effector link of a URDF, parsed in Python.

The wrapper needs it to know the number of joints before it calls the library (a wrong length
aborts upstream's process), to check solutions by forward kinematics, and to know joint limits.
It follows the same conventions as relaxed_ik_core: poses are in the base link's frame, a
revolute joint without ``<limit>`` is continuous, fixed joints are folded into their neighbours.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .transforms import rpy_to_matrix

MOVING_JOINT_TYPES = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True)
class ChainJoint:
    """One moving joint; its origin already includes the fixed joints before it."""

    name: str
    joint_type: str  # "revolute", "continuous" or "prismatic"
    origin_rotation: np.ndarray  # (3, 3) in the previous moving joint's frame
    origin_translation: np.ndarray  # (3,)
    axis: np.ndarray  # (3,) unit, in this joint's frame
    lower: float  # -inf for continuous joints
    upper: float  # +inf for continuous joints
    velocity: Optional[float]  # URDF velocity limit, None when not given

    @property
    def has_principal_axis(self) -> bool:
        """Whether the axis is exactly +-x, +-y or +-z (the only axes upstream handles)."""
        return sorted(abs(float(v)) for v in self.axis) == [0.0, 0.0, 1.0]


class KinematicChain:
    """Moving joints between a base link and an ee link, with forward kinematics."""

    def __init__(
        self,
        base_link: str,
        ee_link: str,
        joints: Tuple[ChainJoint, ...],
        tip_rotation: np.ndarray,
        tip_translation: np.ndarray,
    ) -> None:
        self.base_link = base_link
        self.ee_link = ee_link
        self.joints = joints
        self.lower = np.array([j.lower for j in joints])
        self.upper = np.array([j.upper for j in joints])
        self.lower_list = self.lower.tolist()
        self.upper_list = self.upper.tolist()
        self.velocity_limits = np.array([np.inf if j.velocity is None else j.velocity for j in joints])
        self._steps = tuple(_step(j) for j in joints)
        self._tip = (tuple(float(v) for v in np.asarray(tip_rotation).ravel()),
                     tuple(float(v) for v in np.asarray(tip_translation)))

    @property
    def dof(self) -> int:
        """Number of moving joints."""
        return len(self.joints)

    @property
    def joint_names(self) -> List[str]:
        """Moving joint names, base to tip."""
        return [j.name for j in self.joints]

    @property
    def has_principal_axes(self) -> bool:
        """Whether every joint axis is +-x, +-y or +-z."""
        return all(j.has_principal_axis for j in self.joints)

    def forward(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Position (3,) and rotation matrix (3, 3) of the ee link in the base frame."""
        values = np.asarray(q, dtype=np.float64).reshape(self.dof).tolist()
        position, rotation = self.forward_scalar(values)
        return np.array(position), np.array(rotation).reshape(3, 3)

    def forward_scalar(self, q: Sequence[float]) -> Tuple[List[float], List[float]]:
        """Forward kinematics on plain floats: position [x, y, z] and the row-major rotation
        matrix [r00, r01, ..., r22]. For 7 joints this is several times faster than small numpy
        operations, and it runs after every solve to check the answer."""
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
        px = py = pz = 0.0
        for (origin, (tx, ty, tz), kind, axis), value in zip(self._steps, q, strict=True):
            px += r00 * tx + r01 * ty + r02 * tz
            py += r10 * tx + r11 * ty + r12 * tz
            pz += r20 * tx + r21 * ty + r22 * tz
            if origin is not None:
                o00, o01, o02, o10, o11, o12, o20, o21, o22 = origin
                r00, r01, r02 = (r00 * o00 + r01 * o10 + r02 * o20, r00 * o01 + r01 * o11 + r02 * o21,
                                 r00 * o02 + r01 * o12 + r02 * o22)
                r10, r11, r12 = (r10 * o00 + r11 * o10 + r12 * o20, r10 * o01 + r11 * o11 + r12 * o21,
                                 r10 * o02 + r11 * o12 + r12 * o22)
                r20, r21, r22 = (r20 * o00 + r21 * o10 + r22 * o20, r20 * o01 + r21 * o11 + r22 * o21,
                                 r20 * o02 + r21 * o12 + r22 * o22)
            if kind == _PRISMATIC:
                ax, ay, az = axis
                px += (r00 * ax + r01 * ay + r02 * az) * value
                py += (r10 * ax + r11 * ay + r12 * az) * value
                pz += (r20 * ax + r21 * ay + r22 * az) * value
                continue
            if kind == _GENERAL_AXIS:
                m = _rodrigues(axis, value)
                r00, r01, r02 = (r00 * m[0] + r01 * m[3] + r02 * m[6], r00 * m[1] + r01 * m[4] + r02 * m[7],
                                 r00 * m[2] + r01 * m[5] + r02 * m[8])
                r10, r11, r12 = (r10 * m[0] + r11 * m[3] + r12 * m[6], r10 * m[1] + r11 * m[4] + r12 * m[7],
                                 r10 * m[2] + r11 * m[5] + r12 * m[8])
                r20, r21, r22 = (r20 * m[0] + r21 * m[3] + r22 * m[6], r20 * m[1] + r21 * m[4] + r22 * m[7],
                                 r20 * m[2] + r21 * m[5] + r22 * m[8])
                continue
            # Principal axis (kind 0/1/2 = x/y/z, axis holds its sign): R * R_axis(angle) only mixes
            # two columns.
            c = math.cos(value)
            s = math.sin(value) * axis
            if kind == 0:
                r01, r02 = r01 * c + r02 * s, r02 * c - r01 * s
                r11, r12 = r11 * c + r12 * s, r12 * c - r11 * s
                r21, r22 = r21 * c + r22 * s, r22 * c - r21 * s
            elif kind == 1:
                r00, r02 = r00 * c - r02 * s, r02 * c + r00 * s
                r10, r12 = r10 * c - r12 * s, r12 * c + r10 * s
                r20, r22 = r20 * c - r22 * s, r22 * c + r20 * s
            else:
                r00, r01 = r00 * c + r01 * s, r01 * c - r00 * s
                r10, r11 = r10 * c + r11 * s, r11 * c - r10 * s
                r20, r21 = r20 * c + r21 * s, r21 * c - r20 * s
        (o00, o01, o02, o10, o11, o12, o20, o21, o22), (tx, ty, tz) = self._tip
        position = [px + r00 * tx + r01 * ty + r02 * tz, py + r10 * tx + r11 * ty + r12 * tz,
                    pz + r20 * tx + r21 * ty + r22 * tz]
        rotation = [
            r00 * o00 + r01 * o10 + r02 * o20, r00 * o01 + r01 * o11 + r02 * o21, r00 * o02 + r01 * o12 + r02 * o22,
            r10 * o00 + r11 * o10 + r12 * o20, r10 * o01 + r11 * o11 + r12 * o21, r10 * o02 + r11 * o12 + r12 * o22,
            r20 * o00 + r21 * o10 + r22 * o20, r20 * o01 + r21 * o11 + r22 * o21, r20 * o02 + r21 * o12 + r22 * o22,
        ]
        return position, rotation


_PRISMATIC = 3
_GENERAL_AXIS = 4


def _step(joint: ChainJoint) -> tuple:
    """Plain-float description of one joint for forward_scalar: (origin rotation or None when it is
    the identity, origin translation, kind, axis data)."""
    rotation = np.asarray(joint.origin_rotation, dtype=np.float64)
    origin = None if np.array_equal(rotation, np.eye(3)) else tuple(float(v) for v in rotation.ravel())
    translation = tuple(float(v) for v in joint.origin_translation)
    axis = tuple(float(v) for v in joint.axis)
    if joint.joint_type == "prismatic":
        return origin, translation, _PRISMATIC, axis
    if joint.has_principal_axis:
        index = int(np.argmax(np.abs(joint.axis)))
        return origin, translation, index, math.copysign(1.0, axis[index])
    return origin, translation, _GENERAL_AXIS, axis


def _rodrigues(axis: Tuple[float, float, float], angle: float) -> Tuple[float, ...]:
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return (t * x * x + c, t * x * y - s * z, t * x * z + s * y,
            t * x * y + s * z, t * y * y + c, t * y * z - s * x,
            t * x * z - s * y, t * y * z + s * x, t * z * z + c)


def _floats(text: Optional[str], count: int, what: str) -> np.ndarray:
    parts = (text or "").split()
    if len(parts) != count:
        raise ValueError(f"{what}: expected {count} numbers, got {text!r}")
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not {count} numbers") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{what}: {text!r} holds a non-finite number")
    return values


def _float(text: Optional[str], default: float, what: str) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what}: {text!r} is not finite")
    return value


def parse_chain(urdf_text: str, base_link: str, ee_link: str, source: str = "URDF") -> KinematicChain:
    """Chain base_link -> ee_link of a URDF document; ValueError with the reason when impossible."""
    try:
        robot = ET.fromstring(urdf_text)
    except ET.ParseError as error:
        raise ValueError(f"{source} is not valid XML: {error}") from None
    if robot.tag != "robot":
        raise ValueError(f"{source} has no <robot> root element")
    links = {link.get("name") for link in robot.findall("link")}
    joints_by_child: Dict[str, ET.Element] = {}
    for joint in robot.findall("joint"):
        child = joint.find("child")
        parent = joint.find("parent")
        if child is None or parent is None or child.get("link") is None or parent.get("link") is None:
            raise ValueError(f"{source}: joint {joint.get('name')!r} lacks <parent link> or <child link>")
        if child.get("link") in joints_by_child:
            raise ValueError(f"{source}: link {child.get('link')!r} is the child of two joints")
        joints_by_child[child.get("link")] = joint
    for role, link in (("base", base_link), ("ee", ee_link)):
        if link not in links:
            raise ValueError(f"{source}: {role} link {link!r} is not a link of the URDF")

    path: List[ET.Element] = []
    link = ee_link
    while link != base_link:
        joint = joints_by_child.get(link)
        if joint is None or len(path) > len(joints_by_child):
            raise ValueError(f"{source}: ee link {ee_link!r} is not below base link {base_link!r}")
        path.append(joint)
        link = joint.find("parent").get("link")

    pending_rotation, pending_translation = np.eye(3), np.zeros(3)
    chain_joints: List[ChainJoint] = []
    for joint in reversed(path):
        name = joint.get("name", "?")
        joint_type = joint.get("type", "")
        where = f"{source} joint {name!r}"
        origin = joint.find("origin")
        translation = np.zeros(3)
        rotation = np.eye(3)
        if origin is not None:
            if origin.get("xyz") is not None:
                translation = _floats(origin.get("xyz"), 3, f"{where} origin xyz")
            if origin.get("rpy") is not None:
                rotation = rpy_to_matrix(_floats(origin.get("rpy"), 3, f"{where} origin rpy"))
        translation = pending_translation + pending_rotation @ translation
        rotation = pending_rotation @ rotation
        if joint_type == "fixed":
            pending_rotation, pending_translation = rotation, translation
            continue
        if joint_type not in MOVING_JOINT_TYPES:
            raise ValueError(f"{where}: type {joint_type!r} is not supported in an IK chain")
        axis_element = joint.find("axis")
        axis = np.array([1.0, 0.0, 0.0])
        if axis_element is not None and axis_element.get("xyz") is not None:
            axis = _floats(axis_element.get("xyz"), 3, f"{where} axis")
        norm = float(np.linalg.norm(axis))
        if norm < 1e-9:
            raise ValueError(f"{where}: zero axis")
        limit = joint.find("limit")
        velocity = None
        if limit is not None and limit.get("velocity") is not None:
            velocity = _float(limit.get("velocity"), 0.0, f"{where} velocity limit")
        if joint_type == "prismatic" and limit is None:
            raise ValueError(f"{where}: prismatic joint without <limit>")
        if joint_type == "continuous" or limit is None:
            # Upstream treats a revolute joint without <limit> as continuous.
            joint_type, lower, upper = "continuous", -math.inf, math.inf
        else:
            lower = _float(limit.get("lower"), 0.0, f"{where} lower limit")
            upper = _float(limit.get("upper"), 0.0, f"{where} upper limit")
            if lower > upper:
                raise ValueError(f"{where}: lower limit {lower} is above upper limit {upper}")
        chain_joints.append(
            ChainJoint(name, joint_type, rotation, translation, axis / norm, lower, upper, velocity)
        )
        pending_rotation, pending_translation = np.eye(3), np.zeros(3)
    if not chain_joints:
        raise ValueError(f"{source}: chain {base_link!r} -> {ee_link!r} has no moving joint")
    return KinematicChain(base_link, ee_link, tuple(chain_joints), pending_rotation, pending_translation)


def load_chain(urdf_path: Path, base_link: str, ee_link: str) -> KinematicChain:
    """Chain base_link -> ee_link of the URDF file at urdf_path."""
    try:
        text = Path(urdf_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"URDF file {str(urdf_path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read URDF {str(urdf_path)!r}: {error}") from None
    return parse_chain(text, base_link, ee_link, source=f"URDF {str(urdf_path)!r}")
