"""Real-time chunking in the simulator: every chunk strategy x injected inference delay, through the policy node.

The MuJoCo robot (``sim_robot``) runs once; for every run a fresh ``policy_node`` process starts with
``chunk_strategy`` = the strategy and ``inject_delay_s`` = the delay (a testing-only parameter that adds
that many seconds to every inference of any backend), exactly as the launch graph starts it. An in-process
operator steers the graph and records, with arrival times, every arm command (with its header stamp = the
tick that sent it), every ``~/action_chunk`` (published right after the tick at which a new chunk starts to
drive the commands), the joint feedback, ``/diagnostics`` and ``/sim_robot/task_state``.

Policies and tasks:
- ``scripted`` (reach): reset the simulator, move both arms by teleop to a start configuration 0.4-0.6 rad
  per joint away from home, switch to ``policy``: the scripted backend moves toward home at
  ``--scripted-speed`` rad/s. Success: every arm joint within ``--tolerance`` of home (measured feedback);
  task time: from the switch to policy until then.
- ``pi0``: a pi0 checkpoint (``--checkpoint``; default: a random-weight pi0_tiny created like the demo's),
  action space ``joint_position``, reset to ``--seed``, the seed's touch task as pi0-collect / pi0-eval
  pick it (success: that arm touched that cube), run for ``--pi0-seconds``; the first ``--pi0-warmup``
  seconds (first inferences, first guided backward pass) are left out of the timing and jump metrics.

Per run (window: the switch to policy .. success or the time limit):
- missed ticks: the node's own ``missed_ticks`` (diagnostics, difference over the window, +-1 diagnostics
  period), and command gaps at the operator: inter-arrival > 1.5 dt (count, the ticks they stand for, max);
- unchanged ticks: after the first chunk, ticks whose command equals the previous one exactly although the
  arm is not at its target: the strategy had no action left (the chunk ran dry; the node held), or, for pi0,
  also every joint held by a limit (an arm blocked by the table);
- boundary jumps: at each tick where a new chunk takes over (except the first chunk), the largest joint
  position step |c[i] - c[i-1]| (rad) and velocity change |v[i] - v[i-1]| (rad/s, v = step / ticks) over
  the 14 arm joints; the same maxima over all other ticks ("within chunks") for reference. These are the
  commands after the safety layer (velocity 0.5 x limits, acceleration limits): what the robot receives;
- success and task time.

    tools/loopback_only.sh .venv/bin/python bench/rtc_sim.py --json /tmp/rtc_sim.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from pi0_ros.embodiment import Embodiment, load_embodiment  # noqa: E402
from pi0_ros.launch_graph import GraphOptions, policy_node_spec, sim_robot_spec  # noqa: E402
from pi0_ros.testing.graph_process import GraphProcesses  # noqa: E402
from pi0_ros.testing.operator import RELIABLE, Operator  # noqa: E402

STRATEGIES = ("sync", "async_naive", "temporal_ensemble", "fast_blend", "rtc")
DELAYS = (0.0, 0.1, 0.3)
ARMS = ("left_arm", "right_arm")
# Start of the reach task: home + these offsets (rad), inside the joint limits, arms apart.
START_OFFSETS = {"left_arm": np.array([0.5, -0.5, 0.5, 0.6, -0.5, 0.4, 0.5]),
                 "right_arm": np.array([0.5, 0.5, -0.5, 0.6, 0.5, 0.4, -0.5])}


class BenchOperator(Operator):
    """The test operator plus stamped arm commands and the policy node's ``~/action_chunk`` stamps."""

    def __enter__(self) -> "BenchOperator":
        super().__enter__()
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Int32
        from trajectory_msgs.msg import JointTrajectory

        self.stamped: Dict[str, List[Tuple[float, float, np.ndarray]]] = {g: [] for g in ARMS}  # (stamp, arrival, q)
        self.chunk_stamps: List[float] = []
        self.chunk_points: Dict[float, np.ndarray] = {}  # stamp -> [H, 14] arm targets of the chunk
        self.chunk_ages: List[Tuple[float, float]] = []  # (diagnostics stamp, age of the newest chunk in s)
        self.bench_lock = threading.Lock()
        from diagnostic_msgs.msg import DiagnosticArray

        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        for group in ARMS:
            self.node.create_subscription(JointState, self.embodiment.groups[group].command_topic,
                                          lambda m, g=group: self._on_command(g, m), RELIABLE)
        self.node.create_subscription(JointTrajectory, f"{self.policy_node}/action_chunk", self._on_chunk, RELIABLE)
        self.reset_pub = self.node.create_publisher(Int32, f"{self.sim_node}/reset_seed", 10)
        return self

    def _on_command(self, group: str, msg: Any) -> None:
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        names = self.embodiment.groups[group].joints
        by_name = dict(zip(msg.name, msg.position, strict=False))
        q = np.array([by_name[n] for n in names])
        with self.bench_lock:
            self.stamped[group].append((stamp, time.monotonic(), q))

    def _on_chunk(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        names = [n for g in ARMS for n in self.embodiment.groups[g].joints]
        index = {n: i for i, n in enumerate(msg.joint_names)}
        points = None
        if all(n in index for n in names) and msg.points:
            cols = [index[n] for n in names]
            points = np.array([[p.positions[c] for c in cols] for p in msg.points])
        with self.bench_lock:
            self.chunk_stamps.append(stamp)
            if points is not None:
                self.chunk_points[stamp] = points

    def _on_diagnostics(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        for status in msg.status:
            if status.name == "policy_node":
                age = {kv.key: kv.value for kv in status.values}.get("chunk_age_ms", "nan")
                try:
                    age_s = float(age) / 1e3
                except ValueError:
                    continue
                if np.isfinite(age_s):
                    with self.bench_lock:
                        self.chunk_ages.append((stamp, age_s))

    def clear(self) -> None:
        """Forget the stamped recordings (a new run starts)."""
        with self.bench_lock:
            for group in ARMS:
                self.stamped[group] = []
            self.chunk_stamps = []
            self.chunk_points = {}
            self.chunk_ages = []

    def reset_sim(self, seed: int, timeout: float = 20.0) -> Optional[Dict[str, Any]]:
        """Reset the simulator to ``seed``; the first task state reporting it (None on timeout)."""
        from std_msgs.msg import Int32

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            self.reset_pub.publish(Int32(data=int(seed)))
            try:
                return self.wait_for(lambda t=t0: next((s.value for s in self.since(self.task_state, t)
                                                        if int(s.value.get("seed", -1)) == seed), None), 2.5)
            except TimeoutError:
                continue
        return None


def policy_status(op: Operator, after: float = 0.0, until: float = float("inf")) -> Optional[Dict[str, str]]:
    """The newest policy_node diagnostics that arrived in [after, until]."""
    for entry in reversed([e for e in op.since(op.diagnostics, after) if e.t <= until]):
        status = entry.value.get("policy_node")
        if status is not None:
            return status
    return None


def _num(status: Optional[Dict[str, str]], key: str) -> float:
    try:
        return float(status[key]) if status else float("nan")
    except (KeyError, ValueError):
        return float("nan")


def command_metrics(op: BenchOperator, t_start_wall: float, t_end_wall: float, dt: float,
                    target: Optional[np.ndarray], tolerance: float, window: int = 10,
                    dump: Optional[Path] = None, from_hold: bool = True, execute_steps: int = 25) -> Dict[str, Any]:
    """Gaps, starved ticks and boundary jumps from the stamped commands of both arms in [start, end].

    ``from_hold``: the window starts at the switch to policy, so its first chunk replaces a hold, not a chunk
    (not a boundary; its catch-up is not "within a chunk" either)."""
    with op.bench_lock:
        left = [r for r in op.stamped["left_arm"] if t_start_wall <= r[0] <= t_end_wall]
        right = {round(r[0], 6): r[2] for r in op.stamped["right_arm"] if t_start_wall <= r[0] <= t_end_wall}
        chunks = [s for s in op.chunk_stamps if t_start_wall <= s <= t_end_wall]
        all_chunks = list(op.chunk_stamps)
        points = dict(op.chunk_points)
        ages = list(op.chunk_ages)
    rows = [(s, a, np.concatenate([q, right[round(s, 6)]])) for s, a, q in left if round(s, 6) in right]
    if len(rows) < 3:
        return {"commands": len(rows)}
    stamps = np.array([r[0] for r in rows])
    arrivals = np.array([r[1] for r in rows])
    q = np.stack([r[2] for r in rows])
    if dump is not None:
        np.savez(dump, stamps=stamps, arrivals=arrivals, commands=q, chunk_stamps=np.array(chunks))
    gaps = np.diff(arrivals)
    late = gaps > 1.5 * dt
    steps = np.diff(q, axis=0)  # steps[i-1] = q[i] - q[i-1]
    vel = steps / dt  # per tick: the safety layer limits each command's step from the previous one
    pos_step = np.max(np.abs(steps), axis=1)  # [i - 1]: command i's step from command i - 1
    vel_change = np.concatenate([[np.nan], np.max(np.abs(np.diff(vel, axis=0)), axis=1)])  # [i - 1], i >= 2
    # A chunk's stamp follows its boundary tick's commands in the same thread: the boundary is the last
    # command sent at or before it. The first chunk after the switch replaces a hold, not a chunk.
    n = len(rows)
    switches = chunks[1:] if from_hold else chunks
    boundaries = sorted({int(np.searchsorted(stamps, c, side="right")) - 1 for c in switches})
    boundaries = [b for b in boundaries if b >= 2]
    first_chunk = int(np.searchsorted(stamps, chunks[0], side="right")) - 1 if chunks and from_hold else 0
    if not chunks and from_hold:
        first_chunk = n
    moving = np.ones(n - 1, bool) if target is None else np.max(np.abs(q[1:] - target), axis=1) > tolerance
    starved = int(np.sum((pos_step == 0.0) & moving & (np.arange(1, n) > first_chunk)))

    def deviation(i: int, stop: int) -> float:
        """Largest |command - constant-velocity continuation from ticks i-2, i-1| over ticks i..stop-1."""
        k = np.arange(1, stop - i + 1)[:, None]
        predicted = q[i - 1] + k * (q[i - 1] - q[i - 2])
        return float(np.max(np.abs(q[i:stop] - predicted)))

    # The safety layer spreads a target jump over several ticks (acceleration-limited catch-up, then an
    # unlimited brake), so each boundary is judged over a window of ``window`` ticks after it.
    ends = boundaries[1:] + [n] if boundaries else []
    jumps, dv_b, near = [], [], set(range(0, min(first_chunk + window, n)) if from_hold else ())
    for b, nxt in zip(boundaries, ends, strict=True):
        stop = min(b + window, nxt, n)
        jumps.append(deviation(b, stop))
        dv_b.append(float(np.nanmax(vel_change[b - 1:stop - 1])))
        near.update(range(b, stop))
    inside = [i for i in range(2, n) if i not in near]  # ticks inside chunks, away from every switch
    inside_set = set(inside)
    jumps_in = [deviation(i, i + window) for i in inside if all(j in inside_set for j in range(i, i + window))]
    dv_in = [float(vel_change[i - 1]) for i in inside]

    gaps_at_switch = switch_gaps(all_chunks, points, ages, [c for c in chunks if c in set(switches)], dt,
                                 execute_steps)

    def stats(values: List[float]) -> Dict[str, float]:
        finite = [v for v in values if np.isfinite(v)]
        if not finite:
            return {"max": float("nan"), "median": float("nan"), "n": 0}
        return {"max": float(np.max(finite)), "median": float(np.median(finite)), "n": len(finite)}

    return {
        "commands": n, "chunks": len(chunks), "boundaries": len(boundaries),
        "arrival_gaps_over_1.5dt": int(np.sum(late)),
        "arrival_gap_ticks_missed": int(np.sum(np.round(gaps[late] / dt) - 1)) if late.any() else 0,
        "arrival_gap_max_ms": float(np.max(gaps) * 1e3),
        "stamp_gaps_over_1.5dt": int(np.sum(np.diff(stamps) > 1.5 * dt)),
        "unchanged_ticks": starved,
        "boundary_step": stats([float(pos_step[b - 1]) for b in boundaries]),
        "boundary_jump": stats(jumps),
        "boundary_vel_change": stats(dv_b),
        "within_step": stats([float(pos_step[i - 1]) for i in inside]),
        "within_jump": stats(jumps_in),
        "within_vel_change": stats(dv_in),
        "switch_gap": stats(gaps_at_switch),
    }


def switch_gaps(stamps: List[float], points: Dict[float, np.ndarray], ages: List[Tuple[float, float]],
                switches: List[float], dt: float, execute_steps: int) -> List[float]:
    """Per switch: max over arm joints of |new chunk's target - old chunk's target| at the switch tick (the
    policy's targets before the safety layer: the inconsistency between consecutive chunks).

    A chunk's observation time is the stamp of a diagnostics message sent while it was the newest chunk minus
    its ``chunk_age_ms``; the action a chunk gives at a tick is ``round((tick - obs) / dt)``. ``sync`` is not
    time-aligned (``execute_steps`` > 0): the new chunk starts at action 0 where the old one would have gone on
    with action ``execute_steps``.
    """
    order = sorted(stamps)

    def obs_time(stamp: float) -> Optional[float]:
        later = [s for s in order if s > stamp]
        end = later[0] if later else float("inf")
        for t, age in ages:
            if stamp < t < end:
                return t - age
        return None

    found = []
    for stamp in switches:
        i = order.index(stamp)
        if i == 0 or stamp not in points or order[i - 1] not in points:
            continue
        new, old = points[stamp], points[order[i - 1]]
        if execute_steps > 0:
            k_new, k_old = 0, execute_steps
        else:
            t_new, t_old = obs_time(stamp), obs_time(order[i - 1])
            if t_new is None or t_old is None:
                continue
            k_new, k_old = round((stamp - t_new) / dt), round((stamp - t_old) / dt)
        if k_new < len(new) and k_old < len(old):
            found.append(float(np.max(np.abs(new[k_new] - old[k_old]))))
    return found


def first_reach_time(op: Operator, t0: float, target: np.ndarray, tolerance: float) -> Optional[float]:
    """Arrival time of the first feedback after t0 with every arm joint within tolerance of target."""
    names = [n for g in ARMS for n in op.embodiment.groups[g].joints]
    left = op.since(op.feedback["left_arm"], t0)
    right = op.since(op.feedback["right_arm"], t0)
    ri = 0
    latest_right: Optional[Dict[str, float]] = None
    for entry in left:
        while ri < len(right) and right[ri].t <= entry.t:
            latest_right = right[ri].value
            ri += 1
        if latest_right is None:
            continue
        values = {**entry.value, **latest_right}
        if all(n in values for n in names):
            q = np.array([values[n] for n in names])
            if np.max(np.abs(q - target)) < tolerance:
                return entry.t
    return None


def one_run(op: BenchOperator, options: GraphOptions, log_dir: Path, args: argparse.Namespace, policy: str,
            strategy: str, delay: float) -> Dict[str, Any]:
    """Start a policy node with this strategy and delay, run the task, measure, stop the node."""
    emb: Embodiment = op.embodiment
    dt = 1.0 / (options.extra_policy_parameters.get("control_hz") or emb.rates.control_hz)
    window = max(2, round(args.window_s / dt))
    home = np.concatenate([emb.groups[g].home for g in ARMS])
    seed = args.seed
    state = op.reset_sim(seed)
    if state is None:
        raise RuntimeError("the simulator did not report the reset")
    time.sleep(0.5)
    extra = dict(options.extra_policy_parameters, chunk_strategy=strategy, inject_delay_s=float(delay))
    spec = policy_node_spec(GraphOptions(**{**options.__dict__, "extra_policy_parameters": extra}))
    result: Dict[str, Any] = {"policy": policy, "strategy": strategy, "delay_s": delay, "load_start": os.getloadavg()}
    run_log = log_dir / f"{policy}_{strategy}_{int(delay * 1000)}ms"
    with GraphProcesses([spec], log_dir=run_log) as graph:
        t_launch = time.monotonic()
        op.wait_for(lambda: graph.check_alive() or op.param_client.service_is_ready(), 180)
        op.wait_for(lambda: graph.check_alive() or policy_status(op, t_launch), 60)
        instruction, solved = None, None
        if policy == "scripted":
            assert op.set_parameters(control_mode="teleop") == [(True, "")]
            goal = {g: emb.groups[g].home + START_OFFSETS[g] for g in ARMS}
            flat = np.concatenate([goal[g] for g in ARMS])

            def at_start() -> bool:
                op.send_joint_targets(goal)
                q = [op.positions(g) for g in ARMS]
                return all(x is not None for x in q) and float(np.max(np.abs(np.concatenate(q) - flat))) < 0.01

            op.wait_for(at_start, 30)
        else:
            from pi0_ros.sim.expert import choose_task

            task = choose_task(state, np.random.default_rng(seed))  # as pi0-collect / pi0-eval pick it
            instruction = task.instruction

            def solved(s: Dict[str, Any]) -> bool:
                return task.object in s.get("touched", {}).get(task.arm, [])

            op.send_instruction(instruction)
            result["instruction"] = instruction
            result["task"] = {"object": task.object, "arm": task.arm}
        graph.check_alive()
        op.clear()
        before = policy_status(op)
        t0 = time.monotonic()
        t0_wall = time.time()
        params = {"control_mode": "policy"} if instruction is None else {"control_mode": "policy",
                                                                        "instruction": instruction}
        assert all(ok for ok, _ in op.set_parameters(**params))
        limit = args.scripted_timeout if policy == "scripted" else args.pi0_seconds
        success_t = None
        while time.monotonic() - t0 < limit:
            time.sleep(0.1)
            if policy == "scripted":
                success_t = first_reach_time(op, t0, home, args.tolerance)
            else:
                hit = next((s.t for s in op.since(op.task_state, t0) if solved(s.value)), None)
                success_t = hit
            if success_t is not None:
                break
        t1 = time.monotonic() if success_t is None else success_t
        t1_wall = t0_wall + (t1 - t0)
        time.sleep(1.5 / args.diagnostics_hz)
        after = policy_status(op, t1)
        graph.check_alive()
        if policy != "scripted":  # closest approach of the task's arm to its cube (progress without success)
            distances = [s.value.get("distances", {}).get(task.arm, {}).get(task.object) for s in
                         op.since(op.task_state, t0) if s.t <= t1]
            result["min_distance_m"] = min((d for d in distances if d is not None), default=None)
        warmup = 0.0 if policy == "scripted" else min(args.pi0_warmup, t1 - t0)
        if warmup > 0:
            before = policy_status(op, 0.0, until=t0 + warmup) or before
        metrics = command_metrics(op, t0_wall + warmup, t1_wall, dt, home if policy == "scripted" else None,
                                  args.tolerance, window, run_log / "commands.npz", from_hold=warmup == 0,
                                  execute_steps=options.extra_policy_parameters["execute_steps"] if strategy == "sync"
                                  else 0)
        result.update(metrics)
        result.update({
            "success": success_t is not None, "task_time_s": None if success_t is None else success_t - t0,
            "window_s": t1 - t0 - warmup, "warmup_s": warmup,
            "missed_ticks_diag": _num(after, "missed_ticks") - _num(before, "missed_ticks"),
            "clamped_commands_diag": _num(after, "clamped_commands") - _num(before, "clamped_commands"),
            "inference_latency_ms": _num(after, "inference_latency_ms"),
            "last_infer_ms": _num(after, "last_infer_ms"),
            "chunks_received_diag": _num(after, "chunks_received") - _num(before, "chunks_received"),
            "faults": (after or {}).get("faults", ""),
            "load_end": os.getloadavg(),
        })
    return result


def ensure_pi0_checkpoint(path: Optional[str]) -> str:
    if path:
        return path
    from pi0_ros.demo import DEFAULT_OUT
    from pi0_ros.demo_policy import ensure_demo_policy

    return str(ensure_demo_policy(DEFAULT_OUT))  # make demo's policy (trained on first use)


def checkpoint_rate_and_steps(checkpoint: str, args: argparse.Namespace) -> Tuple[float, int]:
    """Control rate (0: the node's) and execute_steps for a pi0 checkpoint (as pi0-eval runs it)."""
    def read(name: str) -> Dict[str, Any]:
        try:
            with open(os.path.join(checkpoint, name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    rate = args.pi0_control_hz or float(read("training.json").get("fps") or 0.0)
    horizon = int(read("config.json").get("model", {}).get("action_horizon") or 2 * args.execute_steps)
    return rate, args.pi0_execute_steps or max(1, min(args.execute_steps, horizon // 2))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def print_table(results: List[Dict[str, Any]]) -> None:
    print("policy | delay | strategy | success | task s | missed ticks: diag / arrival gaps>1.5dt (ticks) / max gap "
          "ms | unchanged | switch gap max/med (rad) | boundary jump max/med (rad) | within | boundary dv max/med "
          "(rad/s) | within max | latency ms | clamped")
    for r in results:
        if "error" in r:
            print(f"{r['policy']} | {int(r['delay_s'] * 1000)} ms | {r['strategy']} | ERROR {r['error'][:300]}")
            continue
        sg, bj, wj, bv, wv = (r.get(k, {}) for k in ("switch_gap", "boundary_jump", "within_jump",
                                                     "boundary_vel_change", "within_vel_change"))
        print(f"{r['policy']} | {int(r['delay_s'] * 1000)} ms | {r['strategy']} | {'yes' if r['success'] else 'no'} | "
              f"{fmt(r['task_time_s'], 2)} | {fmt(r['missed_ticks_diag'], 0)} / "
              f"{r.get('arrival_gaps_over_1.5dt')} ({r.get('arrival_gap_ticks_missed')}) / "
              f"{fmt(r.get('arrival_gap_max_ms'), 0)} | {r.get('unchanged_ticks')} | "
              f"{fmt(sg.get('max'))}/{fmt(sg.get('median'))} | {fmt(bj.get('max'))}/{fmt(bj.get('median'))} | "
              f"{fmt(wj.get('max'))}/{fmt(wj.get('median'))} | "
              f"{fmt(bv.get('max'), 2)}/{fmt(bv.get('median'), 2)} | {fmt(wv.get('max'), 2)} | "
              f"{fmt(r['inference_latency_ms'], 0)} | {fmt(r['clamped_commands_diag'], 0)}", flush=True)


def aggregate(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per policy, delay and strategy: medians over repeats, maxima of maxima."""
    keys: List[Tuple[str, float, str]] = []
    for r in results:
        key = (r["policy"], r["delay_s"], r["strategy"])
        if key not in keys:
            keys.append(key)
    rows = []
    for policy, delay, strategy in keys:
        runs = [r for r in results if (r["policy"], r["delay_s"], r["strategy"]) == (policy, delay, strategy)]
        ok = [r for r in runs if "error" not in r]
        times = [r["task_time_s"] for r in ok if r["task_time_s"] is not None]

        def med(key: str, runs_: List[Dict[str, Any]] = ok) -> float:
            values = [float(r[key]) for r in runs_ if r.get(key) is not None and np.isfinite(float(r[key]))]
            return float(np.median(values)) if values else float("nan")

        def pooled(key: str, stat: str, runs_: List[Dict[str, Any]] = ok) -> float:
            values = [r[key][stat] for r in runs_ if key in r and np.isfinite(r[key][stat])]
            if not values:
                return float("nan")
            return float(np.max(values)) if stat == "max" else float(np.median(values))

        rows.append({
            "policy": policy, "delay_s": delay, "strategy": strategy, "runs": len(runs), "errors": len(runs) - len(ok),
            "successes": sum(1 for r in ok if r["success"]),
            "task_time_s_median": float(np.median(times)) if times else None,
            "task_time_s_min": min(times) if times else None, "task_time_s_max": max(times) if times else None,
            "missed_ticks_diag_median": med("missed_ticks_diag"),
            "missed_ticks_diag_max": max([r["missed_ticks_diag"] for r in ok], default=float("nan")),
            "arrival_gap_ticks_missed_median": med("arrival_gap_ticks_missed"),
            "unchanged_ticks_median": med("unchanged_ticks"),
            "boundaries": sum(r.get("boundaries", 0) for r in ok),
            "switch_gaps": sum(r.get("switch_gap", {}).get("n", 0) for r in ok),
            "switch_gap_max": pooled("switch_gap", "max"),
            "switch_gap_median": pooled("switch_gap", "median"),
            "boundary_jump_max": pooled("boundary_jump", "max"),
            "boundary_jump_median": pooled("boundary_jump", "median"),
            "within_jump_max": pooled("within_jump", "max"),
            "within_jump_median": pooled("within_jump", "median"),
            "boundary_vel_change_max": pooled("boundary_vel_change", "max"),
            "boundary_vel_change_median": pooled("boundary_vel_change", "median"),
            "within_vel_change_max": pooled("within_vel_change", "max"),
            "inference_latency_ms_median": med("inference_latency_ms"),
            "load_1min_median": float(np.median([r["load_start"][0] for r in ok])) if ok else float("nan"),
        })
    return rows


def print_summary(rows: List[Dict[str, Any]]) -> None:
    print("policy | delay | strategy | success | task s median (min-max) | missed ticks diag median/max | "
          "arrival-gap ticks median | unchanged median | switch gap max/median (rad, n) | "
          "boundary jump max/median (rad) | within jump max/median | "
          "boundary dv max/median (rad/s) | within dv max | latency ms | load 1-min")
    for r in rows:
        span = ("-" if r["task_time_s_median"] is None else
                f"{r['task_time_s_median']:.2f} ({r['task_time_s_min']:.2f}-{r['task_time_s_max']:.2f})")
        print(f"{r['policy']} | {int(r['delay_s'] * 1000)} ms | {r['strategy']} | {r['successes']}/{r['runs']} | "
              f"{span} | {fmt(r['missed_ticks_diag_median'], 0)}/{fmt(r['missed_ticks_diag_max'], 0)} | "
              f"{fmt(r['arrival_gap_ticks_missed_median'], 0)} | {fmt(r['unchanged_ticks_median'], 0)} | "
              f"{fmt(r['switch_gap_max'])}/{fmt(r['switch_gap_median'])} ({r['switch_gaps']}) | "
              f"{fmt(r['boundary_jump_max'])}/{fmt(r['boundary_jump_median'])} | "
              f"{fmt(r['within_jump_max'])}/{fmt(r['within_jump_median'])} | "
              f"{fmt(r['boundary_vel_change_max'], 2)}/{fmt(r['boundary_vel_change_median'], 2)} | "
              f"{fmt(r['within_vel_change_max'], 2)} | {fmt(r['inference_latency_ms_median'], 0)} | "
              f"{fmt(r['load_1min_median'], 1)}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="scripted,pi0", help="comma list of scripted, pi0")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--delays", default=",".join(str(d) for d in DELAYS), help="injected delays (s)")
    parser.add_argument("--checkpoint", default=None, help="pi0 checkpoint (default: random-weight pi0_tiny)")
    parser.add_argument("--execute-steps", type=int, default=25)
    parser.add_argument("--scripted-speed", type=float, default=0.3, help="rad/s of the scripted reach")
    parser.add_argument("--tolerance", type=float, default=0.02, help="reach success: max |q - home| (rad)")
    parser.add_argument("--scripted-timeout", type=float, default=15.0)
    parser.add_argument("--pi0-seconds", type=float, default=13.0, help="pi0 episode length (s)")
    parser.add_argument("--pi0-warmup", type=float, default=3.0,
                        help="pi0: seconds after the switch left out of the timing and jump metrics (first "
                             "inferences, first guided backward pass); success and task time count from the switch")
    parser.add_argument("--seed", type=int, default=1000, help="simulator seed (pi0: its touch task)")
    parser.add_argument("--window-s", type=float, default=0.2,
                        help="time after a chunk boundary judged as its jump (at least 2 ticks)")
    parser.add_argument("--pi0-control-hz", type=float, default=0.0,
                        help="pi0 node rate; 0: the checkpoint's dataset fps (training.json), else the embodiment's")
    parser.add_argument("--pi0-execute-steps", type=int, default=0,
                        help="pi0 execute_steps; 0: --execute-steps, at most half the checkpoint's action horizon")
    parser.add_argument("--diagnostics-hz", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="scripted: runs per strategy and delay")
    parser.add_argument("--pi0-repeats", type=int, default=1, help="pi0: runs per strategy and delay")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if os.environ.get("ROS_LOCALHOST_ONLY") != "1":
        print("run it under tools/loopback_only.sh (ROS discovery must stay on this machine)", file=sys.stderr)
        return 2
    emb = load_embodiment()
    log_dir = Path(tempfile.mkdtemp(prefix="rtc_sim_"))
    policies = [p for p in args.policies.split(",") if p]
    strategies = [s for s in args.strategies.split(",") if s]
    delays = [float(d) for d in args.delays.split(",") if d]
    results: List[Dict[str, Any]] = []
    started = time.monotonic()
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_start": os.getloadavg(), "args": vars(args), "logs": str(log_dir)}
    print(f"logs in {log_dir}; load average {meta['load_start']}", flush=True)
    sim = GraphProcesses([sim_robot_spec(GraphOptions())], log_dir=log_dir / "sim")
    # The operator sees only the arms: fewer Python callbacks in this process on the shared cores.
    arms_only = dataclasses.replace(emb, groups={g: emb.groups[g] for g in ARMS})
    with sim, BenchOperator(arms_only, image_camera=None) as op:
        op.wait_for(lambda: sim.check_alive() or op.latest(op.task_state), 120)
        for policy in policies:
            common = {"action_space": "joint_position", "execute_steps": args.execute_steps,
                      "diagnostics_hz": args.diagnostics_hz}
            if policy == "scripted":
                options = GraphOptions(control_mode="hold", policy_backend="scripted",
                                       extra_policy_parameters={**common, "scripted_speed": args.scripted_speed})
            else:
                checkpoint = ensure_pi0_checkpoint(args.checkpoint)
                meta["checkpoint"] = checkpoint
                rate, execute = checkpoint_rate_and_steps(checkpoint, args)
                meta["pi0_control_hz"], meta["pi0_execute_steps"] = rate, execute
                options = GraphOptions(control_mode="hold", policy_backend="pi0", checkpoint=checkpoint,
                                       extra_policy_parameters={**common, "execute_steps": execute,
                                                                **({"control_hz": rate} if rate else {})})
            repeats = args.repeats if policy == "scripted" else args.pi0_repeats
            for repeat in range(repeats):  # round robin: load changes spread over every strategy
                for delay in delays:
                    for strategy in strategies:
                        try:
                            result = one_run(op, options, log_dir / f"r{repeat}", args, policy, strategy, delay)
                        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                            result = {"policy": policy, "strategy": strategy, "delay_s": delay, "error": repr(exc)}
                        result["repeat"] = repeat
                        results.append(result)
                        print_table([result])
                        if args.json:  # after every run: an interrupted matrix keeps what it measured
                            with open(args.json, "w", encoding="utf-8") as f:
                                json.dump({"meta": meta, "results": results}, f, indent=1, default=float)
    meta["load_end"] = os.getloadavg()
    meta["wall_s"] = time.monotonic() - started
    print(f"\nall runs ({meta['wall_s']:.0f} s; load average start {meta['load_start']}, end {meta['load_end']}):")
    print_table(results)
    summary = aggregate(results)
    print("\nper policy, delay and strategy (over repeats):")
    print_summary(summary)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "summary": summary, "results": results}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
