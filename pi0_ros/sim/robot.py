"""The simulated R1 Pro-style robot: MuJoCo scene, joint tracker, seeded resets and task state.

ROS-free and single-threaded: the node wraps it with a lock. Robot joints (torso, arms, gripper
fingers) are driven kinematically: every physics step the tracker's positions and velocities are
written into MuJoCo before ``mj_step``, so arms follow their commands exactly and push objects with
their real velocities, while the free objects are simulated. Feedback effort is the joint torque MuJoCo
needs to hold the tracked motion against gravity and Coriolis forces (``qfrc_bias``).

Grippers are commanded in stroke units (0 closed .. 100 open, the robot's convention) and drive both
finger joints linearly over their URDF range (0 .. 0.05 m).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import mujoco
import numpy as np

from pi0_ros.embodiment import Embodiment, JointGroup
from pi0_ros.sim.config import SimConfig
from pi0_ros.sim.scene import SceneModel, body_ids, build_scene, object_free_qpos, yaw_quaternion
from pi0_ros.sim.targets import JointTarget, validate_target
from pi0_ros.sim.tracker import JointTracker

_PLACEMENT_TRIES = 1000


@dataclass(frozen=True)
class JointFeedback:
    """One group's feedback, as the robot's ``/hdas/feedback_*`` topics carry it."""

    names: Tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class TaskState:
    """What a task checker needs: object poses, gripper positions, proximity (base frame: torso_link4)."""

    time: float
    seed: int
    frame: str
    objects: Dict[str, Dict[str, List[float]]]  # name -> {"position": xyz, "quaternion": wxyz}
    grippers: Dict[str, Dict[str, List[float]]]  # arm group -> {"position": gripper_link xyz, "grasp_point": xyz}
    distances: Dict[str, Dict[str, float]]  # arm group -> object -> grasp point to object centre (m)
    touched: Dict[str, List[str]]  # arm group -> objects closer than touch_distance

    def as_dict(self) -> Dict:
        """Plain JSON-serialisable form."""
        return {"time": self.time, "seed": self.seed, "frame": self.frame, "objects": self.objects,
                "grippers": self.grippers, "distances": self.distances, "touched": self.touched}


class _GroupDrive:
    """Where one embodiment group lives in the tracker vector and in MuJoCo's qpos/qvel."""

    def __init__(self, group: JointGroup, model: mujoco.MjModel, start: int):
        self.group = group
        self.slice = slice(start, start + group.size)
        if group.kind == "gripper":
            if not group.finger_joints:
                raise ValueError(f"gripper group {group.name} names no finger_joints")
            joints = [model.joint(name) for name in group.finger_joints]
            # Stroke 0..100 maps linearly onto each finger's URDF range (0 .. 0.05 m).
            stroke_lo, stroke_hi = group.position_limits[0]
            ranges = np.array([j.range for j in joints])
            self.finger_scale = (ranges[:, 1] - ranges[:, 0]) / (stroke_hi - stroke_lo)
            self.finger_offset = ranges[:, 0] - stroke_lo * self.finger_scale
        else:
            joints = [model.joint(name) for name in group.joints]
        self.qpos = np.array([j.qposadr[0] for j in joints], dtype=np.intp)
        self.dof = np.array([j.dofadr[0] for j in joints], dtype=np.intp)

    def write(self, data: mujoco.MjData, position: np.ndarray, velocity: np.ndarray) -> None:
        """Put the tracker's state for this group into MuJoCo."""
        if self.group.kind == "gripper":
            data.qpos[self.qpos] = self.finger_offset + self.finger_scale * position[0]
            data.qvel[self.dof] = self.finger_scale * velocity[0]
        else:
            data.qpos[self.qpos] = position
            data.qvel[self.dof] = velocity


class SimRobot:
    """MuJoCo R1 Pro-style robot with R1 Pro controller semantics (see the module docstring)."""

    def __init__(self, embodiment: Embodiment, config: SimConfig,
                 render_sizes: Optional[Dict[str, Tuple[int, int]]] = None):
        self.embodiment = embodiment
        self.config = config
        self.scene: SceneModel = build_scene(embodiment, config, render_sizes)
        self.model = self.scene.model
        self.data = mujoco.MjData(self.model)
        self.dt = self.model.opt.timestep

        self._drives: Dict[str, _GroupDrive] = {}
        start = 0
        for group in embodiment.groups.values():
            self._drives[group.name] = _GroupDrive(group, self.model, start)
            start += group.size
        groups = list(embodiment.groups.values())
        self.tracker = JointTracker(
            lower=np.concatenate([g.position_limits[:, 0] for g in groups]),
            upper=np.concatenate([g.position_limits[:, 1] for g in groups]),
            max_velocity=np.concatenate([g.velocity_limits for g in groups]),
            acceleration_per_speed=config.physics.acceleration_per_speed,
        )
        self._home = np.concatenate([g.home for g in groups])
        self._object_qpos = {name: object_free_qpos(self.model, name) for name in self.scene.object_names}
        arms = embodiment.groups_of_kind("arm")
        self._gripper_bodies = body_ids(self.model, tuple(g.ee_link for g in arms))
        self._arm_ee = {g.name: self._gripper_bodies[g.ee_link] for g in arms}
        self._object_bodies = body_ids(self.model, self.scene.object_names)
        self._base_body = body_ids(self.model, (embodiment.base_frame,))[embodiment.base_frame]
        self.seed = 0
        self.reset(0)

    # -- commands -------------------------------------------------------------------------------

    @property
    def group_names(self) -> Tuple[str, ...]:
        """Embodiment group names, in file order."""
        return tuple(self._drives)

    def command(self, group: str, names: Sequence[str], positions: Sequence[float],
                velocities: Sequence[float] = ()) -> JointTarget:
        """Validate a target message for ``group`` and track it; raises TargetRejected (state unchanged)."""
        drive = self._drive(group)
        target = validate_target(drive.group, names, positions, velocities)
        self.set_target(group, target)
        return target

    def set_target(self, group: str, target: JointTarget) -> None:
        """Track an already validated target."""
        drive = self._drive(group)
        self.tracker.set_target(drive.slice.start + target.indices, target.positions, target.speeds)

    def target(self, group: str) -> np.ndarray:
        """The group's current target."""
        return self.tracker.target[self._drive(group).slice].copy()

    # -- time -----------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        return float(self.data.time)

    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps."""
        for _ in range(n):
            self.tracker.step(self.dt)
            self._write_robot()
            mujoco.mj_step(self.model, self.data)
            # mj_step integrated the robot joints too; put them back where the tracker says they are.
            self._write_robot()

    def reset(self, seed: int) -> None:
        """Robot to the embodiment home at rest, objects to seeded random poses on the table."""
        self.seed = int(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.tracker.reset(self._home)
        self._write_robot()
        rng = np.random.default_rng(self.seed)
        for name, (x, y, yaw) in zip(self.scene.object_names, self._sample_placements(rng), strict=True):
            adr = self._object_qpos[name]
            self.data.qpos[adr:adr + 3] = (x, y, self.config.table.height + self.config.objects.size / 2)
            self.data.qpos[adr + 3:adr + 7] = yaw_quaternion(yaw)
        mujoco.mj_forward(self.model, self.data)

    def _sample_placements(self, rng: np.random.Generator) -> List[Tuple[float, float, float]]:
        objects = self.config.objects
        if objects.layout == "fixed":
            return objects.fixed_placements(rng)
        placed: List[Tuple[float, float, float]] = []
        for _ in range(_PLACEMENT_TRIES):
            if len(placed) == len(objects.items):
                return placed
            x, y = rng.uniform(*objects.region_x), rng.uniform(*objects.region_y)
            if all(np.hypot(x - px, y - py) >= objects.min_separation for px, py, _ in placed):
                placed.append((float(x), float(y), float(rng.uniform(-np.pi, np.pi))))
        raise ValueError(f"cannot place {len(objects.items)} objects {objects.min_separation} m apart "
                         f"in region x {objects.region_x}, y {objects.region_y}")

    # -- observation ----------------------------------------------------------------------------

    def joint_state(self, group: str) -> JointFeedback:
        """Position, velocity and effort of a group, in its own units (rad, or stroke for grippers)."""
        drive = self._drive(group)
        if drive.group.kind == "gripper":
            effort = np.zeros(drive.group.size)  # the stroke has no meaningful torque here
        else:
            effort = self.data.qfrc_bias[drive.dof].copy()
        return JointFeedback(names=drive.group.joints, position=self.tracker.position[drive.slice].copy(),
                             velocity=self.tracker.velocity[drive.slice].copy(), effort=effort)

    def qpos(self) -> np.ndarray:
        """A copy of the whole MuJoCo state vector (what the renderer needs)."""
        return self.data.qpos.copy()

    def task_state(self) -> TaskState:
        """Object poses, gripper positions and gripper-object distances in the base frame (torso_link4)."""
        mujoco.mj_kinematics(self.model, self.data)
        base_pos = self.data.xpos[self._base_body]
        base_rot = self.data.xmat[self._base_body].reshape(3, 3)
        base_inverse = np.empty(4)
        mujoco.mju_negQuat(base_inverse, self.data.xquat[self._base_body])

        def in_base(world_point: np.ndarray) -> np.ndarray:
            return base_rot.T @ (world_point - base_pos)

        objects, centres = {}, {}
        for name, body in self._object_bodies.items():
            centres[name] = in_base(self.data.xpos[body])
            base_quat = np.empty(4)
            mujoco.mju_mulQuat(base_quat, base_inverse, self.data.xquat[body])
            objects[name] = {"position": _rounded(centres[name]), "quaternion": _rounded(base_quat)}
        grasp_offset = np.asarray(self.config.task.grasp_point)
        grippers, distances, touched = {}, {}, {}
        for arm, body in self._arm_ee.items():
            rot = self.data.xmat[body].reshape(3, 3)
            grasp = in_base(self.data.xpos[body] + rot @ grasp_offset)
            grippers[arm] = {"position": _rounded(in_base(self.data.xpos[body])), "grasp_point": _rounded(grasp)}
            distances[arm] = {name: round(float(np.linalg.norm(c - grasp)), 5) for name, c in centres.items()}
            touched[arm] = [name for name, d in distances[arm].items() if d < self.config.task.touch_distance]
        return TaskState(time=self.time, seed=self.seed, frame=self.embodiment.base_frame, objects=objects,
                         grippers=grippers, distances=distances, touched=touched)

    # -- internals ------------------------------------------------------------------------------

    def _drive(self, group: str) -> _GroupDrive:
        try:
            return self._drives[group]
        except KeyError:
            raise KeyError(f"unknown group {group!r}; known: {list(self._drives)}") from None

    def _write_robot(self) -> None:
        for drive in self._drives.values():
            drive.write(self.data, self.tracker.position[drive.slice], self.tracker.velocity[drive.slice])


def _rounded(values: np.ndarray, digits: int = 5) -> List[float]:
    return [round(float(v), digits) for v in values]
