"""Gemma decoder (PaliGemma's language model and pi0's action expert) with joint multi-expert attention.

One decoder layer is applied to several token streams at once ("experts"): each stream uses its own
pre-norm, q/k/v projections, o_proj, FFN norm and MLP, but all streams meet in ONE attention over the
concatenated sequence. With a single stream this is a plain Gemma decoder, which is how pi0-FAST (and
the pi0 prefix pass) uses it.

Parameter names are the Hugging Face / openpi-PyTorch ones (``layers.{i}.self_attn.q_proj.weight``,
``layers.{i}.mlp.gate_proj.weight``, ``norm.weight``, ``embed_tokens.weight``) so checkpoints load
without renaming.

Conventions (shared/docs/pi0_reference.md): RMSNorm ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` in fp32;
RoPE base 10000, rotate_half, in fp32; q scaled by head_dim^-0.5; attention logits and softmax in fp32,
masked logits filled with -2.3819763e38; GeGLU MLP with tanh-approximate GELU; no softcapping.

KV cache: a tuple with one ``(k, v)`` pair per layer, each ``[B, num_kv_heads, S, head_dim]``, k already
rotated. Masks are boolean ``[B, L_query, L_key]`` with True = may attend, where the keys are the cached
keys followed by the current tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from pi0_ros.model import kernels

# Matches openpi/big_vision: the most negative bf16-representable fill, finite so no NaN appears in a
# fully masked (padding) row.
ATTENTION_MASK_VALUE = -2.3819763e38

KVCache = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """Shape of one Gemma decoder. ``vocab_size = 0`` means no embedding table (pi0's action expert)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int = 0
    rms_eps: float = 1e-6
    rope_base: float = 10000.0


GEMMA_CONFIGS = {
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256,
                            vocab_size=257_152),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
}


def get_gemma_config(name: str) -> GemmaConfig:
    """Named Gemma shape (``gemma_2b``, ``gemma_300m``); raises KeyError listing the known names."""
    if name not in GEMMA_CONFIGS:
        raise KeyError(f"unknown Gemma config {name!r}; known: {sorted(GEMMA_CONFIGS)}")
    return GEMMA_CONFIGS[name]


class RMSNorm(nn.Module):
    """Gemma RMSNorm: the weight is stored as an offset from 1 and the math runs in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


class GemmaMLP(nn.Module):
    """GeGLU feed-forward: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

        self.gate_up_weight: Optional[torch.Tensor] = None
        # Skinny-GEMM kernel configs (kernels.tune_linear; None = cuBLAS), set by Pi0Model.enable_gpu_kernels.
        self.gate_up_gemm: Optional[kernels.LinearConfig] = None
        self.down_gemm: Optional[kernels.LinearConfig] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_weight is not None:
            gate, up = linear(x, self.gate_up_weight, self.gate_up_gemm).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        h = F.gelu(gate, approximate="tanh") * up
        return self.down_proj(h) if self.down_gemm is None else linear(h, self.down_proj.weight, self.down_gemm)

    def fuse(self) -> None:
        """One [gate; up] matmul instead of two (see ``fuse_linears``)."""
        self.gate_up_weight = fuse_linears([self.gate_proj, self.up_proj])


class GemmaAttentionProjections(nn.Module):
    """The q/k/v/o projections of one expert; the attention itself is joint (see ``joint_attention``)."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)
        self.q_size, self.kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_weight: Optional[torch.Tensor] = None
        # Skinny-GEMM kernel configs (None = cuBLAS), set by Pi0Model.enable_gpu_kernels.
        self.qkv_gemm: Optional[kernels.LinearConfig] = None
        self.o_gemm: Optional[kernels.LinearConfig] = None

    def project_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, width] -> q [B, L, H*D], k, v [B, L, KV*D] (one matmul once fused)."""
        if self.qkv_weight is not None:
            return linear(x, self.qkv_weight, self.qkv_gemm).split([self.q_size, self.kv_size, self.kv_size],
                                                                    dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output [B, L, H*D] -> [B, L, width] (o_proj)."""
        return self.o_proj(x) if self.o_gemm is None else linear(x, self.o_proj.weight, self.o_gemm)

    def fuse(self) -> None:
        """One [q; k; v] matmul instead of three (see ``fuse_linears``)."""
        self.qkv_weight = fuse_linears([self.q_proj, self.k_proj, self.v_proj])


def linear(x: torch.Tensor, weight: torch.Tensor, gemm: Optional[kernels.LinearConfig] = None) -> torch.Tensor:
    """Bias-free ``F.linear``, or the skinny-GEMM Triton kernel where ``gemm`` holds a tuned config, x is
    on CUDA and no gradient is recorded (the kernel has no backward; CPU always takes F.linear)."""
    if gemm is not None and x.is_cuda and not torch.is_grad_enabled():
        return kernels.skinny_linear(x, weight, gemm)
    return F.linear(x, weight)


def fuse_linears(linears: Sequence[nn.Linear]) -> torch.Tensor:
    """Concatenate bias-free Linear weights along the output axis into one tensor, and make each
    module's weight a view into it, so later in-place loads keep the fused copy in sync.

    Call after any dtype/device change: ``.to()`` replaces parameters and breaks the sharing.
    """
    fused = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight = nn.Parameter(fused[start:start + rows], requires_grad=lin.weight.requires_grad)
        start += rows
    return fused


class GemmaDecoderLayer(nn.Module):
    """One pre-norm decoder block's parameters (HF names)."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.width, cfg.rms_eps)
        self.self_attn = GemmaAttentionProjections(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.width, cfg.rms_eps)
        self.mlp = GemmaMLP(cfg.width, cfg.mlp_dim)


class GemmaModel(nn.Module):
    """A Gemma decoder stack: optional ``embed_tokens``, ``layers``, final ``norm``."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.width) if cfg.vocab_size > 0 else None
        self.layers = nn.ModuleList([GemmaDecoderLayer(cfg) for _ in range(cfg.depth)])
        self.norm = RMSNorm(cfg.width, cfg.rms_eps)
        self.gradient_checkpointing = False  # see joint_forward

    def fuse_projections(self) -> None:
        """Inference speed-up: fused q/k/v and gate/up matmuls in every layer (same numbers)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> embeddings [B, L, width] scaled by sqrt(width) (text tokens only)."""
        if self.embed_tokens is None:
            raise RuntimeError("this Gemma has no embedding table (vocab_size = 0)")
        return self.embed_tokens(tokens) * math.sqrt(self.config.width)

    def forward(
        self,
        inputs_embeds: torch.Tensor,  # [B, L, width]
        attn_mask: torch.Tensor,  # bool [B, L, S_past + L]
        positions: torch.Tensor,  # long [B, L]
        past_kv: Optional[KVCache] = None,
        use_cache: bool = False,
        attn_impl: str = "eager",
    ) -> Tuple[torch.Tensor, Optional[KVCache]]:
        """Run the stack alone (PaliGemma LM use). Returns (final-normed hidden [B, L, width], cache).

        With ``use_cache`` the returned cache holds the past keys/values followed by this call's, so
        autoregressive decoding extends it one step at a time.
        """
        (out,), cache = joint_forward([self], [inputs_embeds], attn_mask, positions, past_kv, use_cache,
                                      attn_impl)
        return out, cache


class GemmaForCausalLM(nn.Module):
    """``model`` (a GemmaModel) plus an ``lm_head`` tied to ``model.embed_tokens`` (HF layout)."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("GemmaForCausalLM needs vocab_size > 0")
        self.model = GemmaModel(cfg)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight  # tied, as in PaliGemma

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden [B, L, width] -> vocabulary logits [B, L, vocab] (float32)."""
        return self.lm_head(hidden).float()


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, L, head_dim/2] (float32) for ``apply_rope``; computed once per forward."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (base ** exponent)
    angles = positions.float()[:, None, :, None] * inv_freq
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, L, D] (half-split / rotate_half convention) in float32; returns x's dtype."""
    half = x.shape[-1] // 2
    x32 = x.float()
    x1, x2 = x32[..., :half], x32[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def prepare_mask(attn_mask: torch.Tensor, groups: int, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """Turn a bool mask [B, L, S] into what ``attention`` consumes (once per forward, not per layer).

    eager: bool [B, 1, 1, L, S]; sdpa: additive float bias [B, 1, G*L, S] matching the folded queries;
    triton (suffix over a cached prefix only, see ``kernels.suffix_attention``): uint8 [B, L, S].
    """
    if impl == "eager":
        return attn_mask[:, None, None]
    if impl == "triton":
        return attn_mask.to(torch.uint8).contiguous()
    if impl == "sdpa":
        b, length, s = attn_mask.shape
        bias = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
        bias = bias.masked_fill(~attn_mask, torch.finfo(dtype).min)
        return bias[:, None, None].expand(b, 1, groups, length, s).reshape(b, 1, groups * length, s)
    raise ValueError(f"unknown attention implementation {impl!r} (eager | sdpa | triton)")


def attention(
    q: torch.Tensor,  # [B, H, L, D], already scaled by D^-0.5
    k: torch.Tensor,  # [B, KV, S, D]
    v: torch.Tensor,  # [B, KV, S, D]
    mask: torch.Tensor,  # from prepare_mask
    impl: str = "eager",
) -> torch.Tensor:
    """Grouped-query attention without materialising repeated K/V. Returns [B, H, L, D] in q's dtype.

    The query heads sharing one KV head are folded into the query axis ([B, KV, G*L, D]), so multi-query
    attention (KV = 1) is a single-head attention over more queries.
    ``eager``: fp32 logits and softmax with the reference mask value (exact, any device).
    ``sdpa``: torch's fused kernels with an additive float mask (fp32 accumulation inside the kernel).
    """
    b, h, length, d = q.shape
    kv = k.shape[1]
    groups = h // kv
    qg = q.reshape(b, kv, groups * length, d)
    if impl == "triton":  # the kernel's mask form, where the kernel does not apply: the eager math
        mask, impl = mask.bool()[:, None, None], "eager"
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, scale=1.0)
    else:
        logits = torch.einsum("bkqd,bksd->bkqs", qg.float(), k.float())  # [B, KV, G*L, S]
        logits = logits.view(b, kv, groups, length, -1).masked_fill(~mask, ATTENTION_MASK_VALUE)
        probs = torch.softmax(logits, dim=-1).view(b, kv, groups * length, -1)
        out = torch.einsum("bkqs,bksd->bkqd", probs.to(v.dtype), v)
    return out.reshape(b, h, length, d)


@dataclasses.dataclass
class AttentionPlan:
    """Per-forward attention inputs that depend only on masks and positions: RoPE tables and the mask
    in the implementation's form. pi0 builds the denoising steps' plan once and reuses it every step."""

    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor
    impl: str


def plan_attention(cfg: GemmaConfig, attn_mask: torch.Tensor, positions: torch.Tensor, impl: str,
                   dtype: torch.dtype) -> AttentionPlan:
    """Build an AttentionPlan for ``joint_forward`` (bool mask [B, L, S], positions [B, L])."""
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_base)
    mask = prepare_mask(attn_mask, cfg.num_heads // cfg.num_kv_heads, impl, dtype)
    return AttentionPlan(cos=cos, sin=sin, mask=mask, impl=impl)


def _split_heads(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    b, length, _ = x.shape
    return x.view(b, length, heads, head_dim).transpose(1, 2)


def joint_forward(
    models: Sequence[GemmaModel],
    embeds: Sequence[Optional[torch.Tensor]],  # per stream [B, L_i, width_i] or None (stream absent)
    attn_mask: Optional[torch.Tensor],  # bool [B, sum(L_i), S_past + sum(L_i)]
    positions: Optional[torch.Tensor],  # long [B, sum(L_i)]
    past_kv: Optional[KVCache] = None,
    use_cache: bool = False,
    attn_impl: str = "eager",
    plan: Optional[AttentionPlan] = None,
) -> Tuple[List[Optional[torch.Tensor]], Optional[KVCache]]:
    """Run several Gemma stacks layer by layer with one joint attention per layer.

    Streams are concatenated in the order given. Returns the final-normed output of each present
    stream (None for absent ones) and, with ``use_cache``, the per-layer K/V of past + current tokens.
    All models must share depth, num_heads, num_kv_heads and head_dim. A prebuilt ``plan``
    (``plan_attention``) replaces ``attn_mask``, ``positions`` and ``attn_impl``.
    """
    present = [i for i, e in enumerate(embeds) if e is not None]
    if not present:
        raise ValueError("joint_forward needs at least one stream")
    ref = models[present[0]].config
    for i in present:
        c = models[i].config
        if (c.depth, c.num_heads, c.num_kv_heads, c.head_dim) != (ref.depth, ref.num_heads, ref.num_kv_heads,
                                                                  ref.head_dim):
            raise ValueError("joint experts must share depth, num_heads, num_kv_heads and head_dim")
    lengths = [embeds[i].shape[1] for i in present]
    hidden = {i: embeds[i] for i in present}
    new_cache: List[Tuple[torch.Tensor, torch.Tensor]] = []
    scale = ref.head_dim ** -0.5
    if plan is None:
        plan = plan_attention(ref, attn_mask, positions, attn_impl, embeds[present[0]].dtype)
    cos, sin, mask, attn_impl = plan.cos, plan.sin, plan.mask, plan.impl

    def run_layer(layer_idx: int, *states: torch.Tensor):
        hidden = dict(zip(present, states, strict=True))
        qs, ks, vs = [], [], []
        for i in present:
            layer = models[i].layers[layer_idx]
            x = layer.input_layernorm(hidden[i])
            q, k, v = layer.self_attn.project_qkv(x)
            qs.append(_split_heads(q, ref.num_heads, ref.head_dim))
            ks.append(_split_heads(k, ref.num_kv_heads, ref.head_dim))
            vs.append(_split_heads(v, ref.num_kv_heads, ref.head_dim))
        q = apply_rope(torch.cat(qs, dim=2), cos, sin)
        k = apply_rope(torch.cat(ks, dim=2), cos, sin)
        v = torch.cat(vs, dim=2)
        # Scale q after RoPE in fp32, then cast: the same numbers openpi computes.
        q = (q.float() * scale).to(q.dtype)
        if (attn_impl == "triton" and past_kv is not None and not use_cache and q.is_cuda
                and not torch.is_grad_enabled()):
            # Split-K Triton kernel over [cached prefix, own K/V] without concatenating them -> [B, L, H*D]
            out = torch.ops.pi0.suffix_attention(q, past_kv[layer_idx][0].to(k.dtype),
                                                 past_kv[layer_idx][1].to(v.dtype), k, v, mask)
        else:
            if past_kv is not None:
                k = torch.cat([past_kv[layer_idx][0].to(k.dtype), k], dim=2)
                v = torch.cat([past_kv[layer_idx][1].to(v.dtype), v], dim=2)
            out = attention(q, k, v, mask, attn_impl)  # [B, H, sum(L), D]
            out = out.transpose(1, 2).reshape(out.shape[0], -1, ref.num_heads * ref.head_dim)
        for i, chunk in zip(present, torch.split(out, lengths, dim=1), strict=True):
            layer = models[i].layers[layer_idx]
            h = hidden[i] + layer.self_attn.project_out(chunk.to(hidden[i].dtype))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            hidden[i] = h
        return (*(hidden[i] for i in present), k, v)

    # Gradient checkpointing (training only): recompute each layer in the backward pass instead of
    # keeping its activations; switched on per model with ``GemmaModel.gradient_checkpointing``.
    checkpointed = (torch.is_grad_enabled() and not use_cache and past_kv is None
                    and any(models[i].gradient_checkpointing for i in present))
    for layer_idx in range(ref.depth):
        states = [hidden[i] for i in present]
        if checkpointed:
            *states, k, v = torch.utils.checkpoint.checkpoint(run_layer, layer_idx, *states, use_reentrant=False)
        else:
            *states, k, v = run_layer(layer_idx, *states)
        hidden = dict(zip(present, states, strict=True))
        if use_cache:
            new_cache.append((k, v))
    outputs: List[Optional[torch.Tensor]] = [None] * len(embeds)
    for i in present:
        outputs[i] = models[i].norm(hidden[i])
    return outputs, (tuple(new_cache) if use_cache else None)


# Modules whose parameters stay float32 under the bf16 dtype policy (see Pi0Model.set_inference_dtype).
LayerNormTypes = (RMSNorm, nn.LayerNorm)
