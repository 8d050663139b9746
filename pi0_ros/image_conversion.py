"""Image encoding and decoding without ROS messages: JPEG/PNG payloads and raw ``sensor_msgs/Image`` fields.

Colour images are RGB uint8 arrays of shape (height, width, 3); depth images keep their own dtype
(uint16 millimetres for ``mono16``/``16UC1``, float32 metres for ``32FC1``) with shape (height, width).
Raw images follow ``sensor_msgs/Image``: ``data`` holds ``height`` rows of ``step`` bytes each, of which
the first ``width * bytes_per_pixel`` are pixels (the rest is row padding); ``is_bigendian`` applies to
multi-byte channels. Malformed input raises :class:`ImageDecodeError` (a ValueError) naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import cv2
import numpy as np
import simplejpeg

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(ValueError):
    """An image payload or raw image description is malformed or unsupported."""


@dataclass(frozen=True)
class RawEncoding:
    """Layout of one raw encoding: element type, channels, and its role."""

    dtype: np.dtype
    channels: int
    kind: str  # "color" (convertible to RGB) or "depth"


RAW_ENCODINGS: Dict[str, RawEncoding] = {
    "rgb8": RawEncoding(np.dtype(np.uint8), 3, "color"),
    "bgr8": RawEncoding(np.dtype(np.uint8), 3, "color"),
    "rgba8": RawEncoding(np.dtype(np.uint8), 4, "color"),
    "bgra8": RawEncoding(np.dtype(np.uint8), 4, "color"),
    "mono8": RawEncoding(np.dtype(np.uint8), 1, "color"),
    "8UC1": RawEncoding(np.dtype(np.uint8), 1, "color"),
    "8UC3": RawEncoding(np.dtype(np.uint8), 3, "color"),  # OpenCV convention: BGR order
    "mono16": RawEncoding(np.dtype(np.uint16), 1, "depth"),
    "16UC1": RawEncoding(np.dtype(np.uint16), 1, "depth"),
    "32FC1": RawEncoding(np.dtype(np.float32), 1, "depth"),
}
COMPRESSED_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` (without header)."""

    data: bytes
    encoding: str
    width: int
    height: int
    step: int
    is_bigendian: bool = False


# -- encoding ---------------------------------------------------------------------------------------


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """JPEG or PNG bytes of an RGB uint8 image (``quality`` 1..100 applies to JPEG)."""
    rgb = _check_rgb(rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        # Level 1: ~3x faster than the default for camera images, only slightly larger.
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown compressed format {fmt!r}; expected one of {COMPRESSED_FORMATS}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def encode_raw(image: np.ndarray, encoding: str = "rgb8", row_padding: int = 0, bigendian: bool = False) -> RawImage:
    """Raw ``sensor_msgs/Image`` fields of an image.

    Colour encodings take an RGB uint8 (H, W, 3) image (``mono8`` also takes (H, W) uint8 and converts
    RGB to grey); depth encodings take (H, W) arrays of their dtype. ``row_padding`` extra bytes per
    row (step > width * bytes per pixel) and ``bigendian`` exist to produce what some drivers send.
    """
    layout = _layout(encoding)
    if row_padding < 0:
        raise ValueError("row_padding must be >= 0")
    if layout.kind == "color":
        pixels = _rgb_to_encoding(image, encoding)
    else:
        pixels = np.asarray(image)
        if pixels.ndim != 2 or pixels.dtype != layout.dtype:
            raise ValueError(f"{encoding} needs a (H, W) {layout.dtype} array, got {pixels.shape} {pixels.dtype}")
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError("cannot encode an empty image")
    element = pixels.astype(layout.dtype.newbyteorder(">" if bigendian else "<"), copy=False)
    rows = element.reshape(height, -1).view(np.uint8)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    return RawImage(data=np.ascontiguousarray(rows).tobytes(), encoding=encoding, width=width, height=height,
                    step=rows.shape[1], is_bigendian=bool(bigendian) and layout.dtype.itemsize > 1)


# -- decoding ---------------------------------------------------------------------------------------


def decode_compressed(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """RGB uint8 image from JPEG or PNG bytes (the format is read from the payload, not trusted from a field)."""
    buf = _as_bytes(data)
    if buf.startswith(JPEG_MAGIC):
        # libjpeg "decodes" damaged data (a truncated file, a USB camera's dropped packets) with only a
        # warning, filling the rest with grey or garbage; strict decoding turns those warnings into errors.
        try:
            return simplejpeg.decode_jpeg(buf, colorspace="RGB", strict=True)
        except ValueError as error:
            raise ImageDecodeError(f"could not decode the {len(buf)}-byte JPEG: {error}") from None
    if not buf.startswith(PNG_MAGIC):
        head = buf[:8].hex() if buf else "empty"
        raise ImageDecodeError(f"payload is neither JPEG nor PNG (starts with {head})")
    image = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"could not decode the {len(buf)}-byte PNG (corrupt data)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_raw_fields(data_length: int, encoding: str, width: int, height: int, step: int) -> RawEncoding:
    """Check raw image fields for consistency without decoding; returns the encoding's layout."""
    try:
        layout = RAW_ENCODINGS[encoding]
    except KeyError:
        raise ImageDecodeError(f"unsupported encoding {encoding!r}; supported: {sorted(RAW_ENCODINGS)}") from None
    width, height, step = int(width), int(height), int(step)
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{encoding} image has an empty size {width}x{height}")
    if step < row_bytes:
        raise ImageDecodeError(f"{encoding} {width}x{height}: step {step} < {row_bytes} bytes a row needs")
    if data_length != step * height:
        raise ImageDecodeError(f"{encoding} {width}x{height}: {data_length} data bytes, expected step*height = "
                               f"{step}*{height} = {step * height}")
    return layout


def decode_raw(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, width: int, height: int,
               step: int, is_bigendian: bool = False) -> np.ndarray:
    """The pixels of a raw image in native byte order: (H, W) or (H, W, C), padding removed, dtype kept."""
    buf = _as_bytes(data)
    layout = check_raw_fields(len(buf), encoding, width, height, step)
    width, height, step = int(width), int(height), int(step)
    row_bytes = width * layout.channels * layout.dtype.itemsize
    rows = np.frombuffer(buf, np.uint8).reshape(height, step)[:, :row_bytes]
    order = ">" if is_bigendian else "<"
    # A copy: frombuffer views are read-only, and callers expect to own their image.
    pixels = np.array(rows, order="C").view(layout.dtype.newbyteorder(order))
    pixels = pixels.astype(layout.dtype, copy=False)  # native byte order
    shape = (height, width) if layout.channels == 1 else (height, width, layout.channels)
    return pixels.reshape(shape)


def decode_raw_rgb(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, width: int, height: int,
                   step: int, is_bigendian: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) image from raw colour fields (rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3)."""
    layout = RAW_ENCODINGS.get(encoding)
    if layout is not None and layout.kind == "depth":
        raise ImageDecodeError(f"{encoding} is a depth encoding; decode it with decode_depth")
    pixels = decode_raw(data, encoding, width, height, step, is_bigendian)
    if encoding == "rgb8":
        return pixels
    conversion = {"bgr8": cv2.COLOR_BGR2RGB, "8UC3": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
                  "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}[encoding]
    return cv2.cvtColor(pixels, conversion)


def decode_depth(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, width: int, height: int,
                 step: int, is_bigendian: bool = False) -> np.ndarray:
    """(H, W) depth image: uint16 for mono16/16UC1 (usually mm), float32 for 32FC1 (usually m)."""
    layout = RAW_ENCODINGS.get(encoding)
    if layout is not None and layout.kind != "depth":
        raise ImageDecodeError(f"{encoding} is not a depth encoding (expected one of mono16, 16UC1, 32FC1)")
    return decode_raw(data, encoding, width, height, step, is_bigendian)


def image_size(image: np.ndarray) -> Tuple[int, int]:
    """(width, height) of an image array."""
    return int(image.shape[1]), int(image.shape[0])


# -- helpers ----------------------------------------------------------------------------------------


def _layout(encoding: str) -> RawEncoding:
    try:
        return RAW_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: {sorted(RAW_ENCODINGS)}") from None


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected a non-empty RGB uint8 image of shape (H, W, 3), got {rgb.shape} {rgb.dtype}")
    return rgb


def _rgb_to_encoding(image: np.ndarray, encoding: str) -> np.ndarray:
    image = np.asarray(image)
    if encoding in ("mono8", "8UC1") and image.ndim == 2 and image.dtype == np.uint8:
        return image
    rgb = _check_rgb(image)
    conversion = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "8UC3": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                  "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY, "8UC1": cv2.COLOR_RGB2GRAY}[encoding]
    return np.ascontiguousarray(rgb) if conversion is None else cv2.cvtColor(rgb, conversion)


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    # rclpy hands uint8[] fields over as array.array('B'); all of these expose the buffer protocol.
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).cast("B").tobytes()
    except TypeError:
        try:
            return bytes(data)
        except (TypeError, ValueError):
            raise ImageDecodeError(f"image data must be bytes-like, got {type(data).__name__}") from None
