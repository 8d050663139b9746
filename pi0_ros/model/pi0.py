"""pi0: PaliGemma prefix + Gemma action expert, trained and sampled with flow matching.

openpi's conventions (shared/docs/pi0_reference.md): t = 1 is noise and t = 0 is data,
x_t = t * noise + (1 - t) * actions, the network predicts u = noise - actions, and sampling integrates
from t = 1 with 10 Euler steps of dt = -0.1. The prefix (images + prompt) is run once; its per-layer
K/V are cached and every denoising step runs only the expert on the suffix (state + action tokens).

Parameter names equal openpi-PyTorch's (``paligemma_with_expert.paligemma.model.language_model...``,
``paligemma_with_expert.gemma_expert.model...``, ``action_in_proj`` ...), so loading is a plain
state-dict load (see ``checkpoint``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pi0_ros.model.config import Pi0Config
from pi0_ros.model.gemma import AttentionPlan, GemmaModel, KVCache, LayerNormTypes, joint_forward, plan_attention
from pi0_ros.model.paligemma import PaliGemma

# Sin/cos time embedding periods (openpi): geometric from 4 ms to 4 s of "flow time".
TIME_MIN_PERIOD = 4e-3
TIME_MAX_PERIOD = 4.0
# Training time distribution: Beta(1.5, 1) squeezed into [0.001, 1].
TIME_BETA_ALPHA = 1.5


@dataclasses.dataclass
class Pi0Inputs:
    """Model-ready tensors for one batch (what the pre-processing produces)."""

    images: torch.Tensor  # float [B, num_cameras, 3, S, S] in [-1, 1]
    image_masks: torch.Tensor  # bool [B, num_cameras]
    tokens: torch.Tensor  # long [B, max_token_len]
    token_masks: torch.Tensor  # bool [B, max_token_len]
    state: torch.Tensor  # float [B, action_dim], normalized and zero-padded

    def to(self, device: torch.device | str) -> "Pi0Inputs":
        """Copy every tensor to ``device``."""
        return Pi0Inputs(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


@dataclasses.dataclass
class PrefixCache:
    """What every denoising step needs from the observation: prefix K/V, prefix validity, state."""

    kv: KVCache
    pad_masks: torch.Tensor  # bool [B, P]
    state: torch.Tensor  # float [B, action_dim]
    suffix_plan: Optional[AttentionPlan] = None  # masks/RoPE of the suffix: the same at every step


def make_attn_mask(pad_masks: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """Block attention mask: i may attend j iff cumsum(ar)[j] <= cumsum(ar)[i] and both are valid.

    pad_masks: bool [B, N]; ar_mask: [N] or [B, N], 1 where a token starts a new block.
    Returns bool [B, N, N].
    """
    ar = ar_mask.to(torch.int64).expand(pad_masks.shape)
    blocks = torch.cumsum(ar, dim=1)
    allowed = blocks[:, None, :] <= blocks[:, :, None]
    valid = pad_masks[:, None, :] & pad_masks[:, :, None]
    return allowed & valid


def sinusoidal_time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t [B] -> [B, dim] = [sin(2 pi t / p), cos(2 pi t / p)], periods p geometric in [4e-3, 4]."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = TIME_MIN_PERIOD * (TIME_MAX_PERIOD / TIME_MIN_PERIOD) ** fraction
    angle = t.to(torch.float64)[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(torch.float32)


class GemmaExpert(nn.Module):
    """Holds the expert under the HF name ``gemma_expert.model`` (its lm_head is never used)."""

    def __init__(self, model: GemmaModel):
        super().__init__()
        self.model = model


class PaliGemmaWithExpert(nn.Module):
    """``paligemma`` (vision + LM) and ``gemma_expert``, the two streams of the joint attention."""

    def __init__(self, cfg: Pi0Config):
        super().__init__()
        self.paligemma = PaliGemma(cfg.vision, cfg.llm)
        self.gemma_expert = GemmaExpert(GemmaModel(cfg.expert))

    @property
    def experts(self) -> Tuple[GemmaModel, GemmaModel]:
        """(language model, action expert) in joint-sequence order."""
        return self.paligemma.model.language_model, self.gemma_expert.model


class Pi0Model(nn.Module):
    """The pi0 network: ``embed_prefix``, ``embed_suffix``, ``compute_loss``, ``sample_actions``."""

    def __init__(self, cfg: Pi0Config):
        super().__init__()
        self.config = cfg
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg)
        ew = cfg.expert.width
        self.state_proj = nn.Linear(cfg.action_dim, ew)
        self.action_in_proj = nn.Linear(cfg.action_dim, ew)
        self.action_time_mlp_in = nn.Linear(2 * ew, ew)
        self.action_time_mlp_out = nn.Linear(ew, ew)
        self.action_out_proj = nn.Linear(ew, cfg.action_dim)
        self.attn_impl = "eager"
        self.suffix_attn_impl = "eager"
        self._kernel_tuning: Dict[str, object] = {}  # enable_gpu_kernels' measured choices, per process

    # ----------------------------------------------------------------------------------- dtype / impl
    def set_inference_dtype(self, dtype: torch.dtype) -> "Pi0Model":
        """Cast to ``dtype`` (bf16 on GPU) keeping norms and the velocity head (action_out_proj) in fp32."""
        self.to(dtype)
        for module in self.modules():
            if isinstance(module, LayerNormTypes):
                module.float()
        self.action_out_proj.float()
        return self

    def fuse_projections(self) -> "Pi0Model":
        """Fused q/k/v and gate/up matmuls in both Gemma stacks (inference; call after dtype/device moves)."""
        for gemma in self.paligemma_with_expert.experts:
            gemma.fuse_projections()
        return self

    def set_attention_impl(self, impl: str, suffix_impl: Optional[str] = None) -> "Pi0Model":
        """``eager`` (fp32 logits/softmax, exact) or ``sdpa`` (fused kernels) for the vision tower and
        the prefix; ``suffix_impl`` (default: the same) for the denoising steps, whose 51 queries leave
        a fused kernel with too few blocks to fill a GPU, so matmul-based eager attention wins there.
        ``suffix_impl="triton"``: the split-K Triton kernel (``kernels.suffix_attention``) on CUDA without
        autograd, the eager math elsewhere (normally set through ``enable_gpu_kernels``)."""
        for name in (impl, suffix_impl or impl):
            if name not in ("eager", "sdpa", "triton") or (name == "triton" and name == impl):
                raise ValueError(f"unknown attention implementation {name!r}")
        self.attn_impl = impl
        self.suffix_attn_impl = suffix_impl or impl
        self.paligemma_with_expert.paligemma.model.vision_tower.set_attention_impl(impl)
        return self

    def enable_gpu_kernels(self, attention: bool = True, gemm: bool = False) -> List[str]:
        """CUDA inference speed-ups of the denoising steps (Triton; see ``kernels``): the split-K suffix
        attention and, with ``gemm``, for each action-expert projection shape the skinny GEMM where it
        beats cuBLAS on this device (on the H100 cuBLAS won all four shapes, 2026-11-24, so it is off).
        Timed once per process on the device (seconds to tens of seconds, mostly Triton
        compilation); call after ``set_inference_dtype``, ``.cuda()`` and ``fuse_projections``, before
        torch.compile / CUDA-graph capture. Returns the tuning log. Gradients and CPU tensors keep the
        reference path; ``disable_gpu_kernels`` undoes this."""
        from pi0_ros.model import kernels

        if not kernels.triton_available():
            raise RuntimeError("enable_gpu_kernels needs a CUDA device and triton")
        expert = self.paligemma_with_expert.gemma_expert.model
        ecfg, vcfg = self.config.expert, self.config.vision
        rows = 1 + self.config.action_horizon
        device, dtype = expert.layers[0].mlp.up_proj.weight.device, self._tower_dtype
        log: List[str] = []
        if attention:
            if "attention" not in self._kernel_tuning:
                prefix = self.config.num_cameras * (vcfg.image_size // vcfg.patch_size) ** 2 + self.config.max_token_len
                self._kernel_tuning["attention"] = kernels.tune_attention(
                    1, ecfg.num_heads, ecfg.num_kv_heads, rows, prefix, ecfg.head_dim, dtype, device, log)
            kernels.ATTENTION_CONFIG = self._kernel_tuning["attention"]
            self.suffix_attn_impl = "triton"
        if gemm:
            layer = expert.layers[0]
            if layer.self_attn.qkv_weight is None or layer.mlp.gate_up_weight is None:
                raise RuntimeError("enable_gpu_kernels(gemm=True) needs fuse_projections() first")
            shapes = {"qkv": tuple(layer.self_attn.qkv_weight.shape), "o": tuple(layer.self_attn.o_proj.weight.shape),
                      "gate_up": tuple(layer.mlp.gate_up_weight.shape),
                      "down": tuple(layer.mlp.down_proj.weight.shape)}
            for name, (n, k) in shapes.items():
                if name not in self._kernel_tuning:
                    self._kernel_tuning[name] = kernels.tune_linear(rows, n, k, dtype, device, log)
            for layer in expert.layers:
                layer.self_attn.qkv_gemm = self._kernel_tuning["qkv"]
                layer.self_attn.o_gemm = self._kernel_tuning["o"]
                layer.mlp.gate_up_gemm = self._kernel_tuning["gate_up"]
                layer.mlp.down_gemm = self._kernel_tuning["down"]
        return log

    def disable_gpu_kernels(self) -> "Pi0Model":
        """Back to the reference kernels for the denoising steps (eager suffix attention, cuBLAS)."""
        if self.suffix_attn_impl == "triton":
            self.suffix_attn_impl = "eager"
        for layer in self.paligemma_with_expert.gemma_expert.model.layers:
            layer.self_attn.qkv_gemm = layer.self_attn.o_gemm = None
            layer.mlp.gate_up_gemm = layer.mlp.down_gemm = None
        return self

    @property
    def _tower_dtype(self) -> torch.dtype:
        return self.paligemma_with_expert.gemma_expert.model.layers[0].mlp.up_proj.weight.dtype

    # ------------------------------------------------------------------------------------- embedding
    def embed_prefix(self, inputs: Pi0Inputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (in camera order) then prompt -> (embs [B, P, W_lm], pad [B, P], ar [P]); ar all 0."""
        images = inputs.images  # [B, N, 3, S, S]
        b, n = images.shape[:2]
        paligemma = self.paligemma_with_expert.paligemma
        image_tokens = paligemma.embed_image(images.flatten(0, 1))  # [B*N, T, W]
        per_image = image_tokens.shape[1]
        image_tokens = image_tokens.reshape(b, n * per_image, -1)
        image_pad = inputs.image_masks[:, :, None].expand(b, n, per_image).reshape(b, n * per_image)
        text_tokens = paligemma.embed_text(inputs.tokens).to(image_tokens.dtype)  # [B, L, W]
        embs = torch.cat([image_tokens, text_tokens], dim=1)
        pad = torch.cat([image_pad, inputs.token_masks], dim=1)
        ar = torch.zeros(embs.shape[1], dtype=torch.bool, device=embs.device)
        return embs, pad, ar

    def embed_suffix(
        self, state: torch.Tensor, noisy_actions: torch.Tensor, time: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """state [B, A], x_t [B, H, A], t [B] -> (embs [B, 1+H, W_e], pad [B, 1+H], ar [1+H]).

        ar: the state token starts a block, the first action token starts another, the rest join it.
        """
        b, horizon, _ = noisy_actions.shape
        pad, ar = self._suffix_layout(b, noisy_actions.device)
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
        action_emb = self.action_in_proj(noisy_actions.to(self.action_in_proj.weight.dtype))
        time_emb = sinusoidal_time_embedding(time, action_emb.shape[-1]).to(action_emb.dtype)
        time_emb = time_emb[:, None, :].expand(b, horizon, -1)
        action_time = self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))
        action_time = self.action_time_mlp_out(F.silu(action_time))
        embs = torch.cat([state_emb, action_time], dim=1).to(self._tower_dtype)
        return embs, pad, ar

    def _suffix_layout(self, batch: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Suffix pad mask [B, 1+H] (all valid) and ar flags [1+H]: state and first action start blocks."""
        length = 1 + self.config.action_horizon
        pad = torch.ones(batch, length, dtype=torch.bool, device=device)
        ar = torch.zeros(length, dtype=torch.bool, device=device)
        ar[:2] = True
        return pad, ar

    def _velocity(self, suffix_out: torch.Tensor) -> torch.Tensor:
        horizon = self.config.action_horizon
        head = self.action_out_proj
        return head(suffix_out[:, -horizon:].to(head.weight.dtype)).float()

    # ------------------------------------------------------------------------------ full (uncached)
    def forward_velocity(self, inputs: Pi0Inputs, x_t: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Velocity v(x_t, t) [B, H, A] from ONE joint pass over prefix + suffix (training path)."""
        prefix, prefix_pad, prefix_ar = self.embed_prefix(inputs)
        suffix, suffix_pad, suffix_ar = self.embed_suffix(inputs.state, x_t, time)
        pad = torch.cat([prefix_pad, suffix_pad], dim=1)
        ar = torch.cat([prefix_ar, suffix_ar], dim=0)
        mask = make_attn_mask(pad, ar)
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        (_, suffix_out), _ = joint_forward(self.paligemma_with_expert.experts, [prefix, suffix], mask,
                                           positions, attn_impl=self.attn_impl)
        return self._velocity(suffix_out)

    def compute_loss(
        self,
        inputs: Pi0Inputs,
        actions: torch.Tensor,  # [B, H, A], normalized and padded
        noise: Optional[torch.Tensor] = None,
        time: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Per-element flow-matching squared error [B, H, A]; take ``.mean()`` for openpi's loss."""
        actions = actions.float()
        if noise is None:
            noise = torch.randn(actions.shape, generator=generator, device=actions.device)
        if time is None:
            # Beta(a, 1) by inverse CDF (u ** (1/a)) so a torch.Generator controls it.
            u = torch.rand(actions.shape[0], generator=generator, device=actions.device)
            time = u ** (1.0 / TIME_BETA_ALPHA) * 0.999 + 0.001
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        v_t = self.forward_velocity(inputs, x_t, time)
        return (target - v_t) ** 2

    # ---------------------------------------------------------------------------------- cached path
    def prefill(self, inputs: Pi0Inputs) -> PrefixCache:
        """Run the prefix once through the language model and keep every layer's K/V."""
        prefix, prefix_pad, prefix_ar = self.embed_prefix(inputs)
        mask = make_attn_mask(prefix_pad, prefix_ar)
        positions = torch.cumsum(prefix_pad.to(torch.int64), dim=1) - 1
        _, kv = joint_forward(self.paligemma_with_expert.experts, [prefix, None], mask, positions,
                              use_cache=True, attn_impl=self.attn_impl)
        cache = PrefixCache(kv=kv, pad_masks=prefix_pad, state=inputs.state)
        cache.suffix_plan = self._suffix_plan(cache)
        return cache

    def _suffix_plan(self, cache: PrefixCache) -> AttentionPlan:
        b = cache.pad_masks.shape[0]
        suffix_pad, suffix_ar = self._suffix_layout(b, cache.pad_masks.device)
        s = suffix_pad.shape[1]
        prefix_part = cache.pad_masks[:, None, :].expand(b, s, -1)
        mask = torch.cat([prefix_part, make_attn_mask(suffix_pad, suffix_ar)], dim=2)
        offset = cache.pad_masks.sum(dim=1, keepdim=True)
        positions = offset + torch.cumsum(suffix_pad.to(torch.int64), dim=1) - 1
        return plan_attention(self.config.expert, mask, positions, self.suffix_attn_impl, self._tower_dtype)

    def denoise_step(self, x_t: torch.Tensor, time: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """One velocity evaluation v(x_t, t) [B, H, A] with the suffix attending to the cached prefix.

        ``time`` is a tensor [B] (or a 0-d tensor, broadcast). The cache is read, never extended; its
        suffix plan (masks, positions, RoPE) is built once by ``prefill`` and reused by every step.
        """
        b = x_t.shape[0]
        time = time.to(torch.float32).expand(b) if time.dim() == 0 else time
        suffix, _, _ = self.embed_suffix(cache.state, x_t, time)
        plan = cache.suffix_plan
        if plan is None or plan.impl != self.suffix_attn_impl:
            plan = self._suffix_plan(cache)
        (_, suffix_out), _ = joint_forward(self.paligemma_with_expert.experts, [None, suffix], None, None,
                                           past_kv=cache.kv, plan=plan)
        return self._velocity(suffix_out)

    def sample_noise(self, batch: int, generator: Optional[torch.Generator] = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """Standard Gaussian starting point [B, H, A] (float32)."""
        shape = (batch, self.config.action_horizon, self.config.action_dim)
        return torch.randn(shape, generator=generator, device=device)

    @torch.no_grad()
    def sample_actions(
        self,
        inputs: Pi0Inputs,
        noise: Optional[torch.Tensor] = None,
        num_steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Integrate the flow from noise (t = 1) to actions (t = 0): normalized padded actions [B, H, A]."""
        num_steps = num_steps or self.config.num_steps
        if noise is None:
            noise = self.sample_noise(inputs.state.shape[0], generator, inputs.state.device)
        expected = (inputs.state.shape[0], self.config.action_horizon, self.config.action_dim)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        cache = self.prefill(inputs)
        return self.denoise(x_t=noise.to(torch.float32), cache=cache, num_steps=num_steps)

    def denoise(self, x_t: torch.Tensor, cache: PrefixCache, num_steps: int) -> torch.Tensor:
        """The Euler loop from t = 1 to t = 0 over a prefilled cache (no host-device copies inside, so
        it can be captured in a CUDA graph)."""
        b = x_t.shape[0]
        dt = np.float32(-1.0 / num_steps)
        # Accumulate t in fp32 like openpi (1.0, 0.9, ...), so the evaluated times match bit for bit.
        time = np.float32(1.0)
        for _ in range(num_steps):
            t = torch.full((b,), float(time), dtype=torch.float32, device=x_t.device)
            v_t = self.denoise_step(x_t, t, cache)
            x_t = x_t + float(dt) * v_t
            time = np.float32(time + dt)
        return x_t
