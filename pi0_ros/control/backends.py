"""Policy backends by name, imported only when chosen (the node must start without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from pi0_ros.embodiment import Embodiment
from pi0_ros.policy_api import Policy

BACKENDS = ("pi0", "pi0_fast", "remote", "scripted")


@dataclass
class BackendOptions:
    """What the node's parameters say about the policy."""

    backend: str
    action_space: str
    checkpoint: str = ""
    server_uri: str = ""
    control_dt: float = 0.02
    scripted_speed: float = 0.5


def _local(options: BackendOptions, embodiment: Embodiment) -> Policy:
    if not options.checkpoint:
        raise ValueError(f"policy_backend {options.backend!r} needs the 'checkpoint' parameter")
    from pi0_ros.serving.loader import load_policy

    return load_policy(checkpoint_dir=options.checkpoint, policy_type=options.backend)


def _remote(options: BackendOptions, embodiment: Embodiment) -> Policy:
    from pi0_ros.serving.remote_policy import RemotePolicy, RemotePolicyConfig

    return RemotePolicy(RemotePolicyConfig(uri=options.server_uri or None, rtc_key="rtc"))


def _scripted(options: BackendOptions, embodiment: Embodiment) -> Policy:
    from pi0_ros.control.scripted_policy import ScriptedPolicy, ScriptedPolicyConfig

    config = ScriptedPolicyConfig(dt=options.control_dt, max_speed=options.scripted_speed)
    return ScriptedPolicy(embodiment, options.action_space, config)


_FACTORIES: Dict[str, Callable[[BackendOptions, Embodiment], Policy]] = {
    "pi0": _local, "pi0_fast": _local, "remote": _remote, "scripted": _scripted,
}


def make_policy(options: BackendOptions, embodiment: Embodiment) -> Policy:
    """Build the backend; ValueError names the valid backends or the missing setting."""
    factory = _FACTORIES.get(options.backend)
    if factory is None:
        raise ValueError(f"unknown policy_backend {options.backend!r}; known: {list(BACKENDS)}")
    return factory(options, embodiment)
