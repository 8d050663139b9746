"""pi0-collect: scripted demonstrations in the simulator, recorded into a LeRobot dataset.

Starts the simulation graph (sim_robot, policy_node in teleop mode, recorder) as real processes with
the graph harness, then for each episode: resets the simulator with a new seed, picks a touch task
("touch the red cube with the left hand"), publishes it as the instruction, starts an episode on the
recorder, streams the expert's end-effector path as teleop pose goals (IK, safety and controller topics
are the policy node's own), watches ``~/task_state`` for the touch, and stops (or discards) the episode.
Both arms always receive a pose goal (the idle one its start pose), so the policy node never falls back
to an old hold target after a reset.

    pi0-collect --root ~/pi0_ros_data/touch --episodes 20

``--layout fixed`` runs the simulator with config/sim.yaml's fixed cube layout (``objects.layout: fixed``:
the same scene on every seed, up to a small jitter) and draws each episode's task from ``--tasks`` (default
``pi0_ros.sim.expert.SKILL_TASKS``: "touch the red cube with the left hand" / "touch the blue cube with the
right hand"): a skill where the instruction alone decides the motion (BENCHMARKS.md, "A new skill from
demonstrations (simulation)").

``--perturbed-starts SHARE`` starts that share of the episodes off the nominal path: the named hand first moves,
unrecorded, partway toward another cube or to a random offset from home (``pi0_ros.sim.expert.DetourConfig``),
and the recording shows the expert's way to the named cube from there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from pi0_ros.embodiment import Embodiment, load_embodiment
from pi0_ros.launch_graph import GraphOptions, recorder_spec, sim_graph
from pi0_ros.paths import config_path
from pi0_ros.sim.config import LAYOUTS, load_sim_config, write_layout_variant
from pi0_ros.sim.expert import (
    SKILL_TASKS,
    DetourConfig,
    ExpertConfig,
    TouchTask,
    choose_task,
    detour_point,
    over_object,
    parse_tasks,
    plan_move,
    plan_touch,
    touch_target,
)
from pi0_ros.testing.graph_process import LOOPBACK_ENV, GraphProcesses
from relaxed_ik_bindings.library import RelaxedIKLibraryError, load_library


@dataclasses.dataclass
class EpisodeResult:
    """What one episode did."""

    seed: int
    task: str
    success: bool
    kept: bool
    message: str


def wait_until(predicate, timeout: float, what: str, graph: Optional[GraphProcesses] = None) -> None:
    """Poll ``predicate`` until true; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if graph is not None:
            graph.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def run_episode(driver, seed: int, grasp_offset: Sequence[float], keep_failed: bool,
                settle_s: float, config: ExpertConfig,
                tasks: Optional[Sequence[TouchTask]] = None, perturbed_share: float = 0.0,
                detour: Optional[DetourConfig] = None) -> EpisodeResult:
    """One demonstration: reset, choose, record while the expert moves, keep or discard. With
    ``perturbed_share`` > 0 that share of the episodes (drawn per seed) first moves the named hand off the
    nominal path, unrecorded, and records the expert's way from there (``detour``, default :class:`DetourConfig`)."""
    driver.follow(None, None, None)
    state = driver.reset(seed)
    task = choose_task(state, np.random.default_rng(seed), tasks=tasks)
    driver.publish_instruction(task.instruction)
    time.sleep(settle_s)  # the arms come to rest at their start poses; the instruction reaches the recorder
    start = driver.home_pose[task.arm]
    detour_rng = np.random.default_rng([seed, 1])  # its own stream: the task drawn per seed stays the same
    if detour_rng.random() < perturbed_share:
        point = detour_point(start, state["objects"], task, grasp_offset, detour_rng, detour, config)
        touch = touch_target(state["objects"][task.object]["position"], start[3:], grasp_offset, config)
        # A detour that ends over the named cube arrives from above it, not through the cube's side.
        via = touch[2] + config.approach_height_m if over_object(point, touch, config) else None
        move = plan_move(start, point, config, via_height=via)
        driver.follow(task.arm, move, None)
        time.sleep(move.duration + settle_s)  # arrive and come to rest before the recording starts
        start = move.pose(move.duration)
    path = plan_touch(start, state["objects"][task.object]["position"], grasp_offset, config)
    reply = driver.call("start_episode")
    if not reply.success:
        raise RuntimeError(f"recorder refused to start: {reply.message}")
    driver.follow(task.arm, path, task)
    # The recording ends with the dwell on the cube, before the retreat: the retreat passes through the
    # descent's poses in the opposite direction with the same images, so a policy trained on both cannot
    # tell whether to go down or up there and hovers above the cube (seen: 0/20, every miss 4-12 cm above).
    time.sleep(path.phases["retreat"] + 0.1)
    success = driver.touched
    if success or keep_failed:
        reply = driver.call("stop_episode")
        kept = reply.success
    else:
        reply = driver.call("discard_episode")
        kept = False
    driver.follow(None, None, None)
    return EpisodeResult(seed, task.instruction, success, kept, reply.message)


def build_graph(root: Path, fps: int, action_space: str, camera_rate_hz: float,
                sim_config: Optional[Path] = None) -> List:
    """sim_robot + policy_node (teleop) + recorder, as the launch graph describes them; ``sim_config``
    replaces the simulator's scene file (config/sim.yaml)."""
    sim_extra = {"task_state_hz": 10.0, "camera_rate_hz": float(camera_rate_hz),
                 **({"sim_config": str(sim_config)} if sim_config else {})}
    options = GraphOptions(control_mode="teleop", policy_backend="scripted", extra_sim_parameters=sim_extra)
    return [*sim_graph(options), recorder_spec(options, str(root), {"fps": fps, "action_space": action_space})]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="pi0-collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset directory (created, or appended to)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to attempt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    parser.add_argument("--fps", type=int, default=10, help="recorder frames per second")
    parser.add_argument("--camera-rate-hz", type=float, default=10.0, help="simulated camera rate")
    parser.add_argument("--action-space", default="joint_position", help="action space recorded")
    parser.add_argument("--layout", default="random", choices=LAYOUTS,
                        help="cube layout: random (by seed, the default) or fixed (config/sim.yaml objects.fixed)")
    parser.add_argument("--tasks", default=None,
                        help="tasks drawn per episode, e.g. red:left,blue:right (default: with --layout fixed "
                             "the skill's four tasks, else the cube's side decides the hand)")
    parser.add_argument("--perturbed-starts", type=float, default=0.0, metavar="SHARE",
                        help="share of episodes (0-1, drawn per seed) whose named hand is first moved off the "
                             "nominal path, unrecorded, so the demonstration shows the way back (default 0)")
    parser.add_argument("--detour-fraction", type=float, nargs=2, default=DetourConfig.fraction, metavar=("LO", "HI"),
                        help="a perturbed start toward another cube goes this far (drawn uniformly) along the way "
                             "from the start to above that cube (default: %(default)s)")
    parser.add_argument("--near-cube-share", type=float, default=DetourConfig.near_named_cube, metavar="SHARE",
                        help="share (0-1) of the perturbed starts that end over the named cube, a few cm off the "
                             "vertical over the touch point and below the approach height (default: %(default)s)")
    parser.add_argument("--keep-failed", action="store_true", help="keep episodes without a touch too")
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause after each reset")
    parser.add_argument("--startup-timeout-s", type=float, default=90.0)
    parser.add_argument("--log-dir", default=None, help="node logs (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0.0 <= args.perturbed_starts <= 1.0:
        parser.error(f"--perturbed-starts {args.perturbed_starts}: a share between 0 and 1")
    if not 0.0 <= args.near_cube_share <= 1.0:
        parser.error(f"--near-cube-share {args.near_cube_share}: a share between 0 and 1")
    low, high = args.detour_fraction
    if not 0.0 <= low <= high <= 1.0:
        parser.error(f"--detour-fraction {low} {high}: need 0 <= LO <= HI <= 1")
    return args


def collect(args: argparse.Namespace) -> List[EpisodeResult]:
    """Run the graph and the episodes; returns one result per attempted episode."""
    from tqdm import tqdm

    require_ik_library()
    embodiment = load_embodiment()
    grasp_offset = load_sim_config(config_path("sim.yaml")).task.grasp_point
    tasks = skill_tasks(args.layout, args.tasks)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="pi0_collect_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    sim_config = (write_layout_variant(args.layout, log_dir / f"sim_{args.layout}.yaml", config_path("sim.yaml"))
                  if args.layout != "random" else None)
    specs = build_graph(Path(args.root).expanduser().resolve(), args.fps, args.action_space, args.camera_rate_hz,
                        sim_config)
    results: List[EpisodeResult] = []
    with GraphProcesses(specs, log_dir=log_dir) as graph:
        with expert_session(embodiment, graph, args.startup_timeout_s) as driver:
            bar = tqdm(range(args.episodes), desc="episodes", unit="ep", disable=args.no_progress, file=sys.stderr)
            for i in bar:
                graph.check_alive()
                result = run_episode(driver, args.seed + i, grasp_offset, args.keep_failed, args.settle_s,
                                     ExpertConfig(), tasks, args.perturbed_starts,
                                     DetourConfig(fraction=tuple(args.detour_fraction),
                                                  near_named_cube=args.near_cube_share))
                results.append(result)
                bar.set_postfix(kept=sum(r.kept for r in results), success=sum(r.success for r in results))
    return results


def require_ik_library() -> None:
    """Raise RelaxedIKLibraryError (with the fix) unless the IK library loads: the expert streams pose goals
    that only the policy node's IK turns into arm commands, so without it every episode would be discarded."""
    load_library()  # the path the policy node resolves too: $RELAXED_IK_LIB, else the bundled build


def skill_tasks(layout: str, tasks: Optional[str]) -> Optional[tuple]:
    """The tasks to draw from: ``--tasks`` when given, the skill's for the fixed layout, else None (the cube's
    side picks the hand)."""
    if tasks:
        return parse_tasks(tasks)
    return SKILL_TASKS if layout == "fixed" else None


@contextlib.contextmanager
def expert_session(embodiment: Embodiment, graph: GraphProcesses, startup_timeout_s: float = 90.0) -> Iterator:
    """The expert driver node (imported here: rclpy after the loopback environment), once the
    simulator and the recorder of ``graph`` answer."""
    for key, value in LOOPBACK_ENV.items():  # discovery never leaves this machine; set before rclpy loads
        os.environ.setdefault(key, value)
    from pi0_ros.nodes.expert_driver import driver_session

    with driver_session(embodiment) as driver:
        wait_until(lambda: driver.task_state is not None, startup_timeout_s, "the simulator", graph)
        wait_until(lambda: driver.recorder_ready, startup_timeout_s, "the recorder services", graph)
        yield driver


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``pi0-collect``."""
    args = parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    started = time.monotonic()
    try:
        results = collect(args)
    except RelaxedIKLibraryError as error:
        print(f"pi0-collect: {error}", file=sys.stderr)
        return 2
    minutes = (time.monotonic() - started) / 60.0
    kept = sum(r.kept for r in results)
    for r in results:
        print(f"seed {r.seed}: {'touched' if r.success else 'missed '} {'kept' if r.kept else 'dropped'}  "
              f"{r.task}  ({r.message})")
    print(f"{kept} of {len(results)} episodes kept in {args.root}; {len(results) / minutes:.2f} episodes/min "
          f"({minutes:.2f} min)")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
