"""The embodiment description: one YAML file that names the robot's joints, limits, cameras, topics
and the state/action vector layouts a policy uses.

Every consumer (policy node, recorder, simulator, launch graph) goes through :func:`load_embodiment`,
so training-time and deployment-time mappings cannot drift. The loader validates the whole file and
reports every problem at once, each with its key path (``groups.left_arm.position_limits[3]: ...``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pi0_ros.paths import config_path

GROUP_KINDS = ("arm", "gripper", "torso")
CAMERA_TRANSPORTS = {"compressed": ("jpeg", "png"), "raw": ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")}

# Width of one layout segment, per kind; joint kinds take one entry per joint of the group.
EE_POSE_DIM = 7  # x y z qx qy qz qw
EE_DELTA_DIM = 6  # dx dy dz rx ry rz (axis-angle)
STATE_KINDS = ("joint_position", "gripper", "ee_pose")
ACTION_KINDS = ("joint_position", "joint_delta", "ee_pose", "ee_delta", "gripper")



class EmbodimentError(ValueError):
    """The embodiment file is invalid; ``problems`` lists every finding with its key path."""

    def __init__(self, path: Path, problems: Sequence[str]):
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: {len(self.problems)} problem(s):\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class JointGroup:
    """A set of joints commanded together on one controller topic (an arm, a gripper, the torso)."""

    name: str
    kind: str
    joints: Tuple[str, ...]
    position_limits: np.ndarray  # [n, 2] lower, upper
    velocity_limits: np.ndarray  # [n]
    acceleration_limits: np.ndarray  # [n]
    feedback_topic: str
    command_topic: str
    home: np.ndarray  # [n]
    pose_command_topic: Optional[str] = None
    ee_link: Optional[str] = None
    ik_settings: Optional[Path] = None
    finger_joints: Tuple[str, ...] = ()
    policy_range: Tuple[float, float] = (0.0, 1.0)

    @property
    def size(self) -> int:
        """Number of joints in the group."""
        return len(self.joints)


@dataclass(frozen=True)
class Camera:
    """One camera stream as the robot publishes it."""

    name: str
    topic: str
    transport: str
    format: str
    frame: str
    width: int
    height: int
    rate_hz: float
    max_age_s: float


@dataclass(frozen=True)
class Segment:
    """A contiguous slice of a state or action vector that belongs to one group."""

    group: str
    kind: str
    start: int
    dim: int

    @property
    def slice(self) -> slice:
        """The segment's index range in its vector."""
        return slice(self.start, self.start + self.dim)


@dataclass(frozen=True)
class Layout:
    """An ordered list of segments making up a state or action vector."""

    name: str
    segments: Tuple[Segment, ...]

    @property
    def dim(self) -> int:
        """Total vector length."""
        return sum(s.dim for s in self.segments)

    @property
    def delta_mask(self) -> np.ndarray:
        """True for dims that a policy predicts relative to the state at the chunk start."""
        mask = np.zeros(self.dim, dtype=bool)
        for seg in self.segments:
            if seg.kind == "joint_delta":
                mask[seg.slice] = True
        return mask


@dataclass(frozen=True)
class Rates:
    """Loop rates in Hz."""

    control_hz: float
    feedback_hz: float


@dataclass(frozen=True)
class Embodiment:
    """The validated embodiment description."""

    name: str
    path: Path
    robot_description: Path
    base_frame: str
    groups: Dict[str, JointGroup]
    cameras: Dict[str, Camera]
    state_layout: Layout
    action_spaces: Dict[str, Layout]
    rates: Rates
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    def action_layout(self, name: str) -> Layout:
        """The action layout called ``name``; a KeyError lists the known ones."""
        try:
            return self.action_spaces[name]
        except KeyError:
            raise KeyError(f"unknown action space {name!r}; known: {sorted(self.action_spaces)}") from None

    def groups_of_kind(self, kind: str) -> List[JointGroup]:
        """Groups of one kind, in file order."""
        return [g for g in self.groups.values() if g.kind == kind]


def load_embodiment(path: Optional[Path | str] = None) -> Embodiment:
    """Load and validate an embodiment file (default: the package's R1 Pro description)."""
    path = Path(path) if path is not None else config_path("r1pro.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EmbodimentError(path, ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise EmbodimentError(path, [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise EmbodimentError(path, ["top level must be a mapping"])
    return _Parser(path, raw).parse()


class _Parser:
    """Collects problems instead of stopping at the first, so a user fixes a file in one pass."""

    def __init__(self, path: Path, raw: Dict[str, Any]):
        self.path = path
        self.raw = raw
        self.problems: List[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def require(self, mapping: Any, key: str, where: str, kind: type | Tuple[type, ...]) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            self.problem(f"{where}.{key}" if where else key, "missing")
            return None
        value = mapping[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
            self.problem(f"{where}.{key}" if where else key, f"expected {_kind_name(kind)}, got {value!r}")
            return None
        return value

    def parse(self) -> Embodiment:
        raw = self.raw
        name = self.require(raw, "name", "", str) or "?"
        base_frame = self.require(raw, "base_frame", "", str) or "?"
        description = self.require(raw, "robot_description", "", str)
        robot_description = (self.path.parent / description) if description else self.path
        urdf_joints, urdf_links = self.read_urdf(robot_description) if description else (None, None)
        if urdf_links is not None and base_frame not in urdf_links:
            self.problem("base_frame", f"link {base_frame!r} not in {robot_description.name}")

        groups = self.parse_groups(raw.get("groups"), urdf_joints, urdf_links)
        cameras = self.parse_cameras(raw.get("cameras"), urdf_links)
        state_layout = self.parse_layout("state_layout", raw.get("state_layout"), groups, STATE_KINDS)
        action_spaces: Dict[str, Layout] = {}
        spaces = raw.get("action_spaces")
        if not isinstance(spaces, dict) or not spaces:
            self.problem("action_spaces", "must be a non-empty mapping of name -> layout")
        else:
            for space_name, segments in spaces.items():
                action_spaces[space_name] = self.parse_layout(
                    f"action_spaces.{space_name}", segments, groups, ACTION_KINDS
                )
        rates = self.parse_rates(raw.get("rates"))
        self.check_unique_topics(groups, cameras)
        if self.problems:
            raise EmbodimentError(self.path, self.problems)
        return Embodiment(
            name=name,
            path=self.path,
            robot_description=robot_description,
            base_frame=base_frame,
            groups=groups,
            cameras=cameras,
            state_layout=state_layout,
            action_spaces=action_spaces,
            rates=rates,
            raw=raw,
        )

    def read_urdf(self, urdf: Path) -> Tuple[Optional[set], Optional[set]]:
        try:
            root = ET.parse(urdf).getroot()
        except (OSError, ET.ParseError) as exc:
            self.problem("robot_description", f"cannot read URDF {urdf}: {exc}")
            return None, None
        joints = {j.get("name") for j in root.findall("joint")}
        links = {link.get("name") for link in root.findall("link")}
        return joints, links

    def parse_groups(self, groups_raw: Any, urdf_joints: Optional[set], urdf_links: Optional[set]) -> Dict:
        groups: Dict[str, JointGroup] = {}
        if not isinstance(groups_raw, dict) or not groups_raw:
            self.problem("groups", "must be a non-empty mapping of name -> group")
            return groups
        seen_joints: Dict[str, str] = {}
        for gname, g in groups_raw.items():
            where = f"groups.{gname}"
            if not isinstance(g, dict):
                self.problem(where, "must be a mapping")
                continue
            kind = self.require(g, "kind", where, str)
            if kind is not None and kind not in GROUP_KINDS:
                self.problem(f"{where}.kind", f"unknown kind {kind!r}; expected one of {GROUP_KINDS}")
            joints = self.names(g, "joints", where, required=True)
            for i, joint in enumerate(joints or ()):
                if joint in seen_joints:
                    self.problem(f"{where}.joints[{i}]", f"joint {joint!r} already in group {seen_joints[joint]}")
                seen_joints[joint] = gname
                # Arm and torso joints are URDF joints; a gripper's single "joint" is the stroke value.
                if urdf_joints is not None and kind != "gripper" and joint not in urdf_joints:
                    self.problem(f"{where}.joints[{i}]", f"unknown joint {joint!r} (not in the URDF)")
            # Size the per-joint vectors by the list as written, so their lengths are checked even when a name is bad.
            n = len(g["joints"]) if isinstance(g.get("joints"), list) else 0
            limits = self.limits_array(g, where, n)
            velocity = self.positive_vector(g, "velocity_limits", where, n)
            acceleration = self.positive_vector(g, "acceleration_limits", where, n)
            home = self.vector(g, "home", where, n)
            if home is not None and limits is not None:
                for i, (q, (lo, hi)) in enumerate(zip(home, limits, strict=True)):
                    if not lo <= q <= hi:
                        self.problem(f"{where}.home[{i}]", f"{q} outside limits [{lo}, {hi}]")
            feedback = self.text(g, "feedback_topic", where)
            command = self.text(g, "command_topic", where)
            pose_command = self.text(g, "pose_command_topic", where, required=False)
            ee_link = g.get("ee_link")
            ik_settings = self.text(g, "ik_settings", where, required=False)
            if kind == "arm":
                if not isinstance(ee_link, str):
                    self.problem(f"{where}.ee_link", "missing (arms need their end-effector link)")
                elif urdf_links is not None and ee_link not in urdf_links:
                    self.problem(f"{where}.ee_link", f"unknown link {ee_link!r} (not in the URDF)")
                if ik_settings is not None and not (self.path.parent / ik_settings).is_file():
                    self.problem(f"{where}.ik_settings", f"file not found: {self.path.parent / ik_settings}")
            finger_joints = self.names(g, "finger_joints", where, required=False)
            for i, joint in enumerate(finger_joints or ()):
                if urdf_joints is not None and joint not in urdf_joints:
                    self.problem(f"{where}.finger_joints[{i}]", f"unknown joint {joint!r} (not in the URDF)")
            policy_range = self.policy_range(g, where)
            if any(v is None for v in (kind, joints, feedback, command, limits, velocity, acceleration, home)):
                continue
            groups[gname] = JointGroup(
                name=gname,
                kind=kind,
                joints=joints,
                position_limits=limits,
                velocity_limits=velocity,
                acceleration_limits=acceleration,
                feedback_topic=feedback,
                command_topic=command,
                home=home,
                pose_command_topic=pose_command,
                ee_link=ee_link,
                ik_settings=(self.path.parent / ik_settings) if ik_settings is not None else None,
                # A bad optional field is already reported; the defaults keep the group, so layouts that use it
                # are not also reported as naming an unknown group.
                finger_joints=finger_joints or (),
                policy_range=policy_range or (0.0, 1.0),
            )
        return groups

    def text(self, mapping: Dict, key: str, where: str, required: bool = True) -> Optional[str]:
        """A non-empty string (a topic, a path). An optional key may be absent, but not null or blank."""
        if not required and key not in mapping:
            return None
        value = self.require(mapping, key, where, str)
        if value is not None and not value.strip():
            self.problem(f"{where}.{key}", "must not be empty")
            return None
        return value

    def names(self, mapping: Dict, key: str, where: str, required: bool) -> Optional[Tuple[str, ...]]:
        """A list of non-empty name strings; a required list must also be present and non-empty.

        An absent optional list is ``()``; ``None`` means a problem was reported.
        """
        if not required and key not in mapping:
            return ()
        value = self.require(mapping, key, where, list)
        if value is None:
            return None
        if required and not value:
            self.problem(f"{where}.{key}", "must list at least one joint")
            return None
        bad = [i for i, name in enumerate(value) if not isinstance(name, str) or not name.strip()]
        for i in bad:
            self.problem(f"{where}.{key}[{i}]", f"expected a non-empty string, got {value[i]!r}")
        return None if bad else tuple(value)

    def policy_range(self, g: Dict, where: str) -> Optional[Tuple[float, float]]:
        """The optional ``[low, high]`` policy units of a gripper, default ``[0, 1]``; ``None`` if invalid."""
        value = g.get("policy_range", [0.0, 1.0])
        if not (isinstance(value, list) and len(value) == 2 and all(_finite_number(v) for v in value)):
            self.problem(f"{where}.policy_range", f"must be [low, high], two finite numbers, got {value!r}")
            return None
        low, high = float(value[0]), float(value[1])
        if not low < high:
            self.problem(f"{where}.policy_range", f"must have low < high, got {value!r}")
            return None
        return low, high

    def positive(self, mapping: Any, key: str, where: str, kind: type | Tuple[type, ...]) -> Optional[float]:
        """A required finite number > 0; spelled out because ``nan <= 0`` is False."""
        value = self.require(mapping, key, where, kind)
        if value is not None and not (_finite_number(value) and value > 0):
            self.problem(f"{where}.{key}", f"must be finite and > 0, got {value}")
            return None
        return value

    def vector(self, g: Dict, key: str, where: str, n: int) -> Optional[np.ndarray]:
        value = self.require(g, key, where, list)
        if value is None:
            return None
        if len(value) != n:
            self.problem(f"{where}.{key}", f"has {len(value)} entries, the group has {n} joints")
            return None
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            self.problem(f"{where}.{key}", f"must be numbers, got {value!r}")
            return None
        if not np.all(np.isfinite(arr)):
            self.problem(f"{where}.{key}", "must be finite")
            return None
        return arr

    def positive_vector(self, g: Dict, key: str, where: str, n: int) -> Optional[np.ndarray]:
        arr = self.vector(g, key, where, n)
        if arr is not None:
            for i in np.flatnonzero(arr <= 0):
                self.problem(f"{where}.{key}[{i}]", f"must be > 0, got {arr[i]}")
        return arr

    def limits_array(self, g: Dict, where: str, n: int) -> Optional[np.ndarray]:
        value = self.require(g, "position_limits", where, list)
        if value is None:
            return None
        if len(value) != n:
            self.problem(f"{where}.position_limits", f"has {len(value)} entries, the group has {n} joints")
            return None
        try:
            arr = np.asarray(value, dtype=np.float64).reshape(n, 2)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            self.problem(f"{where}.position_limits", "must be a list of [lower, upper] pairs")
            return None
        for i, (lo, hi) in enumerate(arr):
            if not np.isfinite(lo) or not np.isfinite(hi):
                self.problem(f"{where}.position_limits[{i}]", "must be finite")
            elif lo >= hi:
                self.problem(f"{where}.position_limits[{i}]", f"reversed or empty: lower {lo} >= upper {hi}")
        return arr

    def parse_cameras(self, cams_raw: Any, urdf_links: Optional[set]) -> Dict[str, Camera]:
        cameras: Dict[str, Camera] = {}
        if not isinstance(cams_raw, dict):
            self.problem("cameras", "must be a mapping of name -> camera")
            return cameras
        for cname, c in cams_raw.items():
            where = f"cameras.{cname}"
            if not isinstance(c, dict):
                self.problem(where, "must be a mapping")
                continue
            topic = self.text(c, "topic", where)
            transport = self.require(c, "transport", where, str)
            fmt = self.require(c, "format", where, str)
            if transport is not None and transport not in CAMERA_TRANSPORTS:
                self.problem(f"{where}.transport", f"unknown {transport!r}; expected {sorted(CAMERA_TRANSPORTS)}")
            elif transport is not None and fmt is not None and fmt not in CAMERA_TRANSPORTS[transport]:
                self.problem(f"{where}.format", f"{fmt!r} is not a {transport} format {CAMERA_TRANSPORTS[transport]}")
            frame = self.require(c, "frame", where, str)
            if frame is not None and urdf_links is not None and frame not in urdf_links:
                self.problem(f"{where}.frame", f"unknown link {frame!r} (not in the URDF)")
            numbers = {}
            for key, kind in (("width", int), ("height", int), ("rate_hz", (int, float)), ("max_age_s", (int, float))):
                numbers[key] = self.positive(c, key, where, kind)
            if any(v is None for v in (topic, transport, fmt, frame, *numbers.values())):
                continue
            cameras[cname] = Camera(
                name=cname, topic=topic, transport=transport, format=fmt, frame=frame,
                width=int(numbers["width"]), height=int(numbers["height"]),
                rate_hz=float(numbers["rate_hz"]), max_age_s=float(numbers["max_age_s"]),
            )
        return cameras

    def parse_layout(self, where: str, raw: Any, groups: Dict[str, JointGroup], kinds: Tuple[str, ...]) -> Layout:
        segments: List[Segment] = []
        if not isinstance(raw, list) or not raw:
            self.problem(where, "must be a non-empty list of {group, kind} segments")
            return Layout(where.split(".")[-1], ())
        start = 0
        used = set()
        for i, seg in enumerate(raw):
            key = f"{where}[{i}]"
            group_name = self.require(seg, "group", key, str)
            kind = self.require(seg, "kind", key, str)
            if group_name is None or kind is None:
                continue
            if kind not in kinds:
                self.problem(f"{key}.kind", f"unknown kind {kind!r}; expected one of {kinds}")
                continue
            group = groups.get(group_name)
            if group is None:
                self.problem(f"{key}.group", f"unknown group {group_name!r}")
                continue
            if group_name in used:
                self.problem(f"{key}.group", f"group {group_name!r} appears twice")
            used.add(group_name)
            if kind == "gripper" and group.kind != "gripper":
                self.problem(f"{key}.kind", f"'gripper' needs a gripper group, {group_name} is a {group.kind}")
                continue
            if kind != "gripper" and group.kind == "gripper":
                self.problem(f"{key}.kind", f"gripper group {group_name} only supports kind 'gripper'")
                continue
            if kind in ("ee_pose", "ee_delta") and group.kind != "arm":
                self.problem(f"{key}.kind", f"{kind!r} needs an arm group with an ee_link")
                continue
            dim = {"ee_pose": EE_POSE_DIM, "ee_delta": EE_DELTA_DIM}.get(kind, group.size)
            segments.append(Segment(group=group_name, kind=kind, start=start, dim=dim))
            start += dim
        return Layout(where.split(".")[-1], tuple(segments))

    def parse_rates(self, raw: Any) -> Rates:
        values = {}
        for key in ("control_hz", "feedback_hz"):
            value = self.positive(raw, key, "rates", (int, float))
            values[key] = float(value) if value else 1.0
        return Rates(**values)

    def check_unique_topics(self, groups: Dict[str, JointGroup], cameras: Dict[str, Camera]) -> None:
        owners: Dict[str, str] = {}
        entries = []
        for g in groups.values():
            entries += [(g.feedback_topic, f"groups.{g.name}.feedback_topic"),
                        (g.command_topic, f"groups.{g.name}.command_topic")]
            if g.pose_command_topic:
                entries.append((g.pose_command_topic, f"groups.{g.name}.pose_command_topic"))
        entries += [(c.topic, f"cameras.{c.name}.topic") for c in cameras.values()]
        for topic, key in entries:
            if topic in owners:
                self.problem(key, f"duplicate topic {topic!r} (also {owners[topic]})")
            else:
                owners[topic] = key


def _finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def _kind_name(kind: type | Tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "list": "a list", "dict": "a mapping", "int": "an integer",
                        "float": "a number"}.get(k.__name__, k.__name__) for k in kinds)
