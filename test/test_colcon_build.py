"""`colcon build` of a workspace holding the package installs what `ros2 launch`/`ros2 run` need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).with_name("colcon")


def tracked_files() -> list:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"git ls-files failed: {result.stderr}")
    return [line for line in result.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("colcon_ws")
    source = workspace / "src" / "pi0_ros"
    for rel in tracked_files():
        target = source / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    result = subprocess.run([str(COLCON), "build", "--event-handlers", "console_direct+"], cwd=workspace,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workspace / "install" / "pi0_ros"


def site_packages(prefix: Path) -> Path:
    (path,) = prefix.glob("lib/python3*/site-packages")
    return path


def test_launch_files_configs_and_executables_are_installed(installed):
    share = installed / "share" / "pi0_ros"
    for rel in ("package.xml", "launch/sim.launch.py", "launch/robot.launch.py", "config/r1pro.yaml",
                "config/urdf/r1pro.urdf", "config/relaxed_ik/r1pro_left.yaml"):
        assert (share / rel).is_file(), rel
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "pi0_ros").is_file()
    for executable in ("sim_robot", "policy_node", "pi0-serve"):
        path = installed / "lib" / "pi0_ros" / executable
        assert path.is_file() and os.access(path, os.X_OK), executable
    assert (site_packages(installed) / "relaxed_ik_bindings" / "lib" / "librelaxed_ik_lib.so").is_file()


def test_installed_package_finds_its_config_through_the_ament_index(installed, tmp_path):
    env = {**os.environ, "AMENT_PREFIX_PATH": str(installed), "PYTHONPATH": str(site_packages(installed))}
    code = ("from pi0_ros.embodiment import load_embodiment; e = load_embodiment(); "
            "print(e.path); print(e.groups['left_arm'].ik_settings.is_file())")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    path, ik_ok = result.stdout.split()
    assert path.startswith(str(installed)) and ik_ok == "True"
