"""pi0 prompt tokenization with a SentencePiece model (PaliGemma's, or a small one trained here).

pi0 prompt: BOS + cleaned text + the token(s) of "\\n", right-padded with 0 to ``max_len`` and masked.
Cleaning (openpi): strip, then "_" and newlines become spaces. Ids follow PaliGemma: pad 0, EOS 1,
BOS 2, unk 3. A prompt longer than ``max_len`` raises PromptTooLongError (a PolicyInputError) rather
than being cut, because a truncated instruction silently changes the task.
"""

from __future__ import annotations

import io
import itertools
import os
from typing import Iterable, List, Tuple

import numpy as np
import sentencepiece as spm

from pi0_ros.policy_api import PolicyInputError

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


class PromptTooLongError(PolicyInputError):
    """The tokenized prompt does not fit the model's token budget."""


def clean_prompt(text: str) -> str:
    """openpi's cleaning: strip, '_' and newlines -> spaces."""
    return text.strip().replace("_", " ").replace("\n", " ")


class PromptTokenizer:
    """Wraps a SentencePiece model; ``tokenize(prompt) -> (int32 [max_len], bool [max_len])``."""

    def __init__(self, model_proto: bytes, max_len: int):
        self.model_proto = model_proto
        self.max_len = max_len
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if (self.sp.pad_id(), self.sp.eos_id(), self.sp.bos_id()) != (PAD_ID, EOS_ID, BOS_ID):
            raise ValueError("tokenizer must use PaliGemma ids: pad 0, EOS 1, BOS 2")

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_len: int) -> "PromptTokenizer":
        """Load a ``tokenizer.model`` file."""
        with open(path, "rb") as f:
            return cls(f.read(), max_len)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce."""
        return self.sp.get_piece_size()

    def encode(self, prompt: str) -> List[int]:
        """Unpadded ids: BOS + text + "\\n"."""
        if not isinstance(prompt, str):
            raise PolicyInputError(f"prompt must be a str, got {type(prompt).__name__}")
        return [BOS_ID] + self.sp.encode(clean_prompt(prompt)) + self.sp.encode("\n")

    def tokenize(self, prompt: str) -> Tuple[np.ndarray, np.ndarray]:
        """Padded ids and mask; raises PromptTooLongError when the prompt does not fit."""
        ids = self.encode(prompt)
        if len(ids) > self.max_len:
            raise PromptTooLongError(f"prompt needs {len(ids)} tokens, the model takes {self.max_len}")
        tokens = np.full(self.max_len, PAD_ID, dtype=np.int32)
        tokens[: len(ids)] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[: len(ids)] = True
        return tokens, mask

    def save(self, path: str | os.PathLike) -> None:
        """Write the SentencePiece model file."""
        with open(path, "wb") as f:
            f.write(self.model_proto)


_VERBS = ("pick up", "place", "put", "move", "push", "grasp", "open", "close", "fold", "hand over", "stack",
          "lift", "pour", "wipe", "turn", "rotate", "hold", "release", "drop", "slide")
_OBJECTS = ("red cube", "blue block", "green cup", "towel", "bottle", "drawer", "door", "box", "apple",
            "sponge", "bowl", "plate", "lid", "shirt", "marker", "can", "tray", "bag", "basket", "spoon")
_PLACES = ("on the table", "into the bin", "to the left", "to the right", "on the shelf", "in the box",
           "with the left arm", "with the right arm", "with both arms", "next to the plate")


def default_corpus() -> List[str]:
    """Built-in robot-instruction sentences, so the package can train a small tokenizer by itself."""
    lines = [f"{v} the {o} {p}" for v, o, p in itertools.product(_VERBS, _OBJECTS, _PLACES)]
    lines += ["do nothing", "stop", "go home", "reset the arms", "look at the camera"]
    return lines


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, max_len: int = 48) -> PromptTokenizer:
    """Train a small BPE SentencePiece model with PaliGemma's special ids and byte fallback.

    Byte fallback means any prompt encodes (unknown characters become byte tokens), and "\\n" is its own
    piece, as in PaliGemma's vocabulary.
    """
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus)),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        byte_fallback=True,
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        minloglevel=2,
    )
    return PromptTokenizer(buffer.getvalue(), max_len)
