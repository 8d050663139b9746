"""sensor_msgs Image / CompressedImage <-> numpy, on top of :mod:`pi0_ros.image_conversion`.

Decoding uses the real ``cv_bridge`` when it is importable (it is on the robot) for the formats it
handles, after our own checks of the message fields, so malformed messages always raise the same
:class:`~pi0_ros.image_conversion.ImageDecodeError`; without cv_bridge the package's own converter does
the work. Encoding always uses our converter (it needs no bridge and fills ``step`` and ``format`` in the
image_transport style).
"""

from __future__ import annotations

import array
import functools
from typing import Any, Optional

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from pi0_ros.image_conversion import (
    RAW_ENCODINGS,
    ImageDecodeError,
    check_raw_fields,
    decode_compressed,
    decode_depth,
    decode_raw_rgb,
    encode_compressed,
    encode_raw,
)

# What image_transport's compressed plugin writes into CompressedImage.format.
COMPRESSED_FORMAT_FIELD = {"jpeg": "rgb8; jpeg compressed bgr8", "png": "rgb8; png compressed bgr8"}


@functools.lru_cache(maxsize=1)
def _bridge() -> Optional[Any]:
    try:
        from cv_bridge import CvBridge
    except ImportError:  # not on PyPI-only machines; the robot's ROS install has it
        return None
    return CvBridge()


def rgb_to_compressed_msg(rgb: np.ndarray, stamp: Any, frame_id: str, fmt: str = "jpeg",
                          quality: int = 90) -> CompressedImage:
    """A CompressedImage (JPEG or PNG) of an RGB uint8 image."""
    msg = CompressedImage()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = COMPRESSED_FORMAT_FIELD.get(fmt, fmt)
    # array.array('B') is the field's native type: assigning it skips rclpy's per-byte validation.
    msg.data = array.array("B", encode_compressed(rgb, fmt, quality))
    return msg


def rgb_to_image_msg(rgb: np.ndarray, stamp: Any, frame_id: str, encoding: str = "rgb8") -> Image:
    """A raw Image of an RGB uint8 image in a colour encoding (rgb8, bgr8, rgba8, bgra8, mono8)."""
    raw = encode_raw(rgb, encoding)
    return _image_msg(raw, stamp, frame_id)


def depth_to_image_msg(depth: np.ndarray, stamp: Any, frame_id: str, encoding: str = "32FC1") -> Image:
    """A raw Image of a depth array (float32 for 32FC1, uint16 for 16UC1/mono16)."""
    return _image_msg(encode_raw(depth, encoding), stamp, frame_id)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """RGB uint8 image of a CompressedImage (JPEG or PNG); ImageDecodeError when malformed."""
    return decode_compressed(msg.data)


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 image of a raw colour Image; ImageDecodeError when malformed or a depth encoding."""
    bridge = _bridge()
    if bridge is None:
        return decode_raw_rgb(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))
    # Our checks first: they reject what cv_bridge would misread (wrong step, short data) consistently.
    if is_depth_encoding(msg.encoding):
        raise ImageDecodeError(f"{msg.encoding} is a depth encoding; use image_msg_to_depth")
    check_raw_fields(len(msg.data), msg.encoding, msg.width, msg.height, msg.step)
    try:
        return np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except Exception as exc:  # cv_bridge raises its own CvBridgeError and assorted OpenCV errors
        raise ImageDecodeError(f"cv_bridge could not convert a {msg.encoding} image: {exc}") from exc


def image_msg_to_depth(msg: Image) -> np.ndarray:
    """(H, W) depth array of a raw depth Image (uint16 for 16UC1/mono16, float32 for 32FC1)."""
    return decode_depth(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))


def msg_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 image of either message type."""
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_rgb(msg)
    if isinstance(msg, Image):
        return image_msg_to_rgb(msg)
    raise ImageDecodeError(f"expected sensor_msgs Image or CompressedImage, got {type(msg).__name__}")


def is_depth_encoding(encoding: str) -> bool:
    """Whether a raw encoding holds depth rather than colour."""
    layout = RAW_ENCODINGS.get(encoding)
    return layout is not None and layout.kind == "depth"


def _image_msg(raw: Any, stamp: Any, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step = raw.height, raw.width, raw.step
    msg.encoding = raw.encoding
    msg.is_bigendian = int(raw.is_bigendian)
    msg.data = array.array("B", raw.data)
    return msg
