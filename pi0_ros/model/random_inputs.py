"""Random model inputs and weights for tests, benchmarks and equivalence scripts (no data needed)."""

from __future__ import annotations

import torch
from torch import nn

from pi0_ros.model.config import Pi0Config
from pi0_ros.model.pi0 import Pi0Inputs

# Valid prompt lengths used per batch row (cycled), so padding is always exercised.
_PROMPT_LENGTHS = (4, 7, 5, 6)


def randomize_weights(model: nn.Module, seed: int = 0, std: float = 0.3) -> nn.Module:
    """Overwrite every parameter with N(0, std^2), norm offsets included, so masking errors are visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def random_inputs(cfg: Pi0Config, batch: int = 2, seed: int = 1, missing_camera: bool = True) -> Pi0Inputs:
    """Random images in [-1, 1], right-padded prompts, random state; camera 1 of row 0 masked out."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    images = torch.rand(batch, cfg.num_cameras, 3, s, s, generator=g) * 2 - 1
    image_masks = torch.ones(batch, cfg.num_cameras, dtype=torch.bool)
    if missing_camera and batch > 1 and cfg.num_cameras > 1:
        image_masks[0, 1] = False
    tokens = torch.randint(3, cfg.llm.vocab_size, (batch, cfg.max_token_len), generator=g)
    token_masks = torch.zeros(batch, cfg.max_token_len, dtype=torch.bool)
    for row in range(batch):
        token_masks[row, : min(cfg.max_token_len, _PROMPT_LENGTHS[row % len(_PROMPT_LENGTHS)])] = True
    state = torch.randn(batch, cfg.action_dim, generator=g)
    return Pi0Inputs(images, image_masks, tokens, token_masks, state)
