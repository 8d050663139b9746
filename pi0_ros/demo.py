"""`make demo`: the simulated R1 Pro-style robot driven by the full pipeline, end to end.

Starts the simulation graph of `sim.launch.py` (sim_robot + policy_node) as real processes on
loopback-only DDS, then walks through what a user does on the robot and reports each step:

1. hold      the node starts holding; the arms must not move;
2. teleop    joint targets for the left arm and an end-effector goal for the right arm (through
             relaxed IK) pass the safety layer; the arms converge to them;
3. policy    the pi0 policy (cameras + joint states + instruction -> action chunks) does the task: for each
             instruction the arms are parked at home, the cubes placed by a held-out seed, the instruction
             given and the node switched to policy mode until the named hand touches the named cube;
             touches, time, closest approach, command rate, smoothness and the largest step are reported;
4. hold      back to hold: the robot stops where it is.

The policy is `--checkpoint DIR` if given, else the demo policy of `pi0_ros.demo_policy`: on first use
this package's own pipeline records scripted demonstrations (pi0-collect) and trains a small pi0 on them
(pi0-train, a few minutes on two CPU cores, with progress bars); later runs reuse it from `build/demo/`.
The simulator runs the fixed cube layout (red left, green middle, blue right; config/sim.yaml) that the
skill was demonstrated on. The head camera's frames (start, each touch, end) are saved next to the logs.
Exit status 0 only if every step met its check. The policy step's check: every command within the limits at
the node's rate and at least one touch; when a round of the instructions ends without a touch, one more round
runs on new placements (the demo policy, trained for minutes on a CPU, touches in about a quarter to a half of
the tries; the GPU-trained one of BENCHMARKS.md in three of four: `--checkpoint` runs any checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from pi0_ros.control.kinematics import arm_fk
from pi0_ros.embodiment import load_embodiment
from pi0_ros.launch_graph import GraphOptions, sim_graph
from pi0_ros.testing.graph_process import GraphProcesses
from pi0_ros.testing.operator import Operator

DEFAULT_OUT = Path("build") / "demo"
# "green with the left hand": the named cube is not the one nearest that hand (language following).
DEFAULT_TASKS = "green:left,blue:right"
FIRST_SEED = 1000  # held-out placements: demonstrations use seeds from 0


@dataclass
class StepReport:
    """One demo step's outcome, printed as a table row."""

    name: str
    ok: bool
    details: List[str] = field(default_factory=list)


def max_command_step(op: Operator, group: str, t0: float) -> float:
    """Largest change between consecutive commands of a group since t0 (rad)."""
    names = op.embodiment.groups[group].joints
    rows = [np.array([s.value[n] for n in names]) for s in op.since(op.commands[group], t0)
            if all(n in s.value for n in names)]
    if len(rows) < 2:
        return 0.0
    return float(np.max(np.abs(np.diff(np.stack(rows), axis=0))))


def step_hold(op: Operator, seconds: float, settle_s: float = 0.0) -> StepReport:
    """After `settle_s` to brake, the arms stay where they are."""
    time.sleep(settle_s)
    start = {g: op.positions(g) for g in ("left_arm", "right_arm")}
    time.sleep(seconds)
    drift = max(float(np.max(np.abs(op.positions(g) - start[g]))) for g in start)
    return StepReport("hold", drift < 0.01, [f"largest joint drift {drift:.4f} rad over {seconds:.0f} s"])


def step_teleop(op: Operator, seconds: float) -> StepReport:
    """Joint targets (left arm) and an ee goal through IK (right arm) are reached within limits."""
    emb = op.embodiment
    results = op.set_parameters(control_mode="teleop")
    left_home = emb.groups["left_arm"].home
    left_goal = left_home + np.array([0.3, -0.25, 0.2, 0.3, 0.0, 0.2, 0.0])
    right_group = emb.groups["right_arm"]
    fk = arm_fk(emb, right_group)
    right_pose = fk.forward(op.positions("right_arm"))
    right_goal = right_pose.copy()
    right_goal[:3] += np.array([0.06, 0.05, 0.08])  # forward, inward, up: well inside the workspace
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        op.send_joint_targets({"left_arm": left_goal})
        op.send_pose("right_arm", right_goal[:3], right_goal[3:])
        time.sleep(0.05)
    left_err = float(np.max(np.abs(op.positions("left_arm") - left_goal)))
    right_err = float(np.linalg.norm(fk.forward(op.positions("right_arm"))[:3] - right_goal[:3]))
    step = max(max_command_step(op, g, t0) for g in ("left_arm", "right_arm"))
    limit = float(np.max(emb.groups["left_arm"].velocity_limits)) / emb.rates.control_hz
    ok = all(r[0] for r in results) and left_err < 0.02 and right_err < 0.01 and step <= limit
    return StepReport("teleop", ok, [
        f"left arm joint goal: largest error {left_err:.4f} rad",
        f"right arm ee goal (+6 cm x, +5 cm y, +8 cm z via IK): position error {100 * right_err:.2f} cm",
        f"largest command step {step:.4f} rad (velocity limit x dt = {limit:.3f})",
    ])


def largest_step(commands) -> float:
    """Largest change between consecutive commands of ``{group: [(t, positions), ...]}`` (rad)."""
    steps = [float(np.max(np.abs(np.diff(np.stack([q for _, q in samples]), axis=0))))
             for samples in commands.values() if len(samples) > 1]
    return max(steps, default=0.0)


def step_policy(op: Operator, driver, tasks, control_hz: float, seconds: float, out: Path,
                rounds: int = 2) -> StepReport:
    """Each task on a held-out placement, as pi0-eval runs an episode (parked at home, instruction, policy
    mode until the touch). Without any touch after one round of the tasks, one more round on new placements
    (at most ``rounds``)."""
    from pi0_ros.training.evaluate import expert_plan, run_episode

    def save_touch(task) -> None:
        save_frame(op, out / f"head_camera_touch_{task.object}_{task.arm}.jpg")

    details, touches, tried, ok = [], 0, 0, True
    limit = float(np.max(op.embodiment.groups["left_arm"].velocity_limits)) / control_hz
    for k, task in enumerate([task for _ in range(rounds) for task in tasks]):
        if k and k % len(tasks) == 0 and touches:
            break
        tried += 1
        seed = FIRST_SEED + k
        result, commands = run_episode(driver, seed, lambda s, state, t=task: expert_plan(s, state, (t,)), seconds,
                                       on_solved=save_touch)
        if not result["reset_ok"]:
            return StepReport("policy", False, details + [f"reset to seed {seed} failed"])
        refused = [f for f in result["faults"] if f.startswith("policy_refused")]
        touches += result["success"]
        elapsed = result["time_to_success_s"] or seconds
        rate = len(commands.get(task.arm, [])) / elapsed
        step, jerk = largest_step(commands), result["command_jerk_rms"]
        ok = ok and not refused and rate > 0.5 * control_hz and step <= limit
        closest, start = result["min_distance_m"], result["start_distance_m"]
        details += [f'"{task.instruction}" (seed {seed}): '
                    + (f"touched after {elapsed:.1f} s" if result["success"] else f"no touch in {seconds:.0f} s")
                    + ("" if closest is None else f", closest {100 * closest:.1f} cm (from {100 * start:.1f} cm)"),
                    f"    command rate {rate:.1f} Hz (node {control_hz:.0f} Hz), largest step {step:.4f} rad "
                    f"(limit {limit:.3f}), RMS jerk {jerk if jerk is None else round(jerk, 1)} rad/s^3"
                    + (f"; {refused[0]}" if refused else "")]
    driver.park()  # the step ends with the arms back at home (teleop), at rest for the next step
    diag = op.latest(op.diagnostics)
    status = (diag.value.get("policy_node", {}) if diag else {})
    details.append(f"touched {touches} of {tried} tries; inference latency (last diagnostics) "
                   f"{status.get('inference_latency_ms', status.get('inference_ms', '?'))} ms")
    return StepReport("policy", ok and touches >= 1, details)


def step_back_to_hold(op: Operator) -> StepReport:
    """Switching to hold brakes within limits and then keeps the arms still."""
    results = op.set_parameters(control_mode="hold")
    report = step_hold(op, 2.0, settle_s=1.0)
    report.ok = report.ok and all(r[0] for r in results)
    return report


def save_frame(op: Operator, path: Path) -> Optional[Path]:
    """Write the latest head-camera JPEG."""
    entry = op.latest(op.images)
    if entry is None:
        return None
    path.write_bytes(entry.value)
    return path


def run(args: argparse.Namespace) -> int:
    """Run the demo steps; returns the exit status."""
    from pi0_ros.demo_policy import ensure_demo_policy
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import write_layout_variant
    from pi0_ros.sim.expert import parse_tasks
    from pi0_ros.testing.sim_driver import EpisodeDriver
    from pi0_ros.training.evaluate import checkpoint_policy_parameters

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embodiment = load_embodiment(args.embodiment)
    tasks = parse_tasks(args.tasks)
    checkpoint = Path(args.checkpoint) if args.checkpoint else ensure_demo_policy(out)
    params = checkpoint_policy_parameters(str(checkpoint), execute_steps=args.execute_steps)
    control_hz = float(params.get("control_hz", embodiment.rates.control_hz))
    scene = write_layout_variant("fixed", out / "sim_fixed.yaml", config_path("sim.yaml"))
    options = GraphOptions(embodiment=args.embodiment, control_mode="hold", policy_backend=args.backend,
                           checkpoint=str(checkpoint), extra_policy_parameters=params,
                           extra_sim_parameters={"sim_config": str(scene), "task_state_hz": 10.0,
                                                 "feedback_hz": 50.0})  # as pi0-eval: see its --feedback-hz
    reports: List[StepReport] = []
    print(f"starting the simulation graph (logs in {out / 'logs'}) ...", flush=True)
    with GraphProcesses(sim_graph(options), log_dir=out / "logs") as graph, Operator(embodiment) as op:
        driver = EpisodeDriver(op, embodiment)
        try:
            op.wait_for(lambda: op.positions("left_arm") is not None and op.positions("right_arm") is not None,
                        timeout=90)
            op.wait_for(lambda: op.param_client.service_is_ready(), timeout=120)
            op.wait_for(lambda: op.latest(op.images), timeout=30)
            save_frame(op, out / "head_camera_start.jpg")
            steps = (("hold", lambda: step_hold(op, 2.0)),
                     ("teleop", lambda: step_teleop(op, args.teleop_seconds)),
                     ("policy", lambda: step_policy(op, driver, tasks, control_hz, args.policy_seconds, out)),
                     ("hold", lambda: step_back_to_hold(op)))
            for name, step in steps:
                print(f"-- {name} ...", flush=True)
                reports.append(step())
                graph.check_alive()
            save_frame(op, out / "head_camera_end.jpg")
        except (TimeoutError, RuntimeError) as exc:
            reports.append(StepReport("graph", False, [str(exc)[:2000]]))
    print("\npi0_ros demo: simulated R1 Pro-style robot, full pipeline")
    print(f"  policy: {checkpoint}")
    for report in reports:
        print(f"  [{'ok' if report.ok else 'FAILED'}] {report.name}")
        for line in report.details:
            print(f"        {line}")
    print(f"  frames and logs: {out}")
    return 0 if reports and all(r.ok for r in reports) else 1


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of `make demo` / `pi0-demo`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embodiment", default=None, help="embodiment YAML (default: config/r1pro.yaml)")
    parser.add_argument("--checkpoint", default=None, help="pi0 / pi0_fast checkpoint directory")
    parser.add_argument("--backend", default="pi0", choices=("pi0", "pi0_fast", "scripted", "remote"))
    parser.add_argument("--tasks", default=DEFAULT_TASKS,
                        help="touch tasks, one held-out placement each: <colour>:<left|right>,... "
                             "(instruction 'touch the <colour> cube with the <left|right> hand')")
    parser.add_argument("--execute-steps", type=int, default=5, help="actions executed per chunk")
    parser.add_argument("--teleop-seconds", type=float, default=6.0)
    parser.add_argument("--policy-seconds", type=float, default=15.0, help="time limit of each task")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    sys.exit(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
