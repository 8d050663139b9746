"""pi0-FAST policy and checkpoints: round trip, input errors, undecodable output raises and is counted."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from pi0_ros.model.checkpoint import CheckpointError
from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks
from pi0_ros.model.fast_tokenizer import FastDecodeError, FastTokenizer
from pi0_ros.model.normalization import NormStats
from pi0_ros.model.pi0_fast import Pi0FastModel, get_pi0_fast_config
from pi0_ros.model.pi0_fast_checkpoint import read_fast_checkpoint, save_fast_checkpoint
from pi0_ros.model.pi0_fast_policy import Pi0FastPolicy
from pi0_ros.model.policy import policy_config_for
from pi0_ros.model.tokenizer import default_corpus, train_tokenizer
from pi0_ros.policy_api import Policy, PolicyInputError

CFG = get_pi0_fast_config("pi0_fast_test")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = Pi0FastModel(CFG).eval()
    text = train_tokenizer(default_corpus(), vocab_size=320, max_len=CFG.max_token_len)
    chunks = make_chunks(200, SyntheticChunkConfig(horizon=10, action_dim=4, gripper_dims=(3,)), seed=0)
    fast = FastTokenizer.fit(chunks, scale=10, vocab_size=256)
    stats = {"state": NormStats.identity(4), "actions": NormStats.identity(3)}
    policy = policy_config_for(["head", "", "right"], 4, 3, normalization="quantile", delta_mask=[True, True, False])
    out = tmp_path_factory.mktemp("ckpt") / "pi0_fast"
    save_fast_checkpoint(str(out), model, policy, stats, text, fast)
    return str(out), model


def test_checkpoint_round_trip(ckpt_dir):
    path, model = ckpt_dir
    ckpt = read_fast_checkpoint(path)
    assert ckpt.model_config == CFG
    for key, value in model.state_dict().items():
        if key in ckpt.weights:
            torch.testing.assert_close(ckpt.weights[key], value)
    with pytest.raises(CheckpointError):
        read_fast_checkpoint(str(path) + "_missing")


def test_metadata_reports_the_trained_action_space(ckpt_dir, tmp_path):
    trained = tmp_path / "trained"
    shutil.copytree(ckpt_dir[0], trained)
    (trained / "training.json").write_text(json.dumps({"action_space": "ee_pose"}))
    assert Pi0FastPolicy.from_checkpoint(str(trained), device="cpu").metadata["action_space"] == "ee_pose"
    assert "action_space" not in Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu").metadata


def test_malformed_config_json_is_a_checkpoint_error(ckpt_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ckpt_dir[0], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["model"]["vision"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid 'model' settings.*vision"):
        read_fast_checkpoint(str(broken))


def test_policy_interface_and_undecodable_output_is_raised_and_counted(ckpt_dir):
    policy = Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu", length_tolerance=0, constrain_length=False)
    assert isinstance(policy, Policy) and policy.metadata["model_type"] == "pi0_fast"
    obs = {"images": {"head": np.zeros((30, 40, 3), np.uint8)}, "state": np.zeros(4), "prompt": "pick up the cube"}
    outcomes = []
    for seed in range(3):
        obs["state"] = np.random.default_rng(seed).uniform(-1, 1, 4)
        try:
            result = policy.infer(obs)
        except FastDecodeError:
            outcomes.append("failed")
            continue
        outcomes.append("ok")  # a random model may still produce a valid chunk: it must be a checked one
        assert result["actions"].shape == (CFG.action_horizon, 3) and np.isfinite(result["actions"]).all()
    assert policy.stats == {"inferences": 3, "decode_failures": outcomes.count("failed"), "relaxed_decodes": 0}
    with pytest.raises(PolicyInputError):
        policy.infer({**obs, "state": np.zeros(5)})
    with pytest.raises(PolicyInputError):
        policy.infer({**obs, "images": {"unknown": np.zeros((4, 4, 3), np.uint8)}})
    assert policy.stats["inferences"] == 3


def test_relaxed_length_is_the_default_without_the_grammar_and_counted(ckpt_dir):
    strict = Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu", length_tolerance=0, constrain_length=False)
    relaxed = Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu", constrain_length=False)
    assert relaxed.length_tolerance == relaxed.fast_tokenizer.config.num_coefficients // 4
    obs = {"images": {"head": np.zeros((30, 40, 3), np.uint8)}, "prompt": "pick up the cube"}
    for seed in range(6):
        obs["state"] = np.random.default_rng(seed).uniform(-1, 1, 4)
        try:
            expected = strict.infer(obs)["actions"]
        except FastDecodeError:
            expected = None
        try:
            actions = relaxed.infer(obs)["actions"]
        except FastDecodeError:
            assert expected is None  # relaxed never refuses what strict accepts
            continue
        assert np.isfinite(actions).all()
        if expected is not None:
            np.testing.assert_allclose(actions, expected)  # exact-length answers are decoded identically
    assert relaxed.stats["inferences"] == 6
    assert relaxed.stats["relaxed_decodes"] == strict.stats["decode_failures"] - relaxed.stats["decode_failures"]


@pytest.mark.parametrize("constrain_length", [True, False])
def test_fast_generator_policy_gives_the_same_results_as_model_generate(ckpt_dir, constrain_length):
    plain = Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu", fast_decode=False,
                                          constrain_length=constrain_length)
    fast = Pi0FastPolicy.from_checkpoint(ckpt_dir[0], device="cpu", fast_decode=True,
                                         constrain_length=constrain_length)
    assert (fast.generator.grammar is not None) == constrain_length
    assert plain.generator is None and fast.generator is not None and fast.generator.restrict_vocab
    obs = {"images": {"head": np.zeros((30, 40, 3), np.uint8)}, "prompt": "pick up the cube"}
    for seed in range(2):
        obs["state"] = np.random.default_rng(seed).uniform(-1, 1, 4)
        outcome = []
        for policy in (plain, fast):
            try:
                outcome.append(policy.infer(obs)["actions"])
            except FastDecodeError as err:
                outcome.append(str(err))
        if isinstance(outcome[0], str):
            assert outcome[1] == outcome[0]
        else:
            np.testing.assert_array_equal(outcome[1], outcome[0])


def test_checkpoint_is_replaced_whole_and_readable_by_others(ckpt_dir, tmp_path):
    path, model = ckpt_dir
    ckpt = read_fast_checkpoint(path)
    out = tmp_path / "ckpt"
    for _ in range(2):  # the second save swaps the first one out only once it is complete
        save_fast_checkpoint(str(out), model, ckpt.policy_config, ckpt.norm_stats, ckpt.tokenizer,
                             ckpt.fast_tokenizer)
    assert os.listdir(tmp_path) == ["ckpt"]  # no temp or backup directories remain
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(out):  # not mkdtemp's 0700: the permissions a plain mkdir gives
        for name in [root, *(os.path.join(root, d) for d in dirs)]:
            assert os.stat(name).st_mode & 0o777 == 0o777 & ~umask, name
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o666 & ~umask, name
