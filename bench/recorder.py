"""Recording costs: recorder CPU per frame, dataset size per minute, pi0-collect throughput.

Two parts:
  core  - the ROS-free path of one frame (FrameAssembler.assemble + DatasetWriter.add_frame) with three
          224x224 JPEG cameras, image_storage keep and png; median over frames.
  graph - the real graph (sim_robot + policy_node teleop + recorder processes) driven by the scripted
          expert as pi0-collect drives it: recorder process CPU (utime+stime from /proc) per recorded
          frame, dataset bytes per recorded minute, episodes per minute.

    tools/loopback_only.sh .venv/bin/python bench/recorder.py --episodes 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_ros.data.features import make_spec  # noqa: E402
from pi0_ros.data.frames import Frame, FrameAssembler  # noqa: E402
from pi0_ros.data.lerobot_dataset import DatasetWriter  # noqa: E402
from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.image_conversion import encode_compressed  # noqa: E402

GROUPS = ("left_arm", "left_gripper", "right_arm", "right_gripper")


def scene_like_image(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """Smooth shading, a few flat blocks and sensor noise: compresses like a rendered scene."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([80 + 0.4 * x, 90 + 0.3 * y, 110 + 0.2 * (x + y) / 2], -1)
    for _ in range(4):
        r, c = rng.integers(0, size - 40, 2)
        image[r:r + 30, c:c + 30] = rng.integers(0, 255, 3)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def bench_core(frames: int, storage: str) -> dict:
    """Median seconds per frame of assemble + add_frame; each frame gets new JPEGs (camera rate = fps)."""
    from types import SimpleNamespace

    emb = load_embodiment()
    sizes = {c.name: (c.height, c.width) for c in emb.cameras.values()}
    rng = np.random.default_rng(0)
    jpegs = [encode_compressed(scene_like_image(rng), "jpeg", 90) for _ in range(8)]
    with tempfile.TemporaryDirectory() as root:
        writer = DatasetWriter(root, make_spec(emb, "joint_position", 15, sizes))
        assembler = FrameAssembler(emb, "joint_position", sizes, image_storage=storage)
        writer.start_episode("bench")
        times = []
        for i in range(frames):
            now = 100.0 + i / 15
            for g in GROUPS:
                q = emb.groups[g].home + 0.01 * i
                assembler.on_feedback(g, list(emb.groups[g].joints), q.tolist(), now)
                assembler.on_command(g, list(emb.groups[g].joints), q.tolist(), now)
            for camera in sizes:
                assembler.on_image(camera, SimpleNamespace(format="jpeg", data=jpegs[i % len(jpegs)]), now)
            start = time.perf_counter()
            frame = assembler.assemble(now)
            assert isinstance(frame, Frame)
            writer.add_frame(frame.state, frame.action, frame.images)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        writer.finish_episode()
        finish_s = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
    return {"storage": storage, "frames": frames, "median_ms": 1e3 * statistics.median(times),
            "p90_ms": 1e3 * float(np.quantile(times, 0.9)), "finish_episode_ms": 1e3 * finish_s,
            "bytes_per_frame": size / frames}


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_graph(episodes: int, fps: int) -> dict:
    """Run the collection graph; measure the recorder process and the dataset."""
    from pi0_ros.data.lerobot_dataset import DatasetReader
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import load_sim_config
    from pi0_ros.sim.expert import ExpertConfig
    from pi0_ros.testing.graph_process import GraphProcesses
    from pi0_ros.tools.collect import build_graph, expert_session, run_episode

    emb = load_embodiment()
    grasp = load_sim_config(config_path("sim.yaml")).task.grasp_point
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demos"
        with GraphProcesses(build_graph(root, fps, "joint_position", 10.0), log_dir=Path(tmp) / "logs") as graph:
            with expert_session(emb, graph) as driver:
                recorder_pid = graph.node("recorder").process.pid
                cpu0, t0 = process_cpu_s(recorder_pid), time.monotonic()
                results = [run_episode(driver, seed, grasp, True, 1.0, ExpertConfig()) for seed in range(episodes)]
                cpu1, t1 = process_cpu_s(recorder_pid), time.monotonic()
        reader = DatasetReader(root)
        frames = reader.num_frames
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    recorded_min = frames / fps / 60.0
    return {"episodes": episodes, "touched": sum(r.success for r in results), "frames": frames, "fps": fps,
            "recorder_cpu_ms_per_frame_incl_idle": 1e3 * (cpu1 - cpu0) / frames,
            "recorder_cpu_fraction_of_a_core": (cpu1 - cpu0) / (t1 - t0),
            "dataset_mb": size / 1e6, "mb_per_recorded_minute": size / 1e6 / recorded_min,
            "episodes_per_minute": episodes / ((t1 - t0) / 60.0), "wall_s": t1 - t0}


def main() -> None:
    """Print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core-frames", type=int, default=150)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--skip-graph", action="store_true")
    args = parser.parse_args()
    for storage in ("keep", "png"):
        print(json.dumps({"core": bench_core(args.core_frames, storage)}), flush=True)
    if not args.skip_graph:
        print(json.dumps({"graph": bench_graph(args.episodes, args.fps)}), flush=True)


if __name__ == "__main__":
    main()
