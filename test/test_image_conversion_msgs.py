"""pi0_ros.nodes.ros_image: sensor_msgs Image/CompressedImage <-> numpy (message objects, no node)."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from pi0_ros.image_conversion import ImageDecodeError
from pi0_ros.nodes import ros_image


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(5)
    return rng.integers(0, 255, size=(30, 41, 3), dtype=np.uint8)


STAMP = Time(sec=12, nanosec=345)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_message_round_trip(rgb, fmt):
    msg = ros_image.rgb_to_compressed_msg(rgb, STAMP, "zed_link", fmt)
    assert isinstance(msg, CompressedImage)
    assert msg.header.frame_id == "zed_link" and msg.header.stamp == STAMP
    assert fmt in msg.format
    out = ros_image.msg_to_rgb(msg)
    assert out.shape == rgb.shape
    if fmt == "png":
        assert np.array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_raw_message_round_trip(rgb, encoding):
    msg = ros_image.rgb_to_image_msg(rgb, STAMP, "left_realsense_link", encoding)
    assert isinstance(msg, Image)
    assert (msg.width, msg.height, msg.encoding) == (41, 30, encoding)
    assert msg.step * msg.height == len(msg.data)
    assert np.array_equal(ros_image.msg_to_rgb(msg), rgb)


def test_padded_raw_message_from_a_driver(rgb):
    msg = ros_image.rgb_to_image_msg(rgb, STAMP, "cam", "bgr8")
    padded = np.zeros((msg.height, msg.step + 8), np.uint8)
    padded[:, : msg.step] = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    msg.step += 8
    msg.data = padded.tobytes()
    assert np.array_equal(ros_image.image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding, dtype", [("32FC1", np.float32), ("16UC1", np.uint16)])
def test_depth_message_round_trip(encoding, dtype):
    depth = (np.arange(12 * 7) * 3).astype(dtype).reshape(7, 12)
    msg = ros_image.depth_to_image_msg(depth, STAMP, "zed_link", encoding)
    assert ros_image.is_depth_encoding(msg.encoding)
    out = ros_image.image_msg_to_depth(msg)
    assert out.dtype == dtype and np.array_equal(out, depth)
    with pytest.raises(ImageDecodeError):
        ros_image.image_msg_to_rgb(msg)


def test_malformed_messages_raise_decode_errors(rgb):
    msg = ros_image.rgb_to_image_msg(rgb, STAMP, "cam")
    msg.height += 1  # data now too short
    with pytest.raises(ImageDecodeError, match="data bytes"):
        ros_image.image_msg_to_rgb(msg)
    bad = CompressedImage()
    bad.format = "jpeg"
    bad.data = b"\xff\xd8\xff\xe0 not really a jpeg"
    with pytest.raises(ImageDecodeError):
        ros_image.compressed_msg_to_rgb(bad)
    with pytest.raises(ImageDecodeError, match="expected sensor_msgs"):
        ros_image.msg_to_rgb("not a message")
