"""A small deterministic policy (backend ``scripted``) for tests, benchmarks and bring-up.

It returns a smooth chunk that moves from the observed state toward a configured target at a
bounded speed, in the embodiment's ``joint_position`` or ``joint_delta`` layout. Faults can be
injected (delay, NaN output, exceptions) to exercise the node's safety paths.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from pi0_ros.embodiment import Embodiment, Layout
from pi0_ros.policy_api import Observation, PolicyInputError, PolicyResult


@dataclass
class ScriptedPolicyConfig:
    """Target and speed of the scripted motion, plus injectable faults."""

    horizon: int = 50
    dt: float = 0.02  # seconds between actions (the control period)
    max_speed: float = 0.5  # per state dim, state units per second
    target: Optional[np.ndarray] = None  # in the state layout; default: the groups' home
    delay_s: float = 0.0  # added to every inference
    nan_output: bool = False  # return a chunk with NaN
    raise_error: Optional[BaseException] = None  # raised by infer


class ScriptedPolicy:
    """Moves the joints toward a target; only for layouts whose segments mirror the state layout."""

    def __init__(self, embodiment: Embodiment, action_space: str, config: Optional[ScriptedPolicyConfig] = None):
        self.embodiment = embodiment
        self.layout: Layout = embodiment.action_layout(action_space)
        self.config = config or ScriptedPolicyConfig()
        state_kinds = {s.group: s for s in embodiment.state_layout.segments}
        for seg in self.layout.segments:
            if seg.kind not in ("joint_position", "joint_delta", "gripper") or seg.group not in state_kinds:
                raise ValueError(f"scripted policy supports joint/gripper action segments only, not {seg}")
        self.lock = threading.Lock()  # tests change the config while the node runs
        self.calls = 0
        if self.config.target is None:
            self.config.target = self.home_state()

    def home_state(self) -> np.ndarray:
        """The groups' home positions in the state layout (policy units for grippers)."""
        from pi0_ros.control.robot_state import build_state_vector

        home = {g.name: g.home for g in self.embodiment.groups.values()}
        return build_state_vector(self.embodiment, self.embodiment.state_layout, home).astype(np.float64)

    @property
    def metadata(self) -> Dict[str, Any]:
        """Horizon and action dim."""
        return {"action_horizon": self.config.horizon, "action_dim": self.layout.dim, "model_type": "scripted"}

    def reset(self) -> None:
        """Stateless."""

    def infer(self, observation: Observation) -> PolicyResult:
        """A chunk from the observed state toward the target."""
        with self.lock:
            config = self.config
            self.calls += 1
        started = time.monotonic()
        if config.delay_s > 0:
            time.sleep(config.delay_s)
        if config.raise_error is not None:
            raise config.raise_error
        state = np.asarray(observation.get("state"), dtype=np.float64)
        if state.shape != (self.embodiment.state_layout.dim,) or not np.all(np.isfinite(state)):
            raise PolicyInputError(f"state must be finite [{self.embodiment.state_layout.dim}], got {state.shape}")
        steps = np.arange(1, config.horizon + 1)[:, None] * config.dt * config.max_speed
        path = state + np.clip(config.target - state, -steps, steps)  # [H, state_dim]
        by_group = {s.group: s for s in self.embodiment.state_layout.segments}
        actions = np.zeros((config.horizon, self.layout.dim), dtype=np.float32)
        for seg in self.layout.segments:
            values = path[:, by_group[seg.group].slice]
            if seg.kind == "joint_delta":
                values = values - state[by_group[seg.group].slice]
            actions[:, seg.slice] = values
        if config.nan_output:
            actions[config.horizon // 2, 0] = np.nan
        return {"actions": actions, "policy_timing": {"infer_ms": (time.monotonic() - started) * 1e3}}
