"""pi0-FAST token sequences: the prompt with the discretized state, the action postfix, and back.

Layout (openpi)::

    prefix  (ar 0, no loss): BOS "Task: <lowercased text>, State: <256-bin ints>;\\n"
    postfix (ar 1, loss)   : "Action: " <FAST tokens mapped into the vocabulary> "|" EOS

At inference the prompt is the prefix plus the "Action: " tokens (teacher-forced: every answer starts
with them); the model continues with action tokens and ends with "|". ``extract_fast_tokens`` turns
what it generated back into FAST ids and rejects anything else (FastDecodeError).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from pi0_ros.model.fast_grammar import ChunkLengthGrammar
from pi0_ros.model.fast_tokenizer import FastDecodeError, FastTokenizer
from pi0_ros.model.pi0_fast import Pi0FastConfig, fast_to_vocab, vocab_to_fast
from pi0_ros.model.tokenizer import BOS_ID, EOS_ID, PAD_ID, PromptTokenizer, PromptTooLongError
from pi0_ros.policy_api import PolicyInputError

STATE_BINS = 256

TokenArrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # tokens, mask, ar, loss


def discretize_state(normalized_state: np.ndarray) -> np.ndarray:
    """Normalized state -> ints in [0, 255] (256 equal bins over [-1, 1], openpi's digitize).

    openpi yields -1 below -1; values are clipped into the bins here so the text stays in-vocabulary.
    """
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.clip(np.digitize(normalized_state, edges) - 1, 0, STATE_BINS - 1)


def clean_fast_prompt(text: str) -> str:
    """openpi's pi0-FAST cleaning: lowercase, strip, '_' -> ' '."""
    return text.lower().strip().replace("_", " ")


class FastPromptBuilder:
    """Builds training/inference token arrays and extracts FAST ids from generated sequences."""

    def __init__(self, text: PromptTokenizer, fast: FastTokenizer, config: Pi0FastConfig):
        self.text, self.fast, self.config = text, fast, config
        vocab = config.llm.vocab_size
        if fast.vocab_size > config.fast_vocab_size:
            raise ValueError(f"FAST tokenizer has {fast.vocab_size} ids, the model reserves {config.fast_vocab_size}")
        if text.vocab_size > config.first_action_id:
            raise ValueError(f"text ids (< {text.vocab_size}) overlap the action ids (>= {config.first_action_id})")
        self.vocab_size = vocab
        self.action_prefix_ids: List[int] = list(text.sp.encode("Action: "))
        self.end_ids: List[int] = list(text.sp.encode("|"))

    def prefix_ids(self, prompt: str, normalized_state: np.ndarray) -> List[int]:
        """BOS + "Task: ..., State: ...;\\n" ids."""
        if not isinstance(prompt, str):
            raise PolicyInputError(f"prompt must be a str, got {type(prompt).__name__}")
        state = " ".join(str(int(v)) for v in discretize_state(np.asarray(normalized_state, dtype=np.float64)))
        return [BOS_ID] + list(self.text.sp.encode(f"Task: {clean_fast_prompt(prompt)}, State: {state};\n"))

    def action_ids(self, fast_tokens: Sequence[int]) -> List[int]:
        """FAST ids -> vocabulary ids."""
        return [int(fast_to_vocab(int(t), self.vocab_size)) for t in fast_tokens]

    def inference_tokens(self, prompt: str, normalized_state: np.ndarray) -> TokenArrays:
        """Prompt + "Action: ", right-padded to ``max_token_len``; raises PromptTooLongError."""
        prefix = self.prefix_ids(prompt, normalized_state)
        return self._pack(prefix, self.action_prefix_ids, self.config.max_token_len, loss=False)

    def training_tokens(self, prompt: str, normalized_state: np.ndarray, normalized_chunk: np.ndarray,
                        max_len: int) -> TokenArrays:
        """Full sequence with the encoded chunk, padded to ``max_len``; loss on the postfix."""
        postfix = self.action_prefix_ids + self.action_ids(self.fast.encode(normalized_chunk)) + self.end_ids
        return self._pack(self.prefix_ids(prompt, normalized_state), postfix + [EOS_ID], max_len, loss=True)

    @staticmethod
    def _pack(prefix: List[int], postfix: List[int], max_len: int, loss: bool) -> TokenArrays:
        ids = prefix + postfix
        if len(ids) > max_len:
            raise PromptTooLongError(f"sequence needs {len(ids)} tokens, the budget is {max_len}")
        tokens = np.full(max_len, PAD_ID, dtype=np.int64)
        tokens[: len(ids)] = ids
        mask = np.arange(max_len) < len(ids)
        ar = (np.arange(max_len) >= len(prefix)) & mask
        return tokens, mask, ar, ar.copy() if loss else np.zeros(max_len, dtype=bool)

    def length_grammar(self) -> ChunkLengthGrammar:
        """The grammar that makes generation end exactly at a whole chunk (see ``fast_grammar``);
        raises ValueError where the FAST tokenizer cannot support it (byte-level FAST+)."""
        counts = self.fast.token_coefficient_counts()
        fast_ids = np.arange(len(counts))
        return ChunkLengthGrammar.build(self.vocab_size, self.action_ids(fast_ids), counts,
                                        (EOS_ID, self.end_ids[0]), self.fast.config.num_coefficients)

    def extract_fast_tokens(self, generated: Sequence[int], require_end: bool = True) -> List[int]:
        """Generated vocabulary ids -> FAST ids; the action span must end with "|" or EOS (unless
        ``require_end`` is False: then a span cut by the generation limit is returned as it is)."""
        ids = [int(t) for t in generated]
        fast: List[int] = []
        top = fast_to_vocab(0, self.vocab_size)
        for t in ids:
            if self.config.first_action_id <= t <= top:
                fast.append(int(vocab_to_fast(t, self.vocab_size)))
                continue
            # Decoding stops at the first non-action token, so only the first id of "|" is seen.
            if t in (EOS_ID, self.end_ids[0]):
                if not fast:
                    raise FastDecodeError("the model ended the action span without any action token")
                return fast
            raise FastDecodeError(f"non-action token {t} inside the action span (after {len(fast)} actions)")
        if fast and not require_end:
            return fast
        raise FastDecodeError(f"no end marker within {len(ids)} generated tokens")

    def decode_actions(self, generated: Sequence[int], length_tolerance: int = 0,
                       cut_extra: bool = False) -> np.ndarray:
        """Generated ids -> normalized chunk [T, D] (checked by the FAST tokenizer; see its ``decode``)."""
        return self.fast.decode(self.extract_fast_tokens(generated, require_end=not cut_extra),
                                length_tolerance=length_tolerance, cut_extra=cut_extra)
