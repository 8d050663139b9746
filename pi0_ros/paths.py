"""Where the package's data files live, in a source checkout and in an installed (colcon) package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_NAME = "pi0_ros"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The directory holding `config/` and `launch/`: the source tree, else the ament share directory."""
    if (_SOURCE_ROOT / "config" / "r1pro.yaml").is_file():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError as exc:  # pragma: no cover - only without a ROS install and outside the source tree
        raise FileNotFoundError("pi0_ros config not found: run from the source tree or a sourced install") from exc
    return Path(get_package_share_directory(PACKAGE_NAME))


def config_path(*parts: str) -> Path:
    """A file under the package's `config/` directory."""
    return share_dir().joinpath("config", *parts)
