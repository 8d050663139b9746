"""Builds the policy to serve from a ``module:callable`` spec, importing it only when asked.

The server must not import the model code to be testable on its own, so the checkpoint loader
is named by a string and resolved at start-up. ``DEFAULT_CHECKPOINT_LOADER`` is what
``pi0-serve --checkpoint DIR --policy-type pi0`` calls, as ``loader(checkpoint_dir=DIR,
policy_type="pi0")``; any other factory can be named with ``--loader``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

from pi0_ros.policy_api import Policy

# The model package's entry point: (checkpoint_dir: str, policy_type: str) -> Policy.
DEFAULT_CHECKPOINT_LOADER = "pi0_ros.model:load_policy"
POLICY_TYPES = ("pi0", "pi0_fast")


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
    """Call the loader (default: the checkpoint loader) and check that it returned a Policy."""
    kwargs = dict(loader_kwargs or {})
    if checkpoint_dir is not None:
        if policy_type not in POLICY_TYPES:
            raise PolicyLoadError(f"policy_type must be one of {POLICY_TYPES}, got {policy_type!r}")
        kwargs.update(checkpoint_dir=checkpoint_dir, policy_type=policy_type)
    elif loader is None:
        raise PolicyLoadError("give a checkpoint directory (with its policy type) or a loader")
    factory = resolve_callable(loader or DEFAULT_CHECKPOINT_LOADER)
    policy = factory(**kwargs)
    if not isinstance(policy, Policy):
        raise PolicyLoadError(f"loader returned {type(policy).__name__}, which lacks metadata/infer/reset")
    return policy
