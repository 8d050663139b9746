"""Weights and checkpoint directories: openpi/LeRobot layouts, load reports, atomic save/reload."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from pi0_ros.model.checkpoint import (
    EMBED_KEY,
    LM_HEAD_KEY,
    CheckpointError,
    build_model,
    load_weights,
    load_weights_file,
    read_checkpoint,
    save_checkpoint,
    weights_for_saving,
)
from pi0_ros.model.config import get_pi0_config
from pi0_ros.model.normalization import NormStats
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.policy import policy_config_for
from pi0_ros.model.random_inputs import random_inputs as make_inputs
from pi0_ros.model.random_inputs import randomize_weights as randomize
from pi0_ros.model.tokenizer import default_corpus, train_tokenizer

EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


@pytest.fixture(scope="module")
def source():
    cfg = get_pi0_config("pi0_test")
    model = Pi0Model(cfg).eval()
    randomize(model, seed=11)
    return cfg, model


def openpi_state_dict(model: Pi0Model) -> dict:
    """What openpi's converter writes: no tied embedding, plus the unused expert lm_head."""
    sd = weights_for_saving(model)
    sd[EXPERT_LM_HEAD] = torch.zeros(10, model.config.expert.width)
    return sd


def same_actions(a: Pi0Model, b: Pi0Model) -> None:
    inputs = make_inputs(a.config)
    noise = a.sample_noise(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.sample_actions(inputs, noise=noise), b.sample_actions(inputs, noise=noise),
                               atol=0, rtol=0)


def test_openpi_layout_loads_with_tied_embedding(source, tmp_path):
    cfg, model = source
    sd = openpi_state_dict(model)
    assert EMBED_KEY not in sd and LM_HEAD_KEY in sd
    save_file(sd, str(tmp_path / "model.safetensors"))
    target = Pi0Model(cfg).eval()
    report = load_weights_file(target, tmp_path / "model.safetensors")
    assert report.ok and report.filled == [EMBED_KEY] and report.ignored == [EXPERT_LM_HEAD]
    emb = target.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
    torch.testing.assert_close(emb, sd[LM_HEAD_KEY])
    same_actions(model, target)


def test_lerobot_layout_strips_model_prefix(source):
    cfg, model = source
    sd = {f"model.{k}": v for k, v in openpi_state_dict(model).items()}
    target = Pi0Model(cfg).eval()
    report = load_weights(target, sd)
    assert report.ok and report.stripped_prefix == "model."
    same_actions(model, target)


def test_bad_state_dicts_are_reported_by_name_and_refused(source):
    cfg, model = source
    sd = openpi_state_dict(model)
    missing = "action_out_proj.bias"
    del sd[missing]
    sd["time_mlp_in.weight"] = torch.zeros(3, 3)  # a pi0.5 tensor
    wrong = "state_proj.weight"
    sd[wrong] = torch.zeros(7, 7)
    target = Pi0Model(cfg).eval()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_weights(target, sd)
    message = str(err.value)
    assert missing in message and "time_mlp_in.weight" in message and wrong in message and "(7, 7)" in message
    for k, v in target.state_dict().items():  # refused means untouched
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    report = load_weights(target, sd, strict=False)
    assert report.missing == [missing] and report.unexpected == ["time_mlp_in.weight"]
    assert [name for name, _, _ in report.wrong_shape] == [wrong] and not report.ok
    torch.testing.assert_close(target.action_in_proj.weight, model.action_in_proj.weight)


def save_small(tmp_path, model, name="ckpt"):
    tok = train_tokenizer(default_corpus(), vocab_size=300, max_len=model.config.max_token_len)
    stats = {"state": NormStats.identity(4), "actions": NormStats.identity(3)}
    policy = policy_config_for(["head", "left_wrist", "right_wrist"], 4, 3)
    return save_checkpoint(tmp_path / name, model, policy, stats, tok)


def test_save_and_reload_round_trip(source, tmp_path):
    cfg, model = source
    out = save_small(tmp_path, model)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "norm_stats.json", "tokenizer.model"]
    keys = load_file(os.path.join(out, "model.safetensors")).keys()
    assert EMBED_KEY not in keys and LM_HEAD_KEY in keys  # the openpi layout
    ckpt = read_checkpoint(out)
    assert ckpt.model_config == cfg and ckpt.policy_config["state_dim"] == 4
    same_actions(model, build_model(ckpt.model_config, ckpt.weights))


def test_save_replaces_existing_directory_without_leftovers(source, tmp_path):
    cfg, model = source
    save_small(tmp_path, model)
    other = Pi0Model(cfg).eval()
    randomize(other, seed=12)
    out = save_small(tmp_path, other)
    assert os.listdir(tmp_path) == ["ckpt"]  # no temp or backup directories remain
    same_actions(other, build_model(cfg, read_checkpoint(out).weights))


def test_read_checkpoint_rejects_foreign_or_incomplete_directories(source, tmp_path):
    _, model = source
    with pytest.raises(CheckpointError, match="config.json"):
        read_checkpoint(tmp_path)
    out = save_small(tmp_path, model)
    os.remove(os.path.join(out, "tokenizer.model"))
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        read_checkpoint(out)


@pytest.mark.parametrize("edit, match", [
    (lambda c: [c], "expected a JSON object, got list"),
    (lambda c: {k: v for k, v in c.items() if k != "model"}, "'model' must be a JSON object"),
    (lambda c: {**c, "model": {k: v for k, v in c["model"].items() if k != "llm"}}, "invalid 'model' settings.*llm"),
    (lambda c: {**c, "model": {**c["model"], "bogus": 1}}, "invalid 'model' settings.*bogus"),
    (lambda c: {**c, "policy": [1]}, "'policy' must be a JSON object"),
    (None, "not valid JSON"),
], ids=["list", "no model", "no llm", "unknown setting", "policy list", "not json"])
def test_malformed_config_json_is_a_checkpoint_error_naming_the_file(source, tmp_path, edit, match):
    out = save_small(tmp_path, source[1])
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(edit(config)) if edit else "{")
    with pytest.raises(CheckpointError, match=match) as raised:
        read_checkpoint(out)
    assert path in str(raised.value)


def test_legacy_transformers_layout_is_renamed(source):
    cfg, model = source
    sd = {}
    for key, value in openpi_state_dict(model).items():
        key = key.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        key = key.replace("paligemma.lm_head.", "paligemma.language_model.lm_head.")
        key = key.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        key = key.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        sd[f"model.{key}"] = value
    target = Pi0Model(cfg).eval()
    report = load_weights(target, sd)
    assert report.ok and report.legacy_renamed > 0 and report.stripped_prefix == "model."
    same_actions(model, target)
