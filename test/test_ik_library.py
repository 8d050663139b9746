"""Library lookup and upstream-quirk handling of the RelaxedIK wrapper.

Upstream's Rust library is not available here, so a small C shim stands in for it: it forwards
the math to our library but behaves like upstream at the ABI (every result a fresh leaked
buffer; solve_velocity reading tolerances with a stride of 3). It is compiled per test session.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from relaxed_ik_bindings import BUNDLED_LIBRARY, LIBRARY_ENV, RelaxedIK, RelaxedIKLibraryError
from relaxed_ik_bindings.relaxed_ik import _remap_for_stride_bug

R1PRO = Path(__file__).resolve().parents[2] / "shared" / "r1pro"
LEFT = R1PRO / "settings_left.yaml"

pytestmark = pytest.mark.skipif(not BUNDLED_LIBRARY.is_file(), reason="native library not built: run `make native`")

FAKE_UPSTREAM_C = r"""
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
typedef struct { const double *data; int length; } Opt;
typedef Opt (*solve_fn)(void *, const double *, int, const double *, int, const double *, int);
struct Fake { void *real; int chains; };
static void *real_lib(void) {
  static void *lib;
  if (!lib) lib = dlopen(getenv("FAKE_UPSTREAM_REAL_LIB"), RTLD_NOW | RTLD_LOCAL);
  return lib;
}
static void *sym(const char *name) { return dlsym(real_lib(), name); }
static Opt leak(Opt o) {  /* upstream: a fresh Vec per call, never freed */
  if (o.length <= 0) return o;
  double *copy = malloc(sizeof(double) * o.length);
  memcpy(copy, o.data, sizeof(double) * o.length);
  Opt out = {copy, o.length};
  return out;
}
void *relaxed_ik_new(const char *path) {
  void *real = ((void *(*)(const char *))sym("relaxed_ik_new"))(path);
  if (!real) return NULL;
  struct Fake *f = malloc(sizeof *f);
  f->real = real;
  f->chains = ((Opt (*)(void *))sym("get_ee_positions"))(real).length / 3;
  return f;
}
void relaxed_ik_free(void *p) {
  if (!p) return;
  ((void (*)(void *))sym("relaxed_ik_free"))(((struct Fake *)p)->real);
  free(p);
}
#ifndef NO_RESET
void reset(void *p, const double *q, int n) {
  ((void (*)(void *, const double *, int))sym("reset"))(((struct Fake *)p)->real, q, n);
}
#endif
Opt solve_position(void *p, const double *a, int na, const double *b, int nb, const double *t, int nt) {
  return leak(((solve_fn)sym("solve_position"))(((struct Fake *)p)->real, a, na, b, nb, t, nt));
}
Opt solve_velocity(void *p, const double *a, int na, const double *b, int nb, const double *t, int nt) {
  struct Fake *f = p;
  double buggy[6 * 16];
  if (f->chains > 16 || nt != 6 * f->chains) abort();  /* upstream asserts */
  for (int i = 0; i < f->chains; ++i)
    for (int k = 0; k < 6; ++k) buggy[6 * i + k] = t[3 * i + k];  /* the stride-3 read */
  return leak(((solve_fn)sym("solve_velocity"))(f->real, a, na, b, nb, buggy, nt));
}
Opt get_ee_positions(void *p) {
  return leak(((Opt (*)(void *))sym("get_ee_positions"))(((struct Fake *)p)->real));
}
"""


def compile_fake(tmp_dir: Path, *defines: str) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for the fake upstream library")
    source = tmp_dir / "fake_upstream.c"
    source.write_text(FAKE_UPSTREAM_C)
    out = tmp_dir / ("libfake_upstream" + "".join(d.lower() for d in defines) + ".so")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", *[f"-D{d}" for d in defines], "-o", str(out), str(source),
                    "-ldl"], check=True)
    return out


@pytest.fixture(scope="module")
def fake_upstream(tmp_path_factory):
    return compile_fake(tmp_path_factory.mktemp("fake"))


@pytest.fixture(autouse=True)
def real_lib_for_fake(monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_REAL_LIB", str(BUNDLED_LIBRARY))
    monkeypatch.delenv(LIBRARY_ENV, raising=False)


def two_arm_settings(tmp_path: Path) -> Path:
    path = tmp_path / "both_arms.yaml"
    start = [-0.4, 1.3, -0.7, -1.57, 1.3, -0.4, -0.8, -0.4, -1.3, 0.7, -1.57, -1.3, -0.4, 0.8]
    path.write_text(f"urdf: {R1PRO / 'robot.urdf'}\nbase_links: [torso_link4, torso_link4]\n"
                    f"ee_links: [left_gripper_link, right_gripper_link]\nstarting_config: {start}\n")
    return path


# ---------------------------------------------------------------------------------- lookup
def test_library_missing_a_symbol_gives_a_clear_error():
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("libc not found")
    path = Path("/lib/x86_64-linux-gnu") / libc
    if not path.exists():
        path = Path(subprocess.run(["sh", "-c", f"ldconfig -p | grep -m1 '{libc} ' | sed 's/.*=> //'"],
                                   capture_output=True, text=True).stdout.strip())
    if not path.is_file():
        pytest.skip("libc path not found")
    with pytest.raises(RelaxedIKLibraryError, match="relaxed_ik_new"):
        RelaxedIK(LEFT, lib_path=path)


def test_missing_library_path_is_reported(tmp_path):
    with pytest.raises(RelaxedIKLibraryError, match="not found"):
        RelaxedIK(LEFT, lib_path=tmp_path / "librelaxed_ik_lib.so")


def test_not_a_library_is_reported(tmp_path):
    bogus = tmp_path / "librelaxed_ik_lib.so"
    bogus.write_text("not an ELF file")
    with pytest.raises(RelaxedIKLibraryError, match="cannot load"):
        RelaxedIK(LEFT, lib_path=bogus)


def test_environment_variable_then_explicit_path(tmp_path, monkeypatch):
    copy = tmp_path / "librelaxed_ik_lib.so"
    shutil.copy(BUNDLED_LIBRARY, copy)
    monkeypatch.setenv(LIBRARY_ENV, str(copy))
    with RelaxedIK(LEFT) as ik:
        assert ik.library_path == copy.resolve()
        # Not the bundled path, so the wrapper probed it: an owned result buffer means no quirks.
        assert ik.quirks == "none"
        assert ik.leaked_bytes == 0
    with RelaxedIK(LEFT, lib_path=BUNDLED_LIBRARY) as ik:
        assert ik.library_path == BUNDLED_LIBRARY.resolve()


def test_library_missing_reset_is_refused_at_load(tmp_path):
    # A library that exports most of the ABI but not `reset` must fail when loaded, naming it,
    # rather than at the first mode switch.
    no_reset = compile_fake(tmp_path, "NO_RESET")
    with pytest.raises(RelaxedIKLibraryError, match="'reset'"):
        RelaxedIK(LEFT, lib_path=no_reset)


# ---------------------------------------------------------------------------------- upstream quirks
def test_upstream_like_library_is_detected_and_its_leak_counted(fake_upstream):
    with RelaxedIK(LEFT, lib_path=fake_upstream) as ik:
        assert ik.quirks == "upstream"
        p, quat = ik.forward_kinematics(ik.settings.starting_config)
        before = ik.leaked_bytes
        q = ik.solve_position(p + [0.01, 0.0, 0.0], quat, np.zeros(6))
        assert ik.leaked_bytes == before + 8 * 7
        assert ik.last_solution_ok
        # Same answers as our library gives directly.
        with RelaxedIK(LEFT) as ours:
            np.testing.assert_array_equal(ours.solve_position(p + [0.01, 0.0, 0.0], quat, np.zeros(6)), q)


def test_fake_really_has_the_stride_bug(fake_upstream, tmp_path):
    # Guard for the tests below: through the raw call, chain 1's intended 5 cm position tolerance
    # lands in chain 0's rotation slots, so chain 1 is solved with zero position tolerance and moves.
    with RelaxedIK(two_arm_settings(tmp_path), lib_path=fake_upstream, multi_chain_velocity="remap") as ik:
        start = ik.settings.starting_config
        tolerances = np.concatenate([np.zeros(6), [0.05, 0.05, 0.05, 0.0, 0.0, 0.0]])
        q = ik._call_solve_velocity(np.array([0, 0, 0.01, 0, 0, 0.01]), np.zeros(6), tolerances)
        assert np.abs(q[7:] - start[7:]).max() > 1e-4


@pytest.mark.parametrize("mode", ["emulate", "remap"])
def test_multi_chain_velocity_gets_the_intended_tolerances(fake_upstream, tmp_path, mode):
    settings = two_arm_settings(tmp_path)
    # remap needs chain 0's rotation tolerances == chain 1's position tolerances.
    tolerances = np.concatenate([np.zeros(6), [0.0, 0.0, 0.0, 0.3, 0.3, 0.3]]) if mode == "remap" else \
        np.concatenate([np.zeros(6), [0.05, 0.05, 0.05, 0.0, 0.0, 0.0]])
    dpos = np.array([0.0, 0.0, 0.01, 0.0, 0.0, 0.0])
    drot = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1]) if mode == "remap" else np.zeros(6)
    with RelaxedIK(settings, lib_path=fake_upstream, multi_chain_velocity=mode) as ik, RelaxedIK(settings) as ours:
        assert ik.quirks == "upstream"
        q = ik.solve_velocity(dpos, drot, tolerances)
        expected = ours.solve_velocity(dpos, drot, tolerances)
        np.testing.assert_allclose(q, expected, atol=1e-9)
        start = ik.settings.starting_config
        np.testing.assert_array_equal(q[7:], start[7:])  # chain 1's change stays inside its tolerance
        assert ik.last_solution_ok


def test_remap_refuses_what_cannot_be_laid_out(fake_upstream, tmp_path):
    with RelaxedIK(two_arm_settings(tmp_path), lib_path=fake_upstream, multi_chain_velocity="remap") as ik:
        with pytest.raises(ValueError, match="stride"):
            ik.solve_velocity(np.zeros(6), np.zeros(6), np.concatenate([np.zeros(6), np.full(6, 0.05)]))
    with RelaxedIK(two_arm_settings(tmp_path), lib_path=fake_upstream, multi_chain_velocity="refuse") as ik:
        with pytest.raises(ValueError, match="refused"):
            ik.solve_velocity(np.zeros(6), np.zeros(6), np.zeros(12))
        # One chain per call is unaffected by the bug: a single-chain instance is never refused.
    with RelaxedIK(LEFT, lib_path=fake_upstream, multi_chain_velocity="refuse") as ik:
        ik.solve_velocity([0.0, 0.0, 0.005], np.zeros(3), np.zeros(6))
        assert ik.last_solution_ok


@pytest.mark.parametrize("num_chains", [2, 3, 4])
def test_remap_layout_survives_the_buggy_read(num_chains):
    rng = np.random.default_rng(num_chains)
    intended = rng.uniform(0.0, 0.1, size=(num_chains, 6))
    for i in range(num_chains - 1):
        intended[i + 1, :3] = intended[i, 3:]
    laid_out = _remap_for_stride_bug(intended.ravel(), num_chains)
    assert laid_out.shape == (6 * num_chains,)
    for i in range(num_chains):
        np.testing.assert_array_equal(laid_out[3 * i : 3 * i + 6], intended[i])


def test_upstream_mode_reset_retargets_goals(fake_upstream):
    with RelaxedIK(LEFT, lib_path=fake_upstream) as ik:
        rng = np.random.default_rng(7)
        q = rng.uniform(ik.lower_limits, ik.upper_limits)
        ik.reset(q)
        p, _ = ik.forward_kinematics(q)
        np.testing.assert_allclose(ik.get_ee_positions(), p, atol=1e-12)
        np.testing.assert_allclose(ik.solve_velocity(np.zeros(3), np.zeros(3), np.zeros(6)), q, atol=1e-12)


def test_upstream_mode_refuses_axes_upstream_cannot_handle(tmp_path):
    (tmp_path / "tilted.urdf").write_text(
        "<robot name='t'><link name='base'/><link name='a'/><link name='ee'/>"
        "<joint name='j1' type='revolute'><parent link='base'/><child link='a'/><axis xyz='0 0.6 0.8'/>"
        "<limit lower='-1' upper='1'/></joint>"
        "<joint name='j2' type='fixed'><parent link='a'/><child link='ee'/><origin xyz='0 0 0.3'/></joint></robot>")
    settings = tmp_path / "tilted.yaml"
    settings.write_text("urdf: tilted.urdf\nbase_links: [base]\nee_links: [ee]\n")
    with pytest.raises(ValueError, match="axis"):
        RelaxedIK(settings, quirks="upstream")
    # Our library handles any axis.
    with RelaxedIK(settings) as ik:
        p, quat = ik.forward_kinematics([0.5])
        q = ik.solve_position(p, quat, [0, 0, 0, np.pi, np.pi, np.pi])
        np.testing.assert_allclose(q, [0.5], atol=1e-6)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="quirks"):
        RelaxedIK(LEFT, quirks="maybe")
    with pytest.raises(ValueError, match="multi_chain_velocity"):
        RelaxedIK(LEFT, multi_chain_velocity="split")
    with pytest.raises(ValueError, match="position_slack"):
        RelaxedIK(LEFT, position_slack=-1.0)
