"""Training data: chunks at episode ends, openpi norm stats and their round trip through a checkpoint,
inference transforms shared with the policy, bad data reported before training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pi0_ros.model.normalization import load_norm_stats
from pi0_ros.model.policy import Pi0Policy
from pi0_ros.training.chunks import chunk_at, chunk_index, resting_chunk_starts
from pi0_ros.training.cli import main as train_main
from pi0_ros.training.dataset import DatasetError, EpisodeArrays, InMemoryDataset
from pi0_ros.training.samples import Pi0SampleBuilder
from pi0_ros.training.stats import compute_norm_stats
from pi0_ros.training.synthetic import make_dataset
from pi0_ros.training.trainer import TrainConfig, Trainer


def test_chunk_padding_at_episode_end():
    actions = np.arange(10, dtype=float).reshape(5, 2)  # 5 frames
    chunk, pad = chunk_at(actions, 3, 4)
    np.testing.assert_array_equal(chunk, actions[[3, 4, 4, 4]])  # padded with the last action
    np.testing.assert_array_equal(pad, [False, False, True, True])
    chunk, pad = chunk_at(actions, 0, 4)
    assert not pad.any() and np.array_equal(chunk, actions[:4])
    with pytest.raises(IndexError):
        chunk_at(actions, 5, 4)
    index = chunk_index([3, 0, 2])  # an empty episode contributes no chunk
    assert index.tolist() == [[0, 0], [0, 1], [0, 2], [2, 0], [2, 1]]


def test_resting_chunks_beyond_the_first_n_start_no_training_sample(tmp_path):
    base = make_dataset(num_episodes=2, length=12, seed=3)
    episodes = [base.episode(i) for i in range(2)]
    dwell = episodes[0].actions.copy()
    dwell[7:] = dwell[7] + 0.005  # frames 7-11 tell the robot to stay (within the tolerance of 0.02)
    episodes[0] = EpisodeArrays(0, episodes[0].states, dwell, episodes[0].task)
    ramp = episodes[1].actions[:1] + 0.1 * np.arange(12)[:, None]  # moving to its last frame
    episodes[1] = EpisodeArrays(1, episodes[1].states, ramp, episodes[1].task)
    assert resting_chunk_starts(dwell, 4, 0.02).tolist() == [7, 8, 9, 10, 11]
    assert resting_chunk_starts(ramp, 4, 0.02).tolist() == [11]  # the last chunk is all padding
    ds = InMemoryDataset(episodes, base._images, camera_names=base.camera_names, name="d")
    cfg = TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), model="pi0", config="pi0_test", steps=1,
                      batch_size=2, progress=False, max_resting_chunks=2)
    index = Trainer(cfg, dataset=ds).samples.index
    assert index[index[:, 0] == 0, 1].tolist() == list(range(9))  # the dwell's first 2 chunks stay
    assert index[index[:, 0] == 1, 1].tolist() == list(range(12))  # one resting chunk: within the 2 kept
    assert len(Trainer(dataclasses.replace(cfg, max_resting_chunks=None), dataset=ds).samples) == 24
    with pytest.raises(ValueError, match="max_resting_chunks"):
        Trainer(dataclasses.replace(cfg, max_resting_chunks=-1), dataset=ds)


def test_norm_stats_delta_dims_are_relative_to_chunk_start():
    states = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    actions = np.array([[1.0, 7.0], [2.0, 7.0], [3.0, 9.0]])
    ep = EpisodeArrays(0, states, actions, "t")
    stats = compute_norm_stats([ep], horizon=2, delta_mask=[True, False])
    # non-padded entries: t=0: (1,7),(2,7) -> deltas 1,2; t=1: (2,7),(3,9) -> 1,2; t=2: (3,9) -> 1
    np.testing.assert_allclose(stats["actions"].mean, [np.mean([1, 2, 1, 2, 1]), np.mean([7, 7, 7, 9, 9])])
    np.testing.assert_allclose(stats["state"].mean, [1.0, 5.0])
    np.testing.assert_allclose(stats["state"].std, [np.std([0, 1, 2]), 0.0])
    entries = [[1, 7], [2, 7], [1, 7], [2, 9], [1, 9]]
    np.testing.assert_allclose(stats["actions"].q01, np.quantile(entries, 0.01, axis=0))


def _run(tmp_path, ds, **kw):
    base = dict(dataset="synthetic", out=str(tmp_path / "run"), model="pi0", config="pi0_test", steps=2,
                batch_size=2, warmup_steps=1, save_every=2, progress=False, delta_dims="0-2", seed=0)
    base.update(kw)
    trainer = Trainer(TrainConfig(**base), dataset=ds)
    return trainer, trainer.run()


def test_stats_written_in_openpi_format_and_used_by_the_policy(tmp_path):
    ds = make_dataset(num_episodes=4, length=8, seed=3)
    trainer, summary = _run(tmp_path, ds)
    ckpt = summary["checkpoint"]
    with open(f"{ckpt}/norm_stats.json") as f:
        raw = json.load(f)
    assert set(raw["norm_stats"]) == {"state", "actions"}
    assert set(raw["norm_stats"]["actions"]) == {"mean", "std", "q01", "q99"}
    expected = compute_norm_stats([ds.episode(i) for i in range(4)], 6, [True, True, True, False])
    loaded = load_norm_stats(f"{ckpt}/norm_stats.json")
    for key in ("state", "actions"):
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_allclose(getattr(loaded[key], field), getattr(expected[key], field), rtol=1e-12)
    policy = Pi0Policy.from_checkpoint(ckpt, device="cpu")
    np.testing.assert_allclose(policy.action_stats.std, expected["actions"].std)
    assert policy.config.delta_mask == [True, True, True, False]
    # The training sample IS the policy's preprocessing, and the target inverts its postprocessing.
    ep = ds.episode(1)
    obs = {"images": ds.images(1, 2), "state": ep.states[2], "prompt": ep.task}
    sample = trainer.builder.sample(ds, ep, 2)
    ref, _ = policy.prepare(obs)
    for name in ("images", "image_masks", "tokens", "token_masks", "state"):
        assert torch.equal(getattr(sample["inputs"], name), getattr(ref, name)), name
    chunk, _ = chunk_at(ep.actions, 2, 6)
    back = policy.postprocess(sample["actions"][0].numpy(), ep.states[2])
    np.testing.assert_allclose(back, chunk, atol=1e-5)
    assert isinstance(trainer.builder, Pi0SampleBuilder) and isinstance(trainer.builder, Pi0Policy)


def test_bad_data_is_reported_before_training(tmp_path):
    ds = make_dataset(num_episodes=4, length=6, seed=1)
    eps = [ds.episode(i) for i in range(4)]
    eps[1].actions[3, 2] = np.nan
    eps[2] = EpisodeArrays(2, np.zeros((0, 4)), np.zeros((0, 4)), "go home")
    eps[3] = EpisodeArrays(3, eps[3].states, eps[3].actions[:, :3], "")
    images = [{c: ds.images(i, 0)[c][None].repeat(6, 0) for c in ("head", "left_wrist")} for i in range(4)]
    bad = InMemoryDataset(eps, images, camera_names=["head", "left_wrist"])
    with pytest.raises(DatasetError) as err:
        _run(tmp_path, bad, cameras=["head", "left_wrist", "right_wrist"])
    text = str(err.value)
    assert "NaN/inf value(s) in 'action' (first at frame 3, dim 2)" in text
    assert "episode 2: empty" in text
    assert "episode 3: no 'task' text" in text
    assert "disagree on the action dimension" in text
    assert "['right_wrist'] are not in the dataset" in text
    assert not (tmp_path / "run").exists(), "nothing may be written before the data is accepted"


def test_action_dims_that_do_not_fit_the_checkpoint_are_reported(tmp_path):
    _, summary = _run(tmp_path, make_dataset(num_episodes=2, length=5))
    wider = make_dataset(num_episodes=2, length=5, action_dim=6, state_dim=6)
    with pytest.raises(DatasetError, match="action dimension is 6 in the data but 4 in the checkpoint"):
        _run(tmp_path / "ft", wider, init=summary["checkpoint"])
    too_wide = make_dataset(num_episodes=2, length=5, action_dim=9, state_dim=4)
    with pytest.raises(DatasetError, match="action dimension 9 exceeds the model width 8"):
        _run(tmp_path / "scratch", too_wide)


def test_cli_reports_a_directory_that_is_not_a_dataset(tmp_path, capsys):
    code = train_main(["--dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--config", "pi0_test",
                       "--no-progress"])
    assert code == 2
    assert "not a LeRobot dataset directory" in capsys.readouterr().err


@pytest.mark.parametrize("option,value", [("--max-episodes", "0"), ("--max-episodes", "-1"), ("--save-every", "0"),
                                          ("--log-every", "0"), ("--batch-size", "0")])
def test_cli_refuses_counts_below_one_before_loading(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        train_main(["--dataset", str(tmp_path), "--out", str(tmp_path / "o"), option, value])
    assert exc.value.code == 2 and option in capsys.readouterr().err


def test_cli_reports_damaged_dataset_metadata(tmp_path, capsys):
    from test_training_lerobot import write_dataset

    write_dataset(tmp_path / "ds")
    info = tmp_path / "ds" / "meta" / "info.json"
    info.write_text(info.read_text()[:50])
    code = train_main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--config", "pi0_test",
                       "--no-progress"])
    assert code == 2 and "info.json: damaged JSON" in capsys.readouterr().err
