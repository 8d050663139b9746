"""Action vectors <-> per-group joint targets, in both directions, from the embodiment's layout.

Decoding (policy node): a chunk ``[H, action_dim]`` in the layout's units becomes joint targets per
group ``[H, n]`` in robot units: joint positions as they are, joint deltas plus the state at the chunk
start, grippers mapped from ``policy_range`` to the stroke, ee poses through ``solve_position`` and
ee increments through ``solve_velocity`` (one :class:`ArmIK` per arm, reset from the chunk-start joints).
A step whose IK fails keeps the previous step's target ("the last safe target").

Encoding (recorder): commanded joint targets -> the action vector a policy would have produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np

from pi0_ros.control.kinematics import ArmIK, ChainFK, pose_increment
from pi0_ros.control.units import gripper_to_policy, gripper_to_robot
from pi0_ros.embodiment import Embodiment, Layout
from pi0_ros.policy_api import PolicyOutputError


@dataclass
class DecodedChunk:
    """Joint targets per group for every step of one chunk, with the IK failures met on the way."""

    targets: Dict[str, np.ndarray]  # group -> [H, n], robot units
    ik_failures: Dict[str, int] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        """Number of steps."""
        return next(iter(self.targets.values())).shape[0] if self.targets else 0

    def step(self, index: int) -> Dict[str, np.ndarray]:
        """Targets of one step, per group."""
        return {name: t[index].copy() for name, t in self.targets.items()}


def needs_ik(layout: Layout) -> bool:
    """True when the layout has ee segments (and so needs one IK solver per arm)."""
    return any(seg.kind in ("ee_pose", "ee_delta") for seg in layout.segments)


class ActionDecoder:
    """Turns policy action chunks into per-group joint targets."""

    def __init__(self, embodiment: Embodiment, layout: Layout, ik: Optional[Mapping[str, ArmIK]] = None):
        self.embodiment = embodiment
        self.layout = layout
        self.ik = dict(ik or {})
        for seg in layout.segments:
            if seg.kind in ("ee_pose", "ee_delta") and seg.group not in self.ik:
                raise ValueError(f"action space {layout.name!r} needs an IK solver for {seg.group}")

    @property
    def groups(self) -> list:
        """Commanded groups, in layout order."""
        return [seg.group for seg in self.layout.segments]

    def check(self, actions: np.ndarray) -> np.ndarray:
        """The chunk as float64 [H, action_dim]; PolicyOutputError if it must not reach the robot."""
        arr = np.asarray(actions)
        if arr.ndim != 2 or arr.shape[1] != self.layout.dim or arr.shape[0] < 1:
            raise PolicyOutputError(
                f"actions must be [H, {self.layout.dim}] for action space {self.layout.name!r}, got {arr.shape}"
            )
        # Only real numbers: complex values would lose their imaginary part in a cast, strings would be parsed.
        if arr.dtype.kind not in "fiub":
            raise PolicyOutputError(f"actions must be real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[:3].tolist()
            raise PolicyOutputError(f"actions contain NaN/inf (first at [step, dim] {bad})")
        return arr

    def decode(self, actions: np.ndarray, start: Mapping[str, np.ndarray]) -> DecodedChunk:
        """Decode a checked chunk; ``start`` is the measured joints per group at the chunk's observation."""
        arr = self.check(actions)
        horizon = arr.shape[0]
        out = DecodedChunk(targets={})
        for seg in self.layout.segments:
            group = self.embodiment.groups[seg.group]
            values = arr[:, seg.slice]
            q0 = np.asarray(start[seg.group], dtype=np.float64)
            if seg.kind == "joint_position":
                targets = values.copy()
            elif seg.kind == "joint_delta":
                targets = values + q0
            elif seg.kind == "gripper":
                targets = gripper_to_robot(group, values)
            else:
                targets, failures = self._solve_arm(seg.group, seg.kind, values, q0, horizon)
                out.ik_failures[seg.group] = failures
            out.targets[seg.group] = targets
        return out

    def _solve_arm(self, group: str, kind: str, values: np.ndarray, q0: np.ndarray, horizon: int):
        ik = self.ik[group]
        targets = np.empty((horizon, q0.size))
        failures = 0
        last = q0
        with ik.lock:
            # Seeded from the measured joints at the observation: the solver did not produce them.
            ik.reset(q0)
            for k in range(horizon):
                q = ik.solve_pose(values[k]) if kind == "ee_pose" else ik.solve_increment(values[k])
                if q is None:
                    failures += 1
                    q = last
                targets[k] = q
                last = q
        return targets, failures


def encode_action(
    embodiment: Embodiment,
    layout: Layout,
    targets: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    fk: Optional[Mapping[str, ChainFK]] = None,
    previous: Optional[Mapping[str, np.ndarray]] = None,
) -> np.ndarray:
    """The action vector for commanded joint ``targets`` (the recorder's inverse of decoding).

    ``reference`` is the joint state the deltas are relative to (the chunk start; for recording, the
    state of the same frame); ``previous`` are the previous step's targets for ``ee_delta`` (default:
    ``reference``); ``fk`` maps arm groups to their forward kinematics for the ee kinds.
    """
    action = np.zeros(layout.dim, dtype=np.float64)
    for seg in layout.segments:
        group = embodiment.groups[seg.group]
        q = np.asarray(targets[seg.group], dtype=np.float64)
        if seg.kind == "joint_position":
            action[seg.slice] = q
        elif seg.kind == "joint_delta":
            action[seg.slice] = q - np.asarray(reference[seg.group], dtype=np.float64)
        elif seg.kind == "gripper":
            action[seg.slice] = gripper_to_policy(group, q)
        else:
            if fk is None or seg.group not in fk:
                raise ValueError(f"encoding {seg.group}/{seg.kind} needs forward kinematics for {seg.group}")
            pose = fk[seg.group].forward(q)
            if seg.kind == "ee_pose":
                action[seg.slice] = pose
            else:
                before = (previous or reference)[seg.group]
                action[seg.slice] = pose_increment(fk[seg.group].forward(np.asarray(before)), pose)
    return action
