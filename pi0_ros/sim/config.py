"""Simulator-only settings (config/sim.yaml): physics step, table, objects, task thresholds, camera optics.

The robot's own facts (joints, limits, home pose, cameras' sizes and rates) come from the embodiment
file; this file holds only what a simulator needs on top of them. config/sim.yaml doubles as the
sim_robot node's ROS parameter file, so the settings sit in its ``scene`` block under
``<node or /**>: ros__parameters:``; a plain mapping with the ``scene`` block at the top also loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import yaml

DEFAULT_SIM_CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim.yaml"


class SimConfigError(ValueError):
    """config/sim.yaml is missing, malformed or has an out-of-range value."""


@dataclass(frozen=True)
class PhysicsConfig:
    """Physics step and joint-tracker shaping."""

    timestep: float = 0.002
    acceleration_per_speed: float = 1.5
    max_catch_up_steps: int = 50


@dataclass(frozen=True)
class TableConfig:
    """A static table in front of the robot (base_link frame)."""

    center: Tuple[float, float] = (0.55, 0.0)
    size: Tuple[float, float] = (0.5, 1.0)
    height: float = 1.05
    thickness: float = 0.04
    rgba: Tuple[float, float, float, float] = (0.55, 0.42, 0.3, 1.0)


@dataclass(frozen=True)
class ObjectsConfig:
    """Free cubes whose poses are randomized by the reset seed."""

    size: float = 0.04
    mass: float = 0.05
    region_x: Tuple[float, float] = (0.38, 0.52)
    region_y: Tuple[float, float] = (-0.2, 0.2)
    min_separation: float = 0.09
    items: Dict[str, Tuple[float, float, float, float]] = field(
        default_factory=lambda: {"red": (0.85, 0.1, 0.1, 1.0), "green": (0.1, 0.7, 0.15, 1.0),
                                 "blue": (0.1, 0.25, 0.85, 1.0)})


@dataclass(frozen=True)
class TaskConfig:
    """How task state measures gripper-object proximity."""

    grasp_point: Tuple[float, float, float] = (0.0, 0.0, -0.06)
    touch_distance: float = 0.035


@dataclass(frozen=True)
class CameraOptics:
    """Intrinsics of one simulated camera (its size and rate come from the embodiment)."""

    fovy: float = 60.0


@dataclass(frozen=True)
class SimConfig:
    """All simulator-only settings."""

    physics: PhysicsConfig = PhysicsConfig()
    table: TableConfig = TableConfig()
    objects: ObjectsConfig = ObjectsConfig()
    task: TaskConfig = TaskConfig()
    cameras: Dict[str, CameraOptics] = field(default_factory=dict)

    def optics(self, camera: str) -> CameraOptics:
        """Optics of a camera, defaults when sim.yaml does not name it."""
        return self.cameras.get(camera, CameraOptics())


def load_sim_config(path: Optional[Path | str] = None) -> SimConfig:
    """Read and check config/sim.yaml (default: the package's own)."""
    path = Path(path) if path is not None else DEFAULT_SIM_CONFIG
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SimConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SimConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SimConfigError(f"{path}: top level must be a mapping")
    raw = _scene_block(raw, path)
    try:
        config = SimConfig(
            physics=PhysicsConfig(**_section(raw, "physics")),
            table=TableConfig(**_tuples(_section(raw, "table"))),
            objects=ObjectsConfig(**_objects(_section(raw, "objects"))),
            task=TaskConfig(**_tuples(_section(raw, "task"))),
            cameras={name: CameraOptics(**(optics or {})) for name, optics in _section(raw, "cameras").items()},
        )
    except TypeError as exc:  # unknown or misspelt key
        raise SimConfigError(f"{path}: {exc}") from None
    _check(config, path)
    return config


def _scene_block(raw: Dict[str, Any], path: Path) -> Dict[str, Any]:
    if "scene" in raw:
        scene = raw["scene"]
    else:
        blocks = [v["ros__parameters"]["scene"] for v in raw.values()
                  if isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)
                  and "scene" in v["ros__parameters"]]
        if len(blocks) != 1:
            raise SimConfigError(f"{path}: expected exactly one `scene` block (top level or under "
                                 f"<node>: ros__parameters:), found {len(blocks)}")
        scene = blocks[0]
    if not isinstance(scene, dict):
        raise SimConfigError(f"{path}: scene must be a mapping")
    return scene


def _section(raw: Dict[str, Any], key: str) -> Dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise SimConfigError(f"sim config: {key} must be a mapping")
    return value


def _tuples(section: Dict[str, Any]) -> Dict[str, Any]:
    # Frozen dataclasses hold tuples so that configs stay hashable and immutable.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def _objects(section: Dict[str, Any]) -> Dict[str, Any]:
    out = _tuples(section)
    if "items" in out:
        out["items"] = {str(name): tuple(rgba) for name, rgba in out["items"].items()}
    return out


def _check(config: SimConfig, path: Path) -> None:
    problems = []
    if not 0 < config.physics.timestep <= 0.01:
        problems.append(f"physics.timestep must be in (0, 0.01], got {config.physics.timestep}")
    if config.physics.acceleration_per_speed <= 0:
        problems.append("physics.acceleration_per_speed must be > 0")
    if config.physics.max_catch_up_steps < 1:
        problems.append("physics.max_catch_up_steps must be >= 1")
    objects = config.objects
    if not objects.items:
        problems.append("objects.items must name at least one object")
    for name, rgba in objects.items.items():
        if len(rgba) != 4:
            problems.append(f"objects.items.{name} must be an RGBA quadruple")
    for key in ("region_x", "region_y"):
        lo, hi = getattr(objects, key)
        if not lo < hi:
            problems.append(f"objects.{key} must be [low, high] with low < high")
    if objects.size <= 0 or objects.mass <= 0 or objects.min_separation < objects.size:
        problems.append("objects: size and mass must be > 0 and min_separation >= size")
    if config.task.touch_distance <= 0 or len(config.task.grasp_point) != 3:
        problems.append("task: touch_distance must be > 0 and grasp_point an xyz triple")
    for name, optics in config.cameras.items():
        if not 1.0 <= optics.fovy <= 170.0:
            problems.append(f"cameras.{name}.fovy must be in [1, 170] degrees")
    if problems:
        raise SimConfigError(f"{path}: " + "; ".join(problems))
