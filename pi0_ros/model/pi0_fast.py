"""pi0-FAST: PaliGemma (SigLIP + Gemma, no action expert) predicting FAST action tokens autoregressively.

Sequence (openpi): image tokens, then ``BOS "Task: <text>, State: <ints>;\\n"`` (the prefix, attention
bidirectional inside it), then ``"Action: " <action tokens> "|" EOS`` (the postfix, causal). Training is
next-token cross-entropy on the postfix only. Inference runs the prefix plus the ``"Action: "`` tokens
once (teacher-forcing the part every answer starts with), then decodes greedily with a K/V cache until
the first token that is not an action token (normally ``"|"``), or ``max_decoding_steps``.

FAST token ``t`` lives at vocabulary id ``vocab_size - 1 - FAST_SKIP_TOKENS - t`` (257023 - t for
PaliGemma): the top of the vocabulary, skipping its last 128 special tokens.

Parameters sit under ``paligemma_with_expert.paligemma`` like pi0's, so openpi/LeRobot-style PaliGemma
weights load through ``pi0_ros.model.checkpoint.load_weights`` unchanged.

The decoder cache is static (``StaticKVCache``: fixed length, written in place at a tensor index), so a
decode step has fixed shapes and can be captured in a CUDA graph (``GraphedDecoder``). The fast path for
deployment (fused projections, graphed prefill and self-advancing graphed steps, restricted LM head) is
``pi0_ros.model.pi0_fast_decode.FastGenerator``; ``generate`` here is the reference it is tested against.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from pi0_ros.model.fast_grammar import ChunkLengthGrammar
from pi0_ros.model.gemma import (
    GemmaConfig,
    GemmaModel,
    LayerNormTypes,
    apply_rope,
    attention,
    get_gemma_config,
    joint_forward,
    prepare_mask,
    rope_tables,
)
from pi0_ros.model.paligemma import PaliGemma
from pi0_ros.model.pi0 import make_attn_mask
from pi0_ros.model.siglip import SIGLIP_SO400M_14, SiglipConfig

# PaliGemma's last 128 ids are special tokens FAST must not use.
FAST_SKIP_TOKENS = 128


@dataclasses.dataclass(frozen=True)
class Pi0FastConfig:
    """Network shape and token budgets of pi0-FAST.

    ``action_dim``/``action_horizon``: the padded chunk the FAST tokenizer encodes. ``max_token_len``:
    prompt budget (prefix + "Action: ") at inference. ``fast_vocab_size``: FAST ids that get a slot.
    """

    vision: SiglipConfig
    llm: GemmaConfig
    num_cameras: int = 3
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 250
    max_decoding_steps: int = 256
    fast_vocab_size: int = 2048

    def __post_init__(self) -> None:
        if self.llm.vocab_size < self.fast_vocab_size + FAST_SKIP_TOKENS + 1:
            raise ValueError("llm vocab is too small for the FAST tokens plus the skipped special tokens")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")

    @property
    def image_size(self) -> int:
        """Side of the square model input image."""
        return self.vision.image_size

    @property
    def first_action_id(self) -> int:
        """Lowest vocabulary id an action token can have (that of FAST token fast_vocab_size - 1)."""
        return fast_to_vocab(self.fast_vocab_size - 1, self.llm.vocab_size)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Pi0FastConfig":
        """Inverse of ``to_dict``."""
        data = dict(data)
        return cls(vision=SiglipConfig(**data.pop("vision")), llm=GemmaConfig(**data.pop("llm")), **data)


def fast_to_vocab(fast_ids: Any, vocab_size: int) -> Any:
    """FAST token id(s) -> language-model vocabulary id(s) (ints, numpy arrays or tensors)."""
    return vocab_size - 1 - FAST_SKIP_TOKENS - fast_ids


def vocab_to_fast(vocab_ids: Any, vocab_size: int) -> Any:
    """Inverse of :func:`fast_to_vocab` (the map is its own inverse up to the offset)."""
    return vocab_size - 1 - FAST_SKIP_TOKENS - vocab_ids


def _pi0_fast() -> Pi0FastConfig:
    return Pi0FastConfig(vision=SIGLIP_SO400M_14, llm=get_gemma_config("gemma_2b"))


def _pi0_fast_tiny() -> Pi0FastConfig:
    # Simulation on CPU: the same 224 px input, 28 px patches, narrow shallow towers.
    return Pi0FastConfig(
        vision=SiglipConfig(image_size=224, patch_size=28, width=128, depth=4, mlp_dim=256, num_heads=4),
        llm=GemmaConfig(width=128, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32,
                        vocab_size=2048),
        action_dim=16, action_horizon=50, max_token_len=160, max_decoding_steps=256, fast_vocab_size=1024,
    )


def _pi0_fast_small() -> Pi0FastConfig:
    # pi0_fast_tiny's vision tower with a language model twice as wide and 1.5x as deep (with no action
    # expert, every action token comes from the language model). On the simulator's touch skill it overfit
    # 101 unevenly recorded demonstrations, but on 200 evenly recorded ones it beat tiny by far (BENCHMARKS.md).
    tiny = _pi0_fast_tiny()
    return dataclasses.replace(tiny, llm=GemmaConfig(width=256, depth=6, mlp_dim=1024, num_heads=4, num_kv_heads=1,
                                                     head_dim=64, vocab_size=2048))


def _pi0_fast_test() -> Pi0FastConfig:
    # Unit tests: text ids below ~320, FAST ids in the 256 slots above them.
    return Pi0FastConfig(
        vision=SiglipConfig(image_size=28, patch_size=14, width=32, depth=2, mlp_dim=64, num_heads=2),
        llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16,
                        vocab_size=320 + 256 + FAST_SKIP_TOKENS),
        action_dim=4, action_horizon=10, max_token_len=64, max_decoding_steps=48, fast_vocab_size=256,
    )


PI0_FAST_CONFIGS = {"pi0_fast": _pi0_fast, "pi0_fast_tiny": _pi0_fast_tiny, "pi0_fast_small": _pi0_fast_small,
                    "pi0_fast_test": _pi0_fast_test}


def get_pi0_fast_config(name: str, **overrides: Any) -> Pi0FastConfig:
    """Named configuration with optional top-level overrides (e.g. ``action_horizon=10``)."""
    if name not in PI0_FAST_CONFIGS:
        raise KeyError(f"unknown pi0-FAST config {name!r}; known: {sorted(PI0_FAST_CONFIGS)}")
    return dataclasses.replace(PI0_FAST_CONFIGS[name](), **overrides)


@dataclasses.dataclass
class Pi0FastInputs:
    """Model-ready tensors for one batch. Tokens are right-padded; ``token_ar`` 1 marks causal tokens."""

    images: torch.Tensor  # float [B, num_cameras, 3, S, S] in [-1, 1]
    image_masks: torch.Tensor  # bool [B, num_cameras]
    tokens: torch.Tensor  # long [B, L]
    token_masks: torch.Tensor  # bool [B, L]
    token_ar: torch.Tensor  # bool [B, L]: 0 prefix (bidirectional), 1 postfix (causal)
    loss_masks: torch.Tensor  # bool [B, L]: tokens the loss predicts

    def trimmed(self) -> "Pi0FastInputs":
        """The same inputs without the token columns that are padding in every row (right padding,
        so nothing a valid token attends to or is positioned by changes). Syncs with the device;
        not for CUDA-graph paths, which need the fixed width."""
        valid = self.token_masks.any(dim=0)
        width = int(valid.nonzero().max()) + 1 if bool(valid.any()) else 1
        if width == self.tokens.shape[1]:
            return self
        return dataclasses.replace(self, tokens=self.tokens[:, :width], token_masks=self.token_masks[:, :width],
                                   token_ar=self.token_ar[:, :width], loss_masks=self.loss_masks[:, :width])

    def to(self, device: torch.device | str) -> "Pi0FastInputs":
        """Copy every tensor to ``device``."""
        return Pi0FastInputs(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


@dataclasses.dataclass
class StaticKVCache:
    """Per-layer K/V of fixed length ``S``, written in place; ``key_valid`` [B, S] says which are real."""

    keys: List[torch.Tensor]  # each [B, KV, S, D]
    values: List[torch.Tensor]
    key_valid: torch.Tensor  # bool [B, S]

    @classmethod
    def allocate(cls, cfg: GemmaConfig, batch: int, length: int, dtype: torch.dtype,
                 device: torch.device | str) -> "StaticKVCache":
        """Zeroed cache for ``batch`` sequences of up to ``length`` tokens."""
        shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
        return cls(keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.depth)],
                   values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.depth)],
                   key_valid=torch.zeros(batch, length, dtype=torch.bool, device=device))

    @property
    def batch(self) -> int:
        """Sequences held."""
        return self.key_valid.shape[0]

    @property
    def length(self) -> int:
        """Token slots per sequence."""
        return self.key_valid.shape[1]


class _PaliGemmaOnly(nn.Module):
    """Holds ``paligemma`` under pi0's attribute path, so parameter names match openpi's."""

    def __init__(self, cfg: Pi0FastConfig):
        super().__init__()
        self.paligemma = PaliGemma(cfg.vision, cfg.llm)


class Pi0FastModel(nn.Module):
    """pi0-FAST network: ``embed_inputs``, ``compute_loss``, ``prefill``, ``decode_step``, ``generate``."""

    def __init__(self, cfg: Pi0FastConfig):
        super().__init__()
        self.config = cfg
        self.paligemma_with_expert = _PaliGemmaOnly(cfg)
        self.attn_impl = "eager"

    @property
    def paligemma(self) -> PaliGemma:
        """The PaliGemma (vision tower, projector, language model, LM head)."""
        return self.paligemma_with_expert.paligemma

    @property
    def language_model(self) -> GemmaModel:
        """The Gemma decoder."""
        return self.paligemma.model.language_model

    def set_inference_dtype(self, dtype: torch.dtype) -> "Pi0FastModel":
        """Cast the towers to ``dtype`` (bf16 on GPU), norms stay float32 (pi0's dtype policy)."""
        self.paligemma_with_expert.to(dtype)
        for module in self.paligemma_with_expert.modules():
            if isinstance(module, LayerNormTypes):
                module.float()
        return self

    def set_attention_impl(self, impl: str) -> "Pi0FastModel":
        """``eager`` (fp32 logits/softmax) or ``sdpa`` (fused kernels) for every attention."""
        if impl not in ("eager", "sdpa"):
            raise ValueError(f"unknown attention implementation {impl!r}")
        self.attn_impl = impl
        self.paligemma.model.vision_tower.set_attention_impl(impl)
        return self

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the language model's matmuls."""
        return self.language_model.layers[0].mlp.up_proj.weight.dtype

    # ------------------------------------------------------------------------------- embedding
    def embed_inputs(self, inputs: Pi0FastInputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images then text -> (embs [B, N, W], pad [B, N], ar [B, N]); images are prefix (ar 0)."""
        images = inputs.images
        b, n = images.shape[:2]
        image_tokens = self.paligemma.embed_image(images.flatten(0, 1))
        per_image = image_tokens.shape[1]
        image_tokens = image_tokens.reshape(b, n * per_image, -1)
        image_pad = inputs.image_masks[:, :, None].expand(b, n, per_image).reshape(b, n * per_image)
        text = self.paligemma.embed_text(inputs.tokens).to(image_tokens.dtype)
        embs = torch.cat([image_tokens, text], dim=1).to(self.dtype)
        pad = torch.cat([image_pad, inputs.token_masks], dim=1)
        ar = torch.cat([torch.zeros_like(image_pad), inputs.token_ar.to(torch.bool)], dim=1)
        return embs, pad, ar

    # ---------------------------------------------------------------------- training (uncached)
    def forward_hidden(self, inputs: Pi0FastInputs) -> Tuple[torch.Tensor, int]:
        """One uncached pass; returns (final-normed hidden [B, N, W], number of image tokens)."""
        embs, pad, ar = self.embed_inputs(inputs)
        mask = make_attn_mask(pad, ar)
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        (hidden,), _ = joint_forward([self.language_model], [embs], mask, positions, attn_impl=self.attn_impl)
        return hidden, embs.shape[1] - inputs.tokens.shape[1]

    def compute_loss(self, inputs: Pi0FastInputs) -> torch.Tensor:
        """Per-sample mean cross-entropy [B] over the tokens flagged in ``loss_masks``.

        Token i is predicted from position i - 1; only those positions go through the LM head.
        Columns that are padding in every row are dropped first (training sequences are padded to
        the prompt budget plus the whole decoding budget, mostly padding).
        """
        inputs = inputs.trimmed()
        hidden, num_image = self.forward_hidden(inputs)
        text_hidden = hidden[:, num_image:]
        targets = inputs.tokens[:, 1:]
        predict = inputs.loss_masks[:, 1:] & inputs.token_masks[:, 1:]
        logits = self.paligemma.logits(text_hidden[:, :-1][predict])  # [M, V]
        per_token = F.cross_entropy(logits, targets[predict], reduction="none")
        losses = torch.zeros(predict.shape, dtype=per_token.dtype, device=per_token.device)
        losses[predict] = per_token
        return losses.sum(dim=1) / predict.sum(dim=1).clamp(min=1)

    # ----------------------------------------------------------------------- cached inference
    def _cached_layers(self, x: torch.Tensor, positions: torch.Tensor, write_index: torch.Tensor,
                       cache: StaticKVCache) -> torch.Tensor:
        """Run the decoder on x [B, L, W] whose K/V go to cache slots ``write_index`` [L].

        Keys attend to every cache slot that is valid (``cache.key_valid`` after this call's slots are
        marked), which for one new token is exactly causal attention over the past.
        """
        cfg = self.language_model.config
        mask = cache.key_valid[:, None, :].expand(x.shape[0], x.shape[1], -1)
        mask = mask & self._within_call_causal(write_index, cache.length)[None]
        mask = prepare_mask(mask, cfg.num_heads // cfg.num_kv_heads, self.attn_impl, x.dtype)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_base)
        scale = cfg.head_dim ** -0.5
        for i, layer in enumerate(self.language_model.layers):
            h = layer.input_layernorm(x)
            b, length, _ = h.shape
            q = layer.self_attn.q_proj(h).view(b, length, cfg.num_heads, cfg.head_dim).transpose(1, 2)
            k = layer.self_attn.k_proj(h).view(b, length, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
            v = layer.self_attn.v_proj(h).view(b, length, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
            q = (apply_rope(q, cos, sin).float() * scale).to(q.dtype)
            cache.keys[i].index_copy_(2, write_index, apply_rope(k, cos, sin).to(cache.keys[i].dtype))
            cache.values[i].index_copy_(2, write_index, v.to(cache.values[i].dtype))
            out = attention(q, cache.keys[i].to(q.dtype), cache.values[i].to(q.dtype), mask, self.attn_impl)
            out = out.transpose(1, 2).reshape(b, length, cfg.num_heads * cfg.head_dim)
            x = x + layer.self_attn.o_proj(out.to(x.dtype))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.language_model.norm(x)

    @staticmethod
    def _within_call_causal(write_index: torch.Tensor, length: int) -> torch.Tensor:
        """[L, S]: query j may not see the slots this call writes after its own (ascending, contiguous
        ``write_index``). Pure tensor ops, no host sync, so it can be captured in a CUDA graph."""
        slots = torch.arange(length, device=write_index.device)[None, :]
        later = (slots > write_index[:, None]) & (slots <= write_index[-1])
        return ~later

    def prefill(self, inputs: Pi0FastInputs, cache: StaticKVCache) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fill cache slots [0, N) with the prompt.

        Returns (float32 logits [B, V] of each row's last valid token, valid tokens per row [B] = the
        RoPE position of the first generated token).

        The prompt's own attention (bidirectional prefix, causal postfix) is applied exactly: it is
        one uncached pass whose K/V are copied into the cache.
        """
        last_hidden, num_valid = self.prefill_hidden(inputs, cache)
        return self.paligemma.logits(last_hidden), num_valid

    def prefill_hidden(self, inputs: Pi0FastInputs, cache: StaticKVCache) -> Tuple[torch.Tensor, torch.Tensor]:
        """``prefill`` without the LM head: (final-normed hidden [B, W] of each row's last valid token,
        valid tokens per row [B]). No host sync, so it can be captured in a CUDA graph."""
        embs, pad, ar = self.embed_inputs(inputs)
        b, n = pad.shape
        if b != cache.batch or n > cache.length:
            raise ValueError(f"cache holds {cache.batch} x {cache.length} slots; prompt is {b} x {n}")
        mask = make_attn_mask(pad, ar)
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        (hidden,), kv = joint_forward([self.language_model], [embs], mask, positions, use_cache=True,
                                      attn_impl=self.attn_impl)
        for i, (k, v) in enumerate(kv):
            cache.keys[i][:, :, :n].copy_(k)
            cache.values[i][:, :, :n].copy_(v)
        cache.key_valid.zero_()
        cache.key_valid[:, :n] = pad
        num_valid = pad.sum(dim=1)
        # The last valid token of each row (rows may have pads in the middle: masked cameras, text pad).
        last = torch.argmax(torch.where(pad, positions, -1), dim=1)
        return hidden[torch.arange(b, device=hidden.device), last], num_valid

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, write_index: torch.Tensor,
                    cache: StaticKVCache) -> torch.Tensor:
        """Append one token per row (tokens [B], RoPE positions [B]) at slot ``write_index`` ([1] long).

        Returns the next-token logits [B, V] (float32). Shapes never change, so it can be graphed.
        """
        cache.key_valid.index_fill_(1, write_index, True)
        x = self.paligemma.embed_text(tokens[:, None]).to(self.dtype)
        hidden = self._cached_layers(x, positions[:, None], write_index, cache)
        return self.paligemma.logits(hidden[:, 0])

    def is_action_token(self, ids: torch.Tensor) -> torch.Tensor:
        """True where a vocabulary id is one of the FAST action tokens."""
        top = fast_to_vocab(0, self.config.llm.vocab_size)
        return (ids >= self.config.first_action_id) & (ids <= top)

    @torch.no_grad()
    def generate(self, inputs: Pi0FastInputs, max_new_tokens: Optional[int] = None,
                 cache: Optional[StaticKVCache] = None, stop_at_non_action: bool = True,
                 step_fn: Optional[Any] = None, check_every: int = 1,
                 grammar: Optional[ChunkLengthGrammar] = None) -> torch.Tensor:
        """Greedy decoding; returns the generated ids [B, n] (n <= max_new_tokens).

        Each row stops at its first non-action token (kept in the output; later columns are
        meaningless for that row); decoding ends when all rows stopped (checked every ``check_every``
        steps, a host sync) or after ``max_new_tokens``. ``step_fn`` replaces ``decode_step`` (a
        ``GraphedDecoder`` bound to ``cache``). ``grammar``: pick the argmax only among the ids a
        ``ChunkLengthGrammar`` allows, so every row ends with a whole chunk and an end marker.
        """
        max_new = max_new_tokens or self.config.max_decoding_steps
        b = inputs.tokens.shape[0]
        device = inputs.tokens.device
        if cache is None:
            prompt_len = inputs.images.shape[1] * self.config.vision.num_patches + inputs.tokens.shape[1]
            cache = StaticKVCache.allocate(self.language_model.config, b, prompt_len + max_new, self.dtype, device)
        logits, num_valid = self.prefill(inputs, cache)
        prompt_slots = inputs.images.shape[1] * self.config.vision.num_patches + inputs.tokens.shape[1]
        if prompt_slots + max_new > cache.length:
            raise ValueError(f"cache of {cache.length} slots is too short for {prompt_slots} + {max_new}")
        step = step_fn or self.decode_step
        remaining = None
        if grammar is not None:
            if max_new < grammar.budget + 1:
                raise ValueError(f"max_new_tokens {max_new} cannot hold a chunk of {grammar.budget} coefficients "
                                 "and its end marker")
            grammar = grammar.to(device)
            remaining = torch.full((b,), grammar.budget, dtype=torch.long, device=device)
            logits = grammar.mask_logits(logits, remaining)
        token = torch.argmax(logits, dim=-1)
        if remaining is not None:
            remaining = grammar.advance(remaining, token)
        out = [token]
        done = ~self.is_action_token(token)
        # Slot indices live on the device up front: a fresh host->device copy per step would stall.
        write_slots = torch.arange(prompt_slots, prompt_slots + max_new, device=device)
        for k in range(max_new - 1):
            if stop_at_non_action and (k + 1) % check_every == 0 and bool(done.all()):
                break
            logits = step(token, num_valid + k, write_slots[k:k + 1], cache)
            if remaining is not None:
                # A finished row keeps stepping (fixed batch shapes); it may only repeat an end marker.
                logits = grammar.mask_logits(logits, remaining)
            token = torch.argmax(logits, dim=-1)
            if remaining is not None:
                remaining = grammar.advance(remaining, token)
            out.append(token)
            done = done | ~self.is_action_token(token)
        return torch.stack(out, dim=1)


class GraphedDecoder:
    """``decode_step`` captured in a CUDA graph for one cache (fixed batch and length).

    Call it like ``decode_step``; inputs are copied into static buffers and the graph replayed. The
    capture runs warm-up steps that write cache slot 0, so build it before ``prefill`` fills the cache.
    """

    def __init__(self, model: Pi0FastModel, cache: StaticKVCache, warmup: int = 2):
        device = cache.key_valid.device
        if device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        self.model, self.cache = model, cache
        b = cache.batch
        self.tokens = torch.zeros(b, dtype=torch.long, device=device)
        self.positions = torch.zeros(b, dtype=torch.long, device=device)
        self.write_index = torch.zeros(1, dtype=torch.long, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):
                model.decode_step(self.tokens, self.positions, self.write_index, cache)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.logits = model.decode_step(self.tokens, self.positions, self.write_index, cache)
        cache.key_valid.zero_()

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, write_index: torch.Tensor,
                 cache: StaticKVCache) -> torch.Tensor:
        """Replay the graph on new inputs; returns the (static) logits buffer."""
        if cache is not self.cache:
            raise ValueError("a GraphedDecoder only runs on the cache it was captured with")
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.write_index.copy_(write_index)
        self.graph.replay()
        return self.logits
