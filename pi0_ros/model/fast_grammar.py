"""Length-constrained decoding for pi0-FAST: every generated action span decodes to a whole chunk.

A FAST chunk is exactly ``T * D`` quantized DCT coefficients; each BPE token stands for a fixed
number of them (its string length). Greedy decoding alone does not know that: a small or
out-of-distribution model ends a span early, runs on past the chunk, or stops in the middle of a
token's worth of coefficients, and the chunk cannot be decoded (the robot holds). The grammar here
masks the logits at every step so that

* while ``remaining`` coefficients are missing, only action tokens of at most ``remaining``
  coefficients may follow (never an end marker, never text);
* once the chunk is complete, only an end marker ("|" or EOS) may follow.

The model still chooses every token (the argmax over what the grammar allows), so a sequence it
would have decoded anyway is unchanged; the decoded chunk still goes through every check of
``FastTokenizer.decode`` (alphabet, normalized range). A dead end is impossible: the BPE alphabet
holds every single coefficient, so a token of one coefficient always fits.

Only tokenizers whose tokens map to a fixed number of coefficients support it (ours; not the
byte-level FAST+ files, where one coefficient can span several tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class ChunkLengthGrammar:
    """Per-vocabulary-id tables of the grammar (on one device).

    ``coefficient_counts[v]``: coefficients token ``v`` adds (0 for every non-action id);
    ``end_mask[v]``: ``v`` may end the span; ``budget``: coefficients per chunk.
    """

    coefficient_counts: torch.Tensor  # long [V]
    end_mask: torch.Tensor  # bool [V]
    budget: int

    @classmethod
    def build(cls, vocab_size: int, action_ids: Sequence[int], action_counts: Sequence[int],
              end_ids: Sequence[int], budget: int, device: torch.device | str = "cpu") -> "ChunkLengthGrammar":
        """Tables over a vocabulary of ``vocab_size`` ids: ``action_ids[i]`` adds ``action_counts[i]``."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        ids = np.asarray(action_ids, dtype=np.int64)
        values = np.asarray(action_counts, dtype=np.int64)
        if ids.shape != values.shape or ids.size == 0:
            raise ValueError("action_ids and action_counts must be non-empty and of one length")
        if np.any(values < 1):
            raise ValueError("every action token must stand for at least one coefficient")
        if not np.any(values == 1):
            raise ValueError("no single-coefficient token: the grammar could reach a dead end")
        counts[ids] = values
        ends = np.zeros(vocab_size, dtype=bool)
        ends[np.asarray(end_ids, dtype=np.int64)] = True
        if np.any(counts[ends] > 0):
            raise ValueError("an end id is also an action id")
        if budget < 1:
            raise ValueError("budget must be >= 1")
        return cls(torch.from_numpy(counts).to(device), torch.from_numpy(ends).to(device), int(budget))

    def restricted_to(self, ids: torch.Tensor) -> "ChunkLengthGrammar":
        """The same grammar over a sub-vocabulary (column ``j`` = vocabulary id ``ids[j]``)."""
        return ChunkLengthGrammar(self.coefficient_counts.index_select(0, ids.to(self.coefficient_counts.device)),
                                  self.end_mask.index_select(0, ids.to(self.end_mask.device)), self.budget)

    def to(self, device: torch.device | str) -> "ChunkLengthGrammar":
        """Copy on ``device``."""
        return ChunkLengthGrammar(self.coefficient_counts.to(device), self.end_mask.to(device), self.budget)

    def allowed(self, remaining: torch.Tensor) -> torch.Tensor:
        """bool [B, V]: what may follow with ``remaining`` ([B] long) coefficients still missing."""
        counts = self.coefficient_counts[None, :]
        rem = remaining[:, None]
        fits = (counts > 0) & (counts <= rem)
        return torch.where(self.end_mask[None, :], rem == 0, fits)

    def mask_logits(self, logits: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """``logits`` [B, V] with every id the grammar forbids set to -inf (float32 result)."""
        return logits.float().masked_fill(~self.allowed(remaining), float("-inf"))

    def advance(self, remaining: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """``remaining`` after picking ``chosen`` ([B] ids in this grammar's columns)."""
        return remaining - self.coefficient_counts.index_select(0, chosen)
