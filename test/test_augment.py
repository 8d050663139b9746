"""Training image augmentation: what changes, what must not, and that the trainer applies it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pi0_ros.training.augment import ImageAugmentConfig, augment_images, is_wrist_camera


def _scene(b=4, n=3, size=32):
    # A bright square on a gradient: geometric transforms move it, photometric ones keep it in place.
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.stack([x * 0.5, y * 0.5, (x + y) * 0.25])
    img[:, 12:20, 12:20] = 0.9
    return img.expand(b, n, 3, size, size).clone()


def test_geometry_changes_only_the_fixed_cameras_and_values_stay_in_range():
    images = _scene()
    photometric_off = ImageAugmentConfig(brightness=0, contrast=0, saturation=0)
    out = augment_images(images, [True, False, False], photometric_off, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out[:, 0], images[:, 0], atol=1e-3)  # cropped / rotated
    torch.testing.assert_close(out[:, 1:], images[:, 1:], rtol=0, atol=1e-5)  # wrist slots untouched
    # Small transforms: the square moves by a few pixels, it does not leave the image.
    bright = out[:, 0, 0] > 0.8
    assert bright.sum(dim=(1, 2)).min() > 30


def test_color_jitter_varies_per_image_and_keeps_geometry():
    images = _scene()
    geometry_off = ImageAugmentConfig(crop_area=1.0, max_rotation_deg=0)
    out = augment_images(images, [True, True, True], geometry_off, torch.Generator().manual_seed(1))
    means = out.mean(dim=(2, 3, 4)).flatten()
    assert means.std() > 0.01  # each image drew its own factors
    # The square is still where it was: photometric changes only (the brightest pixels are inside it).
    flat = out[0, 0].mean(0)
    assert flat[12:20, 12:20].mean() > flat.mean()


def test_all_off_is_the_identity_and_bad_shapes_are_refused():
    images = _scene()
    off = ImageAugmentConfig(crop_area=1.0, max_rotation_deg=0, brightness=0, contrast=0, saturation=0)
    torch.testing.assert_close(augment_images(images, [True, False, False], off), images, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        augment_images(images[0], [True, False, False])
    with pytest.raises(ValueError):
        augment_images(images, [True, False])
    assert is_wrist_camera("left_wrist") and not is_wrist_camera("head")


def test_out_of_range_settings_are_refused():
    for bad in ({"crop_area": 0.0}, {"crop_area": 1.5}, {"max_rotation_deg": -1.0}):
        with pytest.raises(ValueError):
            ImageAugmentConfig(**bad)


def test_pi0_train_options_set_the_geometric_ranges_the_trainer_uses(tmp_path):
    from pi0_ros.training.cli import build_parser, config_from_args
    from pi0_ros.training.synthetic import make_dataset
    from pi0_ros.training.trainer import Trainer

    args = build_parser().parse_args(["--dataset", "synthetic", "--out", str(tmp_path / "run"), "--model", "pi0",
                                      "--config", "pi0_test", "--steps", "1", "--batch-size", "2",
                                      "--no-progress", "--augment-crop-area", "1", "--augment-rotation-deg", "0"])
    cfg = config_from_args(args)
    assert (cfg.augment_crop_area, cfg.augment_rotation_deg) == (1.0, 0.0)
    trainer = Trainer(cfg, dataset=make_dataset(num_episodes=2, length=6))
    assert (trainer.augment_config.crop_area, trainer.augment_config.max_rotation_deg) == (1.0, 0.0)
    default = Trainer(config_from_args(build_parser().parse_args(
        ["--dataset", "synthetic", "--out", str(tmp_path / "run2"), "--model", "pi0", "--config", "pi0_test",
         "--steps", "1", "--batch-size", "2", "--no-progress"])), dataset=make_dataset(num_episodes=2, length=6))
    assert default.augment_config == ImageAugmentConfig()
    # With the colors left alone, geometry off keeps a fixed camera's image; the default moves it.
    images, flags = _scene(), [True, False, False]
    for trainer_, moves in ((trainer, False), (default, True)):
        geometry = dataclasses.replace(trainer_.augment_config, brightness=0, contrast=0, saturation=0)
        out = augment_images(images, flags, geometry, torch.Generator().manual_seed(3))
        assert torch.allclose(out, images, atol=1e-5) != moves


def test_same_generator_state_same_result():
    images = _scene()
    a = augment_images(images, [True, False, False], generator=torch.Generator().manual_seed(5))
    b = augment_images(images, [True, False, False], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fast_state_noise_varies_the_state_tokens_only_when_augmenting(tmp_path):
    from pi0_ros.training.synthetic import make_dataset
    from pi0_ros.training.trainer import TrainConfig, Trainer

    ds = make_dataset(num_episodes=2, length=6, seed=2)
    tokens = {}
    for augment in (False, True):
        cfg = TrainConfig(dataset="synthetic", out=str(tmp_path / f"a{augment}"), model="pi0_fast",
                          config="pi0_fast_test", steps=1, batch_size=2, progress=False, augment=augment,
                          fast_state_noise=0.2)
        trainer = Trainer(cfg, dataset=ds)
        assert trainer.builder.state_noise == (0.2 if augment else 0.0)
        torch.manual_seed(0)
        tokens[augment] = [trainer.samples[3]["inputs"] for _ in range(4)]
    plain, noisy = ([s.tokens for s in tokens[a]] for a in (False, True))
    assert all(torch.equal(t, plain[0]) for t in plain)  # no noise: one prompt
    assert any(not torch.equal(t, noisy[0]) for t in noisy[1:])  # noise: the state bins move
    # Only the state part of the prompt changes: the action tokens (the loss targets) stay.
    targets = [s.tokens[s.loss_masks] for s in tokens[True]]
    assert all(torch.equal(t, targets[0]) for t in targets)
