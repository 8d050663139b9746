"""CPU share of each node of the demonstration graph (sim_robot, policy_node in teleop, recorder), idle.

    tools/loopback_only.sh .venv/bin/python bench/graph_cpu.py [--warmup 25] [--seconds 20]

Starts the graph pi0-collect starts, waits ``--warmup`` seconds, then reads each process's user+system CPU
time from /proc over ``--seconds`` and prints the percentage of one core per node. On a 2-core machine the
sum decides whether the nodes keep their rates (a node starved for 0.2 s trips the policy node's feedback
watchdog and holds the arms). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=25.0, help="seconds before measuring (start-up)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import write_layout_variant
    from pi0_ros.testing.graph_process import GraphProcesses
    from pi0_ros.tools.collect import build_graph

    work = Path(tempfile.mkdtemp(prefix="graph_cpu_"))
    specs = build_graph(work / "data", 10, "joint_position", 10.0,
                        write_layout_variant("fixed", work / "sim_fixed.yaml", config_path("sim.yaml")))
    with GraphProcesses(specs, log_dir=work / "logs") as graph:
        time.sleep(args.warmup)
        graph.check_alive()
        pids = {node.spec.name: node.process.pid for node in graph.nodes}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        time.sleep(args.seconds)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        elapsed = time.monotonic() - started
    shares = {name: round(100.0 * (after[name] - before[name]) / elapsed, 1) for name in pids}
    print(json.dumps({"percent_of_one_core": shares, "total": round(sum(shares.values()), 1),
                      "cores": os.cpu_count(), "seconds": round(elapsed, 1)}))


if __name__ == "__main__":
    main()
