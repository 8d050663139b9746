"""Builds the policy to serve from a ``module:callable`` spec, importing it only when asked.

The server must not import the model code to be testable on its own, so checkpoint loaders are
named by strings and resolved at start-up. ``pi0-serve --checkpoint DIR --policy-type T`` calls
``CHECKPOINT_LOADERS[T](DIR, **loader_kwargs)``; ``--loader MODULE:CALLABLE`` replaces the
factory (called with DIR first when ``--checkpoint`` is given, else with the kwargs only).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

from pi0_ros.policy_api import Policy

# Factories (checkpoint_dir, **kwargs) -> Policy in the model package, imported only when used.
CHECKPOINT_LOADERS = {
    "pi0": "pi0_ros.model.policy:Pi0Policy.from_checkpoint",
    "pi0_fast": "pi0_ros.model.pi0_fast_policy:Pi0FastPolicy.from_checkpoint",
}
POLICY_TYPES = tuple(CHECKPOINT_LOADERS)


class PolicyLoadError(RuntimeError):
    """The loader spec cannot be resolved or did not produce a Policy."""


def resolve_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attr.attr"`` and return the attribute, which must be callable."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise PolicyLoadError(f"loader {spec!r} must look like 'package.module:callable'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyLoadError(f"cannot import {module_name!r} for loader {spec!r}: {exc}") from exc
    for name in attr_path.split("."):
        try:
            target = getattr(target, name)
        except AttributeError as exc:
            raise PolicyLoadError(f"{spec!r}: {module_name} has no attribute path {attr_path!r}") from exc
    if not callable(target):
        raise PolicyLoadError(f"{spec!r} is not callable")
    return target


def load_policy(
    loader: Optional[str] = None,
    checkpoint_dir: Optional[str] = None,
    policy_type: Optional[str] = None,
    loader_kwargs: Optional[Dict[str, Any]] = None,
) -> Policy:
    """Call the loader (default: the policy type's checkpoint loader); check it returned a Policy."""
    kwargs = dict(loader_kwargs or {})
    if loader is None:
        if checkpoint_dir is None:
            raise PolicyLoadError("give a checkpoint directory (with its policy type) or a loader")
        if policy_type not in CHECKPOINT_LOADERS:
            raise PolicyLoadError(f"policy_type must be one of {POLICY_TYPES}, got {policy_type!r}")
        loader = CHECKPOINT_LOADERS[policy_type]
        try:
            factory = resolve_callable(loader)
        except PolicyLoadError as exc:
            raise PolicyLoadError(f"no loader for policy type {policy_type!r} ({exc}); name one with --loader") from exc
    else:
        factory = resolve_callable(loader)
    args = () if checkpoint_dir is None else (checkpoint_dir,)
    try:
        policy = factory(*args, **kwargs)
    except Exception as exc:  # a missing or broken checkpoint: one clear line, the cause chained
        raise PolicyLoadError(f"{loader} failed for {checkpoint_dir or kwargs!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(policy, Policy):
        raise PolicyLoadError(f"loader returned {type(policy).__name__}, which lacks metadata/infer/reset")
    return policy
