"""A scripted expert for the simulator's touch tasks: "touch the red cube with the left hand".

ROS-free planning. A task names an object and an arm; the plan is a timed path of end-effector poses
(``x y z qx qy qz qw`` of the arm's ``ee_link`` in the embodiment's base frame) that brings the
gripper's grasp point (``scene.task.grasp_point`` in the ee frame, where the simulator measures touches)
above the object, down onto it, holds, and retreats. The orientation stays the one the arm has at the
start (the home orientation reaches the whole table region best). The driver (``pi0-collect``) streams
the path as teleop pose goals to the policy node, so a demonstration goes through the real IK, safety
layer and controller topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from relaxed_ik_bindings.transforms import quat_xyzw_to_matrix

HANDS = {"left_arm": "left hand", "right_arm": "right hand"}
ACROSS_TOLERANCE_M = 0.005  # a start over the object closer than this to the touch point's vertical goes straight down


@dataclass(frozen=True)
class TouchTask:
    """Which object to touch with which arm, and how the instruction says it."""

    object: str
    arm: str

    @property
    def instruction(self) -> str:
        """The language instruction recorded as the episode's task."""
        return f"touch the {self.object} cube with the {HANDS.get(self.arm, self.arm)}"


@dataclass(frozen=True)
class ExpertConfig:
    """Path shape and pace."""

    approach_height_m: float = 0.10  # above the touch point before descending
    touch_offset_m: Sequence[float] = (0.0, 0.0, 0.015)  # aim above the object centre: the fingers come down on it
    move_speed_m_s: float = 0.12  # free-space motion
    descend_speed_m_s: float = 0.05
    dwell_s: float = 0.6  # at the touch point
    min_segment_s: float = 0.5
    # A start already over the object (within this horizontal distance of the touch point, below the approach
    # height) is finished from where it is: across to the vertical over the touch point, then down. Climbing
    # back to the approach height first would teach "near the cube, back off".
    over_object_radius_m: float = 0.05


# The language-conditioned skill of the fixed layout (config/sim.yaml `objects.layout: fixed`: red on the left,
# green in the middle, blue on the right, each jittered by the seed). Red and blue go to the hand on their side;
# green, in reach of both, to either hand: "touch the green cube with the left hand" names a cube other than the
# one nearest that hand, so those episodes measure language following (a policy that ignores the object word
# goes to the nearest cube).
SKILL_TASKS = (TouchTask("red", "left_arm"), TouchTask("green", "left_arm"),
               TouchTask("green", "right_arm"), TouchTask("blue", "right_arm"))

_HAND_WORDS = {"left": "left_arm", "right": "right_arm", "left_arm": "left_arm", "right_arm": "right_arm"}


def parse_tasks(text: str) -> Tuple[TouchTask, ...]:
    """'red:left,blue:right' -> (TouchTask('red', 'left_arm'), TouchTask('blue', 'right_arm'))."""
    tasks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        obj, _, hand = part.partition(":")
        if hand not in _HAND_WORDS or not obj:
            raise ValueError(f"task {part!r}: expected <object>:<left|right>")
        tasks.append(TouchTask(object=obj, arm=_HAND_WORDS[hand]))
    if not tasks:
        raise ValueError("no tasks given")
    return tuple(tasks)


def choose_task(task_state: Mapping, rng: np.random.Generator, arms: Sequence[str] = tuple(HANDS),
                tasks: Optional[Sequence[TouchTask]] = None) -> TouchTask:
    """A random object; the arm on the object's side of the robot (left for y >= 0), which reaches it best.
    With ``tasks``, one of them drawn uniformly instead (the fixed layout's skill)."""
    if tasks:
        return tasks[int(rng.integers(len(tasks)))]
    objects = sorted(task_state["objects"])
    name = objects[int(rng.integers(len(objects)))]
    y = task_state["objects"][name]["position"][1]
    preferred = "left_arm" if y >= 0 else "right_arm"
    arm = preferred if preferred in arms else arms[0]
    return TouchTask(object=name, arm=arm)


@dataclass(frozen=True)
class Waypoint:
    """Reach ``pose`` at ``time`` seconds after the path starts."""

    time: float
    pose: np.ndarray


class PosePath:
    """Piecewise-linear positions through timed waypoints; one fixed orientation."""

    def __init__(self, waypoints: Sequence[Waypoint], phases: Optional[Dict[str, float]] = None):
        if len(waypoints) < 2:
            raise ValueError("a path needs at least two waypoints")
        self.waypoints = list(waypoints)
        self.times = np.array([w.time for w in waypoints])
        if np.any(np.diff(self.times) <= 0):
            raise ValueError("waypoint times must increase")
        self.positions = np.stack([w.pose[:3] for w in waypoints])
        self.orientation = np.asarray(waypoints[0].pose[3:], dtype=np.float64)
        self.phases = dict(phases or {})  # phase name -> start time

    @property
    def duration(self) -> float:
        """Seconds from the first to the last waypoint."""
        return float(self.times[-1])

    def pose(self, t: float) -> np.ndarray:
        """The pose at time ``t`` (clamped to the path)."""
        t = float(np.clip(t, self.times[0], self.times[-1]))
        position = np.array([np.interp(t, self.times, self.positions[:, i]) for i in range(3)])
        return np.concatenate([position, self.orientation])

    def phase(self, t: float) -> str:
        """Name of the phase at time ``t``."""
        current = ""
        for name, start in sorted(self.phases.items(), key=lambda item: item[1]):
            if t >= start:
                current = name
        return current


def ee_target_for_grasp_point(grasp_point_target: np.ndarray, orientation_xyzw: np.ndarray,
                              grasp_offset: Sequence[float]) -> np.ndarray:
    """Where the ee link must be so that its grasp point lands on ``grasp_point_target``."""
    rotation = quat_xyzw_to_matrix(np.asarray(orientation_xyzw, dtype=np.float64))
    return np.asarray(grasp_point_target, dtype=np.float64) - rotation @ np.asarray(grasp_offset, dtype=np.float64)


def touch_target(object_position: Sequence[float], orientation_xyzw: np.ndarray, grasp_offset: Sequence[float],
                 config: ExpertConfig) -> np.ndarray:
    """The ee position whose grasp point touches the object at ``object_position`` (``touch_offset_m`` above it)."""
    return ee_target_for_grasp_point(np.asarray(object_position) + np.asarray(config.touch_offset_m),
                                     orientation_xyzw, grasp_offset)


def plan_touch(start_pose: np.ndarray, object_position: Sequence[float], grasp_offset: Sequence[float],
               config: Optional[ExpertConfig] = None) -> PosePath:
    """Approach above the object, descend onto it, dwell, retreat above it, from ``start_pose``; a start already
    over the object (:func:`over_object`) goes across to the vertical over the touch point at its own height."""
    config = config or ExpertConfig()
    start_pose = np.asarray(start_pose, dtype=np.float64)
    orientation = start_pose[3:]
    touch = touch_target(object_position, orientation, grasp_offset, config)
    above = touch + np.array([0.0, 0.0, config.approach_height_m])

    def travel(a: np.ndarray, b: np.ndarray, speed: float) -> float:
        return max(config.min_segment_s, float(np.linalg.norm(b - a)) / speed)

    points = [(0.0, start_pose[:3])]
    if not over_object(start_pose[:3], touch, config):
        points.append((travel(start_pose[:3], above, config.move_speed_m_s), above))
    elif np.linalg.norm(start_pose[:2] - touch[:2]) > ACROSS_TOLERANCE_M:
        # Already in the descent's column: across at the start's height (slowly, close to the object), then down.
        above = np.array([touch[0], touch[1], start_pose[2]])
        points.append((travel(start_pose[:3], above, config.descend_speed_m_s), above))
    else:  # on the vertical already: straight down (a pause at the start would teach hovering there)
        above = start_pose[:3]
    t_above = points[-1][0]  # the descent starts here
    t_touch = t_above + travel(above, touch, config.descend_speed_m_s)
    t_leave = t_touch + config.dwell_s
    t_retreat = t_leave + travel(touch, above, config.descend_speed_m_s)
    points += [(t_touch, touch), (t_leave, touch), (t_retreat, above)]
    waypoints = [Waypoint(t, np.concatenate([p, orientation])) for t, p in points]
    phases = {"approach": 0.0, "descend": t_above, "touch": t_touch, "retreat": t_leave}
    return PosePath(waypoints, phases)


def over_object(position: np.ndarray, touch: np.ndarray, config: ExpertConfig) -> bool:
    """Whether an ee ``position`` is in the descent's column over ``touch``: horizontally within
    ``over_object_radius_m`` and above the touch point, no higher than the approach height."""
    horizontal = float(np.linalg.norm(np.asarray(position[:2]) - np.asarray(touch[:2])))
    height = float(position[2] - touch[2])
    return horizontal <= config.over_object_radius_m and 0.0 < height <= config.approach_height_m


@dataclass(frozen=True)
class DetourConfig:
    """Where a perturbed start takes the named hand before the recording begins.

    Demonstrations that all start at home and follow the nominal path teach nothing about the states a policy
    reaches by its own small errors: a hand a little off toward the nearer cube looks like the start of that
    cube's demonstration, and the policy carries on there. Starting some demonstrations from such states
    (partway toward a cube the instruction does not name, or anywhere near the start) shows the way back, and
    makes the instruction, not the arm's position, decide where the hand goes.
    """

    # Share of detours that end over the named cube, below the approach height (drawn before the kinds below,
    # and only when > 0, so the default draws stay those of earlier recordings): the states a policy reaches
    # when its descent is a little off, where the nominal demonstrations only ever go straight down.
    near_named_cube: float = 0.0
    near_radius_m: float = 0.035  # horizontal offset from the vertical over the touch point (uniform in a disc)
    near_height_m: Tuple[float, float] = (0.015, 0.08)  # above the touch point
    toward_other_cube: float = 0.5  # share of detours that head partway to a cube the instruction does not name
    fraction: Tuple[float, float] = (0.25, 0.7)  # how far along start -> above that cube
    # Otherwise a uniform offset from the start between these corners (x forward, y left, z up; the arms'
    # home poses sit at the edge of their reach toward the body, so little backward room).
    offset_low_m: Tuple[float, float, float] = (-0.02, -0.10, -0.05)
    offset_high_m: Tuple[float, float, float] = (0.10, 0.10, 0.05)
    jitter_m: float = 0.02  # added to a detour toward a cube (std per axis)


def detour_point(start_pose: np.ndarray, objects: Mapping[str, Mapping], task: TouchTask,
                 grasp_offset: Sequence[float], rng: np.random.Generator,
                 config: Optional[DetourConfig] = None, expert: Optional[ExpertConfig] = None) -> np.ndarray:
    """An ee position off the nominal path (see :class:`DetourConfig`); ``objects`` as in the task state."""
    config, expert = config or DetourConfig(), expert or ExpertConfig()
    start = np.asarray(start_pose, dtype=np.float64)
    if config.near_named_cube > 0.0 and rng.random() < config.near_named_cube:
        touch = touch_target(objects[task.object]["position"], start[3:], grasp_offset, expert)
        radius, angle = config.near_radius_m * np.sqrt(rng.random()), rng.uniform(0.0, 2.0 * np.pi)
        return touch + np.array([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(*config.near_height_m)])
    others = sorted(name for name in objects if name != task.object)
    if others and rng.random() < config.toward_other_cube:
        other = others[int(rng.integers(len(others)))]
        touch = touch_target(objects[other]["position"], start[3:], grasp_offset, expert)
        above = touch + np.array([0.0, 0.0, expert.approach_height_m])
        fraction = rng.uniform(*config.fraction)
        return start[:3] + fraction * (above - start[:3]) + rng.normal(0.0, config.jitter_m, 3)
    return start[:3] + rng.uniform(config.offset_low_m, config.offset_high_m)


def plan_move(start_pose: np.ndarray, position: Sequence[float], config: Optional[ExpertConfig] = None,
              via_height: Optional[float] = None) -> PosePath:
    """A straight move of the ee from ``start_pose`` to ``position`` at the expert's free-space speed, keeping
    the start orientation. With ``via_height``, first to the point that high over ``position``, then down to it
    (a detour ending close above a cube arrives from above, not through the cube's side)."""
    config = config or ExpertConfig()
    start_pose = np.asarray(start_pose, dtype=np.float64)
    points = [start_pose[:3]]
    end = np.asarray(position, dtype=np.float64)
    if via_height is not None and via_height > end[2]:
        points.append(np.array([end[0], end[1], via_height]))
    points.append(end)
    waypoints, t = [Waypoint(0.0, start_pose)], 0.0
    for a, b in pairwise(points):
        t += max(config.min_segment_s, float(np.linalg.norm(b - a)) / config.move_speed_m_s)
        waypoints.append(Waypoint(t, np.concatenate([b, start_pose[3:]])))
    return PosePath(waypoints, {"detour": 0.0})


def touched(task_state: Mapping, task: TouchTask) -> bool:
    """True when the simulator reports the task's object within touch distance of the task's arm."""
    return task.object in task_state.get("touched", {}).get(task.arm, [])


def check_reachable(path: PosePath, ik, start_joints: np.ndarray, samples: int = 40) -> List[float]:
    """Times along ``path`` where ``ik`` (an :class:`~pi0_ros.control.kinematics.ArmIK`) finds no solution."""
    ik.reset(np.asarray(start_joints, dtype=np.float64))
    failures = []
    for t in np.linspace(0.0, path.duration, samples):
        if ik.solve_pose(path.pose(t)) is None:
            failures.append(float(t))
    return failures
