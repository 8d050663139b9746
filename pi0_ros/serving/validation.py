"""Structural checks on decoded observations and policy results, independent of any robot schema.

The server serves any policy, so it cannot know which keys an observation needs (the policy
raises ``PolicyInputError`` for those, or the operator lists ``required_keys``). What it can check
for every policy: the frame is a map with string keys, it is not absurdly deep or large, and no
floating-point value is NaN or infinite. Results must carry a finite numeric ``actions`` array.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Tuple

import numpy as np

from pi0_ros.policy_api import PolicyInputError, PolicyOutputError


@dataclasses.dataclass(frozen=True)
class ObservationLimits:
    """What every observation must satisfy before it reaches a policy."""

    max_depth: int = 8
    max_nodes: int = 4096
    required_keys: Tuple[str, ...] = ()


def check_observation(observation: Any, limits: ObservationLimits = ObservationLimits()) -> None:
    """Raise ``PolicyInputError`` naming the first offending entry of a decoded observation."""
    if not isinstance(observation, dict):
        raise PolicyInputError(f"observation must be a map, got {type(observation).__name__}")
    missing = [key for key in limits.required_keys if key not in observation]
    if missing:
        raise PolicyInputError(f"observation lacks required keys {missing}; has {sorted(map(str, observation))}")

    # Iterative walk: the depth bound is ours, not Python's recursion limit.
    stack = [(observation, "obs", 0)]
    nodes = 0
    while stack:
        value, path, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise PolicyInputError(f"observation has more than {limits.max_nodes} entries")
        if depth > limits.max_depth:
            raise PolicyInputError(f"observation nests deeper than {limits.max_depth} levels at {path}")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PolicyInputError(f"{path} has a non-string key {key!r}")
                stack.append((item, f"{path}[{key!r}]", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, (np.ndarray, np.generic)):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise PolicyInputError(f"{path} contains NaN or infinite values")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise PolicyInputError(f"{path} is {value}")
        elif value is not None and not isinstance(value, (bool, int, str, bytes)):
            raise PolicyInputError(f"{path} has unsupported type {type(value).__name__}")


def check_state(observation: Any) -> np.ndarray:
    """``observation["state"]`` as a float32 vector; ``PolicyInputError`` unless it is a finite 1-D numeric array."""
    if "state" not in observation:
        raise PolicyInputError("observation lacks 'state'")
    state = np.asarray(observation["state"])
    if state.ndim != 1 or state.dtype.kind not in "iuf":
        raise PolicyInputError(f"'state' must be a 1-D numeric array, got {state.dtype} {state.shape}")
    state = state.astype(np.float32)
    if not np.isfinite(state).all():
        raise PolicyInputError("'state' contains NaN or infinite values")
    return state


def check_result(result: Any) -> None:
    """Raise ``PolicyOutputError`` unless ``result`` is a map with a finite numeric ``actions`` array."""
    if not isinstance(result, dict):
        raise PolicyOutputError(f"policy returned {type(result).__name__}, expected a dict")
    actions = result.get("actions")
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "iuf":
        raise PolicyOutputError(f"policy result lacks a numeric 'actions' array (got {type(actions).__name__})")
    if actions.ndim != 2:
        raise PolicyOutputError(f"'actions' must be [horizon, action_dim], got shape {actions.shape}")
    if actions.dtype.kind == "f" and not np.isfinite(actions).all():
        raise PolicyOutputError("'actions' contains NaN or infinite values")
