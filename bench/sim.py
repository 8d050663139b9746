"""Cost of the simulated robot: physics rate, per-camera render time, and the sim_robot node's CPU share.

Reports, on this machine:

* physics: wall time of one ``SimRobot.step`` (tracker + MuJoCo step, arms moving), median of repeated
  blocks, and the fraction of one core the configured physics rate costs;
* rendering: wall and process-CPU time per frame of each camera at the embodiment's size (or
  ``--size``), plus JPEG encoding, median over ``--frames`` frames;
* node (``--node-seconds`` > 0): the sim_robot process started as the launch graph starts it (config/sim.yaml
  parameters), observed from another process: feedback messages/s and inter-arrival p50/p99 on one feedback
  topic, camera frames/s, and the node's CPU use (from /proc, in % of one core).

Usage: ``tools/loopback_only.sh .venv/bin/python bench/sim.py [--frames 100] [--node-seconds 20] [--json out]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.image_conversion import encode_compressed  # noqa: E402
from pi0_ros.sim.cameras import CameraRenderer, CameraSpec  # noqa: E402
from pi0_ros.sim.config import load_sim_config  # noqa: E402
from pi0_ros.sim.robot import SimRobot  # noqa: E402


def bench_physics(sim: SimRobot, blocks: int = 20, steps: int = 250) -> Dict[str, float]:
    arm = sim.embodiment.groups["left_arm"]
    per_step = []
    for i in range(blocks):
        # Keep the arms moving: a tracker at rest would flatter the numbers.
        offset = 0.3 if i % 2 else -0.3
        sim.command("left_arm", [], np.clip(arm.home + offset, arm.position_limits[:, 0], arm.position_limits[:, 1]))
        start = time.perf_counter()
        sim.step(steps)
        per_step.append((time.perf_counter() - start) / steps)
    median = float(np.median(per_step))
    rate = 1.0 / sim.dt
    return {"step_us_p50": median * 1e6, "max_rate_hz": 1.0 / median, "configured_rate_hz": rate,
            "core_fraction_at_configured_rate": median * rate}


def bench_render(sim: SimRobot, frames: int, size: int | None) -> Dict[str, Dict[str, float]]:
    cameras = [CameraSpec(c.name, size or c.width, size or c.height) for c in sim.embodiment.cameras.values()]
    results = {}
    with CameraRenderer(sim.model, cameras) as renderer:
        renderer.set_state(sim.qpos())
        for camera in cameras:
            renderer.render(camera.name)  # warm-up (first frame uploads the model)
            wall, cpu, encode = [], [], []
            for _ in range(frames):
                w0, c0 = time.perf_counter(), time.process_time()
                renderer.set_state(sim.qpos())
                image = renderer.render(camera.name)
                w1, c1 = time.perf_counter(), time.process_time()
                encode_compressed(image, "jpeg", 90)
                encode.append(time.perf_counter() - w1)
                wall.append(w1 - w0)
                cpu.append(c1 - c0)
            results[camera.name] = {"size": f"{camera.width}x{camera.height}", "wall_ms_p50": 1e3 * np.median(wall),
                                    "cpu_ms_p50": 1e3 * np.median(cpu), "jpeg_ms_p50": 1e3 * np.median(encode)}
    return results


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def bench_node(seconds: float) -> Dict[str, Any]:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, JointState

    from pi0_ros.launch_graph import GraphOptions, sim_robot_spec
    from pi0_ros.testing.graph_process import GraphProcesses

    embodiment = load_embodiment()
    feedback_topic = embodiment.groups["left_arm"].feedback_topic
    arrivals: List[float] = []
    frames: Dict[str, int] = {}
    rclpy.init()
    node = rclpy.create_node("sim_bench_observer")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(JointState, feedback_topic, lambda _: arrivals.append(time.monotonic()), qos)
    for camera in embodiment.cameras.values():
        node.create_subscription(CompressedImage, camera.topic,
                                 lambda _, c=camera.name: frames.__setitem__(c, frames.get(c, 0) + 1), qos)
    spec = sim_robot_spec(GraphOptions())
    try:
        with GraphProcesses([spec]) as graph:
            pid = graph.node("sim_robot").process.pid
            deadline = time.monotonic() + 60.0
            while not arrivals or len(frames) < len(embodiment.cameras):
                if time.monotonic() > deadline:
                    raise RuntimeError("sim_robot did not start:\n" + graph.node("sim_robot").log())
                rclpy.spin_once(node, timeout_sec=0.05)
            time.sleep(2.0)  # let start-up work settle
            arrivals.clear()
            frames.clear()
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            while time.monotonic() - t0 < seconds:
                rclpy.spin_once(node, timeout_sec=0.01)
            cpu1, t1 = _cpu_seconds(pid), time.monotonic()
            log = graph.node("sim_robot").log().splitlines()[0]
    finally:
        node.destroy_node()
        rclpy.shutdown()
    gaps = np.diff(arrivals) * 1e3
    elapsed = t1 - t0
    return {"parameters": log, "seconds": elapsed, "feedback_hz": len(arrivals) / elapsed,
            "feedback_gap_ms_p50": float(np.percentile(gaps, 50)),
            "feedback_gap_ms_p99": float(np.percentile(gaps, 99)),
            "camera_fps": {k: v / elapsed for k, v in frames.items()},
            "node_cpu_percent_of_one_core": 100.0 * (cpu1 - cpu0) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per camera")
    parser.add_argument("--size", type=int, default=None, help="square render size (default: embodiment's)")
    parser.add_argument("--node-seconds", type=float, default=20.0, help="0 skips the node measurement")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    sim = SimRobot(load_embodiment(), load_sim_config())
    results: Dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                               "load_average_at_start": os.getloadavg()}
    results["physics"] = bench_physics(sim)
    print("physics", json.dumps(results["physics"], indent=1), flush=True)
    results["render"] = bench_render(sim, args.frames, args.size)
    print("render", json.dumps(results["render"], indent=1), flush=True)
    if args.node_seconds > 0:
        results["node"] = bench_node(args.node_seconds)
        print("node", json.dumps(results["node"], indent=1), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    print("load average start/end", results["load_average_at_start"], results["load_average_at_end"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
