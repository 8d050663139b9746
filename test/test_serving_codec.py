"""Our msgpack-numpy codec against openpi_client's, and against hostile ndarray headers."""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy as openpi_codec

from pi0_ros.serving.msgpack_numpy import CodecLimits, DecodeError, Packer, packb, unpackb

ARRAYS = [
    np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3),
    np.linspace(-1, 1, 14, dtype=np.float32),
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.array([-(2**40), 7], dtype=np.int64),
    np.array([True, False, True]),
    np.ones((2, 2), dtype=np.float16),
    np.arange(4, dtype=">f4"),  # big-endian survives with its byte order
    np.zeros((0, 5), dtype=np.float32),
    np.array(3.5, dtype=np.float32),  # 0-d
    np.array(["ab", "c"]),
]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_ours_to_openpi_and_back(array):
    message = {"obs": {"x": array}, "prompt": "pick"}
    theirs = openpi_codec.unpackb(packb(message))
    assert _same(theirs["obs"]["x"], array) and theirs["prompt"] == "pick"
    ours = unpackb(openpi_codec.packb(message))
    assert _same(ours["obs"]["x"], array) and ours["prompt"] == "pick"


def test_non_contiguous_arrays_travel_in_c_order():
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    view = base[:, ::2].T
    assert not view.flags.c_contiguous
    assert _same(openpi_codec.unpackb(packb(view)), np.ascontiguousarray(view))


@pytest.mark.parametrize("scalar", [np.float32(1.5), np.int16(-3), np.uint8(200), np.bool_(True)])
def test_numpy_scalars_match_openpi(scalar):
    theirs = openpi_codec.unpackb(packb({"s": scalar}))["s"]
    ours = unpackb(openpi_codec.packb({"s": scalar}))["s"]
    for value in (theirs, ours):
        assert type(value) is type(scalar) and value == scalar


def test_float64_scalars_travel_as_plain_floats_like_openpi():
    # np.float64 subclasses float, so msgpack packs it natively on both sides.
    message = {"s": np.float64(2.5)}
    assert openpi_codec.unpackb(packb(message))["s"] == unpackb(openpi_codec.packb(message))["s"] == 2.5


def test_reusable_packer_matches_packb():
    message = {"a": np.arange(3.0)}
    packer = Packer()
    assert packer.pack(message) == packer.pack(message) == packb(message)


def test_decoded_arrays_are_writable_private_copies():
    frame = packb({"x": np.zeros(4, dtype=np.float32)})
    first, second = unpackb(frame)["x"], unpackb(frame)["x"]
    first += 1  # would raise on a read-only view of the frame
    assert np.all(second == 0)


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array([object()], dtype=object), np.zeros(2, dtype="V4"),
                                 np.zeros(2, dtype=[("a", "<f4")]), np.complex64(1)])
def test_pack_refuses_object_void_complex(bad):
    with pytest.raises(TypeError):
        packb({"x": bad})


def test_pack_refuses_unknown_python_objects():
    with pytest.raises(TypeError):
        packb({"x": {1, 2}})


def _ndarray_header(data=b"\0" * 8, dtype="<f4", shape=(2,)):
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


HOSTILE_HEADERS = {
    "object dtype": _ndarray_header(dtype="|O"),
    "object dtype by name": _ndarray_header(dtype="object"),
    "complex dtype": _ndarray_header(data=b"\0" * 16, dtype="<c8"),
    "void dtype": _ndarray_header(dtype="|V4"),
    "structured dtype": _ndarray_header(dtype="<f4,<f4", shape=(1,)),
    "subarray dtype": _ndarray_header(dtype="(2,)<f4", shape=(1,)),
    "datetime dtype": _ndarray_header(dtype="<M8[s]", shape=(1,)),
    "zero itemsize": _ndarray_header(data=b"", dtype="|S0", shape=(10**12,)),
    "garbage dtype": _ndarray_header(dtype="not-a-dtype"),
    "overlong dtype": _ndarray_header(dtype="<f4" + " " * 100),
    "dtype not a string": _ndarray_header(dtype=4),
    "data too short": _ndarray_header(data=b"\0" * 7),
    "data too long": _ndarray_header(data=b"\0" * 9),
    "data as str": _ndarray_header(data="\0" * 8),
    "data missing": {b"__ndarray__": True, b"dtype": "<f4", b"shape": [2]},
    "shape missing": {b"__ndarray__": True, b"data": b"", b"dtype": "<f4"},
    "negative dim": _ndarray_header(shape=(-2,)),
    "bool dim": _ndarray_header(data=b"\0" * 4, shape=(True,)),
    "float dim": _ndarray_header(shape=(2.0,)),
    "shape not a list": _ndarray_header(shape="2"),
    "too many dims": _ndarray_header(data=b"\0" * 4, shape=[1] * 40),
    "huge shape, tiny data": _ndarray_header(shape=(2**31, 2**31, 2**31)),
    "negative dims cancelling": _ndarray_header(shape=(-2, -1)),
    "scalar out of range": {b"__npgeneric__": True, b"data": 1000, b"dtype": "|i1"},
    "scalar object dtype": {b"__npgeneric__": True, b"data": 1, b"dtype": "|O"},
    "scalar with container data": {b"__npgeneric__": True, b"data": [1, 2], b"dtype": "<f4"},
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
def test_hostile_ndarray_headers_are_refused(name):
    frame = msgpack.packb({"x": HOSTILE_HEADERS[name]}, use_bin_type=True)
    with pytest.raises(DecodeError):
        unpackb(frame)


def test_lying_shape_allocates_nothing_big():
    frame = msgpack.packb({"x": _ndarray_header(data=b"\0" * 16, dtype="<f8", shape=(2**20, 2**20))})
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            unpackb(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * 2**20


def test_array_size_limit():
    frame = packb(np.zeros(1024, dtype=np.float32))
    assert unpackb(frame, CodecLimits(max_array_bytes=4096)).shape == (1024,)
    with pytest.raises(DecodeError, match="exceeds"):
        unpackb(frame, CodecLimits(max_array_bytes=4095))


def test_message_size_limit():
    frame = packb({"x": "y" * 100})
    with pytest.raises(DecodeError, match="exceeds"):
        unpackb(frame, CodecLimits(max_message_bytes=50))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        packb({"a": 1})[:-1],  # truncated
        packb({"a": 1}) + b"\x00",  # trailing bytes
        b"\xdd\xff\xff\xff\xff",  # array header claiming 4G items
        b"\x81\x81\xa1a\x01\x02",  # map used as a map key
        b"\x81\x01\x02",  # integer map key
        b"\xd4\x05\x00",  # msgpack extension type
        b"\xa2\xff\xfe",  # invalid UTF-8 string
        b"\x91" * 5000 + b"\xc0",  # 5000 nested arrays
        b"\x81\xa1a" * 5000 + b"\xc0",  # 5000 nested maps
    ],
    ids=lambda f: f[:8].hex() or "empty",
)
def test_malformed_frames_raise_decode_error(frame):
    with pytest.raises(DecodeError):
        unpackb(frame)


@pytest.mark.parametrize("frame", ["a text frame", 42, None])
def test_non_binary_input_is_refused(frame):
    with pytest.raises(DecodeError):
        unpackb(frame)


def test_random_bytes_never_escape_as_other_exceptions():
    # Any exception other than DecodeError (or a crash) fails this test.
    rng = np.random.default_rng(7)
    for _ in range(500):
        frame = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        try:
            unpackb(frame)
        except DecodeError:
            pass
