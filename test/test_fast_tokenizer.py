"""FAST tokenizer: round trips, error vs scale, checked decoding (fuzz), files (own and FAST+ layout)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks
from pi0_ros.model.fast_tokenizer import (
    FastDecodeError,
    FastTokenizer,
    chunk_to_coefficients,
    coefficients_to_chunk,
)
from pi0_ros.policy_api import PolicyOutputError

SMOOTH = SyntheticChunkConfig(horizon=50, action_dim=14, gripper_dims=(6, 13))
NOISY = SyntheticChunkConfig(horizon=50, action_dim=14, gripper_dims=(6, 13), noise_std=0.05)


@pytest.fixture(scope="module")
def smooth_chunks():
    return make_chunks(400, SMOOTH, seed=1)


@pytest.fixture(scope="module")
def noisy_chunks():
    return make_chunks(400, NOISY, seed=2)


@pytest.fixture(scope="module")
def tokenizer(smooth_chunks):
    return FastTokenizer.fit(smooth_chunks[:300], scale=10, vocab_size=512)


def _rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def test_decode_error_is_a_policy_output_error():
    assert issubclass(FastDecodeError, PolicyOutputError)


def test_dct_quantization_is_frequency_major():
    chunk = np.zeros((50, 3))
    chunk[:, 1] = 0.5  # constant: only the DC coefficient of dim 1 is nonzero
    coeffs = chunk_to_coefficients(chunk, scale=10)
    assert coeffs.shape == (150,)
    nonzero = np.flatnonzero(coeffs)
    assert nonzero.tolist() == [1]  # frequency 0, dim 1 -> flat index 1
    assert coeffs[1] == round(0.5 * np.sqrt(50) * 10)


@pytest.mark.parametrize("name", ["smooth", "noisy"])
def test_round_trip_error_is_bounded_by_quantization_and_shrinks_with_scale(name, smooth_chunks, noisy_chunks):
    chunks = smooth_chunks if name == "smooth" else noisy_chunks
    train, held_out = chunks[:300], chunks[300:340]
    errors = []
    for scale in (5, 10, 40):
        tok = FastTokenizer.fit(train, scale=scale, vocab_size=max(512, 64 * scale))
        chunk_errors = []
        for chunk in held_out:
            decoded = tok.decode(tok.encode(chunk))
            assert decoded.shape == chunk.shape and decoded.dtype == np.float32
            chunk_errors.append(_rms(decoded, chunk))
        # Each coefficient is off by at most 0.5 / scale and the orthonormal DCT keeps the L2 norm,
        # so the per-chunk RMS error cannot exceed 0.5 / scale (clipping aside, none here).
        assert max(chunk_errors) <= 0.5 / scale + 1e-6
        errors.append(float(np.mean(chunk_errors)))
    assert errors[0] > errors[1] > errors[2]


def test_bpe_is_lossless_on_quantized_coefficients(tokenizer, smooth_chunks):
    for chunk in smooth_chunks[300:320]:
        expected = coefficients_to_chunk(chunk_to_coefficients(chunk, 10), 50, 14, 10)
        np.testing.assert_array_equal(tokenizer.decode(tokenizer.encode(chunk)), expected)


def test_smooth_chunks_compress_better_than_noisy(smooth_chunks, noisy_chunks):
    both = np.concatenate([smooth_chunks[:300], noisy_chunks[:300]])
    tok = FastTokenizer.fit(both, scale=10, vocab_size=1024)
    smooth_len = np.mean([len(tok.encode(c)) for c in smooth_chunks[300:]])
    noisy_len = np.mean([len(tok.encode(c)) for c in noisy_chunks[300:]])
    naive = 50 * 14
    assert smooth_len < noisy_len < naive
    assert smooth_len < naive / 5


def test_save_load_round_trip(tmp_path, tokenizer, smooth_chunks):
    tokenizer.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["pi0_ros_fast.json", "processor_config.json", "tokenizer.json"]
    loaded = FastTokenizer.load(str(tmp_path))
    assert loaded.config == tokenizer.config
    for chunk in smooth_chunks[300:310]:
        ids = tokenizer.encode(chunk)
        assert loaded.encode(chunk) == ids
        np.testing.assert_array_equal(loaded.decode(ids), tokenizer.decode(ids))


def _write_fast_plus_style(folder, chunks, scale=10, vocab_size=512):
    """A universal-tokenizer folder like the released FAST+ one: ByteLevel BPE, no shape in the config."""
    coeffs = np.stack([chunk_to_coefficients(c, scale) for c in chunks])
    min_token = int(coeffs.min())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(("".join(chr(v - min_token) for v in row) for row in coeffs), trainer)
    os.makedirs(folder, exist_ok=True)
    bpe.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"action_dim": None, "min_token": min_token, "processor_class": "UniversalActionProcessor",
                   "scale": scale, "time_horizon": None, "vocab_size": vocab_size}, f)


def test_loads_universal_byte_level_layout(tmp_path, smooth_chunks):
    _write_fast_plus_style(str(tmp_path), smooth_chunks[:300])
    with pytest.raises(ValueError, match="action_horizon"):
        FastTokenizer.load(str(tmp_path))
    tok = FastTokenizer.load(str(tmp_path), action_horizon=50, action_dim=14)
    assert tok.config.max_token is None
    for chunk in smooth_chunks[300:310]:
        decoded = tok.decode(tok.encode(chunk))
        assert _rms(decoded, chunk) <= 0.5 / 10 + 1e-6


def test_specific_bad_sequences_raise(tokenizer, smooth_chunks):
    ids = tokenizer.encode(smooth_chunks[310])
    with pytest.raises(FastDecodeError, match="empty"):
        tokenizer.decode([])
    with pytest.raises(FastDecodeError, match="outside the vocabulary"):
        tokenizer.decode(ids[:-1] + [tokenizer.vocab_size])
    with pytest.raises(FastDecodeError, match="outside the vocabulary"):
        tokenizer.decode([-1] + ids)
    with pytest.raises(FastDecodeError, match="coefficients"):
        tokenizer.decode(ids[:-1])
    with pytest.raises(FastDecodeError, match="coefficients"):
        tokenizer.decode(ids + ids[:1])


def test_relaxed_length_fills_missing_high_frequencies_with_zeros_and_drops_extra_ones(tokenizer, smooth_chunks):
    chunk = smooth_chunks[311]
    ids = tokenizer.encode(chunk)
    full = tokenizer.decode(ids)
    text = tokenizer.bpe.decode(ids, skip_special_tokens=False)
    for cut in (1, 3):  # drop whole trailing tokens: their coefficients are the highest frequencies
        short = ids[:-cut]
        missing = len(text) - len(tokenizer.bpe.decode(short, skip_special_tokens=False))
        with pytest.raises(FastDecodeError, match="coefficients"):
            tokenizer.decode(short)
        with pytest.raises(FastDecodeError, match="accepted"):
            tokenizer.decode(short, length_tolerance=missing - 1)
        relaxed = tokenizer.decode(short, length_tolerance=missing)
        coeffs = chunk_to_coefficients(full, tokenizer.config.scale)
        coeffs[len(coeffs) - missing:] = 0  # frequency-major: the tail is the highest frequencies
        expected = coefficients_to_chunk(coeffs, tokenizer.action_horizon, tokenizer.action_dim, tokenizer.config.scale)
        np.testing.assert_allclose(relaxed, expected, atol=1e-6)
        assert _rms(relaxed, chunk) < 0.1  # still close: only high frequencies are gone
    longer = ids + ids[-1:]
    extra = len(tokenizer.bpe.decode(longer, skip_special_tokens=False)) - len(text)
    np.testing.assert_allclose(tokenizer.decode(longer, length_tolerance=extra), full, atol=1e-6)


def test_decoded_chunk_beyond_normalized_limit_raises(tmp_path, tokenizer):
    loud = np.full((50, 14), 0.95)
    ids = tokenizer.encode(loud)
    assert np.allclose(tokenizer.decode(ids), 0.95, atol=0.05)
    tokenizer.save(str(tmp_path))
    strict = FastTokenizer.load(str(tmp_path), max_abs_normalized=0.5)
    with pytest.raises(FastDecodeError, match="normalized"):
        strict.decode(ids)


def test_range_limit_follows_the_fit_data(smooth_chunks, tmp_path):
    quiet = np.clip(smooth_chunks[:200], -1.0, 1.0)
    assert FastTokenizer.fit(quiet, vocab_size=512).config.max_abs_normalized == 2.0  # the floor
    loud = quiet.copy()
    loud[0, 20:30, 3] = 2.6  # one demonstration reaching past 2, as real ones do
    tok = FastTokenizer.fit(loud, vocab_size=512)
    assert tok.config.max_abs_normalized == pytest.approx(1.25 * np.max(np.abs(loud)))
    decoded = tok.decode(tok.encode(loud[0]))  # the fit data itself decodes
    assert np.max(np.abs(decoded)) > 2.0
    tok.save(str(tmp_path))
    assert FastTokenizer.load(str(tmp_path)).config.max_abs_normalized == tok.config.max_abs_normalized
    with pytest.raises(FastDecodeError, match="normalized"):
        tok.decode(tok.encode(np.full((50, 14), 1.0) + (np.arange(50) == 25)[:, None] * 2.8))


def test_encode_rejects_bad_input_and_clips_out_of_range(tokenizer):
    with pytest.raises(ValueError, match="shape"):
        tokenizer.encode(np.zeros((49, 14)))
    bad = np.zeros((50, 14))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(bad)
    # Far outside the fitted data: clipped into the alphabet, so the result still decodes.
    huge = np.full((50, 14), 50.0)
    decoded = tokenizer.decode(tokenizer.encode(huge))
    assert np.all(decoded < 50.0) and np.all(np.isfinite(decoded))


def test_fit_rejects_too_small_vocab(smooth_chunks):
    with pytest.raises(ValueError, match="vocab_size"):
        FastTokenizer.fit(smooth_chunks[:50], scale=100, vocab_size=256)


def _fuzz(tok, valid_sequences, rng, trials):
    decoded_ok = 0
    for trial in range(trials):
        if trial % 2 == 0:
            length = int(rng.integers(0, 200))
            ids = rng.integers(-3, tok.vocab_size + 3, size=length).tolist()
        else:  # a valid sequence with a few tokens replaced: right length more often
            ids = list(valid_sequences[trial % len(valid_sequences)])
            for _ in range(int(rng.integers(1, 3))):
                ids[int(rng.integers(0, len(ids)))] = int(rng.integers(0, tok.vocab_size))
        try:
            chunk = tok.decode(ids)
        except FastDecodeError:
            continue
        decoded_ok += 1
        assert chunk.shape == (tok.action_horizon, tok.action_dim)
        assert np.all(np.isfinite(chunk))
        assert np.max(np.abs(chunk)) <= tok.config.max_abs_normalized
    return decoded_ok


def test_decode_fuzz_never_crashes_or_returns_unchecked(tokenizer, smooth_chunks, tmp_path):
    rng = np.random.default_rng(7)
    valid = [tokenizer.encode(c) for c in smooth_chunks[300:340]]
    # Some mutated sequences do decode: the checked-success path is exercised as well.
    assert _fuzz(tokenizer, valid, rng, trials=1500) > 0
    _write_fast_plus_style(str(tmp_path), smooth_chunks[:300])
    byte_level = FastTokenizer.load(str(tmp_path), action_horizon=50, action_dim=14)
    valid = [byte_level.encode(c) for c in smooth_chunks[300:340]]
    assert _fuzz(byte_level, valid, rng, trials=1500) > 0


def test_cut_extra_drops_any_tail_after_a_whole_chunk(tokenizer, smooth_chunks):
    ids = tokenizer.encode(smooth_chunks[312])
    full = tokenizer.decode(ids)
    runaway = ids + ids + ids  # a model that does not stop repeats itself after the chunk
    with pytest.raises(FastDecodeError, match="coefficients"):
        tokenizer.decode(runaway, length_tolerance=3)
    np.testing.assert_allclose(tokenizer.decode(runaway, cut_extra=True), full, atol=1e-6)
    with pytest.raises(FastDecodeError, match="coefficients"):  # cutting never covers missing coefficients
        tokenizer.decode(ids[:-2], cut_extra=True)
