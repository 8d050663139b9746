"""Held-out loss during training: measured at every checkpoint, deterministic, the EMA weights' loss, the
lowest linked as ``best`` and kept past ``keep_last``, resumed, and bad held-out data refused up front."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pi0_ros.training.dataset import DatasetError
from pi0_ros.training.synthetic import make_dataset
from pi0_ros.training.trainer import TrainConfig, Trainer
from pi0_ros.training.validation import HeldOutLoss, weights_swapped

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(tmp_path, name="run", **kw):
    base = dict(dataset="synthetic", out=str(tmp_path / name), model="pi0", config="pi0_test", steps=8,
                batch_size=4, lr=1e-3, warmup_steps=2, save_every=2, keep_last=1, progress=False,
                delta_dims="0-2", seed=0, val_dataset="held-out")
    base.update(kw)
    return TrainConfig(**base)


def _data():
    return make_dataset(num_episodes=4, length=6, seed=0), make_dataset(num_episodes=2, length=6, seed=99)


@pytest.mark.parametrize("model,cfg_name", [("pi0", "pi0_test"), ("pi0_fast", "pi0_fast_test")])
def test_held_out_loss_is_measured_at_every_checkpoint_and_the_lowest_is_best(tmp_path, model, cfg_name):
    train, held = _data()
    # lr high enough that the held-out loss moves between checkpoints, augmentation and state noise on (the
    # held-out measure must not see them).
    trainer = Trainer(config(tmp_path, model=model, config=cfg_name, lr=5e-3, augment=True, fast_state_noise=0.2),
                      dataset=train, val_dataset=held)
    summary = trainer.run()
    measured = [(h["step"], h["val_loss"]) for h in trainer.history if "val_loss" in h]
    assert [s for s, _ in measured] == [2, 4, 6, 8]
    assert all(np.isfinite(v) for _, v in measured)
    best_step, best_loss = min(measured, key=lambda sv: sv[1])
    assert summary["best_step"] == best_step and summary["best_val_loss"] == pytest.approx(best_loss)
    best = os.path.realpath(tmp_path / "run" / "best")
    assert best.endswith(f"step_{best_step:06d}") and os.path.isdir(best)
    with open(os.path.join(best, "training.json"), encoding="utf-8") as f:
        assert json.load(f)["val_loss"] == pytest.approx(best_loss)
    # keep_last=1 removes the other older checkpoints but never the best one.
    kept = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert kept == sorted({f"step_{best_step:06d}", "step_000008"})
    # Deterministic: the same weights give the same number again (fixed noise, no augmentation/state noise).
    assert trainer.held_out_loss() == pytest.approx(trainer.held_out_loss(), rel=0, abs=0)
    assert trainer.held_out_loss() == pytest.approx(measured[-1][1], rel=1e-6)


def test_held_out_loss_is_that_of_the_ema_weights(tmp_path):
    train, held = _data()
    trainer = Trainer(config(tmp_path, ema_decay=0.9, steps=4, lr=5e-3), dataset=train, val_dataset=held)
    trainer.run()
    raw = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    with_ema = trainer.held_out_loss()
    for k, v in trainer.model.state_dict().items():  # the swap is undone
        torch.testing.assert_close(v, raw[k], rtol=0, atol=0)
    ema = trainer.ema
    trainer.ema = None
    without = trainer.held_out_loss()
    trainer.ema = ema
    assert with_ema != pytest.approx(without, rel=1e-6)
    with weights_swapped(trainer.model, ema.shadow):
        trainer.ema = None
        assert trainer.held_out_loss() == pytest.approx(with_ema, rel=1e-6)
        trainer.ema = ema


def test_best_survives_resume(tmp_path):
    train, held = _data()
    first = Trainer(config(tmp_path, "a", steps=8, stop_after=4, lr=5e-3), dataset=train, val_dataset=held)
    first.run()
    resumed = Trainer(config(tmp_path, "a", steps=0), resume=str(tmp_path / "a"), dataset=train, val_dataset=held)
    assert resumed.best == first.best and resumed.start_step == 4
    resumed.run()
    losses = [h["val_loss"] for h in resumed.history if "val_loss" in h]
    assert len(losses) == 4 and resumed.best["val_loss"] == pytest.approx(min(losses))


def test_held_out_set_that_does_not_fit_is_refused_before_training(tmp_path):
    train, _ = _data()
    wrong = make_dataset(num_episodes=2, length=6, state_dim=5, seed=3)
    with pytest.raises(DatasetError, match="held-out"):
        Trainer(config(tmp_path), dataset=train, val_dataset=wrong)


def test_held_out_loss_weights_batches_by_their_size():
    samples = [torch.tensor(float(v)) for v in (1, 2, 3, 4, 5)]

    def collate(items):
        return {"x": torch.stack(items)}

    loss = HeldOutLoss(samples, collate, batch_size=2)  # batches of 2, 2 and 1
    assert loss(lambda batch, gen: batch["x"].mean(), torch.device("cpu")) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        HeldOutLoss([], collate, batch_size=2)
