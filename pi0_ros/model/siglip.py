"""SigLIP vision tower (ViT, no pooling head) with Hugging Face parameter names.

Layout of ``SiglipVisionModel.vision_model``: ``embeddings.patch_embedding`` (Conv2d, stride = patch),
``embeddings.position_embedding`` (learned, one row per patch), ``encoder.layers.{i}`` with
``layer_norm1``, ``self_attn.{q,k,v,out}_proj``, ``layer_norm2``, ``mlp.fc1``/``mlp.fc2`` (tanh GELU),
then ``post_layernorm``. Pre-LayerNorm blocks (eps 1e-6, computed in fp32); attention softmax in fp32.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """Shape of a SigLIP vision tower."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    layer_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        """Tokens per image: (image_size // patch_size) ** 2."""
        return (self.image_size // self.patch_size) ** 2


SIGLIP_SO400M_14 = SiglipConfig()


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation dtype (the dtype policy's fp32 norms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class SiglipEmbeddings(nn.Module):
    """Patchify with a strided conv and add the learned position embedding."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [-1, 1] -> tokens [B, num_patches, width]."""
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))  # [B, W, h, w]
        tokens = patches.flatten(2).transpose(1, 2)
        return tokens + self.position_embedding.weight.to(tokens.dtype)[None]


class SiglipAttention(nn.Module):
    """Multi-head self-attention with biases (all tokens see each other)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)
        self.impl = "eager"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, width = x.shape
        head_dim = width // self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.num_heads, head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            logits = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * head_dim ** -0.5
            out = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(logits, dim=-1).to(v.dtype), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, width))


class SiglipMLP(nn.Module):
    """fc1 -> tanh GELU -> fc2."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = LayerNorm32(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = LayerNorm32(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    """The stack of encoder layers (``encoder.layers.{i}``)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList([SiglipEncoderLayer(cfg) for _ in range(cfg.depth)])
        self.gradient_checkpointing = False  # training: recompute layers in the backward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False) if checkpointed else layer(x)
        return x


class SiglipVisionTransformer(nn.Module):
    """``vision_model``: embeddings, encoder, post_layernorm; returns every patch token (no pooling)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = LayerNorm32(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] in [-1, 1] -> [B, num_patches, width]."""
        if pixels.shape[-2:] != (self.config.image_size, self.config.image_size):
            raise ValueError(f"expected {self.config.image_size}x{self.config.image_size} images, "
                             f"got {tuple(pixels.shape[-2:])}")
        return self.post_layernorm(self.encoder(self.embeddings(pixels)))


class SiglipVisionModel(nn.Module):
    """Wrapper giving the HF prefix ``vision_model.``."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] in [-1, 1] -> patch features [B, num_patches, width]."""
        return self.vision_model(pixels)

    def set_attention_impl(self, impl: str) -> None:
        """``eager`` (fp32 softmax, exact) or ``sdpa`` (fused kernels, for the GPU)."""
        if impl not in ("eager", "sdpa"):
            raise ValueError(f"unknown attention implementation {impl!r}")
        for layer in self.vision_model.encoder.layers:
            layer.self_attn.impl = impl
