"""RelaxedIK: a safe ctypes wrapper around a librelaxed_ik_lib.so (ours or upstream's).

Every input is checked in Python before the library sees it (upstream aborts the whole process on
a wrong length), every returned ``Opt`` is copied at once, the handle is freed exactly once, calls
on one instance are serialized, and upstream's quirks are worked around:

* Leaked results: upstream's ``Opt`` is a deliberately leaked Rust ``Vec`` that nothing can free.
  The wrapper copies it and counts the bytes in :attr:`RelaxedIK.leaked_bytes`; the only cure is
  a library that owns its buffers, as ours does.
* ``<cwd>/configs/urdfs/<urdf>``: upstream reads the URDF relative to the current directory. The
  wrapper creates the handle in a scratch directory that links the URDF there, then restores the
  cwd. ``chdir`` is process-wide, so handle creation holds a module lock.
* ``solve_velocity`` tolerance stride (3 instead of 6 with 2+ chains): emulated by an absolute
  ``solve_position`` (default), remapped, or refused: see ``multi_chain_velocity``.
* ``reset`` leaves upstream's goals where they were: the wrapper re-targets them to FK(q).
* "No valid solution" returns the previous solution silently: every answer is checked by
  forward kinematics (``verify``), and :attr:`RelaxedIK.last_check` says whether it reached the goal.
"""

from __future__ import annotations

import ctypes
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .check import SolutionCheck, check_solution
from .library import RelaxedIKLibrary, load_library
from .settings import IKSettings, load_settings
from .transforms import matrix_to_quat_xyzw, quat_multiply_xyzw, rotvec_to_quat_xyzw

PathLike = Union[str, "os.PathLike[str]"]

QUIRK_MODES = ("auto", "upstream", "none")
MULTI_CHAIN_VELOCITY_MODES = ("emulate", "remap", "refuse")

_PER_CHAIN = ("positions", "quaternions_xyzw", "tolerances", "position_increments", "rotation_increments")

# chdir is process-global: only one handle is created at a time, whatever the instance.
_CWD_LOCK = threading.Lock()


class RelaxedIKError(RuntimeError):
    """The library failed where valid input should have succeeded (NULL handle, empty result)."""


class RelaxedIK:
    """One relaxed-IK solver instance over the chains of a settings file.

    Args:
        settings_path: relaxed_ik settings YAML (``urdf``, ``base_links``, ``ee_links``,
            ``starting_config``). The URDF is looked up next to it, then in
            ``<cwd>/configs/urdfs/``.
        lib_path: library to load; default ``$RELAXED_IK_LIB``, then the bundled build.
        quirks: ``"upstream"`` (leaky results, tolerance-stride bug, stale goals after reset),
            ``"none"`` (a library that owns its buffers, like ours), or ``"auto"``: the bundled
            library is ours; any other is probed (upstream hands out a fresh leaked buffer on
            every call, ours the same owned one).
        verify: check every solution by forward kinematics (see :attr:`last_check`).
        position_slack, rotation_slack: how far (m, rad) outside its tolerances a solution may
            land and still count as reaching the goal.
        normalize_quaternions: accept any non-zero quaternion and normalize it; otherwise
            quaternions must have unit norm within ``quaternion_norm_tolerance``.
        multi_chain_velocity: with 2+ chains on a library with the stride bug, ``"emulate"``
            turns the increment into an absolute ``solve_position`` (exact), ``"remap"`` lays the
            tolerances out so the buggy read gets them (only possible when each chain's rotation
            tolerances equal the next chain's position tolerances), ``"refuse"`` raises.
    """

    def __init__(
        self,
        settings_path: PathLike,
        lib_path: Optional[PathLike] = None,
        *,
        quirks: str = "auto",
        verify: bool = True,
        position_slack: float = 1e-3,
        rotation_slack: float = 1e-2,
        normalize_quaternions: bool = False,
        quaternion_norm_tolerance: float = 1e-3,
        multi_chain_velocity: str = "emulate",
    ) -> None:
        self._handle: Optional[int] = None
        if quirks not in QUIRK_MODES:
            raise ValueError(f"quirks must be one of {QUIRK_MODES}, got {quirks!r}")
        if multi_chain_velocity not in MULTI_CHAIN_VELOCITY_MODES:
            raise ValueError(
                f"multi_chain_velocity must be one of {MULTI_CHAIN_VELOCITY_MODES}, got {multi_chain_velocity!r}"
            )
        for name, value in (("position_slack", position_slack), ("rotation_slack", rotation_slack),
                            ("quaternion_norm_tolerance", quaternion_norm_tolerance)):
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self._lock = threading.RLock()
        self.settings: IKSettings = load_settings(settings_path)
        self._library: RelaxedIKLibrary = load_library(lib_path)
        self.verify = verify
        self.position_slack = float(position_slack)
        self.rotation_slack = float(rotation_slack)
        self.normalize_quaternions = normalize_quaternions
        self.quaternion_norm_tolerance = float(quaternion_norm_tolerance)
        self.multi_chain_velocity = multi_chain_velocity

        self._chains = self.settings.chains
        self._n = self.settings.num_chains
        self._dofs = self.settings.num_dofs
        might_be_upstream = quirks == "upstream" or (quirks == "auto" and not self._library.is_bundled)
        if might_be_upstream:
            for chain in self._chains:
                for joint in chain.joints:
                    if not joint.has_principal_axis:
                        raise ValueError(
                            f"joint {joint.name!r} has axis {joint.axis.tolist()}: upstream relaxed_ik only "
                            "handles +-x, +-y, +-z axes (pass quirks='none' for a library that handles any axis)"
                        )

        # Fixed ctypes buffers: numpy views fill them without allocating on every call.
        self._buffers = {}
        for name, size in (("pos", 3 * self._n), ("quat", 4 * self._n), ("tol", 6 * self._n),
                           ("rot", 3 * self._n), ("q", self._dofs)):
            c_array = (ctypes.c_double * size)()
            self._buffers[name] = (c_array, np.frombuffer(c_array, dtype=np.float64))
        self._fn_solve_position = self._library.function("solve_position")
        self._fn_solve_velocity = self._library.function("solve_velocity")
        self.leaked_bytes = 0
        self._leaky = True  # until known otherwise, count results as leaked

        self._handle = self._create_handle()
        try:
            self.quirks = self._resolve_quirks(quirks)
            self._leaky = self.quirks == "upstream"
            start = self.settings.starting_config.copy()
            self._goal_positions, self._goal_quaternions = self._forward_flat(start)
            self._tolerances = np.zeros(6 * self._n)
            self._solution = start
            self._last_check: Optional[SolutionCheck] = None
            self._check_library_agrees()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------- properties
    @property
    def num_chains(self) -> int:
        """Number of chains (base/ee pairs) in this instance."""
        return self._n

    @property
    def num_dofs(self) -> int:
        """Length of the joint vector (all chains concatenated, settings order)."""
        return self._dofs

    @property
    def library_path(self) -> Path:
        """The library file in use."""
        return self._library.path

    @property
    def lower_limits(self) -> np.ndarray:
        """Lower joint limits (-inf for continuous joints)."""
        return np.concatenate([c.lower for c in self._chains])

    @property
    def upper_limits(self) -> np.ndarray:
        """Upper joint limits (+inf for continuous joints)."""
        return np.concatenate([c.upper for c in self._chains])

    @property
    def closed(self) -> bool:
        """Whether the handle has been freed."""
        return self._handle is None

    @property
    def last_solution(self) -> np.ndarray:
        """The latest joint vector (the starting config before the first solve)."""
        with self._lock:
            return self._solution.copy()

    @property
    def last_check(self) -> Optional[SolutionCheck]:
        """Forward-kinematics verdict on the latest solve (None before one, after reset, or if
        ``verify`` is off)."""
        return self._last_check

    @property
    def last_solution_ok(self) -> bool:
        """Whether the latest solve reached its goal (False when it was not checked)."""
        check = self._last_check
        return check is not None and check.ok

    # ----------------------------------------------------------------------------- solving
    def solve_position(self, positions, quaternions_xyzw, tolerances) -> np.ndarray:
        """Solve for absolute ee goals in each chain's base frame.

        Args:
            positions: 3 per chain (x, y, z), metres.
            quaternions_xyzw: 4 per chain (x, y, z, w).
            tolerances: 6 per chain (x, y, z, rx, ry, rz) half-widths along the goal frame's axes;
                inside them the goal costs nothing.
        Returns:
            The joint vector (num_dofs,), chains concatenated in settings order.
        """
        with self._lock:
            self._require_open()
            position = self._vector(positions, 3 * self._n, "positions")
            quaternion = self._quaternions(quaternions_xyzw)
            tolerance = self._tolerance_vector(tolerances)
            q = self._call_solve_position(position, quaternion, tolerance, "solve_position")
            self._goal_positions, self._goal_quaternions, self._tolerances = position, quaternion, tolerance
            return self._accept(q)

    def solve_velocity(self, position_increments, rotation_increments, tolerances) -> np.ndarray:
        """Move each chain's goal by an increment and solve.

        Args:
            position_increments: 3 per chain, metres, base frame; added to the goal position.
            rotation_increments: 3 per chain, rotation vector (rad), base frame; the goal
                orientation becomes exp(increment) * orientation.
            tolerances: 6 per chain, as in :meth:`solve_position`.
        Returns:
            The joint vector (num_dofs,).
        """
        with self._lock:
            self._require_open()
            dpos = self._vector(position_increments, 3 * self._n, "position_increments")
            drot = self._vector(rotation_increments, 3 * self._n, "rotation_increments")
            tolerance = self._tolerance_vector(tolerances)
            goal_positions = self._goal_positions + dpos
            goal_quaternions = np.concatenate([
                _normalized(quat_multiply_xyzw(rotvec_to_quat_xyzw(drot[3 * i : 3 * i + 3]),
                                               self._goal_quaternions[4 * i : 4 * i + 4]))
                for i in range(self._n)
            ])
            if self.quirks == "upstream" and self._n >= 2:
                if self.multi_chain_velocity == "refuse":
                    raise ValueError(
                        "solve_velocity with 2+ chains is refused on this library: upstream reads the "
                        "tolerances with a stride of 3 (multi_chain_velocity='refuse')"
                    )
                if self.multi_chain_velocity == "emulate":
                    q = self._call_solve_position(goal_positions, goal_quaternions, tolerance, "solve_velocity")
                else:
                    q = self._call_solve_velocity(dpos, drot, _remap_for_stride_bug(tolerance, self._n))
            else:
                q = self._call_solve_velocity(dpos, drot, tolerance)
            self._goal_positions, self._goal_quaternions, self._tolerances = (
                goal_positions, goal_quaternions, tolerance)
            return self._accept(q)

    def reset(self, joint_positions) -> None:
        """Set the solver's current and previous states to joint_positions (num_dofs,) and its
        goals to their forward kinematics. Call it whenever the robot moved without the solver."""
        with self._lock:
            self._require_open()
            q = self._vector(joint_positions, self._dofs, "joint_positions")
            fn_reset = self._library.function("reset")
            c_q, view_q = self._buffers["q"]
            view_q[:] = q
            fn_reset(self._handle, c_q, self._dofs)
            goal_positions, goal_quaternions = self._forward_flat(q)
            if self.quirks == "upstream":
                # Upstream's reset keeps the old goals: move them with one solve at the new pose,
                # then reset again so the solve leaves no trace in the smoothness history.
                self._call_solve_position(goal_positions, goal_quaternions, np.zeros(6 * self._n), "reset")
                view_q[:] = q
                fn_reset(self._handle, c_q, self._dofs)
            self._goal_positions, self._goal_quaternions = goal_positions, goal_quaternions
            self._solution = q.copy()
            self._last_check = None

    def get_ee_positions(self) -> np.ndarray:
        """The library's current GOAL positions (3 per chain), as upstream names them."""
        with self._lock:
            self._require_open()
            opt = self._library.function("get_ee_positions")(self._handle)
            return self._copy_result(opt, 3 * self._n, "get_ee_positions")

    def goal_quaternions(self) -> np.ndarray:
        """Current goal orientations (4 per chain, x y z w), as the wrapper tracks them."""
        with self._lock:
            return self._goal_quaternions.copy()

    def forward_kinematics(self, joint_positions) -> Tuple[np.ndarray, np.ndarray]:
        """Ee positions (3N,) and quaternions (4N, x y z w) of each chain at joint_positions."""
        q = self._vector(joint_positions, self._dofs, "joint_positions")
        return self._forward_flat(q)

    def check_solution(self, joint_positions=None) -> SolutionCheck:
        """Forward-kinematics check of joint_positions (default: the latest solution) against the
        current goals and tolerances."""
        with self._lock:
            q = self._solution if joint_positions is None else self._vector(
                joint_positions, self._dofs, "joint_positions")
            return self._check(q, previous=self._solution)

    # ----------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Free the library handle (once; later calls do nothing)."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                self._library.function("relaxed_ik_free")(handle)

    def __enter__(self) -> "RelaxedIK":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down ctypes already
            pass

    def __repr__(self) -> str:
        return (f"RelaxedIK({str(self.settings.settings_path)!r}, chains={self._n}, dofs={self._dofs}, "
                f"lib={str(self._library.path)!r}, closed={self.closed})")

    # ----------------------------------------------------------------------------- internals
    def _require_open(self) -> None:
        if self._handle is None:
            raise ValueError("RelaxedIK instance is closed (its handle was freed)")

    def _create_handle(self) -> int:
        settings = self.settings
        fn_new = self._library.function("relaxed_ik_new")
        with _CWD_LOCK, tempfile.TemporaryDirectory(prefix="relaxed_ik_") as scratch:
            urdfs = Path(scratch, "configs", "urdfs")
            urdfs.mkdir(parents=True)
            # Upstream builds the path by string concatenation: "<cwd>/configs/urdfs/" + urdf.
            link = Path(os.path.normpath(os.path.join(str(urdfs), settings.urdf_name.lstrip("/"))))
            if Path(scratch) not in link.parents:
                raise ValueError(f"urdf name {settings.urdf_name!r} points outside <cwd>/configs")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(settings.urdf_path)
            previous = os.getcwd()
            os.chdir(scratch)
            try:
                handle = fn_new(os.fsencode(str(settings.settings_path)))
            finally:
                os.chdir(previous)
        if not handle:
            raise RelaxedIKError(
                f"relaxed_ik_new returned NULL for {str(settings.settings_path)!r} (library {self._library.path})"
            )
        return handle

    def _resolve_quirks(self, quirks: str) -> str:
        if quirks != "auto":
            return quirks
        if self._library.is_bundled:
            return "none"
        # Upstream leaks a fresh Vec per call, so two live results never share an address; a
        # library that owns its result buffer hands out the same one.
        fn = self._library.function("get_ee_positions")
        first = fn(self._handle)
        second = fn(self._handle)
        same = (first.length > 0 and ctypes.cast(first.data, ctypes.c_void_p).value
                == ctypes.cast(second.data, ctypes.c_void_p).value)
        if not same:
            self.leaked_bytes += 8 * (max(first.length, 0) + max(second.length, 0))
        return "none" if same else "upstream"

    def _check_library_agrees(self) -> None:
        # The library parsed the URDF itself: its initial goals must be FK(starting_config) as
        # computed here, or the two disagree about the robot (another URDF, another chain).
        goals = self.get_ee_positions()
        if not np.allclose(goals, self._goal_positions, atol=1e-6):
            raise RelaxedIKError(
                f"library's initial ee goals {goals.round(6).tolist()} differ from forward kinematics of "
                f"starting_config {self._goal_positions.round(6).tolist()}: it read another robot model"
            )

    def _vector(self, value, size: int, name: str) -> np.ndarray:
        try:
            array = np.asarray(value)
        except Exception as error:  # e.g. ragged nested sequences
            raise ValueError(f"{name}: not a numeric array ({error})") from None
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected real numbers, got dtype {array.dtype}")
        if array.size != size:
            layout = f"{size // self._n} per chain x {self._n} chains" if name in _PER_CHAIN else "one per joint"
            raise ValueError(f"{name}: expected {size} values ({layout}), got shape {array.shape}")
        array = array.astype(np.float64).reshape(size)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: holds NaN or inf")
        return array

    def _quaternions(self, value) -> np.ndarray:
        quaternion = self._vector(value, 4 * self._n, "quaternions_xyzw")
        values = quaternion.tolist()
        for i in range(self._n):
            x, y, z, w = values[4 * i : 4 * i + 4]
            norm = math.sqrt(x * x + y * y + z * z + w * w)
            if norm < 1e-9:
                raise ValueError(f"quaternions_xyzw: quaternion {i} is zero and has no orientation")
            if not self.normalize_quaternions and abs(norm - 1.0) > self.quaternion_norm_tolerance:
                raise ValueError(
                    f"quaternions_xyzw: quaternion {i} has norm {norm:.6g}, not 1 within "
                    f"{self.quaternion_norm_tolerance} (pass normalize_quaternions=True to accept any)"
                )
            quaternion[4 * i : 4 * i + 4] /= norm
        return quaternion

    def _tolerance_vector(self, value) -> np.ndarray:
        tolerance = self._vector(value, 6 * self._n, "tolerances")
        if (tolerance < 0).any():
            raise ValueError("tolerances: must be >= 0")
        return tolerance

    def _call_solve_position(self, position, quaternion, tolerance, what: str) -> np.ndarray:
        c_pos, v_pos = self._buffers["pos"]
        c_quat, v_quat = self._buffers["quat"]
        c_tol, v_tol = self._buffers["tol"]
        v_pos[:], v_quat[:], v_tol[:] = position, quaternion, tolerance
        opt = self._fn_solve_position(self._handle, c_pos, 3 * self._n, c_quat, 4 * self._n, c_tol, 6 * self._n)
        return self._copy_result(opt, self._dofs, what)

    def _call_solve_velocity(self, dpos, drot, tolerance) -> np.ndarray:
        c_pos, v_pos = self._buffers["pos"]
        c_rot, v_rot = self._buffers["rot"]
        c_tol, v_tol = self._buffers["tol"]
        v_pos[:], v_rot[:], v_tol[:] = dpos, drot, tolerance
        opt = self._fn_solve_velocity(self._handle, c_pos, 3 * self._n, c_rot, 3 * self._n, c_tol, 6 * self._n)
        return self._copy_result(opt, self._dofs, "solve_velocity")

    def _copy_result(self, opt: "ctypes.Structure", expected: int, what: str) -> np.ndarray:
        # Copy first: the memory is the library's (ours: reused on the next call; upstream:
        # leaked and never freed).
        length = int(opt.length)
        if self._leaky and length > 0:
            self.leaked_bytes += 8 * length
        if length != expected or not opt.data:
            raise RelaxedIKError(f"{what}: library returned {length} values, expected {expected}")
        out = np.empty(expected)
        ctypes.memmove(out.ctypes.data, opt.data, 8 * expected)
        if not np.isfinite(out).all():
            raise RelaxedIKError(f"{what}: library returned a non-finite joint vector")
        return out

    def _accept(self, q: np.ndarray) -> np.ndarray:
        previous = self._solution
        self._solution = q
        self._last_check = self._check(q, previous) if self.verify else None
        return q.copy()

    def _check(self, q: np.ndarray, previous: np.ndarray) -> SolutionCheck:
        return check_solution(self._chains, q, self._goal_positions, self._goal_quaternions, self._tolerances,
                              self.position_slack, self.rotation_slack, previous)

    def _forward_flat(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        positions, quaternions = [], []
        offset = 0
        for chain in self._chains:
            position, rotation = chain.forward(q[offset : offset + chain.dof])
            positions.append(position)
            quaternions.append(matrix_to_quat_xyzw(rotation))
            offset += chain.dof
        return np.concatenate(positions), np.concatenate(quaternions)


def _normalized(quaternion: np.ndarray) -> np.ndarray:
    return quaternion / np.linalg.norm(quaternion)


def _remap_for_stride_bug(tolerance: np.ndarray, num_chains: int) -> np.ndarray:
    """Tolerances laid out so that upstream's solve_velocity, which reads chain i's six values at
    [3i, 3i + 6) instead of [6i, 6i + 6), gets what was meant. Possible only when each chain's
    rotation tolerances equal the next chain's position tolerances (e.g. all equal)."""
    per_chain = tolerance.reshape(num_chains, 6)
    for i in range(num_chains - 1):
        if not np.array_equal(per_chain[i, 3:], per_chain[i + 1, :3]):
            raise ValueError(
                "solve_velocity: this library reads multi-chain tolerances with a stride of 3, and these "
                f"tolerances cannot be laid out for it (chain {i} rotation {per_chain[i, 3:].tolist()} != chain "
                f"{i + 1} position {per_chain[i + 1, :3].tolist()}); use multi_chain_velocity='emulate'"
            )
    out = np.zeros(6 * num_chains)
    for i in range(num_chains):
        out[3 * i : 3 * i + 3] = per_chain[i, :3]
    out[3 * num_chains : 3 * num_chains + 3] = per_chain[-1, 3:]
    return out
