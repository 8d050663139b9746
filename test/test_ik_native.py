"""The native librelaxed_ik_lib.so at the C ABI level (raw ctypes, no wrapper checks in between):
exactly the upstream symbols, no abort on bad calls, owned result buffers, upstream semantics."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from relaxed_ik_bindings import BUNDLED_LIBRARY, RelaxedIK
from relaxed_ik_bindings.library import Opt

R1PRO = Path(__file__).resolve().parents[2] / "shared" / "r1pro"
LEFT = R1PRO / "settings_left.yaml"

pytestmark = pytest.mark.skipif(not BUNDLED_LIBRARY.is_file(), reason="native library not built: run `make native`")

ABI = {"relaxed_ik_new", "relaxed_ik_free", "reset", "solve_position", "solve_velocity", "get_ee_positions", "solve"}
D = ctypes.POINTER(ctypes.c_double)


@pytest.fixture(scope="module")
def lib():
    # A private CDLL object, so argtypes set here do not touch the wrapper's.
    cdll = ctypes.CDLL(str(BUNDLED_LIBRARY))
    cdll.relaxed_ik_new.restype = ctypes.c_void_p
    cdll.relaxed_ik_new.argtypes = [ctypes.c_char_p]
    cdll.relaxed_ik_free.argtypes = [ctypes.c_void_p]
    cdll.reset.argtypes = [ctypes.c_void_p, D, ctypes.c_int]
    for name in ("solve_position", "solve_velocity", "solve"):
        getattr(cdll, name).restype = Opt
        getattr(cdll, name).argtypes = [ctypes.c_void_p, D, ctypes.c_int, D, ctypes.c_int, D, ctypes.c_int]
    cdll.get_ee_positions.restype = Opt
    cdll.get_ee_positions.argtypes = [ctypes.c_void_p]
    return cdll


@pytest.fixture
def handle(lib):
    h = lib.relaxed_ik_new(str(LEFT).encode())
    assert h
    yield h
    lib.relaxed_ik_free(h)


def arr(values):
    values = list(values)
    return (ctypes.c_double * max(len(values), 1))(*values)


def copy(opt) -> np.ndarray:
    return np.array([opt.data[i] for i in range(opt.length)])


def start_goal():
    with RelaxedIK(LEFT) as ik:
        p, quat = ik.forward_kinematics(ik.settings.starting_config)
        return p, quat, ik.settings.starting_config


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not installed")
def test_exports_exactly_the_abi():
    out = subprocess.run(["nm", "-D", "--defined-only", str(BUNDLED_LIBRARY)], capture_output=True, text=True,
                         check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.split()[1:2] in (["T"], ["W"], ["D"], ["B"])}
    assert exported == ABI


def test_null_handle_is_harmless(lib):
    p, quat = arr([0.3, 0.2, 0.1]), arr([0, 0, 0, 1])
    tol = arr([0.0] * 6)
    assert lib.solve_position(None, p, 3, quat, 4, tol, 6).length == 0
    assert lib.solve(None, p, 3, quat, 4, tol, 6).length == 0
    assert lib.solve_velocity(None, p, 3, p, 3, tol, 6).length == 0
    assert lib.get_ee_positions(None).length == 0
    lib.reset(None, arr([0.0] * 7), 7)
    lib.relaxed_ik_free(None)


@pytest.mark.parametrize(
    "settings_text",
    [
        None,  # missing file
        "urdf: r1_pro_left.urdf\nbase_links: [torso_link4\n",
        "urdf: r1_pro_left.urdf\nbase_links: [torso_link4]\nee_links: [nowhere_link]\n",
        "urdf: nope.urdf\nbase_links: [torso_link4]\nee_links: [left_gripper_link]\n",
        "urdf: r1_pro_left.urdf\nbase_links: [torso_link4]\nee_links: [left_gripper_link]\nstarting_config: [1, 2]\n",
        "urdf: r1_pro_left.urdf\nbase_links: [torso_link4]\nee_links: [left_gripper_link]\nstarting_config: [a]\n",
    ],
    ids=["missing", "bad-yaml", "unknown-link", "missing-urdf", "short-start", "non-number-start"],
)
def test_new_returns_null_on_bad_settings(lib, tmp_path, settings_text):
    (tmp_path / "r1_pro_left.urdf").symlink_to(R1PRO / "r1_pro_left.urdf")
    path = tmp_path / "settings.yaml"
    if settings_text is not None:
        path.write_text(settings_text)
    assert not lib.relaxed_ik_new(str(path).encode())


def test_bad_calls_return_empty_and_leave_state_alone(lib, handle):
    p, quat, start = start_goal()
    tol = [0.0] * 6
    bad_calls = [
        (arr(p), 2, arr(quat), 4, arr(tol), 6),
        (arr(p), 3, arr(quat), 3, arr(tol), 6),
        (arr(p), 3, arr(quat), 4, arr(tol), 12),
        (None, 3, arr(quat), 4, arr(tol), 6),
        (arr(p), 3, None, 4, arr(tol), 6),
        (arr(p), 3, arr(quat), 4, None, 6),
        (arr([np.nan, 0, 0]), 3, arr(quat), 4, arr(tol), 6),
        (arr(p), 3, arr([0, 0, 0, 0]), 4, arr(tol), 6),
        (arr(p), 3, arr(quat), 4, arr([-1.0] + tol[1:]), 6),
        (arr(p), -3, arr(quat), 4, arr(tol), 6),
    ]
    goals = copy(lib.get_ee_positions(handle))
    for args in bad_calls:
        assert lib.solve_position(handle, *args).length == 0
        assert lib.solve(handle, *args).length == 0
    assert lib.solve_velocity(handle, arr([0, 0, 0]), 3, arr([0, 0]), 2, arr(tol), 6).length == 0
    assert lib.solve_velocity(handle, arr([0, 0, np.inf]), 3, arr([0, 0, 0]), 3, arr(tol), 6).length == 0
    lib.reset(handle, arr([1.0] * 6), 6)  # wrong length: ignored
    lib.reset(handle, arr([np.nan] * 7), 7)  # non-finite: ignored
    np.testing.assert_array_equal(copy(lib.get_ee_positions(handle)), goals)
    # Still a working solver whose state was untouched: the goal it holds is met by the start.
    result = copy(lib.solve_position(handle, arr(p), 3, arr(quat), 4, arr(tol), 6))
    np.testing.assert_allclose(result, start, atol=1e-9)


def test_results_live_in_one_owned_buffer(lib, handle):
    p, quat, _ = start_goal()
    tol = arr([0.0] * 6)
    first = lib.solve_position(handle, arr(p + [0.01, 0, 0]), 3, arr(quat), 4, tol, 6)
    second = lib.solve_position(handle, arr(p + [0.02, 0, 0]), 3, arr(quat), 4, tol, 6)
    address = ctypes.cast(first.data, ctypes.c_void_p).value
    assert address == ctypes.cast(second.data, ctypes.c_void_p).value  # reused, nothing leaked
    assert second.length == 7
    ee_first, ee_second = lib.get_ee_positions(handle), lib.get_ee_positions(handle)
    assert ctypes.cast(ee_first.data, ctypes.c_void_p).value == ctypes.cast(ee_second.data, ctypes.c_void_p).value
    np.testing.assert_allclose(copy(ee_second), p + [0.02, 0, 0], atol=1e-15)


def test_legacy_solve_matches_solve_position(lib):
    p, quat, _ = start_goal()
    goal = (arr(p + [0.03, -0.02, 0.01]), 3, arr(quat), 4, arr([0.0] * 6), 6)
    a = lib.relaxed_ik_new(str(LEFT).encode())
    b = lib.relaxed_ik_new(str(LEFT).encode())
    try:
        np.testing.assert_array_equal(copy(lib.solve_position(a, *goal)), copy(lib.solve(b, *goal)))
    finally:
        lib.relaxed_ik_free(a)
        lib.relaxed_ik_free(b)


def test_urdf_found_relative_to_settings_without_chdir(lib, tmp_path, monkeypatch):
    # The settings file refers to its URDF by a bare name; cwd is elsewhere.
    (tmp_path / "arm.urdf").symlink_to(R1PRO / "r1_pro_left.urdf")
    settings = tmp_path / "s.yaml"
    settings.write_text(LEFT.read_text().replace("r1_pro_left.urdf", "arm.urdf"))
    monkeypatch.chdir("/")
    h = lib.relaxed_ik_new(str(settings).encode())
    assert h
    lib.relaxed_ik_free(h)


def test_velocity_tolerances_use_a_stride_of_six(lib, tmp_path):
    # Upstream reads chain i's tolerances at [3i, 3i+6); ours must read [6i, 6i+6). Chain 1 gets a
    # large position tolerance only in the right slots: its goal moves inside it, so its joints
    # must stay put.
    settings = tmp_path / "both.yaml"
    start = [-0.4, 1.3, -0.7, -1.57, 1.3, -0.4, -0.8, -0.4, -1.3, 0.7, -1.57, -1.3, -0.4, 0.8]
    settings.write_text(f"urdf: {R1PRO / 'robot.urdf'}\nbase_links: [torso_link4, torso_link4]\n"
                        f"ee_links: [left_gripper_link, right_gripper_link]\nstarting_config: {start}\n")
    h = lib.relaxed_ik_new(str(settings).encode())
    assert h
    try:
        tol = [0.0] * 6 + [0.05, 0.05, 0.05, 0.0, 0.0, 0.0]
        q = copy(lib.solve_velocity(h, arr([0, 0, 0.01, 0, 0, 0.01]), 6, arr([0.0] * 6), 6, arr(tol), 12))
        assert q.shape == (14,)
        np.testing.assert_array_equal(q[7:], start[7:])
        assert np.abs(q[:7] - start[:7]).max() > 1e-4
    finally:
        lib.relaxed_ik_free(h)
