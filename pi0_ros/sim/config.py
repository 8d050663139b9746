"""Simulator-only settings (config/sim.yaml): physics step, table, objects, task thresholds, camera optics.

The robot's own facts (joints, limits, home pose, cameras' sizes and rates) come from the embodiment
file; this file holds only what a simulator needs on top of them. config/sim.yaml doubles as the
sim_robot node's ROS parameter file, so the settings sit in its ``scene`` block under
``<node or /**>: ros__parameters:``; a plain mapping with the ``scene`` block at the top also loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
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


LAYOUTS = ("random", "fixed")


@dataclass(frozen=True)
class ObjectsConfig:
    """Free cubes whose poses are randomized by the reset seed.

    ``layout: random`` (the default) draws every cube anywhere in ``region_x`` x ``region_y``.
    ``layout: fixed`` puts each cube at its ``fixed`` x y (base frame), moved by at most
    ``fixed_jitter_m`` along x and y and turned by at most ``fixed_yaw_jitter`` rad, both drawn from the seed:
    the same scene on every reset, so that the instruction alone decides what to do (the language-conditioned
    skill of ``pi0_ros.sim.expert.SKILL_TASKS``).
    """

    size: float = 0.04
    mass: float = 0.05
    region_x: Tuple[float, float] = (0.38, 0.52)
    region_y: Tuple[float, float] = (-0.2, 0.2)
    min_separation: float = 0.09
    items: Dict[str, Tuple[float, float, float, float]] = field(
        default_factory=lambda: {"red": (0.85, 0.1, 0.1, 1.0), "green": (0.1, 0.7, 0.15, 1.0),
                                 "blue": (0.1, 0.25, 0.85, 1.0)})
    layout: str = "random"
    fixed: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    fixed_jitter_m: float = 0.0
    fixed_yaw_jitter: float = 0.0

    def fixed_placements(self, rng: np.random.Generator) -> List[Tuple[float, float, float]]:
        """``(x, y, yaw)`` of every item, in ``items`` order, for ``layout: fixed``."""
        placements = []
        for name in self.items:
            x, y = self.fixed[name]
            dx, dy = rng.uniform(-self.fixed_jitter_m, self.fixed_jitter_m, size=2)
            yaw = rng.uniform(-self.fixed_yaw_jitter, self.fixed_yaw_jitter)
            placements.append((float(x + dx), float(y + dy), float(yaw)))
        return placements


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
    if "fixed" in out:
        out["fixed"] = {str(name): tuple(xy) for name, xy in (out["fixed"] or {}).items()}
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
    if objects.layout not in LAYOUTS:
        problems.append(f"objects.layout must be one of {LAYOUTS}, got {objects.layout!r}")
    if objects.layout == "fixed":
        missing = [name for name in objects.items if name not in objects.fixed]
        if missing:
            problems.append(f"objects.fixed must give x y for every item (layout: fixed); missing {missing}")
    for name, xy in objects.fixed.items():
        if len(xy) != 2:
            problems.append(f"objects.fixed.{name} must be an x y pair")
    if objects.fixed_jitter_m < 0 or objects.fixed_yaw_jitter < 0:
        problems.append("objects.fixed_jitter_m and fixed_yaw_jitter must be >= 0")
    if objects.size <= 0 or objects.mass <= 0 or objects.min_separation < objects.size:
        problems.append("objects: size and mass must be > 0 and min_separation >= size")
    if config.task.touch_distance <= 0 or len(config.task.grasp_point) != 3:
        problems.append("task: touch_distance must be > 0 and grasp_point an xyz triple")
    for name, optics in config.cameras.items():
        if not 1.0 <= optics.fovy <= 170.0:
            problems.append(f"cameras.{name}.fovy must be in [1, 170] degrees")
    if problems:
        raise SimConfigError(f"{path}: " + "; ".join(problems))


def write_layout_variant(layout: str, out_path: Path | str, source: Optional[Path | str] = None) -> Path:
    """A copy of the sim config ``source`` (default: the package's) with ``scene.objects.layout`` set, written to
    ``out_path`` and checked; pass it as the sim_robot node's ``sim_config`` parameter. The copy keeps the file's
    shape (ROS parameter file or plain ``scene`` mapping)."""
    source = Path(source) if source is not None else DEFAULT_SIM_CONFIG
    raw = yaml.safe_load(source.read_text()) or {}
    if not isinstance(raw, dict):
        raise SimConfigError(f"{source}: top level must be a mapping")
    scene = _scene_block(raw, source)
    objects = scene.setdefault("objects", {})
    if not isinstance(objects, dict):
        raise SimConfigError(f"{source}: scene.objects must be a mapping")
    objects["layout"] = layout
    out_path = Path(out_path)
    out_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_sim_config(out_path)  # fail here, not in the simulator node
    return out_path
