"""The training loop: the loss falls (pi0 and pi0-FAST), resume equals an uninterrupted run, freezing and
LoRA train what they say, checkpoints load in the policies, the schedule has its shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pi0_ros.model.pi0_fast_policy import Pi0FastPolicy
from pi0_ros.model.policy import Pi0Policy
from pi0_ros.training.dataset import DatasetError
from pi0_ros.training.model_setup import LoRALinear
from pi0_ros.training.synthetic import make_dataset
from pi0_ros.training.trainer import STATE_FILE, TrainConfig, Trainer, lr_factor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(tmp_path, name="run", **kw):
    base = dict(dataset="synthetic", out=str(tmp_path / name), model="pi0", config="pi0_test", steps=6,
                batch_size=4, lr=1e-3, warmup_steps=2, save_every=3, keep_last=5, progress=False,
                delta_dims="0-2", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10], strict=False))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[60] == pytest.approx(0.55, abs=1e-6) and lr_factor(110, 10, 110, 0.1) == pytest.approx(0.1)


def _fixed_loss(trainer) -> float:
    """Loss over the whole dataset with fixed noise and flow times (the training loss is noisy)."""
    batch = trainer.builder.collate([trainer.samples[i] for i in range(len(trainer.samples))])
    with torch.no_grad():
        return float(trainer.loss_module(batch, torch.Generator().manual_seed(123)))


@pytest.mark.parametrize("model,cfg_name,steps", [("pi0", "pi0_test", 150), ("pi0_fast", "pi0_fast_test", 120)])
def test_loss_falls_on_tiny_synthetic_data(tmp_path, model, cfg_name, steps):
    ds = make_dataset(num_episodes=6, length=10, seed=0)
    trainer = Trainer(config(tmp_path, model=model, config=cfg_name, steps=steps, batch_size=8, save_every=steps,
                             warmup_steps=10, lr=3e-3), dataset=ds)
    before = _fixed_loss(trainer)
    summary = trainer.run()
    after = _fixed_loss(trainer)
    assert np.all(np.isfinite([h["loss"] for h in trainer.history]))
    assert after < 0.75 * before, (before, after)  # flow matching keeps an irreducible part
    # The checkpoint is a policy checkpoint the node can load.
    cls = Pi0Policy if model == "pi0" else Pi0FastPolicy
    policy = cls.from_checkpoint(summary["checkpoint"], device="cpu")
    assert policy.metadata["action_dim"] == 4
    if model == "pi0":
        ep = ds.episode(0)
        out = policy.infer({"images": ds.images(0, 0), "state": ep.states[0], "prompt": ep.task}, seed=0)
        assert out["actions"].shape == (6, 4) and np.isfinite(out["actions"]).all()


@pytest.mark.parametrize("augment", [False, True])
def test_resume_takes_the_same_steps_as_an_uninterrupted_run(tmp_path, augment):
    ds = make_dataset(num_episodes=3, length=7, seed=5)  # 21 chunks: the 6 steps cross an epoch boundary
    straight = Trainer(config(tmp_path, "a", ema_decay=0.9, augment=augment), dataset=ds)
    straight.run()
    resumed = Trainer(config(tmp_path, "b", steps=0), resume=str(tmp_path / "a" / "checkpoints" / "step_000003"),
                      dataset=ds)
    assert resumed.start_step == 3 and resumed.cfg.steps == 6 and resumed.cfg.ema_decay == 0.9
    resumed.run()
    a = [h["loss"] for h in straight.history]
    b = [h["loss"] for h in resumed.history]
    assert len(b) == 6 and b[:3] == a[:3]
    np.testing.assert_allclose(b[3:], a[3:], rtol=1e-6, atol=1e-7)
    for (name, pa), (_, pb) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                   strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    for name in straight.ema.shadow:
        torch.testing.assert_close(straight.ema.shadow[name], resumed.ema.shadow[name], rtol=1e-5, atol=1e-6)


def test_resume_refuses_a_dataset_whose_episodes_changed(tmp_path):
    ds = make_dataset(num_episodes=3, length=7, seed=5)
    Trainer(config(tmp_path, "a", steps=3), dataset=ds).run()
    step = str(tmp_path / "a" / "checkpoints" / "step_000003")
    grown = make_dataset(num_episodes=4, length=7, seed=5)  # a recorder appended an episode
    with pytest.raises(DatasetError, match="3 episodes .21 frames.*4 episodes .28 frames"):
        Trainer(config(tmp_path, "b", steps=0), resume=step, dataset=grown)
    # A state saved before the check: resumed (with a warning), not refused.
    state_file = tmp_path / "a" / "checkpoints" / "step_000003" / STATE_FILE
    state = torch.load(state_file, weights_only=False)
    del state["episode_lengths"]
    torch.save(state, state_file)
    assert Trainer(config(tmp_path, "c", steps=0), resume=step, dataset=grown).start_step == 3


def test_augmentation_reaches_the_loss_on_fixed_cameras_only(tmp_path):
    ds = make_dataset(num_episodes=2, length=6, seed=1)
    seen = []
    trainers = {}
    for augment in (False, True):
        trainer = Trainer(config(tmp_path, f"aug{augment}", steps=2, augment=augment), dataset=ds)
        engine = trainer.engine

        def capture(batch, generator, engine=engine):
            seen.append(batch["inputs"].images.clone())
            return engine(batch, generator)

        trainer.engine = capture
        trainer.run()
        trainers[augment] = trainer
    plain, augmented = seen[0], seen[2]  # the first step of each run: the same samples
    slots = trainers[True].policy_config["camera_names"]
    assert trainers[True].augment_geometric == [bool(n) and "wrist" not in n for n in slots]
    assert trainers[False].augment_geometric is None
    assert not torch.allclose(plain, augmented, atol=1e-3)
    assert augmented.min() >= -1 and augmented.max() <= 1


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model, prefix):
    after = model.state_dict()
    keys = [k for k in before if k.startswith(prefix) and "lora_" not in k]
    assert keys, prefix
    return {k: not torch.equal(before[k], after[k]) for k in keys}


@pytest.mark.parametrize("freeze", ["vision", "vlm"])
def test_freezing_freezes_what_it_says(tmp_path, freeze):
    ds = make_dataset(num_episodes=2, length=6)
    trainer = Trainer(config(tmp_path, freeze=freeze, steps=3, save_every=3, weight_decay=0.1), dataset=ds)
    before = _snapshot(trainer.model)
    trainer.run()
    pg = "paligemma_with_expert.paligemma.model."
    assert not any(_changed(before, trainer.model, pg + "vision_tower.").values())
    assert not any(_changed(before, trainer.model, pg + "multi_modal_projector.").values())
    lm = _changed(before, trainer.model, pg + "language_model.layers.")
    assert any(lm.values()) == (freeze == "vision")
    assert all(_changed(before, trainer.model, "paligemma_with_expert.gemma_expert.model.layers.0.mlp").values())
    assert all(_changed(before, trainer.model, "action_out_proj.").values())


def test_lora_trains_adapters_only_and_exports_merged_weights(tmp_path):
    ds = make_dataset(num_episodes=2, length=6)
    trainer = Trainer(config(tmp_path, lora_rank=2, steps=3, save_every=3, lr=1e-2), dataset=ds)
    wrapped = [m for m in trainer.model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    before = _snapshot(trainer.model)
    summary = trainer.run()
    lm = "paligemma_with_expert.paligemma.model.language_model."
    assert not any(_changed(before, trainer.model, lm).values()), "LoRA base weights are frozen"
    assert any(_changed(before, trainer.model, "paligemma_with_expert.gemma_expert.").values())
    assert any(float(m.lora_B.detach().abs().max()) > 0 for m in wrapped)
    layer = trainer.model.paligemma_with_expert.paligemma.model.language_model.layers[0]
    policy = Pi0Policy.from_checkpoint(summary["checkpoint"], device="cpu")  # strict load: no lora_* keys
    exported = policy.model.paligemma_with_expert.paligemma.model.language_model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(exported, layer.self_attn.q_proj.merged_weight())
    assert not torch.equal(exported, layer.self_attn.q_proj.weight)
