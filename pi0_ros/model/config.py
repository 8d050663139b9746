"""Named pi0 configurations: the full model and small ones for tests and CPU simulation.

A ``Pi0Config`` is plain data (JSON round trip through ``to_dict``/``from_dict``) so a checkpoint
directory fully describes the network it holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from pi0_ros.model.gemma import GemmaConfig, get_gemma_config
from pi0_ros.model.siglip import SIGLIP_SO400M_14, SiglipConfig


@dataclasses.dataclass(frozen=True)
class Pi0Config:
    """Network shape and the fixed tensor sizes of pi0's inputs and outputs.

    ``action_dim`` is the model's padded state/action width (32 for openpi checkpoints); the robot's
    real dimensions live in the policy configuration and are padded up to it.
    """

    vision: SiglipConfig
    llm: GemmaConfig
    expert: GemmaConfig
    num_cameras: int = 3
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    num_steps: int = 10

    def __post_init__(self) -> None:
        shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
        for name in shared:
            if getattr(self.llm, name) != getattr(self.expert, name):
                raise ValueError(f"LM and action expert must share {name}")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.expert.width % 2:
            raise ValueError("expert width must be even (sin/cos time embedding)")

    @property
    def image_size(self) -> int:
        """Side of the square model input image."""
        return self.vision.image_size

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Pi0Config":
        """Inverse of ``to_dict``; unknown keys raise TypeError naming them."""
        data = dict(data)
        vision = SiglipConfig(**data.pop("vision"))
        llm = GemmaConfig(**data.pop("llm"))
        expert = GemmaConfig(**data.pop("expert"))
        return cls(vision=vision, llm=llm, expert=expert, **data)


def _pi0() -> Pi0Config:
    return Pi0Config(vision=SIGLIP_SO400M_14, llm=get_gemma_config("gemma_2b"),
                     expert=get_gemma_config("gemma_300m"))


def _pi0_tiny() -> Pi0Config:
    # The simulator's model: 224 px input like the real one, but 28 px patches (64 tokens per image)
    # and narrow, shallow towers so 10 denoising steps run in tens of ms on two CPU cores.
    return Pi0Config(
        vision=SiglipConfig(image_size=224, patch_size=28, width=128, depth=4, mlp_dim=256, num_heads=4),
        llm=GemmaConfig(width=128, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32,
                        vocab_size=1024),
        expert=GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=32),
    )


def _pi0_tiny_112() -> Pi0Config:
    # pi0_tiny's towers on 112 px input (16 tokens per image): about 3x fewer tokens per sample, so it trains
    # in minutes on two CPU cores (make demo's first use trains it from scripted demonstrations).
    tiny = _pi0_tiny()
    return dataclasses.replace(tiny, vision=dataclasses.replace(tiny.vision, image_size=112))


def _pi0_test() -> Pi0Config:
    # Unit tests: every code path, tiny tensors (4 patches per image, 2 layers, short horizon).
    return Pi0Config(
        vision=SiglipConfig(image_size=28, patch_size=14, width=32, depth=2, mlp_dim=64, num_heads=2),
        llm=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16,
                        vocab_size=400),
        expert=GemmaConfig(width=16, depth=2, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=16),
        num_cameras=3,
        action_dim=8,
        action_horizon=6,
        max_token_len=16,
    )


PI0_CONFIGS = {"pi0": _pi0, "pi0_tiny": _pi0_tiny, "pi0_tiny_112": _pi0_tiny_112, "pi0_test": _pi0_test}


def get_pi0_config(name: str, **overrides: Any) -> Pi0Config:
    """Named configuration with optional top-level field overrides (e.g. ``action_horizon=16``)."""
    if name not in PI0_CONFIGS:
        raise KeyError(f"unknown pi0 config {name!r}; known: {sorted(PI0_CONFIGS)}")
    return dataclasses.replace(PI0_CONFIGS[name](), **overrides)
