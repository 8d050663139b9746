"""Open-loop error on recorded demonstrations: exact on a policy that replays the demo, scales with an
offset, counts refusals instead of scoring them, and the CLI loads a trained checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pi0_ros.model.fast_tokenizer import FastDecodeError
from pi0_ros.training.offline_eval import main as offline_main
from pi0_ros.training.offline_eval import open_loop_errors
from pi0_ros.training.synthetic import make_dataset
from pi0_ros.training.trainer import TrainConfig, Trainer


class ReplayPolicy:
    """Answers with the recorded actions from the observed frame on (found by its state), plus ``offset``;
    refuses every ``refuse_every``-th call."""

    def __init__(self, dataset, offset=0.0, refuse_every=0):
        self.dataset, self.offset, self.refuse_every, self.calls = dataset, offset, refuse_every, 0

    def infer(self, observation):
        self.calls += 1
        if self.refuse_every and self.calls % self.refuse_every == 0:
            raise FastDecodeError("no chunk")
        for i in range(self.dataset.num_episodes):
            ep = self.dataset.episode(i)
            hits = np.flatnonzero(np.all(ep.states == observation["state"], axis=1))
            if hits.size:
                return {"actions": ep.actions[hits[0]:hits[0] + 10] + self.offset}
        raise AssertionError("state not in the dataset")


def test_replay_scores_zero_and_an_offset_scores_itself():
    ds = make_dataset(num_episodes=3, length=12, seed=2)
    exact = open_loop_errors(ReplayPolicy(ds), ds, steps=5, stride=4)
    assert exact["scored"] == 3 * 3 and exact["refused"] == 0  # frames 0, 4, 8 of each episode
    assert exact["mean_abs_error"] == pytest.approx(0.0, abs=1e-12)
    off = open_loop_errors(ReplayPolicy(ds, offset=0.1), ds, steps=5, stride=4)
    assert off["mean_abs_error"] == pytest.approx(0.1) and len(off["per_episode_mean_abs_error"]) == 3


def test_refusals_are_counted_not_scored():
    ds = make_dataset(num_episodes=2, length=10, seed=3)
    report = open_loop_errors(ReplayPolicy(ds, offset=0.2, refuse_every=2), ds, steps=3, stride=2)
    assert report["frames"] == 10 and report["refused"] == 5 and report["scored"] == 5
    assert report["mean_abs_error"] == pytest.approx(0.2) and "FastDecodeError" in report["refusals"][0]
    with pytest.raises(ValueError):
        open_loop_errors(ReplayPolicy(ds), ds, steps=0)


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_scores_a_trained_checkpoint(tmp_path, capsys):
    from test_training_lerobot import write_dataset

    write_dataset(tmp_path / "data")
    trainer = Trainer(TrainConfig(dataset=str(tmp_path / "data"), out=str(tmp_path / "run"), model="pi0_fast",
                                  config="pi0_fast_test", steps=2, batch_size=4, save_every=2, progress=False,
                                  delta_dims="0-2", cameras=["head", "", ""]))
    trainer.run()
    out = tmp_path / "report.json"
    code = offline_main(["--checkpoint", str(tmp_path / "run" / "last"), "--dataset", str(tmp_path / "data"),
                         "--steps", "2", "--stride", "3", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 3 * 2 and report["scored"] + report["refused"] == report["frames"]
    assert "frames scored" in capsys.readouterr().out
    assert offline_main(["--checkpoint", str(tmp_path / "none"), "--dataset", str(tmp_path / "data")]) == 2
