"""Pre/post-processing: images, normalization, padding, delta actions, prompt tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pi0_ros.model import action_transforms as at
from pi0_ros.model.image_transforms import check_image, resize_with_pad, to_model_pixels
from pi0_ros.model.normalization import NormStats, load_norm_stats, normalize, save_norm_stats, unnormalize
from pi0_ros.model.tokenizer import BOS_ID, PromptTooLongError, default_corpus, train_tokenizer
from pi0_ros.policy_api import PolicyInputError


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(default_corpus(), vocab_size=400, max_len=16)


def test_resize_with_pad_keeps_aspect_and_pads_black():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    out = resize_with_pad(image, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # 200 wide -> 224 wide, so 100 high -> 112 high, centred: 56 black rows above and below.
    assert (out[:56] == 0).all() and (out[-56:] == 0).all()
    assert (out[60:164] == 255).all()


def test_resize_passes_through_exact_size_and_scales_to_unit_range():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(resize_with_pad(image, 32), image)
    pixels = to_model_pixels(np.array([[[0, 255, 128]]], dtype=np.uint8))
    assert pixels.shape == (3, 1, 1)
    assert pixels[0, 0, 0] == -1.0 and pixels[1, 0, 0] == 1.0 and abs(pixels[2, 0, 0]) < 0.01


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                 np.zeros((8, 8, 4), np.uint8), [[0, 0, 0]], np.zeros((0, 8, 3), np.uint8)])
def test_bad_images_raise_policy_input_error(bad):
    with pytest.raises(PolicyInputError, match="cam"):
        check_image(bad, "cam")


@pytest.mark.parametrize("mode", ["zscore", "quantile"])
def test_normalization_round_trip(mode):
    rng = np.random.default_rng(1)
    stats = NormStats(mean=rng.normal(size=5), std=rng.uniform(0.1, 2, 5), q01=-rng.uniform(1, 2, 5),
                      q99=rng.uniform(1, 2, 5))
    x = rng.normal(size=(7, 5))
    np.testing.assert_allclose(unnormalize(normalize(x, stats, mode), stats, mode), x, atol=1e-5)


def test_normalization_formulas_on_simple_numbers():
    stats = NormStats(mean=[1.0], std=[2.0], q01=[0.0], q99=[10.0])
    assert normalize(np.array([5.0]), stats, "zscore")[0] == pytest.approx(2.0, abs=1e-5)
    assert normalize(np.array([5.0]), stats, "quantile")[0] == pytest.approx(0.0, abs=1e-5)
    assert normalize(np.array([10.0]), stats, "quantile")[0] == pytest.approx(1.0, abs=1e-5)


def test_normalization_rejects_mismatches():
    stats = NormStats(mean=[0.0, 0.0], std=[1.0, 1.0])
    with pytest.raises(ValueError, match="2 dims"):
        normalize(np.zeros(3), stats, "zscore")
    with pytest.raises(ValueError, match="q01"):
        normalize(np.zeros(2), stats, "quantile")
    with pytest.raises(ValueError, match="finite"):
        NormStats(mean=[np.nan], std=[1.0])
    with pytest.raises(ValueError, match=r"'q01' exceeds 'q99' in dims \[1\]"):
        NormStats(mean=[0.0, 0.0], std=[1.0, 1.0], q01=[-1.0, 2.0], q99=[1.0, 1.0])
    NormStats(mean=[0.0], std=[0.0], q01=[0.5], q99=[0.5])  # a constant dimension is valid
    with pytest.raises(ValueError, match="unknown"):
        normalize(np.zeros(2), stats, "minmax")


def test_openpi_norm_stats_json_round_trip(tmp_path):
    path = tmp_path / "norm_stats.json"
    path.write_text(json.dumps({"norm_stats": {
        "state": {"mean": [0.5, 1.0], "std": [0.1, 0.2], "q01": [0.0, 0.5], "q99": [1.0, 1.5]},
        "actions": {"mean": [0.0], "std": [1.0]}}}))
    stats = load_norm_stats(path)
    assert stats["state"].dim == 2 and stats["actions"].q01 is None
    save_norm_stats(tmp_path / "again.json", stats)
    again = load_norm_stats(tmp_path / "again.json")
    np.testing.assert_array_equal(again["state"].q99, [1.0, 1.5])
    (tmp_path / "bad.json").write_text(json.dumps({"stats": {}}))
    with pytest.raises(ValueError, match="norm_stats"):
        load_norm_stats(tmp_path / "bad.json")


@pytest.mark.parametrize("entry, match", [
    ([0.0, 1.0], "'state' must be an object"),
    ({"std": [1.0]}, "'state' lack mean"),
    ({"mean": [0.0]}, "'state' lack std"),
])
def test_malformed_norm_stats_entry_names_the_file_and_key(tmp_path, entry, match):
    path = tmp_path / "norm_stats.json"
    path.write_text(json.dumps({"norm_stats": {"state": entry, "actions": {"mean": [0.0], "std": [1.0]}}}))
    with pytest.raises(ValueError, match=match) as raised:
        load_norm_stats(path)
    assert str(path) in str(raised.value)


def test_padding_and_delta_conversion():
    padded = at.pad_to(np.ones((4, 3)), 8)
    assert padded.shape == (4, 8) and padded[:, 3:].sum() == 0
    with pytest.raises(ValueError, match="fit"):
        at.pad_to(np.ones(9), 8)
    mask = at.check_delta_mask([True, True, False], action_dim=3, state_dim=4)
    state = np.array([1.0, 2.0, 3.0, 4.0])
    deltas = np.zeros((5, 3))
    absolute = at.to_absolute(deltas, state, mask)
    np.testing.assert_array_equal(absolute[:, :2], np.tile([1.0, 2.0], (5, 1)))
    np.testing.assert_array_equal(absolute[:, 2], 0.0)  # the gripper dim stays absolute
    np.testing.assert_allclose(at.to_delta(absolute, state, mask), deltas)
    with pytest.raises(ValueError, match="entries"):
        at.check_delta_mask([True], action_dim=3, state_dim=4)
    with pytest.raises(ValueError, match="reference"):
        at.check_delta_mask([False, False, True], action_dim=3, state_dim=2)


def test_prompt_layout(tokenizer):
    tokens, mask = tokenizer.tokenize("  pick_up the red cube\n")
    n = int(mask.sum())
    assert tokens[0] == BOS_ID and mask[:n].all() and not mask[n:].any() and (tokens[n:] == 0).all()
    assert tokens[n - 1] == tokenizer.sp.piece_to_id("\n")
    same, _ = tokenizer.tokenize("pick up the red cube")
    np.testing.assert_array_equal(tokens, same)  # '_' and newlines are spaces, ends stripped
    assert tokens.max() < tokenizer.vocab_size <= 400


def test_prompt_errors(tokenizer):
    with pytest.raises(PromptTooLongError):
        tokenizer.tokenize("pick up the red cube and then place the blue block on the shelf with both arms")
    assert issubclass(PromptTooLongError, PolicyInputError)
    with pytest.raises(PolicyInputError, match="str"):
        tokenizer.tokenize(None)
    tokens, mask = tokenizer.tokenize("grüße ☃")  # unseen characters fall back to bytes
    assert mask.sum() > 3
