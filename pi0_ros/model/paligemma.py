"""PaliGemma: SigLIP vision tower + linear projector + Gemma language model, HF parameter layout.

State-dict keys: ``model.vision_tower.vision_model.*``, ``model.multi_modal_projector.linear.*``,
``model.language_model.*`` and ``lm_head.weight`` (tied to ``model.language_model.embed_tokens``).
Image tokens come out of the projector unscaled; only text embeddings are scaled by sqrt(width).
"""

from __future__ import annotations

import torch
from torch import nn

from pi0_ros.model.gemma import GemmaConfig, GemmaModel
from pi0_ros.model.siglip import SiglipConfig, SiglipVisionModel


class PaliGemmaProjector(nn.Module):
    """``multi_modal_projector.linear``: vision width -> LM width, with bias."""

    def __init__(self, vision_width: int, lm_width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, lm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class PaliGemmaModel(nn.Module):
    """The ``model.`` part: vision tower, projector, language model."""

    def __init__(self, vision: SiglipConfig, lm: GemmaConfig):
        super().__init__()
        self.vision_tower = SiglipVisionModel(vision)
        self.multi_modal_projector = PaliGemmaProjector(vision.width, lm.width)
        self.language_model = GemmaModel(lm)


class PaliGemma(nn.Module):
    """PaliGemma with a tied LM head; ``embed_image`` and ``embed_text`` give LM-width tokens."""

    def __init__(self, vision: SiglipConfig, lm: GemmaConfig):
        super().__init__()
        if lm.vocab_size <= 0:
            raise ValueError("PaliGemma's language model needs a vocabulary")
        self.model = PaliGemmaModel(vision, lm)
        self.lm_head = nn.Linear(lm.width, lm.vocab_size, bias=False)
        self.lm_head.weight = self.model.language_model.embed_tokens.weight

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] in [-1, 1] -> image tokens [B, num_patches, lm_width] (not scaled)."""
        features = self.model.vision_tower(pixels)
        return self.model.multi_modal_projector(features.to(self.model.multi_modal_projector.linear.weight.dtype))

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> [B, L, lm_width], scaled by sqrt(lm_width)."""
        return self.model.language_model.embed_text(tokens)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-normed LM hidden states [B, L, width] -> float32 logits [B, L, vocab]."""
        return self.lm_head(hidden).float()
