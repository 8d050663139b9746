"""``Pi0FastPolicy``: a pi0-FAST checkpoint behind the ``pi0_ros.policy_api.Policy`` interface.

Input checks and the output transforms are pi0's (``Pi0Policy``'s camera/state/prompt validation,
unnormalization, delta dims, NaN check); in between, the state is quantile-normalized into the
prompt, the model decodes FAST tokens greedily and the FAST tokenizer turns them into a chunk. A
sequence that does not decode raises ``FastDecodeError`` (a PolicyOutputError: the node holds) and is
counted in ``stats["decode_failures"]``; no guessed chunk is ever returned.

Length: by default decoding runs under the ``ChunkLengthGrammar`` (``fast_grammar``), so every answer
has exactly one chunk's coefficients; a small model misses the exact count often in closed loop
(ends early, runs on). Without the grammar (``constrain_length=False``, openpi's plain greedy decoding)
a relaxed length applies (``length_tolerance``, default a quarter of the chunk's coefficients): a
sequence a few coefficients short is completed with zero high frequencies, one that runs on after the
whole chunk is cut (counted in ``stats["relaxed_decodes"]``); 0 restores the strict check.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from pi0_ros.model import action_transforms
from pi0_ros.model.fast_grammar import ChunkLengthGrammar
from pi0_ros.model.fast_prompt import FastPromptBuilder
from pi0_ros.model.fast_tokenizer import FastDecodeError
from pi0_ros.model.normalization import normalize
from pi0_ros.model.pi0_fast import Pi0FastInputs
from pi0_ros.model.pi0_fast_checkpoint import FastCheckpoint, build_fast_model, read_fast_checkpoint
from pi0_ros.model.pi0_fast_decode import FastGenerator
from pi0_ros.model.policy import Pi0Policy, Pi0PolicyConfig
from pi0_ros.model.provenance import trained_action_space
from pi0_ros.model.tokenizer import EOS_ID
from pi0_ros.policy_api import Observation, PolicyInputError, PolicyResult


class Pi0FastPolicy(Pi0Policy):
    """pi0-FAST behind the Policy protocol; shares pi0's observation checks and output transforms."""

    def __init__(self, checkpoint: FastCheckpoint, device: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, fast_decode: Optional[bool] = None,
                 length_tolerance: Optional[int] = None, constrain_length: Optional[bool] = None):
        """``fast_decode`` (default: on CUDA): generate with a ``FastGenerator`` (fused weights, CUDA
        graphs, on CUDA a torch.compile-d step, LM head restricted to the FAST ids + "|"/EOS with its
        full-vocabulary check), built here so the first inference pays no capture/compile (~30 s
        once on an H100); otherwise ``Pi0FastModel.generate``.

        ``constrain_length`` (default: wherever the FAST tokenizer supports it): decode under the
        ``ChunkLengthGrammar``, so every answer has exactly one chunk's coefficients (the model still
        picks every token); False = plain greedy decoding as in openpi. ``length_tolerance``: the
        relaxed decoding of unconstrained answers (see ``FastTokenizer.decode``)."""
        # Not Pi0Policy.__init__: that builds a pi0 network. The attributes its checks use are set here.
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model_config = checkpoint.model_config
        self.config = Pi0PolicyConfig.from_dict(checkpoint.policy_config)
        self.trained_action_space = trained_action_space(checkpoint.provenance)
        if self.config.normalization != "quantile":
            raise ValueError("pi0-FAST uses quantile normalization (policy.normalization must be 'quantile')")
        self._check_fit(checkpoint)  # type: ignore[arg-type]  (same fields as pi0's checkpoint)
        self.tokenizer = checkpoint.tokenizer
        self.fast_tokenizer = checkpoint.fast_tokenizer
        if (self.fast_tokenizer.action_horizon, self.fast_tokenizer.action_dim) != (
                self.model_config.action_horizon, self.model_config.action_dim):
            raise ValueError("FAST tokenizer chunk shape differs from the model's action horizon/dim")
        self.builder = FastPromptBuilder(self.tokenizer, self.fast_tokenizer, self.model_config)
        self.state_stats = checkpoint.norm_stats["state"]
        self.action_stats = checkpoint.norm_stats["actions"]
        self._delta_mask = np.asarray(self.config.delta_mask, dtype=bool)
        model = build_fast_model(self.model_config, checkpoint.weights)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if dtype != torch.float32:
            model.set_inference_dtype(dtype)
        if self.device.type == "cuda":
            model.set_attention_impl("sdpa")
        self.model = model.to(self.device)
        self.stats: Dict[str, int] = {"inferences": 0, "decode_failures": 0, "relaxed_decodes": 0}
        self.length_tolerance = (self.fast_tokenizer.config.num_coefficients // 4 if length_tolerance is None
                                 else int(length_tolerance))
        self.grammar: Optional[ChunkLengthGrammar] = None
        if constrain_length or constrain_length is None:
            try:
                self.grammar = self.builder.length_grammar()
            except ValueError:
                if constrain_length:
                    raise
        if fast_decode is None:
            fast_decode = self.device.type == "cuda"
        self.generator: Optional[FastGenerator] = None
        if fast_decode:
            self.generator = FastGenerator(self.model, batch=1, restrict_vocab=True,
                                           end_ids=(EOS_ID, self.builder.end_ids[0]),
                                           compile_step=self.device.type == "cuda", grammar=self.grammar)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, device: Optional[str] = None,  # type: ignore[override]
                        dtype: Optional[torch.dtype] = None, fast_decode: Optional[bool] = None,
                        length_tolerance: Optional[int] = None,
                        constrain_length: Optional[bool] = None) -> "Pi0FastPolicy":
        """Build from a directory written by ``pi0_fast_checkpoint``."""
        return cls(read_fast_checkpoint(ckpt_dir), device=device, dtype=dtype, fast_decode=fast_decode,
                   length_tolerance=length_tolerance, constrain_length=constrain_length)

    @property
    def metadata(self) -> Dict[str, Any]:
        """Static facts for clients."""
        return {"model_type": "pi0_fast", **self._io_metadata(),
                "max_decoding_steps": self.model_config.max_decoding_steps,
                "length_constrained_decoding": self.grammar is not None}

    def prepare(self, observation: Observation) -> tuple[Pi0FastInputs, np.ndarray]:  # type: ignore[override]
        """Observation -> (model inputs on the device, batch 1; the raw state)."""
        if not isinstance(observation, dict):
            raise PolicyInputError("observation must be a dict")
        pixels, masks = self._images(observation.get("images"))
        state = self._state(observation.get("state"))
        norm_state = action_transforms.pad_to(normalize(state, self.state_stats, "quantile"),
                                              self.model_config.action_dim)
        tokens, mask, ar, loss = self.builder.inference_tokens(self._prompt(observation), norm_state)
        inputs = Pi0FastInputs(
            images=torch.from_numpy(pixels)[None], image_masks=torch.from_numpy(masks)[None],
            tokens=torch.from_numpy(tokens)[None], token_masks=torch.from_numpy(mask)[None],
            token_ar=torch.from_numpy(ar)[None], loss_masks=torch.from_numpy(loss)[None])
        return inputs.to(self.device), state

    def infer(self, observation: Observation) -> PolicyResult:  # type: ignore[override]
        """One action chunk; raises PolicyInputError, or FastDecodeError for an undecodable answer."""
        t0 = time.perf_counter()
        inputs, state = self.prepare(observation)
        t1 = time.perf_counter()
        check_every = 4 if self.device.type == "cuda" else 1
        with torch.inference_mode():
            if self.generator is not None:
                generated = self.generator.generate(inputs, check_every=check_every)
            else:  # the prompt without its padding: the prefill is the larger part of the CPU latency
                generated = self.model.generate(inputs.trimmed(), check_every=check_every, grammar=self.grammar)
        ids = generated[0].cpu().tolist()
        t2 = time.perf_counter()
        self.stats["inferences"] += 1
        try:
            normalized = self.builder.decode_actions(ids)
        except FastDecodeError:
            try:
                normalized = self.builder.decode_actions(ids, self.length_tolerance,
                                                         cut_extra=self.length_tolerance > 0)
            except FastDecodeError:
                self.stats["decode_failures"] += 1
                raise
            self.stats["relaxed_decodes"] += 1
        actions = self.postprocess(normalized, state)
        t3 = time.perf_counter()
        return {
            "actions": actions,
            "policy_timing": {"infer_ms": (t3 - t0) * 1e3, "preprocess_ms": (t1 - t0) * 1e3,
                              "model_ms": (t2 - t1) * 1e3, "postprocess_ms": (t3 - t2) * 1e3,
                              "generated_tokens": len(ids)},
        }
