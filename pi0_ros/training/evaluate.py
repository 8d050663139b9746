"""``pi0-eval``: closed-loop evaluation in the simulator through the whole ROS graph.

Starts ``launch_graph.sim_graph`` (simulated robot + policy node with IK and the safety layer) as real
processes, then for every held-out seed: resets the simulator to the seed, lets the policy act, and
watches ``/sim_robot/task_state`` until the task is solved or the episode times out. Reports the
success rate, time to success and the policy node's safety events (the distinct fault names its
``/diagnostics`` reported during the episode: limits hit, stale inputs, policy errors), as JSON and a
short text summary; the JSON report is rewritten after every episode, and ``--resume`` continues one that was
stopped part-way. Run it inside the loopback-only namespace::

    tools/loopback_only.sh pi0-eval --checkpoint runs/tiny/last --backend pi0 --seeds 1000-1019 --out eval.json

Tasks: by default (``--instruction auto``) each seed gets the touch task pi0-collect would demonstrate
for it ("touch the red cube with the left hand"), and success means that arm touched that cube. With a
fixed ``--instruction``, ``--success`` judges: ``touched`` (any arm, any object), ``touched:<object>``,
or ``distance:<object>:<metres>``. Held-out seeds: demonstrations should use seeds outside this range
(pi0-collect starts at 0). ``--layout fixed`` runs the simulator with config/sim.yaml's fixed cube layout
and draws each seed's task from ``--tasks`` (default: pi0_ros.sim.expert.SKILL_TASKS), as ``pi0-collect
--layout fixed`` does: the language-conditioned skill. For such tasks the report also gives the clean
success (the named hand touched the named cube and no hand touched anything else; use it with ``--hold``),
which a motion that ignores the instruction and sweeps both hands onto the cubes cannot meet. The policy
node runs one chunk step per tick at the dataset's fps (from the checkpoint's training.json) unless
``--control-hz`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from pi0_ros.model.provenance import read_provenance

if TYPE_CHECKING:
    from pi0_ros.launch_graph import GraphOptions


def parse_seeds(text: str) -> List[int]:
    """'1000-1004,2000' -> [1000, 1001, 1002, 1003, 1004, 2000]; a seed named twice runs once (its episode is the
    same, and counting it twice would weigh it double in the summary)."""
    seeds: List[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        # A reversed range is an empty range: the run would report 0/0 episodes as a complete evaluation.
        if last < first:
            raise ValueError(f"seed range {part!r} is reversed (write {last}-{first})")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return list(dict.fromkeys(seeds))


def success_check(spec: str) -> Callable[[Dict[str, Any]], bool]:
    """A predicate on the task-state JSON from a ``--success`` string."""
    kind, _, rest = spec.partition(":")
    if kind == "touched":
        target = rest or None
        return lambda s: any((target is None and objs) or (target in objs) for objs in s.get("touched", {}).values())
    if kind == "distance":
        obj, _, limit = rest.partition(":")
        threshold = float(limit)
        return lambda s: any(d.get(obj, float("inf")) <= threshold for d in s.get("distances", {}).values())
    raise ValueError(f"unknown success criterion {spec!r} (touched[:object] | distance:object:metres)")


def summarize(episodes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Success rate, time to success (successful episodes), safety events, smoothness, language following."""
    n = len(episodes)
    ok = [e for e in episodes if e["success"]]
    times = [e["time_to_success_s"] for e in ok]
    return {
        "episodes": n, "successes": len(ok), "success_rate": len(ok) / n if n else float("nan"),
        "time_to_success_s_median": statistics.median(times) if times else None,
        "time_to_success_s_mean": statistics.fmean(times) if times else None,
        "safety_events": sum(len(e["faults"]) for e in episodes),
        "episodes_with_safety_events": sum(1 for e in episodes if e["faults"]),
        "reset_failures": sum(1 for e in episodes if not e["reset_ok"]),
        "min_distance_m_median": _median([e.get("min_distance_m") for e in episodes]),
        "start_distance_m_median": _median([e.get("start_distance_m") for e in episodes]),
        "command_jerk_rms_median": _median([e.get("command_jerk_rms") for e in episodes]),
        "language_following": _rate([e for e in episodes if e.get("language_case")]),
        "by_instruction": {text: _rate([e for e in episodes if e.get("instruction") == text])
                           for text in sorted({e["instruction"] for e in episodes if e.get("instruction")})},
        # Touched and still there after the hold (only when episodes were run with a hold).
        "touched_and_held": (_rate(episodes, "held") if any(e.get("held") is not None for e in episodes)
                             else None),
        "language_following_held": (_rate([e for e in episodes if e.get("language_case")], "held")
                                    if any(e.get("held") is not None for e in episodes) else None),
        # Success with nothing but the named cube touched, by either hand (tasks naming an arm and an object).
        "clean_success": (_rate(episodes, "clean") if any(e.get("clean") is not None for e in episodes) else None),
        "language_following_clean": (_rate([e for e in episodes if e.get("language_case")], "clean")
                                     if any(e.get("clean") is not None for e in episodes) else None),
    }


def _rate(episodes: List[Dict[str, Any]], key: str = "success") -> Dict[str, Any]:
    successes = sum(1 for e in episodes if e.get(key))
    return {"episodes": len(episodes), "successes": successes,
            "success_rate": successes / len(episodes) if episodes else None}


def _median(values: List[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def format_text(summary: Dict[str, Any], label: str) -> str:
    """Short human-readable summary."""
    med = summary["time_to_success_s_median"]
    text = (f"{label}: {summary['successes']}/{summary['episodes']} successes "
            f"({100 * summary['success_rate']:.0f} %), median time to success "
            f"{'-' if med is None else f'{med:.1f} s'}, {summary['safety_events']} safety event(s) in "
            f"{summary['episodes_with_safety_events']} episode(s), {summary['reset_failures']} reset failure(s)")
    if summary.get("min_distance_m_median") is not None:
        text += (f", median distance to the target {summary['start_distance_m_median']:.3f} m at the start, "
                 f"{summary['min_distance_m_median']:.3f} m at the closest")
    language = summary.get("language_following") or {}
    if language.get("episodes"):
        text += (f"; language following (the instruction names a cube other than the hand's nearest): "
                 f"{language['successes']}/{language['episodes']}")
    held = summary.get("touched_and_held")
    if held:
        lang_held = summary.get("language_following_held") or {}
        text += (f"; touched and still there after the hold: {held['successes']}/{held['episodes']}"
                 f" (language following {lang_held.get('successes', 0)}/{lang_held.get('episodes', 0)})")
    clean = summary.get("clean_success")
    if clean:
        lang_clean = summary.get("language_following_clean") or {}
        text += (f"; clean (no other cube touched by either hand): {clean['successes']}/{clean['episodes']}"
                 f" (language following {lang_clean.get('successes', 0)}/{lang_clean.get('episodes', 0)})")
    if summary.get("command_jerk_rms_median") is not None:
        text += f"; median RMS command jerk {summary['command_jerk_rms_median']:.1f} rad/s^3"
    return text


@dataclasses.dataclass
class EpisodeTask:
    """What one episode asks for: the instruction (None: leave the node's), the success test, optionally a
    distance to the goal (metres) whose minimum over the episode is reported, and the arm and object the
    instruction names (for the language-following case)."""

    instruction: Optional[str]
    solved: Callable[[Dict[str, Any]], bool]
    distance: Optional[Callable[[Dict[str, Any]], float]] = None
    arm: Optional[str] = None
    object: Optional[str] = None


Plan = Callable[[int, Dict[str, Any]], EpisodeTask]


def fixed_plan(instruction: Optional[str], solved: Callable[[Dict[str, Any]], bool]) -> Plan:
    """The same instruction and success test for every seed."""
    return lambda seed, state: EpisodeTask(instruction, solved)


def expert_plan(seed: int, state: Dict[str, Any], tasks: Optional[Sequence[Any]] = None) -> EpisodeTask:
    """The demonstrations' task for this seed (``pi0_ros.sim.expert.choose_task``, seeded like
    pi0-collect, drawn from ``tasks`` when given): "touch the <object> cube with the <hand>", success when
    that arm touched it; the distance is that arm's grasp point to that cube."""
    import numpy as np

    from pi0_ros.sim.expert import choose_task

    task = choose_task(state, np.random.default_rng(seed), tasks=tasks)
    return EpisodeTask(task.instruction,
                       lambda s: task.object in s.get("touched", {}).get(task.arm, []),
                       lambda s: float(s.get("distances", {}).get(task.arm, {}).get(task.object, float("nan"))),
                       arm=task.arm, object=task.object)


def run_episode(driver, seed: int, plan: Plan, timeout: float,
                on_solved: Optional[Callable[[EpisodeTask], None]] = None, hold_s: float = 0.0,
                hold_distance: Optional[float] = None) -> Tuple[Dict[str, Any], Dict[str, list]]:
    """Reset to ``seed`` (policy parked), give the instruction, switch to the policy, wait (bounded) for
    success (``on_solved`` runs then, before parking), park again; measure the episode from what the driver
    recorded. Returns the JSON-ready result and the arm commands the policy sent (``{arm: [(t, q), ...]}``).

    ``hold_s`` > 0: after success the policy keeps running that long, and ``held`` says whether the named
    hand is still within ``hold_distance`` of the target then. First touch alone is also met by a motion
    that sweeps through the target; a reach stays (the demonstrations dwell on the cube).

    ``other_touches`` (tasks that name an arm and an object): every other arm/object pair that came within
    the touch distance from the start to the end of the episode (through the hold); ``clean`` = success and
    none. A motion that ignores the instruction (e.g. both hands sweeping down onto the cubes in front of
    them) touches more than the named cube; the demonstrations move the named hand only. Judge it with a
    hold, so that what happens just after the first touch is seen too."""
    from pi0_ros.training.eval_metrics import episode_jerk, is_language_case

    reset_ok = driver.reset(seed)
    state0 = driver.current_state() or {}
    task = plan(seed, state0) if reset_ok else None
    result: Dict[str, Any] = {"seed": seed, "instruction": task.instruction if task else None,
                              "reset_ok": reset_ok, "success": False, "time_to_success_s": None,
                              "start_distance_m": None, "min_distance_m": None, "distance_trace": [],
                              "language_case": None, "command_jerk_rms": None, "faults": [], "held": None,
                              "other_touches": None, "clean": None}
    commands: Dict[str, list] = {}
    if task is None:
        return result, commands
    result["language_case"] = is_language_case(state0, task.arm, task.object) if task.arm and task.object else None
    started, reason = driver.start(task.instruction)
    t0 = time.monotonic()
    final = driver.wait_for(task.solved, timeout) if started else None
    waited = time.monotonic() - t0
    if final is not None and hold_s > 0:
        driver.wait_for(lambda _state: False, hold_s)  # the policy keeps acting meanwhile
    if final is not None and on_solved is not None:
        on_solved(task)
    states, commands = driver.states_since_start(), driver.commands_since_start()
    if final is not None and hold_s > 0 and task.distance is not None and hold_distance is not None and states:
        last = task.distance(states[-1][1])
        result["held"] = bool(last == last and last <= hold_distance)
    driver.stop()
    if final is not None:
        result["success"] = True
        result["time_to_success_s"] = next((t for t, s in states if task.solved(s)), waited)
    if task.arm and task.object:
        result["other_touches"] = other_touches([s for _, s in states], task.arm, task.object)
        result["clean"] = bool(result["success"] and not result["other_touches"])
    if task.distance is not None:
        trace = [(round(t, 3), task.distance(s)) for t, s in states]
        trace = [(t, d) for t, d in trace if d == d]  # drop NaN (object or arm unknown)
        result["distance_trace"] = trace
        if trace:
            result["start_distance_m"] = trace[0][1]
            result["min_distance_m"] = min(d for _, d in trace)
    result["command_jerk_rms"] = episode_jerk(commands)
    result["faults"] = driver.faults_since_start() + ([] if started else [f"policy_refused: {reason}"])
    return result, commands


def other_touches(states: Sequence[Dict[str, Any]], arm: str, obj: str) -> List[str]:
    """``arm:object`` pairs other than (``arm``, ``obj``) that any task state reports as touched, sorted."""
    seen = {f"{a}:{o}" for s in states for a, objs in (s.get("touched") or {}).items() for o in objs}
    seen.discard(f"{arm}:{obj}")
    return sorted(seen)


def run_episodes(driver, seeds: Sequence[int], plan: Plan, timeout: float,
                 log: Callable[[str], None] = print, hold_s: float = 0.0,
                 hold_distance: Optional[float] = None,
                 check: Optional[Callable[[], None]] = None,
                 on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
    """:func:`run_episode` for every seed, each logged in one line and passed to ``on_result`` (pi0-eval writes
    its report then). ``check`` runs before each episode and may raise to stop (the graph's liveness check: a
    dead simulator would otherwise turn every later seed into a failure after a reset timeout)."""
    results = []
    for seed in seeds:
        if check is not None:
            check()
        result, _ = run_episode(driver, seed, plan, timeout, hold_s=hold_s, hold_distance=hold_distance)
        results.append(result)
        if on_result is not None:
            on_result(result)
        elapsed = result["time_to_success_s"]
        extra = ("" if result["min_distance_m"] is None else
                 f", distance {result['start_distance_m']:.3f} -> min {result['min_distance_m']:.3f} m")
        log(f"seed {seed}: {'success after ' + f'{elapsed:.1f} s' if result['success'] else 'failure'}{extra}"
            + (f" ({result['instruction']})" if result["instruction"] else "")
            + (" [language case]" if result["language_case"] else "")
            + ("" if result["held"] is None else (", held" if result["held"] else ", NOT held"))
            + (f", also touched {result['other_touches']}" if result["other_touches"] else "")
            + (f", faults {result['faults']}" if result["faults"] else ""))
    return results


def checkpoint_policy_parameters(checkpoint: Optional[str], action_space: Optional[str] = None,
                                 control_hz: Optional[float] = None,
                                 execute_steps: Optional[int] = None) -> Dict[str, Any]:
    """Policy-node parameters for a pi0-train checkpoint: its action space and one chunk step per tick at the
    dataset's fps (both from its training.json) unless given; ``execute_steps`` when given."""
    provenance = read_provenance(checkpoint) if checkpoint else {}
    params: Dict[str, Any] = {}
    if action_space or provenance.get("action_space"):
        params["action_space"] = action_space or provenance["action_space"]
    if control_hz or provenance.get("fps"):
        params["control_hz"] = float(control_hz or provenance["fps"])
    if execute_steps:
        params["execute_steps"] = int(execute_steps)
    return params


def policy_param(text: str) -> Tuple[str, Any]:
    """``NAME=VALUE`` -> (NAME, VALUE read as YAML: 1 -> int, 0.5 -> float, true -> bool, else the text)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = None
    # A node parameter is a scalar: anything else (empty, a list, unparsable) stays the text it was.
    return name.strip(), parsed if isinstance(parsed, (bool, int, float, str)) else value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="pi0-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (pi0 / pi0_fast backends)")
    p.add_argument("--backend", default="pi0", help="pi0 | pi0_fast | scripted | remote")
    p.add_argument("--server-uri", default=None)
    p.add_argument("--instruction", default="auto",
                   help="'auto': each seed's touch task as pi0-collect picks it (success: that arm touched that "
                        "cube); else this text for every seed, judged by --success")
    p.add_argument("--action-space", default=None, help="embodiment action space the policy outputs")
    p.add_argument("--control-hz", type=float, default=None,
                   help="policy node command rate = one chunk step per tick (default: the dataset fps recorded in "
                        "the checkpoint's training.json, else the node's own)")
    p.add_argument("--execute-steps", type=int, default=None, help="actions executed per chunk (node default)")
    p.add_argument("--policy-param", action="append", default=[], metavar="NAME=VALUE", type=policy_param,
                   help="another policy-node parameter for the run (repeatable; VALUE read as YAML), e.g. "
                        "chunk_strategy=temporal_ensemble or inference_margin_steps=1")
    p.add_argument("--seeds", default="1000-1019", help="held-out simulator seeds, e.g. 1000-1019")
    p.add_argument("--episode-timeout", type=float, default=30.0, help="seconds per episode")
    p.add_argument("--success", default="touched")
    p.add_argument("--layout", default="random", choices=("random", "fixed"),
                   help="cube layout of the simulator: random (by seed) or fixed (config/sim.yaml objects.fixed)")
    p.add_argument("--tasks", default=None,
                   help="with --instruction auto: tasks drawn per seed, e.g. red:left,blue:right (default: with "
                        "--layout fixed the skill's four tasks, else the cube's side decides the hand)")
    p.add_argument("--feedback-hz", type=float, default=50.0,
                   help="simulated joint feedback rate; 50 Hz (not the robot's 100) halves the policy node's "
                        "message load, which on a 2-core machine otherwise delays feedback past the staleness "
                        "watchdog while the policy infers")
    p.add_argument("--hold", type=float, default=0.0, metavar="S",
                   help="after a success keep the policy running S seconds and report whether the hand is still "
                        "within the touch distance (0: first touch only)")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--sim-params", default=None)
    p.add_argument("--out", default=None,
                   help="JSON report, rewritten after every episode ('complete' says whether all seeds ran)")
    p.add_argument("--resume", action="store_true",
                   help="continue the partial report at --out: run only its missing seeds (the same options "
                        "required; the checkpoint is compared by its path)")
    p.add_argument("--label", default=None, help="name in the summary (default: the checkpoint)")
    return p


def run_in_graph(options: "GraphOptions", seeds: Sequence[int], plan: Plan, args: argparse.Namespace,
                 touch_distance: float, log_dir: Path, on_result: Callable[[Dict[str, Any]], None]) -> None:
    """Start the simulated graph, run ``seeds`` through it (each result to ``on_result``), stop it."""
    from pi0_ros.embodiment import load_embodiment
    from pi0_ros.launch_graph import sim_graph
    from pi0_ros.testing.graph_process import GraphProcesses
    from pi0_ros.testing.operator import Operator  # rclpy only from here on
    from pi0_ros.testing.sim_driver import EpisodeDriver

    embodiment = load_embodiment(options.embodiment)
    with GraphProcesses(sim_graph(options), log_dir=log_dir) as graph, \
            Operator(embodiment, image_camera=None) as operator:
        driver = EpisodeDriver(operator, embodiment)
        try:
            operator.wait_for(driver.current_state, args.startup_timeout)
        except TimeoutError:
            graph.check_alive()
            raise RuntimeError(f"no /sim_robot/task_state within {args.startup_timeout} s (logs: {log_dir})") from None
        run_episodes(driver, seeds, plan, args.episode_timeout, hold_s=args.hold, hold_distance=touch_distance,
                     check=graph.check_alive, on_result=on_result)
        graph.check_alive()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and not args.out:
        parser.error("--resume continues the report named by --out")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(f"--seeds: {exc}")
    from pi0_ros.launch_graph import GraphOptions
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import load_sim_config, write_layout_variant
    from pi0_ros.sim.expert import SKILL_TASKS, parse_tasks
    from pi0_ros.training.eval_report import build_report, finished_episodes, write_report

    if os.environ.get("ROS_LOCALHOST_ONLY") != "1":
        print("pi0-eval: run it under tools/loopback_only.sh (ROS discovery must stay on this machine)",
              file=sys.stderr)
        return 2
    extra = {**checkpoint_policy_parameters(args.checkpoint, args.action_space, args.control_hz, args.execute_steps),
             **dict(args.policy_param)}
    log_dir = Path(tempfile.mkdtemp(prefix="pi0_eval_"))
    sim_extra: Dict[str, Any] = {"task_state_hz": 10.0, "feedback_hz": args.feedback_hz}
    if args.layout != "random":
        sim_extra["sim_config"] = str(write_layout_variant(args.layout, log_dir / f"sim_{args.layout}.yaml",
                                                           config_path("sim.yaml")))
    # The policy node starts parked in teleop; each episode switches it to policy mode.
    options = GraphOptions(control_mode="teleop", policy_backend=args.backend, checkpoint=args.checkpoint,
                           server_uri=args.server_uri,
                           instruction=None if args.instruction == "auto" else args.instruction,
                           sim_params=args.sim_params, extra_policy_parameters=extra, extra_sim_parameters=sim_extra)
    tasks = parse_tasks(args.tasks) if args.tasks else (SKILL_TASKS if args.layout == "fixed" else None)
    plan: Plan = ((lambda seed, state: expert_plan(seed, state, tasks)) if args.instruction == "auto"
                  else fixed_plan(args.instruction, success_check(args.success)))
    touch_distance = load_sim_config(config_path("sim.yaml")).task.touch_distance
    setup = {"label": args.label or args.checkpoint or args.backend, "backend": args.backend,
             "policy_parameters": extra, "checkpoint": args.checkpoint, "instruction": args.instruction,
             "layout": args.layout, "tasks": [t.instruction for t in tasks] if tasks else None,
             "success": args.success, "touch_distance_m": touch_distance, "episode_timeout_s": args.episode_timeout,
             "hold_s": args.hold, "feedback_hz": args.feedback_hz, "sim_params": args.sim_params,
             "logs": str(log_dir)}
    out = Path(args.out) if args.out else None
    try:
        earlier, setup["earlier_logs"] = finished_episodes(out, setup, seeds) if args.resume else ([], [])
    except ValueError as exc:
        print(f"pi0-eval: {exc}", file=sys.stderr)
        return 2
    done = {e["seed"]: e for e in earlier}
    todo = [s for s in seeds if s not in done]
    if earlier:
        print(f"pi0-eval: resuming {out}: {len(earlier)} of {len(seeds)} seeds done, {len(todo)} to run")

    def current_report() -> Dict[str, Any]:
        return build_report(setup, seeds, [done[s] for s in seeds if s in done], len(earlier))

    def save(result: Dict[str, Any]) -> None:
        done[result["seed"]] = result
        if out is not None:
            write_report(out, current_report())

    if todo:
        run_in_graph(options, todo, plan, args, touch_distance, log_dir, save)
    report = current_report()
    if out is not None:
        write_report(out, report)
        from pi0_ros.training.eval_plots import write_plots

        for path in write_plots(report, out.with_suffix(""), touch_distance):
            print(f"plot: {path}")
    print(format_text(report["summary"], setup["label"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
