"""image_conversion round trips (every encoding, padded rows, big-endian) and malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.image_conversion import (
    ImageDecodeError,
    decode_compressed,
    decode_depth,
    decode_raw,
    decode_raw_rgb,
    encode_compressed,
    encode_raw,
)


@pytest.fixture(scope="module")
def rgb():
    # A smooth gradient plus blocks: JPEG-friendly and with distinct channels, odd width on purpose.
    h, w = 48, 61
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], axis=-1)
    image[10:20, 10:30] = (200, 30, 60)
    return image.astype(np.uint8)


def fields(raw):
    return raw.data, raw.encoding, raw.width, raw.height, raw.step, raw.is_bigendian


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
@pytest.mark.parametrize("padding", [0, 3, 17])
def test_color_encodings_round_trip_exactly(rgb, encoding, padding):
    raw = encode_raw(rgb, encoding, row_padding=padding)
    channels = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4}[encoding]
    assert raw.step == rgb.shape[1] * channels + padding
    assert len(raw.data) == raw.step * raw.height
    out = decode_raw_rgb(*fields(raw))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out, rgb)
    out[0, 0] = 0  # decoded images are the caller's to modify


def test_channel_order_is_honoured(rgb):
    bgr = encode_raw(rgb, "bgr8")
    pixels = decode_raw(*fields(bgr))
    assert np.array_equal(pixels[..., 0], rgb[..., 2])  # stored blue first
    rgba = decode_raw(*fields(encode_raw(rgb, "rgba8")))
    assert np.all(rgba[..., 3] == 255)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
@pytest.mark.parametrize("padding", [0, 5])
def test_mono8_round_trip_and_grey_to_rgb(encoding, padding):
    grey = (np.arange(35 * 23) % 256).astype(np.uint8).reshape(23, 35)
    raw = encode_raw(grey, encoding, row_padding=padding)
    assert np.array_equal(decode_raw(*fields(raw)), grey)
    rgb = decode_raw_rgb(*fields(raw))
    assert rgb.shape == (23, 35, 3) and all(np.array_equal(rgb[..., c], grey) for c in range(3))


def test_rgb_to_mono8_is_luminance(rgb):
    raw = encode_raw(rgb, "mono8")
    grey = decode_raw(*fields(raw))
    expected = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(grey.astype(float) - expected).max() <= 1


@pytest.mark.parametrize("encoding, dtype", [("mono16", np.uint16), ("16UC1", np.uint16), ("32FC1", np.float32)])
@pytest.mark.parametrize("padding", [0, 1, 6])
@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_round_trip_keeps_dtype(encoding, dtype, padding, bigendian):
    rng = np.random.default_rng(3)
    if dtype == np.uint16:
        depth = rng.integers(0, 65535, size=(17, 29), dtype=np.uint16)
    else:
        depth = rng.uniform(0.1, 9.0, size=(17, 29)).astype(np.float32)
        depth[0, 0] = np.nan  # invalid depth stays NaN
    raw = encode_raw(depth, encoding, row_padding=padding, bigendian=bigendian)
    assert raw.is_bigendian == bigendian
    out = decode_depth(*fields(raw))
    assert out.dtype == dtype and out.dtype.isnative and out.shape == depth.shape
    assert np.array_equal(out, depth, equal_nan=True)


def test_big_endian_bytes_are_really_swapped():
    depth = np.array([[0x0102]], dtype=np.uint16)
    assert encode_raw(depth, "16UC1", bigendian=True).data == b"\x01\x02"
    assert encode_raw(depth, "16UC1").data == b"\x02\x01"


def test_depth_and_colour_are_not_confused(rgb):
    depth = np.ones((4, 4), np.float32)
    with pytest.raises(ImageDecodeError, match="depth"):
        decode_raw_rgb(*fields(encode_raw(depth, "32FC1")))
    with pytest.raises(ImageDecodeError, match="not a depth"):
        decode_depth(*fields(encode_raw(rgb, "rgb8")))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(rgb, fmt):
    data = encode_compressed(rgb, fmt)
    out = decode_compressed(data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if fmt == "png":
        assert np.array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4
        # Channel order survives: the red block stays red.
        assert tuple(out[15, 20]) == pytest.approx((200, 30, 60), abs=20)


def test_compressed_accepts_array_payloads_as_ros_delivers_them(rgb):
    import array

    data = encode_compressed(rgb, "jpeg")
    assert decode_compressed(array.array("B", data)).shape == rgb.shape
    assert decode_compressed(np.frombuffer(data, np.uint8)).shape == rgb.shape
    assert decode_compressed(data + b"\x00\x00").shape == rgb.shape  # zero padding after EOI


def test_jpeg_quality_changes_size(rgb):
    assert len(encode_compressed(rgb, "jpeg", 20)) < len(encode_compressed(rgb, "jpeg", 95))
    with pytest.raises(ValueError, match="quality"):
        encode_compressed(rgb, "jpeg", 0)


@pytest.mark.parametrize("payload, reason", [
    (b"", "neither JPEG nor PNG"),
    (b"GIF89a....", "neither JPEG nor PNG"),
    ("truncated-jpeg", "Premature end of JPEG file"),
    ("corrupt-jpeg", "could not decode"),
    # Intact headers and end marker, damaged entropy-coded data (a camera's dropped packets): libjpeg
    # only warns and returns a garbled image.
    ("cut-jpeg-with-end-marker", "Corrupt JPEG data"),
    ("zeroed-middle-jpeg", "Corrupt JPEG data"),
    ("truncated-png", "could not decode"),
])
def test_malformed_compressed_payloads_raise(rgb, payload, reason):
    # Tiled so that half of the JPEG lies past its headers (~600 bytes).
    jpeg, png = encode_compressed(np.tile(rgb, (4, 4, 1)), "jpeg"), encode_compressed(rgb, "png")
    middle = len(jpeg) // 2
    payload = {"truncated-jpeg": jpeg[:middle],
               "corrupt-jpeg": jpeg[:2] + b"\x00" * (len(jpeg) - 4) + jpeg[-2:],
               "cut-jpeg-with-end-marker": jpeg[:middle] + b"\xff\xd9",
               "zeroed-middle-jpeg": jpeg[:middle] + bytes(200) + jpeg[middle + 200:],
               "truncated-png": png[: len(png) // 2]}.get(payload, payload)
    with pytest.raises(ImageDecodeError, match=reason):
        decode_compressed(payload)


def test_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("change, reason", [
    ({"encoding": "yuv422"}, "unsupported encoding"),
    ({"step": 10}, "step"),
    ({"data": b"\x00" * 100}, "data bytes"),
    ({"width": 0}, "empty size"),
    ({"height": -3}, "empty size"),
    ({"data": [1, 2, 300]}, "bytes-like"),
])
def test_malformed_raw_fields_raise(rgb, change, reason):
    raw = encode_raw(rgb, "rgb8", row_padding=2)
    args = dict(data=raw.data, encoding=raw.encoding, width=raw.width, height=raw.height, step=raw.step,
                is_bigendian=raw.is_bigendian)
    args.update(change)
    with pytest.raises(ImageDecodeError, match=reason):
        decode_raw_rgb(**args)


def test_step_that_does_not_match_the_data_is_rejected(rgb):
    raw = encode_raw(rgb, "rgb8", row_padding=4)
    # Claiming no padding while the data is padded: sizes disagree, rather than a sheared picture.
    with pytest.raises(ImageDecodeError, match="step\\*height"):
        decode_raw_rgb(raw.data, "rgb8", raw.width, raw.height, raw.width * 3)


def test_bad_encode_input_is_a_clear_error(rgb):
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_compressed(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="unknown compressed format"):
        encode_compressed(rgb, "webp")
    with pytest.raises(ValueError, match="unsupported encoding"):
        encode_raw(rgb, "yuv422")
    with pytest.raises(ValueError, match="float32"):
        encode_raw(np.zeros((2, 2), np.uint16), "32FC1")
