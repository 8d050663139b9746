"""Relaxed-IK benchmark on the R1 Pro left arm, through the Python wrapper, beside ikpy.

Measures, on the same targets for both solvers:
  * random targets: FK of random in-limit joint vectors, each solved from a random start
    (``reset`` to a random configuration first);
  * trajectory tracking: smooth 50 Hz joint-space trajectories (sinusoids around the starting
    config, inside the limits, <= 40 % of the velocity limits) mapped to ee poses by FK, tracked
    call after call (warm start from the previous solution; ikpy from its previous answer);
  * memory: RSS growth over many tracking calls (``--calls``).
Success = position error <= 1 mm, rotation error <= 0.01 rad, joints within limits.

    .venv/bin/python bench/ik.py [--targets 1000] [--trajectory 500] [--trajectories 1] [--calls 1000000]
                                 [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relaxed_ik_bindings import RelaxedIK  # noqa: E402
from relaxed_ik_bindings.library import Opt  # noqa: E402
from relaxed_ik_bindings.transforms import quat_xyzw_to_matrix  # noqa: E402

DEFAULT_SETTINGS = REPO.parent / "shared" / "r1pro" / "settings_left.yaml"
DT = 0.02
POSITION_OK = 1e-3
ROTATION_OK = 0.01


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def errors(ik: RelaxedIK, q: np.ndarray, position: np.ndarray, quaternion: np.ndarray):
    p, quat = ik.forward_kinematics(q)
    relative = quat_xyzw_to_matrix(quaternion).T @ quat_xyzw_to_matrix(quat)
    angle = float(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)))
    within = bool(np.all(q >= ik.lower_limits - 1e-9) and np.all(q <= ik.upper_limits + 1e-9))
    return float(np.linalg.norm(p - position)), angle, within


def success(ik, q, position, quaternion) -> bool:
    position_error, rotation_error, within = errors(ik, q, position, quaternion)
    return position_error <= POSITION_OK and rotation_error <= ROTATION_OK and within


def summary_us(times_ns) -> dict:
    t = np.asarray(times_ns, dtype=np.float64) / 1e3
    return {"median_us": float(np.median(t)), "p99_us": float(np.percentile(t, 99)), "mean_us": float(t.mean())}


def make_trajectory(ik: RelaxedIK, n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth joint trajectory around the starting config, inside the limits (80 % of the room on
    either side), at most 40 % of each joint's velocity limit."""
    chain = ik.settings.chains[0]
    low, high = chain.lower, chain.upper
    middle = ik.settings.starting_config
    room = np.minimum(middle - low, high - middle) * 0.8
    t = np.arange(n) * DT
    frequency = rng.uniform(0.1, 0.4, size=chain.dof)
    phase = rng.uniform(0, 2 * np.pi, size=chain.dof)
    amplitude = np.minimum(room, 0.4 * chain.velocity_limits / (2 * np.pi * frequency))
    return middle + amplitude * np.sin(2 * np.pi * frequency * t[:, None] + phase)


def bench_ours(ik: RelaxedIK, starts, targets, trajectory_poses, trajectory_start) -> dict:
    chain = ik.settings.chains[0]
    zero = np.zeros(6)
    out = {}
    times, ok, iterations_ok = [], 0, []
    for start, (position, quaternion) in zip(starts, targets, strict=True):
        ik.reset(start)
        t0 = time.perf_counter_ns()
        q = ik.solve_position(position, quaternion, zero)
        times.append(time.perf_counter_ns() - t0)
        good = success(ik, q, position, quaternion)
        ok += good
        iterations_ok.append(good == ik.last_solution_ok)
    out["random"] = {"success": ok / len(targets), **summary_us(times),
                     "check_agrees_with_bench": float(np.mean(iterations_ok))}

    times, ok, steps, over, total = [], 0, [], 0, 0
    for poses, start in zip(trajectory_poses, trajectory_start, strict=True):
        ik.reset(start)
        previous = start
        for position, quaternion in poses:
            t0 = time.perf_counter_ns()
            q = ik.solve_position(position, quaternion, zero)
            times.append(time.perf_counter_ns() - t0)
            ok += success(ik, q, position, quaternion)
            step = np.abs(q - previous)
            steps.append(step.max())
            over += bool(np.any(step > chain.velocity_limits * DT))
            previous = q
            total += 1
    out["trajectory"] = {"poses": total, "success": ok / total, **summary_us(times),
                         "max_joint_step_rad": float(max(steps)), "steps_over_velocity_limit": over,
                         "velocity_limit_x_dt_min_rad": float((chain.velocity_limits * DT).min())}
    return out


def bench_unchecked_and_raw(ik: RelaxedIK, trajectory_poses, trajectory_start) -> dict:
    """The same tracking with verify off, and as raw ctypes calls (the library's own cost)."""
    zero = np.zeros(6)
    out = {}
    ik.verify = False
    ik.reset(trajectory_start)
    times = []
    for position, quaternion in trajectory_poses:
        t0 = time.perf_counter_ns()
        ik.solve_position(position, quaternion, zero)
        times.append(time.perf_counter_ns() - t0)
    out["trajectory_verify_off"] = summary_us(times)
    ik.verify = True

    cdll = ctypes.CDLL(str(ik.library_path))
    d = ctypes.POINTER(ctypes.c_double)
    cdll.relaxed_ik_new.restype = ctypes.c_void_p
    cdll.relaxed_ik_new.argtypes = [ctypes.c_char_p]
    cdll.relaxed_ik_free.argtypes = [ctypes.c_void_p]
    cdll.reset.argtypes = [ctypes.c_void_p, d, ctypes.c_int]
    cdll.solve_position.restype = Opt
    cdll.solve_position.argtypes = [ctypes.c_void_p, d, ctypes.c_int, d, ctypes.c_int, d, ctypes.c_int]
    handle = cdll.relaxed_ik_new(str(ik.settings.settings_path).encode())
    cdll.reset(handle, (ctypes.c_double * 7)(*trajectory_start), 7)
    c_pos, c_quat, c_tol = (ctypes.c_double * 3)(), (ctypes.c_double * 4)(), (ctypes.c_double * 6)()
    goals = [(list(p), list(q)) for p, q in trajectory_poses]
    times = []
    for position, quaternion in goals:
        c_pos[:] = position
        c_quat[:] = quaternion
        t0 = time.perf_counter_ns()
        cdll.solve_position(handle, c_pos, 3, c_quat, 4, c_tol, 6)
        times.append(time.perf_counter_ns() - t0)
    cdll.relaxed_ik_free(handle)
    out["trajectory_raw_ctypes"] = summary_us(times)
    return out


def ikpy_chain(urdf: Path, base_link: str):
    from ikpy.chain import Chain

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = Chain.from_urdf_file(str(urdf), base_elements=[base_link])
        # ikpy follows the tree to its last link; cut after the gripper link (the IK ee).
        cut = [link.name for link in full.links].index("left_gripper_joint") + 1
        links = full.links[:cut]
        return Chain(links, active_links_mask=[link.joint_type != "fixed" for link in links])


def bench_ikpy(ik: RelaxedIK, starts, targets, trajectory_poses, trajectory_start) -> dict:
    chain = ikpy_chain(ik.settings.urdf_path, ik.settings.chains[0].base_link)
    active = [i for i, link in enumerate(chain.links) if link.joint_type != "fixed"]
    velocity_dt = ik.settings.chains[0].velocity_limits * DT

    def full(q):
        out = np.zeros(len(chain.links))
        out[active] = q
        return out

    def solve(position, quaternion, start):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter_ns()
            result = chain.inverse_kinematics(position, quat_xyzw_to_matrix(quaternion), orientation_mode="all",
                                              initial_position=full(start))
            return result[active], time.perf_counter_ns() - t0

    out = {}
    times, ok = [], 0
    for start, (position, quaternion) in zip(starts, targets, strict=True):
        q, dt_ns = solve(position, quaternion, start)
        times.append(dt_ns)
        ok += success(ik, q, position, quaternion)
    out["random"] = {"success": ok / len(targets), **summary_us(times)}
    times, ok, steps, over, total = [], 0, [], 0, 0
    for poses, start in zip(trajectory_poses, trajectory_start, strict=True):
        previous = start
        for position, quaternion in poses:
            q, dt_ns = solve(position, quaternion, previous)
            times.append(dt_ns)
            ok += success(ik, q, position, quaternion)
            steps.append(np.abs(q - previous).max())
            over += bool(np.any(np.abs(q - previous) > velocity_dt))
            previous = q
            total += 1
    out["trajectory"] = {"poses": total, "success": ok / total, **summary_us(times),
                         "max_joint_step_rad": float(max(steps)), "steps_over_velocity_limit": over}
    return out


def bench_memory(ik: RelaxedIK, trajectory_poses, calls: int) -> dict:
    zero = np.zeros(6)
    poses = trajectory_poses[:100]
    ik.reset(ik.settings.starting_config)
    for i in range(10_000):  # warm up allocator pools and caches before the first reading
        ik.solve_position(*poses[i % len(poses)], zero)
    before = rss_kib()
    t0 = time.perf_counter()
    for i in range(calls):
        # Back and forth along the first 100 trajectory poses, so every call moves.
        k = i % (2 * len(poses) - 2)
        ik.solve_position(*poses[k if k < len(poses) else 2 * len(poses) - 2 - k], zero)
    after = rss_kib()
    return {"calls": calls, "rss_before_kib": before, "rss_after_kib": after, "rss_growth_kib": after - before,
            "seconds": time.perf_counter() - t0, "leaked_bytes_counted": ik.leaked_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, default=DEFAULT_SETTINGS)
    parser.add_argument("--lib", type=Path, default=None, help="library (default: $RELAXED_IK_LIB, then bundled)")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--trajectory", type=int, default=500, help="poses per trajectory")
    parser.add_argument("--trajectories", type=int, default=1, help="number of different trajectories")
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls for the memory test (0 skips it)")
    parser.add_argument("--no-ikpy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    result = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()}",
              "python": platform.python_version(), "args": {k: str(v) for k, v in vars(args).items()}}
    with RelaxedIK(args.settings, args.lib) as ik:
        result["library"] = str(ik.library_path)
        if ik.num_chains != 1:
            raise SystemExit("this benchmark expects a one-chain settings file")
        chain = ik.settings.chains[0]
        starts = rng.uniform(chain.lower, chain.upper, size=(args.targets, chain.dof))
        goal_configs = rng.uniform(chain.lower, chain.upper, size=(args.targets, chain.dof))
        targets = [ik.forward_kinematics(q) for q in goal_configs]
        trajectories_q = [make_trajectory(ik, args.trajectory, rng) for _ in range(args.trajectories)]
        trajectory_poses = [[ik.forward_kinematics(q) for q in tq] for tq in trajectories_q]
        trajectory_start = [tq[0] for tq in trajectories_q]

        result["relaxed_ik"] = bench_ours(ik, starts, targets, trajectory_poses, trajectory_start)
        result["relaxed_ik"].update(bench_unchecked_and_raw(ik, trajectory_poses[0], trajectory_start[0]))
        print(json.dumps({"relaxed_ik": result["relaxed_ik"]}, indent=1), flush=True)
        if not args.no_ikpy:
            result["ikpy"] = bench_ikpy(ik, starts, targets, trajectory_poses, trajectory_start)
            print(json.dumps({"ikpy": result["ikpy"]}, indent=1), flush=True)
        if args.calls > 0:
            result["memory"] = bench_memory(ik, trajectory_poses[0], args.calls)
            print(json.dumps({"memory": result["memory"]}, indent=1), flush=True)
    result["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
