"""FAST action tokenizer: DCT-compressed, BPE-encoded action chunks (Pertsch et al. 2025).

Encoding a normalized chunk ``float[T, D]`` (quantile-normalized to about [-1, 1]):

1. orthonormal DCT-II along time, per action dimension;
2. multiply by ``scale`` and round to integers;
3. flatten frequency-major (all dimensions of the lowest frequency first);
4. shift by ``-min_token`` and map each integer to one unicode character;
5. compress the string with a byte-pair encoding (HuggingFace ``tokenizers``).

Decoding reverses every step and checks each one: an id outside the vocabulary, a string that is
not a valid symbol sequence, a wrong number of coefficients, a coefficient outside the alphabet or
a chunk far outside the normalized range raises :class:`FastDecodeError` instead of returning a
guess (openpi silently returns zeros there; a robot must never receive such a chunk). One relaxation
is opt-in (``length_tolerance``): a sequence a few coefficients too short or too long is completed
with zeros or cut at the end. Frequency-major order puts the highest frequencies last, so this only
smooths the chunk (LeRobot's pi0-FAST decodes the same way, without a bound).

On disk a tokenizer is a folder with ``tokenizer.json`` and ``processor_config.json`` -- the layout
of the released FAST+ tokenizer (``physical-intelligence/fast`` on the HuggingFace hub), so that
folder loads here too -- plus ``pi0_ros_fast.json`` with the checks' bounds, kept separate so the
processor config stays loadable by the reference processor.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pi0_ros.policy_api import PolicyOutputError

_LOG = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
PROCESSOR_CONFIG_FILE = "processor_config.json"
EXTRA_CONFIG_FILE = "pi0_ros_fast.json"
# Decode range check (normalized units): at least this, and at least RANGE_MARGIN x the fit data's peak.
DEFAULT_MAX_ABS = 2.0
RANGE_MARGIN = 1.25
# What the ByteLevel decoder puts where bytes are not valid UTF-8: a sign of a broken sequence.
_REPLACEMENT_CHAR = "\ufffd"


class FastDecodeError(PolicyOutputError):
    """A FAST token sequence that does not decode to a valid action chunk."""


@dataclass
class FastTokenizerConfig:
    """Quantization and shape parameters of a FAST tokenizer.

    ``action_horizon``/``action_dim`` may be None for a universal tokenizer (FAST+); they must then be
    given when loading. ``max_token`` is the highest coefficient the BPE alphabet covers (None when
    unknown, as for FAST+). ``max_abs_normalized`` bounds a decoded chunk: quantile-normalized data
    lies in [-1, 1] up to the 1% tails, so a decoded value far beyond that is a broken sequence.
    """

    action_horizon: Optional[int] = None
    action_dim: Optional[int] = None
    scale: float = 10.0
    vocab_size: int = 1024
    min_token: int = 0
    max_token: Optional[int] = None
    max_abs_normalized: float = DEFAULT_MAX_ABS

    def chunk_shape(self) -> "tuple[int, int]":
        """(T, D) of a chunk; raises ValueError when either is unset."""
        if self.action_horizon is None or self.action_dim is None:
            raise ValueError("FAST tokenizer needs action_horizon and action_dim to encode/decode")
        return int(self.action_horizon), int(self.action_dim)

    @property
    def num_coefficients(self) -> int:
        """Coefficients per chunk (T * D)."""
        horizon, dim = self.chunk_shape()
        return horizon * dim


def chunk_to_coefficients(chunk: np.ndarray, scale: float) -> np.ndarray:
    """Quantized DCT coefficients of ``chunk[T, D]``, flattened frequency-major, as int64[T * D]."""
    coeffs = dct(np.asarray(chunk, dtype=np.float64), axis=0, norm="ortho")
    # Row-major flattening of [frequency, dim] puts all dims of frequency 0 first.
    return np.rint(coeffs * scale).astype(np.int64).reshape(-1)


def coefficients_to_chunk(coeffs: np.ndarray, horizon: int, action_dim: int, scale: float) -> np.ndarray:
    """Inverse of :func:`chunk_to_coefficients` (up to the rounding): float32[horizon, action_dim]."""
    grid = np.asarray(coeffs, dtype=np.float64).reshape(horizon, action_dim) / scale
    return idct(grid, axis=0, norm="ortho").astype(np.float32)


def _coefficients_to_text(coeffs: np.ndarray, min_token: int) -> str:
    return "".join(map(chr, (coeffs - min_token).tolist()))


class FastTokenizer:
    """Encode normalized action chunks to FAST token ids and decode them back, with checks."""

    def __init__(self, bpe: Tokenizer, config: FastTokenizerConfig) -> None:
        self.bpe = bpe
        self.config = config
        # FAST+ files use a ByteLevel BPE whose decoder can yield invalid UTF-8; ours maps characters
        # directly. Both decode through ``bpe.decode``; only ByteLevel needs the UTF-8 check.
        self._byte_level = isinstance(bpe.pre_tokenizer, pre_tokenizers.ByteLevel) or isinstance(
            bpe.decoder, decoders.ByteLevel
        )
        self._clip_warned = False

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """Number of FAST token ids (ids are 0 .. vocab_size - 1)."""
        return self.bpe.get_vocab_size(with_added_tokens=True)

    @property
    def action_horizon(self) -> int:
        """Time steps per chunk."""
        return self.config.chunk_shape()[0]

    @property
    def action_dim(self) -> int:
        """Action dimensions per step."""
        return self.config.chunk_shape()[1]

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        chunks: Iterable[np.ndarray],
        scale: float = 10.0,
        vocab_size: int = 1024,
        min_frequency: int = 2,
        max_abs_normalized: Optional[float] = None,
    ) -> "FastTokenizer":
        """Train the BPE on normalized chunks ``[T, D]`` (an array ``[N, T, D]`` or an iterable).

        The alphabet spans the observed coefficient range; it must leave room for merges in
        ``vocab_size`` (a larger ``scale`` widens it). ``max_abs_normalized`` (the decode range check;
        default: derived from the data, ``RANGE_MARGIN`` times the largest value seen, at least
        ``DEFAULT_MAX_ABS``): quantile normalization leaves the 1 % tails beyond +-1, and on real
        demonstrations a few percent of chunks reach past 2, so a fixed bound would refuse
        answers that look exactly like the training data.
        """
        coeff_rows: List[np.ndarray] = []
        shape = None
        peak = 0.0
        for chunk in chunks:
            chunk = np.asarray(chunk, dtype=np.float64)
            if chunk.ndim != 2 or (shape is not None and chunk.shape != shape):
                raise ValueError(f"fit needs chunks of one shape [T, D]; got {chunk.shape} after {shape}")
            if not np.all(np.isfinite(chunk)):
                raise ValueError("fit data contains NaN or inf")
            shape = chunk.shape
            peak = max(peak, float(np.max(np.abs(chunk))))
            coeff_rows.append(chunk_to_coefficients(chunk, scale))
        if not coeff_rows:
            raise ValueError("fit needs at least one chunk")
        all_coeffs = np.stack(coeff_rows)
        min_token, max_token = int(all_coeffs.min()), int(all_coeffs.max())
        alphabet_size = max_token - min_token + 1
        if alphabet_size > vocab_size:
            raise ValueError(
                f"vocab_size {vocab_size} is smaller than the coefficient alphabet ({alphabet_size}); "
                "raise vocab_size or lower scale"
            )
        bpe = Tokenizer(models.BPE())
        # No pre-tokenizer: merges may span the whole chunk string. Fuse joins decoded pieces.
        bpe.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[],
            initial_alphabet=[chr(i) for i in range(alphabet_size)],
            show_progress=False,
        )
        bpe.train_from_iterator((_coefficients_to_text(row, min_token) for row in all_coeffs), trainer)
        if max_abs_normalized is None:
            max_abs_normalized = max(DEFAULT_MAX_ABS, RANGE_MARGIN * peak)
        config = FastTokenizerConfig(
            action_horizon=shape[0],
            action_dim=shape[1],
            scale=float(scale),
            vocab_size=vocab_size,
            min_token=min_token,
            max_token=max_token,
            max_abs_normalized=max_abs_normalized,
        )
        return cls(bpe, config)

    # ------------------------------------------------------------------ encode
    def encode(self, chunk: np.ndarray) -> List[int]:
        """FAST token ids of one normalized chunk ``[T, D]``.

        Coefficients outside the alphabet are clipped to it (with a warning): a tokenizer fitted
        on other data must still produce a sequence that decodes.
        """
        chunk = np.asarray(chunk, dtype=np.float64)
        expected = (self.action_horizon, self.action_dim)
        if chunk.shape != expected:
            raise ValueError(f"chunk shape {chunk.shape} != tokenizer's {expected}")
        if not np.all(np.isfinite(chunk)):
            raise ValueError("chunk contains NaN or inf")
        coeffs = chunk_to_coefficients(chunk, self.config.scale)
        low, high = self._coefficient_range()
        clipped = np.clip(coeffs, low, high)
        if not self._clip_warned and np.any(clipped != coeffs):
            _LOG.warning("FAST encode clipped coefficients to the alphabet [%d, %d]", low, high)
            self._clip_warned = True
        return list(self.bpe.encode(_coefficients_to_text(clipped, self.config.min_token)).ids)

    def encode_batch(self, chunks: Sequence[np.ndarray]) -> List[List[int]]:
        """FAST token ids of each chunk in ``chunks[B, T, D]``."""
        return [self.encode(chunk) for chunk in chunks]

    # ------------------------------------------------------------------ decode
    def decode(self, tokens: Sequence[int], length_tolerance: int = 0, cut_extra: bool = False) -> np.ndarray:
        """The normalized chunk ``float32[T, D]`` of a token sequence; raises FastDecodeError.

        ``length_tolerance``: accept up to this many coefficients too few (the missing highest frequencies
        become 0) or too many (the extra ones are dropped); ``cut_extra``: drop any number of extra
        coefficients (every coefficient of the chunk is there; a model that does not stop adds a tail).
        Every other check still applies."""
        ids = [int(t) for t in tokens]
        if not ids:
            raise FastDecodeError("empty FAST token sequence")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise FastDecodeError(f"FAST token ids outside the vocabulary [0, {self.vocab_size}): {bad[:5]}")
        text = self.bpe.decode(ids, skip_special_tokens=False)
        if self._byte_level and _REPLACEMENT_CHAR in text:
            raise FastDecodeError("FAST tokens do not form valid UTF-8 (broken byte-level sequence)")
        expected = self.config.num_coefficients
        extra_ok = cut_extra and len(text) > expected
        if len(text) != expected and not extra_ok and (not text or abs(len(text) - expected) > length_tolerance):
            raise FastDecodeError(f"FAST tokens decode to {len(text)} coefficients, expected {expected}"
                                  + (f" (+-{length_tolerance} accepted)" if length_tolerance else ""))
        coeffs = np.fromiter((ord(c) for c in text), dtype=np.int64, count=len(text)) + self.config.min_token
        if len(coeffs) != expected:
            coeffs = np.concatenate([coeffs[:expected], np.zeros(max(0, expected - len(coeffs)), dtype=np.int64)])
        low, high = self._coefficient_range()
        if coeffs.min() < low or coeffs.max() > high:
            raise FastDecodeError(
                f"FAST coefficient out of range [{low}, {high}]: min {coeffs.min()}, max {coeffs.max()}"
            )
        chunk = coefficients_to_chunk(coeffs, self.action_horizon, self.action_dim, self.config.scale)
        peak = float(np.max(np.abs(chunk)))
        if not math.isfinite(peak) or peak > self.config.max_abs_normalized:
            raise FastDecodeError(
                f"decoded chunk reaches {peak:.3g} in normalized units (limit {self.config.max_abs_normalized})"
            )
        return chunk

    def token_coefficient_counts(self) -> np.ndarray:
        """int64[vocab_size]: how many coefficients each FAST id decodes to (its string length).

        Raises ValueError for a byte-level tokenizer (FAST+), whose tokens do not map to whole
        coefficients."""
        if self._byte_level:
            raise ValueError("byte-level FAST tokenizers have no per-token coefficient count")
        return np.array([len(self.bpe.decode([i], skip_special_tokens=False)) for i in range(self.vocab_size)],
                        dtype=np.int64)

    def _coefficient_range(self) -> "tuple[int, int]":
        low = self.config.min_token
        # Orthonormal DCT preserves the L2 norm, so no coefficient of a chunk bounded by A exceeds
        # sqrt(T) * A: a valid bound even when the alphabet's top (max_token) is unknown.
        norm_bound = int(math.ceil(math.sqrt(self.action_horizon) * self.config.max_abs_normalized * self.config.scale))
        high = norm_bound if self.config.max_token is None else self.config.max_token
        return max(low, -norm_bound), high

    # ------------------------------------------------------------------ files
    def save(self, directory: str) -> None:
        """Write tokenizer.json, processor_config.json (FAST layout) and pi0_ros_fast.json."""
        os.makedirs(directory, exist_ok=True)
        self.bpe.save(os.path.join(directory, TOKENIZER_FILE))
        cfg = asdict(self.config)
        processor = {
            "action_dim": cfg["action_dim"],
            "min_token": cfg["min_token"],
            "processor_class": "UniversalActionProcessor",
            "scale": cfg["scale"],
            "time_horizon": cfg["action_horizon"],
            "vocab_size": cfg["vocab_size"],
        }
        _write_json(os.path.join(directory, PROCESSOR_CONFIG_FILE), processor)
        extra = {"max_token": cfg["max_token"], "max_abs_normalized": cfg["max_abs_normalized"]}
        _write_json(os.path.join(directory, EXTRA_CONFIG_FILE), extra)

    @classmethod
    def load(
        cls,
        directory: str,
        action_horizon: Optional[int] = None,
        action_dim: Optional[int] = None,
        max_abs_normalized: Optional[float] = None,
    ) -> "FastTokenizer":
        """Load a folder written by :meth:`save` or the released FAST+ tokenizer folder.

        ``action_horizon``/``action_dim`` override the files (a universal tokenizer has none).
        """
        bpe = Tokenizer.from_file(os.path.join(directory, TOKENIZER_FILE))
        with open(os.path.join(directory, PROCESSOR_CONFIG_FILE), encoding="utf-8") as f:
            processor = json.load(f)
        extra = {}
        extra_path = os.path.join(directory, EXTRA_CONFIG_FILE)
        if os.path.exists(extra_path):
            with open(extra_path, encoding="utf-8") as f:
                extra = json.load(f)
        config = FastTokenizerConfig(
            action_horizon=action_horizon or processor.get("time_horizon"),
            action_dim=action_dim or processor.get("action_dim"),
            scale=float(processor.get("scale", 10.0)),
            vocab_size=int(processor.get("vocab_size", bpe.get_vocab_size())),
            min_token=int(processor.get("min_token", 0)),
            max_token=extra.get("max_token"),
            max_abs_normalized=float(max_abs_normalized or extra.get("max_abs_normalized", DEFAULT_MAX_ABS)),
        )
        config.chunk_shape()  # fail at load time, not at the first decode on the robot
        return cls(bpe, config)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")

