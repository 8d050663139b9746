"""Policy backends by name, imported only when chosen (the node must start without torch)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict

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
    inject_delay_s: float = 0.0  # testing / benchmarks only: seconds added to every inference


class DelayedPolicy:
    """Any backend with ``delay_s`` added to every inference: for tests and benchmarks only (the
    real-time chunking benchmark injects 100 / 300 ms). Everything else is the wrapped policy's."""

    def __init__(self, policy: Policy, delay_s: float):
        if not delay_s >= 0.0:
            raise ValueError(f"inject_delay_s must be >= 0, got {delay_s}")
        self.policy = policy
        self.delay_s = float(delay_s)

    @property
    def metadata(self) -> Dict[str, Any]:
        """The wrapped policy's."""
        return self.policy.metadata

    def reset(self) -> None:
        """Reset the wrapped policy."""
        self.policy.reset()

    def infer(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        """Wait ``delay_s``, then infer (the observation was taken before the wait, as with a slow model)."""
        time.sleep(self.delay_s)
        return self.policy.infer(observation)

    def __getattr__(self, name: str) -> Any:
        if name == "policy":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)  # e.g. a scripted policy's config, the remote client's stats


def _local(options: BackendOptions, embodiment: Embodiment) -> Policy:
    if not options.checkpoint:
        raise ValueError(f"policy_backend {options.backend!r} needs the 'checkpoint' parameter")
    from pi0_ros.serving.loader import load_policy

    kwargs = {}
    import torch  # only local backends need it

    if options.backend == "pi0" and not torch.cuda.is_available():
        # One intra-op thread: on a small CPU, torch's threads compete with the control loop and the
        # drivers, and inference latency collapses (BENCHMARKS.md, pi0 model, CPU table).
        kwargs["cpu_threads"] = 1
    return load_policy(checkpoint_dir=options.checkpoint, policy_type=options.backend, loader_kwargs=kwargs)


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
    """Build the backend (wrapped in :class:`DelayedPolicy` only when ``inject_delay_s`` > 0);
    ValueError names the valid backends or the missing setting."""
    factory = _FACTORIES.get(options.backend)
    if factory is None:
        raise ValueError(f"unknown policy_backend {options.backend!r}; known: {list(BACKENDS)}")
    if not options.inject_delay_s >= 0.0:
        raise ValueError(f"inject_delay_s must be >= 0, got {options.inject_delay_s}")
    policy = factory(options, embodiment)
    return DelayedPolicy(policy, options.inject_delay_s) if options.inject_delay_s > 0.0 else policy
