"""Builds the MuJoCo model: the package's R1 Pro-style URDF plus a tabletop scene, lights and cameras.

The robot comes from the embodiment's ``robot_description`` (MuJoCo compiles URDF); the scene is added
with ``mujoco.MjSpec`` so that nothing about the robot is repeated here. Robot joints are driven
kinematically by the joint tracker, so robot geoms only collide with the free objects: never with each
other, the table or the floor (the tracker, not contact, keeps the arms where they are commanded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import mujoco
import numpy as np

from pi0_ros.embodiment import Embodiment
from pi0_ros.sim.config import SimConfig

# Collision bitmasks: a pair collides when (contype_a & conaffinity_b) or (contype_b & conaffinity_a).
_STATIC = (1, 1)  # floor, table: collide with objects only (robot has no matching affinity)
_OBJECT = (1, 3)  # objects: collide with static scenery, each other and the robot
_ROBOT = (2, 0)  # robot: collides with objects only

# Camera links follow the ROS optical convention (z forward, y down); a MuJoCo camera looks along -z
# with y up, i.e. the optical frame turned half a turn about x.
_OPTICAL_TO_MUJOCO_CAMERA = (0.0, 1.0, 0.0, 0.0)

_ROBOT_RGBA = (0.78, 0.8, 0.83, 1.0)
_FINGER_RGBA = (0.15, 0.15, 0.17, 1.0)


@dataclass(frozen=True)
class SceneModel:
    """The compiled model and the names the simulator looks up in it."""

    model: mujoco.MjModel
    object_names: Tuple[str, ...]  # body names of the free objects, in config order
    camera_names: Tuple[str, ...]  # MuJoCo camera names == embodiment camera names


def build_scene(embodiment: Embodiment, config: SimConfig,
                render_sizes: Mapping[str, Tuple[int, int]] | None = None) -> SceneModel:
    """Compile robot + table + objects + cameras.

    ``render_sizes`` (camera -> (width, height)) sizes the offscreen buffer; default: the embodiment's.
    """
    spec = mujoco.MjSpec.from_file(str(embodiment.robot_description))
    # Fixed links (cameras, gripper_link) must stay bodies: cameras and task state hang off them.
    spec.compiler.fusestatic = False
    # The URDF parser already dropped the (duplicate) visual geoms; keep the scene's visual-only geoms.
    spec.compiler.discardvisual = False
    spec.option.timestep = config.physics.timestep

    _style_robot(spec, embodiment)
    _add_environment(spec, config)
    _add_table(spec, config)
    object_names = _add_objects(spec, config)
    camera_names = _add_cameras(spec, embodiment, config)

    sizes = dict(render_sizes or {c.name: (c.width, c.height) for c in embodiment.cameras.values()})
    spec.visual.global_.offwidth = max([640] + [w for w, _ in sizes.values()])
    spec.visual.global_.offheight = max([480] + [h for _, h in sizes.values()])
    model = spec.compile()
    return SceneModel(model=model, object_names=object_names, camera_names=camera_names)


def _style_robot(spec: mujoco.MjSpec, embodiment: Embodiment) -> None:
    finger_bodies = set()
    for group in embodiment.groups_of_kind("gripper"):
        for joint in group.finger_joints:
            finger_bodies.add(spec.joint(joint).parent.name)
    for geom in spec.geoms:
        geom.contype, geom.conaffinity = _ROBOT
        geom.group = 0
        geom.rgba = _FINGER_RGBA if geom.parent.name in finger_bodies else _ROBOT_RGBA
        # Fingers squeeze objects: give them grip.
        geom.friction = (1.5, 0.01, 0.001)
        geom.condim = 4 if geom.parent.name in finger_bodies else 3


def _add_environment(spec: mujoco.MjSpec, config: SimConfig) -> None:
    spec.add_texture(name="floor", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     rgb1=(0.42, 0.42, 0.44), rgb2=(0.36, 0.36, 0.38), width=64, height=64)
    floor_material = spec.add_material(name="floor")
    floor_material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "floor"
    floor_material.texrepeat = (8, 8)
    floor = spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=(3.0, 3.0, 0.05),
                                    material="floor")
    floor.contype, floor.conaffinity = _STATIC
    # Plain room walls give every camera a background; a skybox costs ~2 ms per frame in software
    # rendering, a few boxes almost nothing.
    for name, pos, size in (("wall_front", (3.0, 0.0, 2.0), (0.05, 3.0, 2.0)),
                            ("wall_back", (-3.0, 0.0, 2.0), (0.05, 3.0, 2.0)),
                            ("wall_left", (0.0, 3.0, 2.0), (3.0, 0.05, 2.0)),
                            ("wall_right", (0.0, -3.0, 2.0), (3.0, 0.05, 2.0))):
        wall = spec.worldbody.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos,
                                       rgba=(0.72, 0.75, 0.8, 1.0))
        wall.contype, wall.conaffinity = 0, 0

    # Clip planes scale with the model extent; fix both so the wrist cameras still see fingers and
    # objects a few centimetres away (near plane 0.005 x 2 m = 1 cm, far plane 100 m).
    spec.stat.extent = 2.0
    spec.visual.map.znear = 0.005
    spec.visual.headlight.ambient = (0.35, 0.35, 0.35)
    spec.visual.headlight.diffuse = (0.35, 0.35, 0.35)
    spec.visual.headlight.specular = (0.0, 0.0, 0.0)
    table = config.table
    above_table = (table.center[0], table.center[1], table.height + 1.5)
    spec.worldbody.add_light(name="key", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, pos=above_table,
                             dir=(-0.3, 0.2, -1.0), diffuse=(0.6, 0.6, 0.6), castshadow=False)


def _add_table(spec: mujoco.MjSpec, config: SimConfig) -> None:
    table = config.table
    half_x, half_y, half_t = table.size[0] / 2, table.size[1] / 2, table.thickness / 2
    body = spec.worldbody.add_body(name="table", pos=(table.center[0], table.center[1], table.height - half_t))
    top = body.add_geom(name="table_top", type=mujoco.mjtGeom.mjGEOM_BOX, size=(half_x, half_y, half_t),
                        rgba=table.rgba, friction=(1.0, 0.005, 0.0001))
    top.contype, top.conaffinity = _STATIC
    leg_half = (table.height - table.thickness) / 2
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=(0.025, 0.025, leg_half),
                                pos=(sx * (half_x - 0.04), sy * (half_y - 0.04), -half_t - leg_half),
                                rgba=tuple(0.7 * c for c in table.rgba[:3]) + (1.0,))
            leg.contype, leg.conaffinity = 0, 0  # visual only


def _add_objects(spec: mujoco.MjSpec, config: SimConfig) -> Tuple[str, ...]:
    objects = config.objects
    half = objects.size / 2
    names = []
    for i, (name, rgba) in enumerate(objects.items.items()):
        # Parked off-table until the first reset places them.
        body = spec.worldbody.add_body(name=name, pos=(0.0, 2.0 + i, half))
        body.add_freejoint(name=f"{name}_free")
        geom = body.add_geom(name=f"{name}_geom", type=mujoco.mjtGeom.mjGEOM_BOX, size=(half, half, half),
                             rgba=rgba, mass=objects.mass, friction=(1.0, 0.005, 0.0001), condim=4)
        geom.contype, geom.conaffinity = _OBJECT
        names.append(name)
    return tuple(names)


def _add_cameras(spec: mujoco.MjSpec, embodiment: Embodiment, config: SimConfig) -> Tuple[str, ...]:
    names = []
    for camera in embodiment.cameras.values():
        spec.body(camera.frame).add_camera(name=camera.name, quat=_OPTICAL_TO_MUJOCO_CAMERA,
                                           fovy=config.optics(camera.name).fovy)
        names.append(camera.name)
    return tuple(names)


def body_ids(model: mujoco.MjModel, names: Tuple[str, ...]) -> Dict[str, int]:
    """Body name -> id, with a clear error for a missing body."""
    ids = {}
    for name in names:
        body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body_id < 0:
            raise KeyError(f"body {name!r} not in the simulated model")
        ids[name] = body_id
    return ids


def object_free_qpos(model: mujoco.MjModel, object_name: str) -> int:
    """qpos address of an object's free joint (7 numbers: position, then quaternion w x y z)."""
    return int(model.jnt_qposadr[model.body_jntadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, object_name)]])


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
