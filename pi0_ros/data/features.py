"""The dataset's features, derived from the embodiment: what each column is called and holds.

``observation.state`` follows the embodiment's ``state_layout``, ``action`` one of its
``action_spaces``; the ``names`` of both come from the embodiment's joint names, so a dataset says
which dimension is which joint without a second source of truth. Cameras become
``observation.images.<camera>`` (``image`` dtype: encoded bytes in the parquet file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from pi0_ros.embodiment import Embodiment, Layout

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

_EE_POSE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw")
_EE_DELTA_NAMES = ("dx", "dy", "dz", "rx", "ry", "rz")


def layout_names(embodiment: Embodiment, layout: Layout) -> List[str]:
    """One name per dimension of a state or action layout (joint names; ``<arm>.x`` etc. for ee kinds)."""
    names: List[str] = []
    for seg in layout.segments:
        group = embodiment.groups[seg.group]
        if seg.kind in ("joint_position", "gripper"):
            names += list(group.joints)
        elif seg.kind == "joint_delta":
            names += [f"{joint}.delta" for joint in group.joints]
        elif seg.kind == "ee_pose":
            names += [f"{seg.group}.ee.{n}" for n in _EE_POSE_NAMES]
        elif seg.kind == "ee_delta":
            names += [f"{seg.group}.ee.{n}" for n in _EE_DELTA_NAMES]
        else:
            raise ValueError(f"unsupported layout kind {seg.kind!r}")
    return names


def image_key(camera: str) -> str:
    """The feature key of a camera."""
    return IMAGE_PREFIX + camera


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset records: rate, robot, action space and image sizes (height, width) per camera."""

    fps: int
    robot_type: str
    action_space: str
    features: Dict[str, dict]

    @property
    def camera_keys(self) -> List[str]:
        """Image feature keys, in order."""
        return [k for k, f in self.features.items() if f["dtype"] == "image"]

    @property
    def vector_keys(self) -> List[str]:
        """Float vector features (state, action)."""
        return [k for k, f in self.features.items() if f["dtype"] == "float32" and k not in INDEX_KEYS]


def make_spec(embodiment: Embodiment, action_space: str, fps: int,
              image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None) -> DatasetSpec:
    """The dataset spec of an embodiment; ``image_sizes`` camera -> (height, width), default: the
    embodiment's camera sizes for every camera (an empty mapping records no images)."""
    # The frame period is 1 / fps and the stored fps is an int: anything else divides by zero, never advances, or
    # is silently truncated.
    if not math.isfinite(fps) or fps <= 0 or int(fps) != fps:
        raise ValueError(f"fps must be a positive whole number, got {fps}")
    if image_sizes is None:
        image_sizes = {c.name: (c.height, c.width) for c in embodiment.cameras.values()}
    unknown = sorted(set(image_sizes) - set(embodiment.cameras))
    if unknown:
        raise ValueError(f"unknown cameras {unknown}; the embodiment has {sorted(embodiment.cameras)}")
    layout = embodiment.action_layout(action_space)
    features: Dict[str, dict] = {}
    for camera, (height, width) in image_sizes.items():
        features[image_key(camera)] = {"dtype": "image", "shape": [int(height), int(width), 3],
                                       "names": ["height", "width", "channel"]}
    state = embodiment.state_layout
    features[STATE_KEY] = {"dtype": "float32", "shape": [state.dim], "names": layout_names(embodiment, state)}
    features[ACTION_KEY] = {"dtype": "float32", "shape": [layout.dim], "names": layout_names(embodiment, layout)}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_KEYS[1:]:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return DatasetSpec(fps=int(fps), robot_type=embodiment.name, action_space=action_space, features=features)
