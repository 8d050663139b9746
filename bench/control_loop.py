"""Policy node command-stream timing with a small model running concurrently (BENCHMARKS.md, Policy node).

Measures, for each control-loop implementation (dedicated thread vs rclpy timer):
- period jitter of the command stream at the control rate (send-time deltas: p50/p99/max) and missed ticks;
- latency from a camera frame's arrival at the node to the first command computed from it;
- the policy's observation -> decoded chunk latency.

A stand-in robot runs in a subprocess (100 Hz joint feedback, three 224x224 JPEG cameras at 15 Hz); the
policy node runs in this process so that its internal timestamps can be read. Run inside the loopback
namespace:  tools/loopback_only.sh .venv/bin/python bench/control_loop.py [--seconds 20] [--backend pi0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_robot(seconds: float) -> None:
    """The stand-in robot process: follows arm/gripper commands, publishes feedback and cameras."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, JointState

    from pi0_ros.embodiment import load_embodiment
    from pi0_ros.image_conversion import encode_compressed

    emb = load_embodiment()
    groups = ["left_arm", "left_gripper", "right_arm", "right_gripper"]
    rclpy.init()
    node = Node("bench_robot")
    q = {g: emb.groups[g].home.copy() for g in groups}
    feedback = {g: node.create_publisher(JointState, emb.groups[g].feedback_topic, 10) for g in groups}
    for g in groups:
        node.create_subscription(JointState, emb.groups[g].command_topic,
                                 lambda m, g=g: q.__setitem__(g, np.asarray(m.position)), 10)
    cams = [node.create_publisher(CompressedImage, c.topic, qos_profile_sensor_data) for c in emb.cameras.values()]
    rng = np.random.default_rng(0)
    frames = [encode_compressed(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(4)]

    def publish_feedback():
        for g in groups:
            feedback[g].publish(JointState(name=list(emb.groups[g].joints), position=q[g].tolist()))

    count = [0]

    def publish_cameras():
        count[0] += 1
        for pub in cams:
            msg = CompressedImage(format="jpeg")
            msg.data = frames[count[0] % len(frames)]
            pub.publish(msg)

    node.create_timer(0.01, publish_feedback)
    node.create_timer(1 / 15, publish_cameras)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:  # stopped by a signal before the deadline: the benchmark is over
        pass
    rclpy.try_shutdown()


def make_checkpoint(directory: Path) -> Path:
    """A tiny random pi0 checkpoint with the embodiment's cameras and dims."""
    out = directory / "pi0_tiny"
    subprocess.run([sys.executable, "-m", "pi0_ros.model.make_checkpoint", "--config", "pi0_tiny", "--out", str(out),
                    "--state-dim", "16", "--action-dim", "16", "--cameras", "head,left_wrist,right_wrist"],
                   check=True, cwd=ROOT, capture_output=True)
    return out


def percentiles(values, scale=1e3):
    arr = np.asarray(values, dtype=np.float64) * scale
    if arr.size == 0:
        return {"n": 0}
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()), "mean": float(arr.mean())}


def measure(loop: str, backend: str, checkpoint: str, seconds: float, execute_steps: int) -> dict:
    """Run the node for ``seconds`` in policy mode and collect its timing."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from pi0_ros.nodes.policy_node import PolicyNode

    robot = subprocess.Popen([sys.executable, __file__, "--robot", str(seconds + 15)], cwd=ROOT)
    rclpy.init()
    params = {"control_mode": "policy", "policy_backend": backend, "checkpoint": checkpoint,
              "control_loop": loop, "execute_steps": execute_steps, "policy_timeout_s": 10.0,
              "instruction": "pick up the red cube"}
    node = PolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = SingleThreadedExecutor()  # as policy_node.main spins it
    executor.add_node(node)
    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60
        while node.core.chunks_received < 2 and time.monotonic() < deadline:  # warm-up: first inferences
            time.sleep(0.05)
        node.tick_times.clear()
        node.camera_to_command_s.clear()
        missed0, chunks0 = node.missed_ticks, node.core.chunks_received
        latencies = []
        end = time.monotonic() + seconds
        last_count = node.core.chunks_received
        while time.monotonic() < end:
            time.sleep(0.05)
            if node.core.chunks_received != last_count:
                last_count = node.core.chunks_received
                latencies.append(node.core.last_latency_s)
        times = np.asarray(node.tick_times)
        diag = node.core.diagnostics(time.monotonic())
        period = np.diff(times)
        result = {
            "loop": loop, "backend": backend, "seconds": seconds, "control_hz": 1.0 / node.dt,
            "commands": int(times.size),
            "period_ms": percentiles(period),
            "abs_jitter_ms": percentiles(np.abs(period - node.dt)),
            "missed_ticks": node.missed_ticks - missed0,
            "late_periods_over_1.5dt": int(np.sum(period > 1.5 * node.dt)),
            "camera_to_first_command_ms": percentiles(node.camera_to_command_s),
            "obs_to_chunk_ms": percentiles(latencies),
            "chunks": node.core.chunks_received - chunks0,
            "switch_interval_s": sys.getswitchinterval(),
            "mode_at_end": diag["mode"], "faults_at_end": diag["faults"], "watchdog_trips": diag["watchdog_trips"],
        }
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        robot.terminate()
        robot.wait(timeout=10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robot", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", default="pi0", choices=["pi0", "scripted"])
    parser.add_argument("--loops", default="thread,timer")
    parser.add_argument("--execute-steps", type=int, default=25)
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="sys.setswitchinterval for the node process (0: Python's default, 5 ms)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.robot is not None:
        run_robot(args.robot)
        return
    if os.environ.get("ROS_LOCALHOST_ONLY") != "1":
        sys.exit("run me under tools/loopback_only.sh (ROS discovery must stay on this machine)")
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(make_checkpoint(Path(tmp))) if args.backend == "pi0" else ""
        results = [measure(loop, args.backend, checkpoint, args.seconds, args.execute_steps)
                   for loop in args.loops.split(",")]
    for r in results:
        print(json.dumps(r))
    print("\n| loop | commands | period p50 / p99 / max (ms) | missed ticks | periods > 1.5 dt "
          "| camera -> first command p50 / p99 / max (ms) | obs -> chunk p50 / max (ms) |")
    print("|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in results:
        p, c, o = r["period_ms"], r["camera_to_first_command_ms"], r["obs_to_chunk_ms"]
        print(f"| {r['loop']} | {r['commands']} | {p['p50']:.2f} / {p['p99']:.2f} / {p['max']:.2f} "
              f"| {r['missed_ticks']} | {r['late_periods_over_1.5dt']} "
              f"| {c.get('p50', nan):.0f} / {c.get('p99', nan):.0f} / {c.get('max', nan):.0f} "
              f"| {o.get('p50', nan):.0f} / {o.get('max', nan):.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
