"""The one interface between a policy (local model, remote server, scripted) and its users.

Observations and results are plain dicts of numpy arrays and strings, so the same objects travel
through the policy node, the openpi-compatible websocket server and the training/eval tools.

Observation (what the policy node assembles at inference time)::

    {
        "images": {"head": uint8[H, W, 3], "left_wrist": ..., "right_wrist": ...},  # RGB, any size
        "state": float32[state_dim],         # in the embodiment's state layout, robot units
        "prompt": str,                       # the language instruction
    }

A camera may be missing from ``images`` (the model then masks it out). Result::

    {
        "actions": float32[horizon, action_dim],  # robot units, the embodiment's action layout
        "policy_timing": {"infer_ms": float, ...},
    }
"""

from __future__ import annotations

from typing import Any, Dict, Protocol, runtime_checkable

Observation = Dict[str, Any]
PolicyResult = Dict[str, Any]


class PolicyInputError(ValueError):
    """The observation cannot be turned into model input (wrong shape, dtype, NaN, ...)."""


class PolicyOutputError(RuntimeError):
    """The model produced something that must not reach the robot (undecodable FAST tokens, NaN)."""


@runtime_checkable
class Policy(Protocol):
    """Anything that maps an observation to an action chunk."""

    @property
    def metadata(self) -> Dict[str, Any]:
        """Static facts a client needs: action horizon, action_dim, camera names, model type."""
        ...

    def infer(self, observation: Observation) -> PolicyResult:
        """Return an action chunk for one observation; raise PolicyInputError/PolicyOutputError."""
        ...

    def reset(self) -> None:
        """Forget per-episode state (no-op for stateless policies)."""
        ...
