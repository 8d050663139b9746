"""Pi0Policy: end to end from a make_checkpoint directory, camera slots, reproducibility, bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pi0_ros.model import make_checkpoint
from pi0_ros.model.checkpoint import CheckpointError
from pi0_ros.model.policy import Pi0Policy
from pi0_ros.model.tokenizer import PromptTooLongError
from pi0_ros.policy_api import Policy, PolicyInputError, PolicyOutputError

STATE_DIM, ACTION_DIM = 5, 4


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy") / "pi0_test"
    rc = make_checkpoint.main(["--config", "pi0_test", "--out", str(out), "--state-dim", str(STATE_DIM),
                               "--action-dim", str(ACTION_DIM), "--cameras", "head,left_wrist,right_wrist",
                               "--delta-dims", "0-2", "--action-std", "0.5"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def policy(ckpt_dir):
    return Pi0Policy.from_checkpoint(str(ckpt_dir), device="cpu")


def observation(**changes):
    rng = np.random.default_rng(0)
    obs = {
        "images": {"head": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                   "left_wrist": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),
                   "right_wrist": rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)},
        "state": np.linspace(-1, 1, STATE_DIM).astype(np.float32),
        "prompt": "pick up the red cube",
    }
    obs.update(changes)
    return obs


def test_infer_end_to_end(policy):
    assert isinstance(policy, Policy)
    meta = policy.metadata
    assert meta["action_dim"] == ACTION_DIM and meta["action_horizon"] == 6
    assert meta["image_slots"] == {"base": "head", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
    result = policy.infer(observation(), seed=1)
    assert result["actions"].shape == (6, ACTION_DIM) and result["actions"].dtype == np.float32
    assert np.isfinite(result["actions"]).all() and result["policy_timing"]["infer_ms"] > 0


def test_seed_and_noise_make_it_reproducible(policy):
    a = policy.infer(observation(), seed=3)["actions"]
    b = policy.infer(observation(), seed=3)["actions"]
    c = policy.infer(observation(), seed=4)["actions"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    noise = np.random.default_rng(5).normal(size=(6, 8)).astype(np.float32)
    d = policy.infer(observation(), noise=noise)["actions"]
    e = policy.infer(observation(), noise=noise)["actions"]
    np.testing.assert_array_equal(d, e)
    with pytest.raises(PolicyInputError, match="noise"):
        policy.infer(observation(), noise=np.zeros((6, 3)))


def test_output_matches_model_plus_postprocessing(policy):
    obs = observation()
    noise = np.random.default_rng(6).normal(size=(6, 8)).astype(np.float32)
    inputs, state = policy.prepare(obs)
    raw = policy.model.sample_actions(inputs, noise=torch.from_numpy(noise)[None])[0].numpy()
    expected = raw[:, :ACTION_DIM] * (0.5 + 1e-6)  # action stats: mean 0, std 0.5
    expected[:, :3] += state[:3]  # dims 0-2 are deltas to the state
    np.testing.assert_allclose(policy.infer(obs, noise=noise)["actions"], expected, rtol=1e-5, atol=1e-5)


def test_missing_camera_is_masked_in_its_slot(policy):
    obs = observation()
    del obs["images"]["left_wrist"]
    inputs, _ = policy.prepare(obs)
    assert inputs.image_masks[0].tolist() == [True, False, True]
    assert (inputs.images[0, 1] == -1).all()
    assert inputs.state.shape == (1, 8) and (inputs.state[0, STATE_DIM:] == 0).all()
    assert np.isfinite(policy.infer(obs, seed=0)["actions"]).all()


@pytest.mark.parametrize("change, match", [
    ({"images": {"head": np.zeros((28, 28, 3), np.float32)}}, "uint8"),
    ({"images": {"head": np.zeros((28, 28), np.uint8)}}, "RGB"),
    ({"images": {"hand_cam": np.zeros((28, 28, 3), np.uint8)}}, "unknown camera"),
    ({"images": {}}, "no camera"),
    ({"images": None}, "dict"),
    ({"state": np.zeros(STATE_DIM + 1)}, "shape"),
    ({"state": np.array([0, 0, np.nan, 0, 0])}, "NaN"),
    ({"state": "zero"}, "numeric"),
    ({"prompt": 42}, "string"),
])
def test_bad_inputs_raise_policy_input_error(policy, change, match):
    with pytest.raises(PolicyInputError, match=match):
        policy.infer(observation(**change))


def test_overlong_and_missing_prompt(policy):
    with pytest.raises(PromptTooLongError):
        policy.infer(observation(prompt="pick up the red cube " * 10))
    obs = observation()
    del obs["prompt"]
    with pytest.raises(PolicyInputError, match="prompt"):
        policy.infer(obs)


def test_non_finite_model_output_never_leaves_the_policy(ckpt_dir):
    policy = Pi0Policy.from_checkpoint(str(ckpt_dir), device="cpu")
    with torch.no_grad():
        policy.model.action_out_proj.bias[0] = float("nan")
    with pytest.raises(PolicyOutputError):
        policy.infer(observation(), seed=0)


@pytest.mark.parametrize("key, dropped", [("state", "q01"), ("actions", "q99")])
def test_quantile_checkpoint_without_quantiles_is_refused_at_load(ckpt_dir, tmp_path, key, dropped):
    bad_dir = tmp_path / "no_quantiles"
    shutil.copytree(ckpt_dir, bad_dir)
    config = json.loads((bad_dir / "config.json").read_text())
    config["policy"]["normalization"] = "quantile"
    (bad_dir / "config.json").write_text(json.dumps(config))
    stats = json.loads((bad_dir / "norm_stats.json").read_text())
    del stats["norm_stats"][key][dropped]
    (bad_dir / "norm_stats.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match=f"{key!r} lack {dropped}"):
        Pi0Policy.from_checkpoint(str(bad_dir), device="cpu")


@pytest.mark.parametrize("record, expected", [
    ({"action_space": "ee_pose", "step": 10}, "ee_pose"), ({"step": 10}, None), ([1, 2], None), (None, None),
], ids=["recorded", "not recorded", "not an object", "no training.json"])
def test_metadata_reports_the_trained_action_space(ckpt_dir, tmp_path, record, expected):
    # The node executes chunks in this layout unless told otherwise (ee poses read as joint angles would be
    # the same length and entirely wrong).
    trained = tmp_path / "trained"
    shutil.copytree(ckpt_dir, trained)
    if record is not None:
        (trained / "training.json").write_text(json.dumps(record))
    metadata = Pi0Policy.from_checkpoint(str(trained), device="cpu").metadata
    assert metadata.get("action_space") == expected


def test_make_checkpoint_rejects_inconsistent_settings(tmp_path):
    with pytest.raises(ValueError, match="reference"):
        make_checkpoint.main(["--config", "pi0_test", "--out", str(tmp_path / "x"), "--state-dim", "2",
                              "--action-dim", "4", "--delta-dims", "0-3"])
    assert not (tmp_path / "x").exists()
