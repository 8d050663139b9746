"""Synchronized dataset frames from robot messages: the ROS-free core of the recorder and the bag import.

Inputs arrive as they come (joint feedback, the commands the policy node sends, camera images) and
only the newest of each is kept. :meth:`FrameAssembler.assemble`, called at the dataset's fps, turns the
newest inputs into one frame with the policy node's own mappings: the state vector through
:func:`~pi0_ros.control.robot_state.build_state_vector` and the commanded joint targets through the
inverse action mapping :func:`~pi0_ros.control.action_codec.encode_action` (joint deltas relative to the
state of the same frame), so the recorded action decodes back to the command the robot received. Inputs
are matched by joint NAME (:class:`~pi0_ros.control.robot_state.RobotStateTracker`). A frame whose
inputs are missing or older than their limits is skipped, and the reason counted.

Images are decoded (raw or compressed), resized to the dataset size when they differ, and stored as
the camera's own JPEG/PNG bytes when no resize was needed (``image_storage="keep"``, no re-encoding
loss or cost) or as PNG otherwise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pi0_ros.control.action_codec import encode_action
from pi0_ros.control.robot_state import RobotStateTracker, build_state_vector
from pi0_ros.data.features import image_key
from pi0_ros.data.lerobot_dataset import EncodedImage
from pi0_ros.embodiment import Embodiment
from pi0_ros.image_conversion import decode_compressed, decode_raw_rgb, encode_compressed

IMAGE_STORAGES = ("keep", "png")


@dataclass(frozen=True)
class FrameLimits:
    """How old each input may be when a frame is taken (seconds)."""

    state_max_age_s: float = 0.2
    command_max_age_s: float = 0.2
    image_max_age_s: Optional[float] = None  # None: each camera's max_age_s from the embodiment


@dataclass(frozen=True)
class Frame:
    """One synchronized frame, ready for :meth:`DatasetWriter.add_frame`."""

    state: np.ndarray
    action: np.ndarray
    images: Dict[str, EncodedImage]  # feature key -> image
    targets: Dict[str, np.ndarray]  # the commanded joint targets the action encodes (robot units)
    measured: Dict[str, np.ndarray]  # the joint state the frame saw (robot units)


def image_to_stored(msg: Any, size: Tuple[int, int], storage: str = "keep") -> EncodedImage:
    """A CompressedImage or Image message (anything with their fields) as stored bytes of ``size`` (h, w)."""
    import cv2

    compressed = hasattr(msg, "format") and not hasattr(msg, "encoding")
    if compressed:
        rgb = decode_compressed(bytes(msg.data))
    else:
        rgb = decode_raw_rgb(bytes(msg.data), msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))
    height, width = size
    resized = rgb.shape[:2] != (height, width)
    if resized:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    if storage == "keep" and compressed and not resized:
        return EncodedImage(bytes(msg.data), rgb)
    return EncodedImage(encode_compressed(rgb, "png"), rgb)


class FrameAssembler:
    """Newest inputs in, one frame (or the reason there is none) out; see the module docstring."""

    def __init__(self, embodiment: Embodiment, action_space: str, image_sizes: Mapping[str, Tuple[int, int]],
                 limits: Optional[FrameLimits] = None, image_storage: str = "keep", fk: Optional[Mapping] = None):
        if image_storage not in IMAGE_STORAGES:
            raise ValueError(f"image_storage must be one of {IMAGE_STORAGES}, got {image_storage!r}")
        self.embodiment = embodiment
        self.layout = embodiment.action_layout(action_space)
        self.image_sizes = dict(image_sizes)
        self.limits = limits or FrameLimits()
        self.image_storage = image_storage
        action_groups = [embodiment.groups[s.group] for s in self.layout.segments]
        # Joint deltas are relative to the measured joints, so action groups need feedback too.
        feedback = dict.fromkeys([s.group for s in embodiment.state_layout.segments] + [g.name for g in action_groups])
        self.state = RobotStateTracker([embodiment.groups[name] for name in feedback])
        self.commands = RobotStateTracker(action_groups)
        self.fk = dict(fk) if fk is not None else self._make_fk()
        self._images: Dict[str, Tuple[Any, float]] = {}
        # camera -> (the message, its stored image). The message itself, not its id(): once a message is freed
        # the next one is often allocated at the same address, and an id() key would return the old image.
        self._converted: Dict[str, Tuple[Any, EncodedImage]] = {}
        self._previous_targets: Optional[Dict[str, np.ndarray]] = None
        self.skipped: Counter = Counter()
        self.frames = 0

    def _make_fk(self) -> Dict[str, Any]:
        kinds = {s.kind for s in (*self.layout.segments, *self.embodiment.state_layout.segments)}
        if not kinds & {"ee_pose", "ee_delta"}:
            return {}
        from pi0_ros.control.kinematics import arm_fk

        return {g.name: arm_fk(self.embodiment, g) for g in self.embodiment.groups_of_kind("arm")}

    # -- inputs ----------------------------------------------------------------------------------

    @property
    def state_groups(self) -> Sequence[str]:
        """Groups whose feedback the frames need."""
        return list(self.state.groups)

    @property
    def command_groups(self) -> Sequence[str]:
        """Groups whose commands the frames need."""
        return list(self.commands.groups)

    def on_feedback(self, group: str, names: Sequence[str], positions: Sequence[float], now: float) -> Optional[str]:
        """A joint feedback message; returns why it was refused, or None."""
        if group not in self.state.groups:
            return None
        return self.state.update(group, names, positions, now)

    def on_command(self, group: str, names: Sequence[str], positions: Sequence[float], now: float) -> Optional[str]:
        """A command the robot received (JointState targets, matched by name)."""
        if group not in self.commands.groups:
            return None
        return self.commands.update(group, names, positions, now)

    def on_image(self, camera: str, msg: Any, now: float) -> None:
        """A camera message (decoded only when a frame uses it)."""
        if camera in self.image_sizes:
            self._images[camera] = (msg, now)

    def reset_episode(self) -> None:
        """Forget per-episode history (the previous targets of ``ee_delta``)."""
        self._previous_targets = None

    # -- frames ----------------------------------------------------------------------------------

    def problems(self, now: float) -> Sequence[str]:
        """Why no frame can be taken now (empty: one can)."""
        found = list(self.state.faults(now, self.limits.state_max_age_s))
        found += [f.replace("joint_state", "command") for f in self.commands.faults(now, self.limits.command_max_age_s)]
        for camera in self.image_sizes:
            entry = self._images.get(camera)
            max_age = self.limits.image_max_age_s or self.embodiment.cameras[camera].max_age_s
            if entry is None:
                found.append(f"image_missing:{camera}")
            elif now - entry[1] > max_age:
                found.append(f"image_stale:{camera}")
        return found

    def assemble(self, now: float) -> Union[Frame, Sequence[str]]:
        """The frame for time ``now``, or the problems that prevent it (also counted in ``skipped``)."""
        problems = self.problems(now)
        if problems:
            self.skipped.update(p.split(":")[0] for p in problems)
            return problems
        measured = {g: self.state.measured(g) for g in self.state.groups}
        targets = {g: self.commands.measured(g) for g in self.commands.groups}
        try:
            images = {image_key(camera): self._stored_image(camera) for camera in self.image_sizes}
        except ValueError as exc:  # an image that does not decode: skip the frame, keep recording
            self.skipped["image_invalid"] += 1
            return [f"image_invalid:{exc}"]
        fk_state = (lambda group, q: self.fk[group].forward(q)) if self.fk else None
        state = build_state_vector(self.embodiment, self.embodiment.state_layout, measured, fk_state)
        action = encode_action(self.embodiment, self.layout, targets, measured, self.fk or None,
                               previous=self._previous_targets)
        self._previous_targets = targets
        self.frames += 1
        return Frame(state=state, action=action.astype(np.float32), images=images, targets=targets,
                     measured=measured)

    def _stored_image(self, camera: str) -> EncodedImage:
        msg, _ = self._images[camera]
        cached = self._converted.get(camera)
        if cached is not None and cached[0] is msg:
            return cached[1]
        stored = image_to_stored(msg, self.image_sizes[camera], self.image_storage)
        self._converted[camera] = (msg, stored)
        return stored
