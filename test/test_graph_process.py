"""The graph harness stops its node processes when its own process is terminated (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_to_the_parent_stops_the_nodes(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent(f"""
        import sys, time
        from pi0_ros.launch_graph import NodeSpec
        from pi0_ros.testing.graph_process import GraphProcesses
        spec = NodeSpec(executable="sleeper", module="sleeper", name="sleeper")
        with GraphProcesses([spec], log_dir={str(tmp_path / "logs")!r}, env={{"PYTHONPATH": {str(tmp_path)!r}}}) as g:
            print(g.nodes[0].process.pid, flush=True)
            time.sleep(120)
    """))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": repo})
    try:
        child = int(proc.stdout.readline())
        assert _alive(child)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the node outlived the terminated parent"
    finally:
        proc.kill()
