"""Start a launch graph (pi0_ros.launch_graph specs) as real processes, without `ros2 launch`.

Each node runs as `python -m <module> --ros-args ...` with the parameters and remappings the launch
file would give it, so tests and the demo exercise the same graph users launch. Processes inherit a
loopback-only ROS environment; stopping sends SIGINT first (the nodes' shutdown path sends a final
hold) and only then escalates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pi0_ros.launch_graph import NodeSpec

LOOPBACK_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}


@dataclass
class RunningNode:
    """A started node process and where its output goes."""

    spec: NodeSpec
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """Everything the node printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


class GraphProcesses:
    """Context manager that starts every node of a graph and stops them all on exit."""

    def __init__(self, specs: Sequence[NodeSpec], log_dir: Optional[Path] = None,
                 env: Optional[Dict[str, str]] = None, python: str = sys.executable):
        self.specs = list(specs)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="pi0_ros_graph_"))
        self.env = {**os.environ, **LOOPBACK_ENV, **(env or {})}
        self.env.setdefault("MUJOCO_GL", "egl")
        source_root = str(Path(__file__).resolve().parents[2])
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, self.env.get("PYTHONPATH")) if p)
        self.python = python
        self.nodes: List[RunningNode] = []
        self._previous_sigterm = None

    def __enter__(self) -> "GraphProcesses":
        # The nodes run in their own sessions (a Ctrl-C in the terminal must not reach them before the
        # operator's last commands), so they outlive a SIGTERM'd parent unless it unwinds: turn SIGTERM into
        # SystemExit while the graph runs, so `with` stops the nodes.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None

    def start(self) -> None:
        """Start every node; each writes stdout and stderr to `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            log_path = self.log_dir / f"{spec.name}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [self.python, "-u", "-m", spec.module, *spec.ros_args()],
                    stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                )
            self.nodes.append(RunningNode(spec, process, log_path))

    def node(self, name: str) -> RunningNode:
        """The running node called `name`."""
        for node in self.nodes:
            if node.spec.name == name:
                return node
        raise KeyError(name)

    def check_alive(self) -> None:
        """Raise with the node's log if any node has exited."""
        for node in self.nodes:
            code = node.process.poll()
            if code is not None:
                raise RuntimeError(f"node {node.spec.name} exited with {code}:\n{node.log()[-4000:]}")

    def stop(self, timeout: float = 10.0) -> Dict[str, int]:
        """SIGINT every node (clean shutdown), then SIGKILL what is still running; returns exit codes."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        codes = {}
        for node in self.nodes:
            try:
                codes[node.spec.name] = node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                codes[node.spec.name] = node.process.wait()
        return codes
