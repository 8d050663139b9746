"""Fast greedy generation for pi0-FAST: ``FastGenerator``.

Same function as ``Pi0FastModel.generate`` (greedy, K/V cache, stop at the first non-action token),
built for batch-1 latency on a GPU, where one decode step is bound by reading ~4 GB of weights:

* **Fused projections**: per layer one q|k|v GEMM and one gate|up GEMM (concatenated copies of the
  weights, built once; parameter names and the model are untouched; copies are refreshed when the
  source parameters change in place, e.g. ``load_state_dict``).
* **Few small kernels**: norm weights ``1 + w`` precomputed in float32, RoPE tables precomputed for
  every cache slot, q and k rotated together, the attention mask read straight from the cache's
  ``key_valid``; the same float32 math as ``gemma.py`` (RMSNorm, RoPE, q scale after RoPE).
* **Attention** (``attention="matmul"``, default): the K/V cache is kept in float32 and attention is
  two small GEMMs plus a softmax (float32 logits, the reference mask value), which spreads the
  1-query x ~1300-key problem over many blocks; ``"sdpa"`` uses torch's fused kernel on a model-dtype
  cache with an additive mask.
* **Self-advancing CUDA graphs**: the prefill and one decode step are each captured once; a step
  reads the previous token, position and slot from device buffers, writes the next token, the final
  hidden state and the "done" flags, and advances its counters, so the host only replays it (and
  syncs every ``check_every`` steps to see whether all rows stopped). With ``compile_step`` the step
  is ``torch.compile``-d before capture (fuses the float32 norm/RoPE/softmax work into a few Triton
  kernels; ~30 s once for Gemma-2B on an H100); if compiling fails it warns and runs uncompiled.
* **Restricted vocabulary** (``restrict_vocab=True``): during decoding the LM head covers only the
  FAST action ids plus the end markers (``end_ids``, e.g. "|" and EOS): about 4100 rows instead of
  257152 (~1 GB less to read per token).

* **Length grammar** (``grammar=``, needs ``restrict_vocab``): a ``ChunkLengthGrammar`` masks each
  pick so the span is exactly one chunk followed by an end marker (see ``fast_grammar``); the
  full-vocabulary check below is then skipped, because the grammar excludes text tokens by design.

Restricted-vocabulary semantics (the output equals full-vocabulary greedy decoding):
  each step picks the argmax over the allowed ids (ascending id order, so ties break like a full
  argmax). After decoding, ONE batched full-vocabulary LM-head pass over the recorded final hidden
  states checks every step up to each row's stop: where the best full-vocabulary logit is strictly
  larger than the best allowed one, full-vocabulary greedy decoding would have emitted that (non-
  action, non-end) token and stopped, so the output gets that token at that step and the row ends
  there. ``last_outside_steps`` lists (row, step, token) of such corrections. Downstream the token is
  a non-action token inside the action span, which ``FastPromptBuilder.extract_fast_tokens`` reports
  as a ``FastDecodeError``: a chunk is never decoded from a sequence the model did not choose. Logits
  of the restricted head and of the check are separate GEMMs, so near-ties (within bf16 rounding) may
  resolve differently from a full-vocabulary decode, as they may between any two GEMM shapes.

On the CPU (float32 tests) the same code runs eagerly, without graphs.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pi0_ros.model.fast_grammar import ChunkLengthGrammar
from pi0_ros.model.gemma import ATTENTION_MASK_VALUE, rope_tables
from pi0_ros.model.pi0_fast import Pi0FastInputs, Pi0FastModel, StaticKVCache, fast_to_vocab


def _rms(x: torch.Tensor, weight1: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma RMSNorm with the precomputed float32 ``1 + weight`` (same math as ``gemma.RMSNorm``)."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight1).to(x.dtype)


class _LayerWeights:
    """One decoder layer's tensors for decoding: fused copies plus references to the rest."""

    def __init__(self, layer: torch.nn.Module, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.sources = [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, mlp.gate_proj.weight,
                        mlp.up_proj.weight, layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
        self.o = attn.o_proj.weight
        self.down = mlp.down_proj.weight
        self.fuse = fuse
        with torch.no_grad():
            self.qkv = torch.cat(self.sources[:3]) if fuse else None
            self.gate_up = torch.cat(self.sources[3:5]) if fuse else None
            self.norm1 = 1.0 + self.sources[5].float()
            self.norm2 = 1.0 + self.sources[6].float()

    def refresh(self) -> None:
        """Rebuild the derived tensors in place (their addresses are captured in graphs)."""
        with torch.no_grad():
            if self.fuse:
                torch.cat(self.sources[:3], out=self.qkv)
                torch.cat(self.sources[3:5], out=self.gate_up)
            self.norm1.copy_(1.0 + self.sources[5].float())
            self.norm2.copy_(1.0 + self.sources[6].float())


class FastGenerator:
    """Greedy generation for one ``Pi0FastModel`` at a fixed batch size; see the module docstring.

    Build it after the model's dtype, device and attention implementation are set (the prefill uses
    the model's own ``prefill_hidden``). ``end_ids``: the non-action ids that end an action span
    ("|" and EOS), needed with ``restrict_vocab``. ``graphs``: capture CUDA graphs (default: on CUDA).
    """

    def __init__(self, model: Pi0FastModel, batch: int = 1, max_new_tokens: Optional[int] = None, *,
                 restrict_vocab: bool = False, end_ids: Sequence[int] = (), fuse: bool = True,
                 attention: str = "matmul", graphs: Optional[bool] = None, compile_step: bool = False,
                 device: Optional[torch.device] = None, grammar: Optional[ChunkLengthGrammar] = None):
        if attention not in ("matmul", "sdpa"):
            raise ValueError(f"unknown decode attention {attention!r} (matmul | sdpa)")
        cfg = model.config
        self.model, self.config, self.lm = model, cfg, model.language_model.config
        self.batch = batch
        self.max_new = max_new_tokens or cfg.max_decoding_steps
        self.attention = attention
        weight = model.paligemma.lm_head.weight
        self.device = device or weight.device
        self.dtype = model.dtype
        self.prompt_slots = cfg.num_cameras * cfg.vision.num_patches + cfg.max_token_len
        cache_dtype = torch.float32 if attention == "matmul" else self.dtype
        self.cache = StaticKVCache.allocate(self.lm, batch, self.prompt_slots + self.max_new, cache_dtype,
                                            self.device)
        self.layers = [_LayerWeights(layer, fuse) for layer in model.language_model.layers]
        self.final_norm_src = model.language_model.norm.weight
        self.embed = weight
        self.final_norm1 = (1.0 + self.final_norm_src.float()).detach()
        # RoPE tables for every position a token can take (positions < cache slots).
        cos, sin = rope_tables(torch.arange(self.cache.length, device=self.device)[None], self.lm.head_dim,
                               self.lm.rope_base)
        self.rope_cos, self.rope_sin = cos[0, 0], sin[0, 0]  # [S, D/2]
        top = fast_to_vocab(0, cfg.llm.vocab_size)
        self.first_action, self.top_action = cfg.first_action_id, top
        self.restrict_vocab = restrict_vocab
        if restrict_vocab:
            ends = sorted({int(t) for t in end_ids})
            if not ends:
                raise ValueError("restrict_vocab needs end_ids (the ids of '|' and EOS)")
            if any(self.first_action <= t <= top for t in ends):
                raise ValueError("end_ids must not be action ids")
            ids = sorted(set(range(self.first_action, top + 1)) | set(ends))
            self.allowed_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
            self.head = weight.detach().index_select(0, self.allowed_ids)
        else:
            self.allowed_ids = None
            self.head = weight
        self.grammar: Optional[ChunkLengthGrammar] = None
        if grammar is not None:
            if self.allowed_ids is None:
                raise ValueError("the length grammar needs restrict_vocab=True")
            if self.max_new < grammar.budget + 1:
                raise ValueError(f"{self.max_new} new tokens cannot hold a chunk of {grammar.budget} "
                                 "coefficients and its end marker")
            self.grammar = grammar.restricted_to(self.allowed_ids).to(self.device)
        self._versions = self._source_versions()
        self._pointers = self._source_pointers()
        # Decode state (device buffers the graphs read and advance).
        b, dev = batch, self.device
        self.token = torch.zeros(b, dtype=torch.long, device=dev)
        self.position = torch.zeros(b, dtype=torch.long, device=dev)
        self.slot = torch.full((1,), self.prompt_slots, dtype=torch.long, device=dev)
        self.step_index = torch.ones(1, dtype=torch.long, device=dev)
        self.done = torch.zeros(b, dtype=torch.bool, device=dev)
        self.remaining = torch.zeros(b, dtype=torch.long, device=dev)  # coefficients still missing (grammar)
        self.out_tokens = torch.zeros(self.max_new, b, dtype=torch.long, device=dev)
        self.out_hidden = torch.zeros(self.max_new, b, self.lm.width, dtype=self.dtype, device=dev)
        self.last_outside_steps: List[Tuple[int, int, int]] = []
        self._static_inputs: Optional[Pi0FastInputs] = None
        self._step_fn = self._step
        self.compiled = False
        if compile_step:
            self._step_fn = torch.compile(self._step, fullgraph=True, dynamic=False)
            self.compiled = True
        use_graphs = self.device.type == "cuda" if graphs is None else graphs
        if use_graphs and self.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        self._prefill_graph: Optional[torch.cuda.CUDAGraph] = None
        self._step_graph: Optional[torch.cuda.CUDAGraph] = None
        try:
            if use_graphs:
                self._capture()
            elif compile_step:
                self._step_fn()  # compile now (on whatever the state holds; prefill resets it)
        except Exception as err:  # noqa: BLE001 - torch.compile can fail in many ways (no Triton, ...)
            if not compile_step:
                raise
            warnings.warn(f"torch.compile of the decode step failed ({err!r:.300}); decoding uncompiled",
                          RuntimeWarning, stacklevel=2)
            self._step_fn, self.compiled = self._step, False
            self._prefill_graph = self._step_graph = None
            self.cache.key_valid.zero_()
            if use_graphs:
                self._capture()

    # ------------------------------------------------------------------ weights bookkeeping
    def _all_sources(self) -> List[torch.Tensor]:
        out = [self.embed, self.final_norm_src]
        for lw in self.layers:
            out += lw.sources + [lw.o, lw.down]
        return out

    def _source_versions(self) -> Tuple[int, ...]:
        return tuple(t._version for t in self._all_sources())

    def _source_pointers(self) -> Tuple[int, ...]:
        return tuple(t.data_ptr() for t in self._all_sources())

    def _check_weights(self) -> None:
        """Refresh the derived weights if a source changed in place; refuse if one was replaced."""
        live = [self.model.paligemma.lm_head.weight, self.model.language_model.norm.weight]
        for layer in self.model.language_model.layers:
            live += [layer.self_attn.q_proj.weight, layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight]
        known = {id(t) for t in self._all_sources()}
        if any(id(t) not in known for t in live) or self._source_pointers() != self._pointers:
            raise RuntimeError("the model's parameters were replaced (e.g. .to()) after the FastGenerator "
                               "was built: build a new one")
        versions = self._source_versions()
        if versions == self._versions:
            return
        with torch.no_grad():
            for lw in self.layers:
                lw.refresh()
            self.final_norm1.copy_(1.0 + self.final_norm_src.float())
            if self.allowed_ids is not None:
                torch.index_select(self.embed, 0, self.allowed_ids, out=self.head)
        self._versions = versions

    # ----------------------------------------------------------------------------- kernels
    def _pick(self, hidden: torch.Tensor) -> torch.Tensor:
        """Greedy next token [B] from final-normed hidden [B, W] (restricted or full vocabulary;
        with a grammar, among the ids it allows, and ``remaining`` advanced)."""
        logits = F.linear(hidden, self.head).float()
        if self.grammar is not None:
            logits = self.grammar.mask_logits(logits, self.remaining)
        index = torch.argmax(logits, dim=-1)
        if self.grammar is not None:
            self.remaining.copy_(self.grammar.advance(self.remaining, index))
        return self.allowed_ids[index] if self.allowed_ids is not None else index

    def _is_action(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.first_action) & (ids <= self.top_action)

    def _prefill(self) -> None:
        """Prompt into the cache, token 0 and the decode state (graph-capturable)."""
        assert self._static_inputs is not None
        hidden, num_valid = self.model.prefill_hidden(self._static_inputs, self.cache)
        if self.grammar is not None:
            self.remaining.fill_(self.grammar.budget)
        token = self._pick(hidden)
        self.token.copy_(token)
        self.position.copy_(num_valid)
        self.slot.fill_(self.prompt_slots)
        self.step_index.fill_(1)
        self.out_tokens[0].copy_(token)
        self.out_hidden[0].copy_(hidden)
        self.done.copy_(~self._is_action(token))

    def _step(self) -> None:
        """One decode step on the state buffers (graph-capturable, no host sync)."""
        lm, cache = self.lm, self.cache
        b, h, kv, d = self.batch, lm.num_heads, lm.num_kv_heads, lm.head_dim
        half = d // 2
        cache.key_valid.index_fill_(1, self.slot, True)
        valid = cache.key_valid[:, None, None, :]  # [B, 1, 1, S]
        if self.attention == "sdpa":
            bias = torch.zeros(valid.shape, dtype=self.dtype, device=valid.device).masked_fill(
                ~valid, torch.finfo(self.dtype).min)
        cos = self.rope_cos.index_select(0, self.position)[:, None, :]  # [B, 1, D/2]
        sin = self.rope_sin.index_select(0, self.position)[:, None, :]
        scale = d ** -0.5
        x = F.embedding(self.token, self.embed) * math.sqrt(lm.width)  # [B, W]
        x = x.to(self.dtype)
        for i, lw in enumerate(self.layers):
            hn = _rms(x, lw.norm1, lm.rms_eps)
            if lw.fuse:
                qkv = F.linear(hn, lw.qkv)
            else:
                qkv = torch.cat([F.linear(hn, w) for w in lw.sources[:3]], dim=-1)
            qk = qkv[:, :(h + kv) * d].reshape(b, h + kv, d).float()
            x1, x2 = qk[..., :half], qk[..., half:]
            qk = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(self.dtype)
            q = (qk[:, :h].float() * scale).to(self.dtype)  # [B, H, D]
            k = qk[:, h:]  # [B, KV, D]
            v = qkv[:, (h + kv) * d:].reshape(b, kv, d)
            keys, values = cache.keys[i], cache.values[i]
            keys.index_copy_(2, self.slot, k[:, :, None].to(keys.dtype))
            values.index_copy_(2, self.slot, v[:, :, None].to(values.dtype))
            qg = q.reshape(b, kv, h // kv, d)
            if self.attention == "sdpa":
                out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=bias, scale=1.0)
            else:
                logits = torch.matmul(qg.float(), keys.transpose(-1, -2))  # [B, KV, G, S]
                logits = logits.masked_fill(~valid, ATTENTION_MASK_VALUE)
                out = torch.matmul(torch.softmax(logits, dim=-1), values)
            x = x + F.linear(out.reshape(b, h * d).to(self.dtype), lw.o)
            hn = _rms(x, lw.norm2, lm.rms_eps)
            if lw.fuse:
                gate, up = F.linear(hn, lw.gate_up).chunk(2, dim=-1)
            else:
                gate, up = F.linear(hn, lw.sources[3]), F.linear(hn, lw.sources[4])
            x = x + F.linear(F.gelu(gate, approximate="tanh") * up, lw.down)
        hidden = _rms(x, self.final_norm1, lm.rms_eps)
        token = self._pick(hidden)
        self.out_tokens.index_copy_(0, self.step_index, token[None])
        self.out_hidden.index_copy_(0, self.step_index, hidden[None])
        self.done.logical_or_(~self._is_action(token))
        self.token.copy_(token)
        self.position.add_(1)
        self.slot.add_(1)
        self.step_index.add_(1)

    # ------------------------------------------------------------------------------ graphs
    def _set_inputs(self, inputs: Pi0FastInputs) -> None:
        if inputs.tokens.shape != (self.batch, self.config.max_token_len):
            raise ValueError(f"expected tokens [{self.batch}, {self.config.max_token_len}], "
                             f"got {tuple(inputs.tokens.shape)}")
        if self._static_inputs is None or self._prefill_graph is None:
            self._static_inputs = inputs.to(self.device)
            return
        for name in ("images", "image_masks", "tokens", "token_masks", "token_ar", "loss_masks"):
            getattr(self._static_inputs, name).copy_(getattr(inputs, name))

    def _capture(self) -> None:
        cfg, b, dev = self.config, self.batch, self.device
        s = cfg.image_size
        self._static_inputs = Pi0FastInputs(
            images=torch.zeros(b, cfg.num_cameras, 3, s, s, dtype=self.dtype, device=dev).uniform_(-1, 1),
            image_masks=torch.ones(b, cfg.num_cameras, dtype=torch.bool, device=dev),
            tokens=torch.full((b, cfg.max_token_len), 2, dtype=torch.long, device=dev),
            token_masks=torch.ones(b, cfg.max_token_len, dtype=torch.bool, device=dev),
            token_ar=torch.zeros(b, cfg.max_token_len, dtype=torch.bool, device=dev),
            loss_masks=torch.zeros(b, cfg.max_token_len, dtype=torch.bool, device=dev))
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):
                self._prefill()
                self._step_fn()
        torch.cuda.current_stream(dev).wait_stream(stream)
        self._prefill_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._prefill_graph), torch.no_grad():
            self._prefill()
        self._step_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._step_graph), torch.no_grad():
            self._step_fn()
        torch.cuda.synchronize(dev)

    def prefill(self, inputs: Pi0FastInputs) -> None:
        """Fill the cache with ``inputs`` and pick token 0 (prompt padded to ``max_token_len``)."""
        self._check_weights()
        self._set_inputs(inputs)
        with torch.no_grad():
            if self._prefill_graph is not None:
                self._prefill_graph.replay()
            else:
                self._prefill()

    def step(self) -> None:
        """One decode step on the current state."""
        with torch.no_grad():
            if self._step_graph is not None:
                self._step_graph.replay()
            else:
                self._step_fn()

    # -------------------------------------------------------------------------- generation
    def generate(self, inputs: Pi0FastInputs, max_new_tokens: Optional[int] = None,
                 stop_at_non_action: bool = True, check_every: int = 1) -> torch.Tensor:
        """Greedy ids [B, n], as ``Pi0FastModel.generate`` (same stopping rule and output layout)."""
        max_new = max_new_tokens or self.max_new
        if max_new > self.max_new:
            raise ValueError(f"built for up to {self.max_new} new tokens, asked for {max_new}")
        self.prefill(inputs)
        n = 1
        for k in range(max_new - 1):
            if stop_at_non_action and (k + 1) % check_every == 0 and bool(self.done.all()):
                break
            self.step()
            n += 1
        tokens = self.out_tokens[:n].T.clone()
        self.last_outside_steps = []
        # Under a grammar text tokens are excluded by design, so there is nothing to check.
        if self.allowed_ids is not None and self.grammar is None:
            self._correct_outside(tokens)
        return tokens

    @torch.no_grad()
    def _correct_outside(self, tokens: torch.Tensor) -> None:
        """Full-vocabulary check of the restricted picks (see the module docstring); edits ``tokens``."""
        b, n = tokens.shape
        stop = ~self._is_action(tokens)
        # Steps up to and including each row's first stop are the ones a full decode would also take.
        before = torch.cumsum(stop.long(), dim=1) - stop.long()
        considered = before == 0
        vocab = self.embed.shape[0]
        chunk = max(1, (1 << 26) // (vocab * b))
        bad_steps, bad_tokens = [], []
        for start in range(0, n, chunk):
            hidden = self.out_hidden[start:min(start + chunk, n), :b]  # [c, B, W]
            logits = F.linear(hidden, self.embed).float()
            best_allowed = logits.index_select(-1, self.allowed_ids).amax(dim=-1)
            logits.index_fill_(-1, self.allowed_ids, float("-inf"))
            best_outside, outside_id = logits.max(dim=-1)
            bad_steps.append((best_outside > best_allowed).T)  # [B, c]
            bad_tokens.append(outside_id.T)
        bad = torch.cat(bad_steps, dim=1) & considered
        if not bool(bad.any()):
            return
        outside = torch.cat(bad_tokens, dim=1)
        for row in range(b):
            steps = torch.nonzero(bad[row]).flatten()
            if steps.numel():
                j = int(steps[0])
                tokens[row, j] = outside[row, j]
                self.last_outside_steps.append((row, j, int(outside[row, j])))
