"""Lint in the ament style (pyflakes/pycodestyle/pep257 equivalents via ruff, see ruff.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_modules_do_not_import_ros():
    """Design principle 1: the core is ROS-free; only pi0_ros/nodes and the test harness touch rclpy."""
    allowed = {"nodes", "testing"}
    offenders = []
    for path in (ROOT / "pi0_ros").rglob("*.py"):
        if allowed & set(path.relative_to(ROOT / "pi0_ros").parts[:-1]):
            continue
        text = path.read_text()
        for token in ("import rclpy", "from rclpy", "_msgs.msg import", "from std_srvs"):
            if token in text:
                offenders.append(f"{path.relative_to(ROOT)}: {token}")
    assert not offenders, offenders
