"""A model-free policy for exercising the serving path: it echoes the state as an action chunk.

Every request's reply is determined by its own ``state``, so tests and benchmarks can tell
whether replies reach the right client, and the transport cost is measured without a model.
It is a plumbing check, not a controller: never point it at a real robot.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Optional

import numpy as np

from pi0_ros.policy_api import Observation, PolicyInputError, PolicyResult
from pi0_ros.serving.validation import check_state


@dataclasses.dataclass(frozen=True)
class EchoPolicyConfig:
    """Shape of the echoed chunk and an optional artificial inference delay."""

    horizon: int = 10
    action_dim: Optional[int] = None  # None: the state's length
    delay_s: float = 0.0


class EchoPolicy:
    """``actions[t] = state`` (zero-padded or cut to ``action_dim``) for every step ``t``."""

    def __init__(self, config: Optional[EchoPolicyConfig] = None, **overrides: Any) -> None:
        """Build from a config, or from keyword overrides of the defaults (as the CLI loader does)."""
        self.config = dataclasses.replace(config or EchoPolicyConfig(), **overrides)
        if self.config.horizon < 1:
            raise ValueError("horizon must be at least 1")

    @property
    def metadata(self) -> Dict[str, Any]:
        """Static facts a client needs."""
        return {
            "policy_type": "echo",
            "action_horizon": self.config.horizon,
            "action_dim": self.config.action_dim,
        }

    def infer(self, observation: Observation) -> PolicyResult:
        """Return the state repeated ``horizon`` times."""
        start = time.perf_counter()
        if not isinstance(observation, dict):
            raise PolicyInputError("observation lacks 'state'")
        state = check_state(observation)
        dim = self.config.action_dim if self.config.action_dim is not None else state.shape[0]
        row = np.zeros(dim, dtype=np.float32)
        row[: min(dim, state.shape[0])] = state[:dim]
        if self.config.delay_s > 0:
            time.sleep(self.config.delay_s)
        actions = np.tile(row, (self.config.horizon, 1))
        return {"actions": actions, "policy_timing": {"infer_ms": (time.perf_counter() - start) * 1e3}}

    def reset(self) -> None:
        """Stateless: nothing to forget."""
