"""Training samples through the SAME transforms the policies run at inference.

``Pi0SampleBuilder`` is a ``Pi0Policy`` without a network (the pattern ``Pi0FastPolicy`` uses): its
``prepare`` IS ``Pi0Policy.prepare`` (image checks, resize with padding, [-1, 1] pixels, camera slots and
masks, state normalization and padding, prompt tokenization). Only the action target is training-only,
and it is the exact inverse of ``Pi0Policy.postprocess``: absolute actions -> delta dims relative to the
chunk-start state -> normalized -> zero-padded to the model width.

``FastSampleBuilder`` does the same for pi0-FAST: ``Pi0FastPolicy``'s image/state checks, quantile
state normalization, and ``FastPromptBuilder.training_tokens`` (prompt + state + "Action: " + FAST
tokens + "|" + EOS, loss on the postfix).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pi0_ros.model import action_transforms
from pi0_ros.model.fast_prompt import FastPromptBuilder
from pi0_ros.model.fast_tokenizer import FastTokenizer
from pi0_ros.model.normalization import NormStats, normalize
from pi0_ros.model.pi0 import Pi0Inputs
from pi0_ros.model.pi0_fast import Pi0FastConfig, Pi0FastInputs
from pi0_ros.model.pi0_fast_policy import Pi0FastPolicy
from pi0_ros.model.policy import Pi0Policy, Pi0PolicyConfig
from pi0_ros.model.tokenizer import PromptTokenizer
from pi0_ros.training.chunks import chunk_at
from pi0_ros.training.dataset import EpisodeArrays, EpisodeDataset

Batch = Dict[str, object]


def action_target(chunk: np.ndarray, state: np.ndarray, delta_mask: np.ndarray, stats: NormStats, mode: str,
                  width: int) -> np.ndarray:
    """Robot-unit chunk [H, A] -> model target [H, width] (inverse of ``Pi0Policy.postprocess``)."""
    delta = action_transforms.to_delta(chunk, state, delta_mask)
    return action_transforms.pad_to(normalize(delta, stats, mode), width).astype(np.float32)


class Pi0SampleBuilder(Pi0Policy):
    """Observation -> ``Pi0Inputs`` with ``Pi0Policy.prepare``; plus the action target."""

    def __init__(self, model_config, policy_config: Dict, norm_stats: Dict[str, NormStats],
                 tokenizer: PromptTokenizer):
        # Not Pi0Policy.__init__ (it builds a network); the attributes prepare/postprocess use are set here.
        self.device = torch.device("cpu")
        self.model_config = model_config
        self.config = Pi0PolicyConfig.from_dict(policy_config)
        self.tokenizer = tokenizer
        self.state_stats = norm_stats["state"]
        self.action_stats = norm_stats["actions"]
        self._delta_mask = np.asarray(self.config.delta_mask, dtype=bool)

    def observation(self, images: Dict[str, np.ndarray], state: np.ndarray, prompt: str) -> Dict:
        """The inference-time observation dict for one dataset frame (only the cameras the policy uses)."""
        used = {n for n in self.config.camera_names if n}
        return {"images": {k: v for k, v in images.items() if k in used}, "state": state, "prompt": prompt}

    def target(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Model-space action target [H, A_model]."""
        return action_target(chunk, state, self._delta_mask, self.action_stats, self.config.normalization,
                             self.model_config.action_dim)

    def sample(self, dataset: EpisodeDataset, episode: EpisodeArrays, frame: int) -> Batch:
        """One training example (batch dimension 1)."""
        state = episode.states[frame]
        inputs, raw_state = self.prepare(self.observation(dataset.images(episode.index, frame), state, episode.task))
        chunk, is_pad = chunk_at(episode.actions, frame, self.model_config.action_horizon)
        return {"inputs": inputs, "actions": torch.from_numpy(self.target(chunk, raw_state))[None],
                "is_pad": torch.from_numpy(is_pad)[None]}

    @staticmethod
    def collate(samples: Sequence[Batch]) -> Batch:
        """Concatenate batch-1 samples."""
        fields = ("images", "image_masks", "tokens", "token_masks", "state")
        inputs = Pi0Inputs(*(torch.cat([getattr(s["inputs"], f) for s in samples]) for f in fields))
        return {"inputs": inputs, "actions": torch.cat([s["actions"] for s in samples]),
                "is_pad": torch.cat([s["is_pad"] for s in samples])}


class FastSampleBuilder(Pi0FastPolicy):
    """Observation + chunk -> ``Pi0FastInputs`` with the full token sequence and its loss mask."""

    def __init__(self, model_config: Pi0FastConfig, policy_config: Dict, norm_stats: Dict[str, NormStats],
                 tokenizer: PromptTokenizer, fast_tokenizer: FastTokenizer, max_len: Optional[int] = None,
                 state_noise: float = 0.0):
        # Not Pi0FastPolicy.__init__ (it builds a network).
        self.device = torch.device("cpu")
        self.model_config = model_config
        self.config = Pi0PolicyConfig.from_dict(policy_config)
        if self.config.normalization != "quantile":
            raise ValueError("pi0-FAST uses quantile normalization")
        self.tokenizer = tokenizer
        self.fast_tokenizer = fast_tokenizer
        self.builder = FastPromptBuilder(tokenizer, fast_tokenizer, model_config)
        self.state_stats = norm_stats["state"]
        self.action_stats = norm_stats["actions"]
        self._delta_mask = np.asarray(self.config.delta_mask, dtype=bool)
        self.max_len = max_len or model_config.max_token_len + model_config.max_decoding_steps
        # Std of Gaussian noise on the normalized state before it is discretized into the prompt (training
        # only). pi0-FAST reads the state as 256-bin text tokens: without noise a model learns the exact
        # tokens of its demonstrations and answers a start pose 0.01 rad away (a few bins) with a chunk unlike
        # any demonstration (seen in the simulator).
        self.state_noise = float(state_noise)

    observation = Pi0SampleBuilder.observation

    def target(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Normalized, padded chunk [H, A_model] (what the FAST tokenizer encodes)."""
        return action_target(chunk, state, self._delta_mask, self.action_stats, "quantile",
                             self.model_config.action_dim)

    def prompt_fits(self, prompt: str) -> None:
        """Raise PromptTooLongError when the inference prompt (prefix + "Action: ") exceeds the budget."""
        self.builder.inference_tokens(prompt, np.zeros(self.model_config.action_dim))

    def sample(self, dataset: EpisodeDataset, episode: EpisodeArrays, frame: int) -> Batch:
        """One training example (batch dimension 1)."""
        obs = self.observation(dataset.images(episode.index, frame), episode.states[frame], episode.task)
        pixels, masks = self._images(obs["images"])
        state = self._state(obs["state"])
        norm_state = normalize(state, self.state_stats, "quantile")
        if self.state_noise > 0:
            # torch's generator: DataLoader seeds it per worker (numpy's global one is the same in every worker).
            norm_state = norm_state + self.state_noise * torch.randn(norm_state.shape, dtype=torch.float64).numpy()
        norm_state = action_transforms.pad_to(norm_state, self.model_config.action_dim)
        chunk, _ = chunk_at(episode.actions, frame, self.model_config.action_horizon)
        tokens, mask, ar, loss = self.builder.training_tokens(self._prompt(obs), norm_state,
                                                              self.target(chunk, state), self.max_len)
        inputs = Pi0FastInputs(
            images=torch.from_numpy(pixels)[None], image_masks=torch.from_numpy(masks)[None],
            tokens=torch.from_numpy(tokens)[None], token_masks=torch.from_numpy(mask)[None],
            token_ar=torch.from_numpy(ar)[None], loss_masks=torch.from_numpy(loss)[None])
        return {"inputs": inputs}

    @staticmethod
    def collate(samples: Sequence[Batch]) -> Batch:
        """Concatenate, then cut the token columns to the longest sequence of the batch."""
        fields = ("images", "image_masks", "tokens", "token_masks", "token_ar", "loss_masks")
        cat = [torch.cat([getattr(s["inputs"], f) for s in samples]) for f in fields]
        used = int(cat[3].sum(dim=1).max())
        cat = cat[:2] + [t[:, :used] for t in cat[2:]]
        return {"inputs": Pi0FastInputs(*cat)}


def fast_training_chunks(episodes: Sequence[EpisodeArrays], horizon: int, delta_mask: np.ndarray,
                         stats: NormStats, width: int, max_chunks: int = 5000) -> np.ndarray:
    """Normalized padded chunks [N, H, width] (evenly chosen) to fit the FAST tokenizer on."""
    starts: List[Tuple[int, int]] = [(e, t) for e, ep in enumerate(episodes) for t in range(ep.length)]
    if len(starts) > max_chunks:
        pick = np.linspace(0, len(starts) - 1, max_chunks).round().astype(int)
        starts = [starts[i] for i in pick]
    out = []
    for e, t in starts:
        chunk, _ = chunk_at(episodes[e].actions, t, horizon)
        out.append(action_target(chunk, episodes[e].states[t], delta_mask, stats, "quantile", width))
    return np.stack(out)


def batch_to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """A collated batch with every tensor-like value (tensors, input dataclasses) moved to ``device``."""
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
