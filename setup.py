"""ament_python package definition of pi0_ros (also installs relaxed_ik_bindings and its native library)."""

import os
import subprocess
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = "pi0_ros"
HERE = Path(__file__).resolve().parent
NATIVE_SRC = HERE / "relaxed_ik_bindings" / "native"
NATIVE_LIB = "librelaxed_ik_lib.so"


class BuildPyWithNativeIK(build_py):
    """Builds librelaxed_ik_lib.so with CMake and ships it inside relaxed_ik_bindings/lib/."""

    def run(self):
        super().run()
        build_dir = Path(self.build_lib).resolve().parent / "relaxed_ik_native"
        subprocess.run(["cmake", "-S", str(NATIVE_SRC), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], check=True)
        target = Path(self.build_lib) / "relaxed_ik_bindings" / "lib"
        target.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(build_dir / NATIVE_LIB), str(target / NATIVE_LIB))


def tree(source: str, dest_root: str):
    """data_files entries that mirror a source folder under share/pi0_ros."""
    entries = {}
    for path in sorted(glob(f"{source}/**/*", recursive=True)):
        if os.path.isfile(path):
            entries.setdefault(os.path.join(dest_root, os.path.dirname(path)), []).append(path)
    return list(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["pi0_ros", "pi0_ros.*", "relaxed_ik_bindings", "relaxed_ik_bindings.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch", f"share/{PACKAGE}"),
        *tree("config", f"share/{PACKAGE}"),
    ],
    cmdclass={"build_py": BuildPyWithNativeIK},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="pi0_ros developers",
    maintainer_email="pi0-ros@example.com",
    description="pi0 / pi0-FAST VLA policies on an R1 Pro-style dual-arm robot",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "sim_robot = pi0_ros.nodes.sim_robot:main",
            "policy_node = pi0_ros.nodes.policy_node:main",
            "pi0-serve = pi0_ros.serving.server:main",
            "pi0-demo = pi0_ros.demo:main",
            "pi0-train = pi0_ros.training.cli:main",
            "pi0-eval = pi0_ros.training.evaluate:main",
            "recorder = pi0_ros.nodes.recorder:main",
            "pi0-collect = pi0_ros.tools.collect:main",
            "pi0-import-bag = pi0_ros.data.bag_import:main",
            "pi0-make-checkpoint = pi0_ros.model.make_checkpoint:main",
        ],
    },
)
