"""A safe msgpack codec for numpy arrays, wire-compatible with ``openpi_client.msgpack_numpy``.

The wire format (openpi's): an ndarray travels as a map with bytes keys
``{b"__ndarray__": True, b"data": <raw C-order bytes>, b"dtype": "<f4", b"shape": [..]}`` and a numpy
scalar as ``{b"__npgeneric__": True, b"data": <python scalar>, b"dtype": "<f4"}``.

Unlike openpi's reference decoder, which hands any header straight to ``np.ndarray``, this one
treats every frame as hostile: it refuses object/void/complex/datetime dtypes (no pickle, ever),
checks ``len(data) == prod(shape) * itemsize`` *before* anything is allocated, bounds ndim and the
size of each array, refuses msgpack extension types, and turns every failure into ``DecodeError``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict

import msgpack
import numpy as np

NDARRAY_MARKER = b"__ndarray__"
NPGENERIC_MARKER = b"__npgeneric__"

# bool, signed/unsigned int, float, fixed-width bytes and unicode: plain memory, nothing executable.
ALLOWED_DTYPE_KINDS = frozenset("biufSU")
# Longest legitimate dtype string is something like "<U1000000"; anything longer is not a dtype.
_MAX_DTYPE_STRING = 16


class DecodeError(ValueError):
    """A frame is not a well-formed, acceptable msgpack-numpy message."""


@dataclasses.dataclass(frozen=True)
class CodecLimits:
    """Bounds applied while decoding untrusted frames."""

    max_message_bytes: int = 64 * 2**20
    max_array_bytes: int = 64 * 2**20
    max_ndim: int = 8


DEFAULT_LIMITS = CodecLimits()


def checked_dtype(spec: Any) -> np.dtype:
    """Parse a wire dtype string, refusing anything that is not plain numeric/bool/string memory."""
    if isinstance(spec, bytes):
        try:
            spec = spec.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError("dtype is not ASCII") from exc
    if not isinstance(spec, str) or not 0 < len(spec) <= _MAX_DTYPE_STRING:
        raise DecodeError(f"dtype must be a short string, got {type(spec).__name__}")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"unknown dtype {spec!r}") from exc
    _require_plain_dtype(dtype, DecodeError)
    return dtype


def _require_plain_dtype(dtype: np.dtype, error: type) -> None:
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"unsupported dtype {dtype.str!r} (kind {dtype.kind!r}): only bool/int/float/str")
    if dtype.itemsize == 0:
        # A zero itemsize would let any shape pass the length check without backing memory.
        raise error(f"zero-size dtype {dtype.str!r}")


def _decode_ndarray(obj: Dict[Any, Any], limits: CodecLimits) -> np.ndarray:
    data = obj.get(b"data")
    shape = obj.get(b"shape")
    if not isinstance(data, bytes):
        raise DecodeError(f"ndarray data must be bytes, got {type(data).__name__}")
    dtype = checked_dtype(obj.get(b"dtype"))
    if not isinstance(shape, (list, tuple)):
        raise DecodeError(f"ndarray shape must be a list, got {type(shape).__name__}")
    if len(shape) > limits.max_ndim:
        raise DecodeError(f"ndarray has {len(shape)} dims, at most {limits.max_ndim} allowed")
    # type() rather than isinstance(): True/False are ints but are not dimensions.
    if any(type(dim) is not int or dim < 0 for dim in shape):
        raise DecodeError(f"ndarray shape must be non-negative ints, got {shape!r}")
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow the check
    nbytes = count * dtype.itemsize
    if nbytes > limits.max_array_bytes:
        raise DecodeError(f"ndarray of {nbytes} bytes exceeds the {limits.max_array_bytes}-byte limit")
    if len(data) != nbytes:
        raise DecodeError(
            f"ndarray data has {len(data)} bytes, shape {list(shape)} x itemsize {dtype.itemsize} "
            f"needs {nbytes}"
        )
    # A private, writable copy: policies may normalise in place, and the frame buffer is shared.
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape).copy()


def _decode_npgeneric(obj: Dict[Any, Any]) -> np.generic:
    dtype = checked_dtype(obj.get(b"dtype"))
    value = obj.get(b"data")
    if type(value) not in (bool, int, float, str, bytes):
        raise DecodeError(f"numpy scalar data must be a plain scalar, got {type(value).__name__}")
    if dtype.kind in "iu":
        if type(value) is not int:
            raise DecodeError(f"integer scalar of dtype {dtype.str} carries {type(value).__name__}")
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise DecodeError(f"{value} does not fit dtype {dtype.str}")
    try:
        return dtype.type(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"cannot make a {dtype.str} scalar from {value!r}") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not accepted")


def unpackb(data: Any, limits: CodecLimits = DEFAULT_LIMITS) -> Any:
    """Decode one msgpack-numpy frame; raise ``DecodeError`` for anything malformed or too big."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected a binary frame, got {type(data).__name__}")
    if len(data) > limits.max_message_bytes:
        raise DecodeError(f"frame of {len(data)} bytes exceeds the {limits.max_message_bytes}-byte limit")

    def object_hook(obj: Dict[Any, Any]) -> Any:
        if NDARRAY_MARKER in obj:
            return _decode_ndarray(obj, limits)
        if NPGENERIC_MARKER in obj:
            return _decode_npgeneric(obj)
        return obj

    try:
        # strict_map_key: only str/bytes keys (no unhashable or numeric keys); container lengths are
        # bounded by the frame length by default, so a lying header cannot pre-allocate.
        return msgpack.unpackb(
            data, object_hook=object_hook, ext_hook=_refuse_ext, raw=False, strict_map_key=True
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises ValueError, TypeError, StackError, UnicodeDecodeError...
        raise DecodeError(f"not a valid msgpack frame: {type(exc).__name__}: {exc}") from exc


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _require_plain_dtype(obj.dtype, TypeError)
        contiguous = np.ascontiguousarray(obj)
        return {
            NDARRAY_MARKER: True,
            # A byte view, not tobytes(): msgpack copies it into its buffer once.
            b"data": memoryview(contiguous.reshape(-1).view(np.uint8)),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        _require_plain_dtype(obj.dtype, TypeError)
        return {NPGENERIC_MARKER: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize an object of type {type(obj).__name__}")


def Packer() -> msgpack.Packer:  # noqa: N802 -- mirrors openpi_client.msgpack_numpy.Packer
    """A reusable msgpack packer that encodes numpy arrays and scalars in openpi's format."""
    return msgpack.Packer(default=_encode_default, use_bin_type=True)


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, str, numbers, numpy arrays/scalars) as one msgpack frame."""
    return msgpack.packb(obj, default=_encode_default, use_bin_type=True)
