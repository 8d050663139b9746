"""``pi0-train``: train or fine-tune pi0 / pi0-FAST on a LeRobot-format dataset.

Examples::

    # a tiny pi0 from scratch (CPU), joints as deltas, grippers absolute
    pi0-train --dataset data/touch_cube --out runs/tiny --model pi0 --config pi0_tiny \\
        --delta-layout joint_delta --steps 2000 --batch-size 8 --lr 3e-4 --warmup 100

    # fine-tune a pi0 checkpoint, vision frozen, bf16 + gradient checkpointing on a GPU
    pi0-train --dataset data/touch_cube --out runs/ft --init checkpoints/pi0_base --freeze vision \\
        --grad-checkpointing --steps 5000

    # pi0-FAST from scratch (FAST tokenizer fitted on the dataset's chunks)
    pi0-train --dataset data/touch_cube --out runs/fast --model pi0_fast --config pi0_fast_tiny

    # resume a run (its own checkpoints: optimizer, scheduler, step, RNG)
    pi0-train --resume runs/tiny

    # several GPUs
    torchrun --nproc_per_node 4 -m pi0_ros.training.cli --dataset ... --out ... [--fsdp]

The policy node loads ``<out>/last`` (or any ``<out>/checkpoints/step_N``) as ``checkpoint``. Bad data
(missing keys, NaN, empty episodes, dims that do not fit the checkpoint) is reported before training,
all problems at once, with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pi0_ros.cli_types import positive_int
from pi0_ros.training.dataset import DatasetError
from pi0_ros.training.model_setup import FREEZE_CHOICES, MODEL_KINDS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="pi0-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", help="LeRobot-format dataset directory")
    d.add_argument("--out", help="run directory (checkpoints, curves, metrics)")
    d.add_argument("--model", default="pi0", choices=MODEL_KINDS)
    d.add_argument("--config", default=None, help="named network config from scratch (pi0_tiny, pi0_fast_tiny, ...)")
    d.add_argument("--init", default=None, help="checkpoint directory to fine-tune (pi0_ros format)")
    d.add_argument("--resume", default=None, help="run directory or step checkpoint to continue")
    d.add_argument("--new-embodiment", action="store_true",
                   help="fine-tune onto data whose dims/cameras differ from --init's (new policy config)")
    d.add_argument("--action-horizon", type=int, default=None)
    d.add_argument("--max-episodes", type=positive_int, default=None,
                   help="train on the dataset's first N episodes only")
    d.add_argument("--val-dataset", default=None,
                   help="held-out demonstrations (same format): their loss at every checkpoint, the lowest "
                        "linked as <out>/best")
    d.add_argument("--cameras", default=None, help="dataset cameras for the image slots, e.g. head,left_wrist,")
    d.add_argument("--delta-dims", default=None, help="action dims trained as deltas to the state, e.g. 0-6,8-14")
    d.add_argument("--delta-layout", default=None, help="use this embodiment action space's delta mask")
    d.add_argument("--embodiment", default=None, help="embodiment YAML (default: the package's r1pro.yaml)")
    d.add_argument("--action-space", default=None, help="the dataset's action layout name (provenance)")
    d.add_argument("--normalization", default=None, choices=("zscore", "quantile"))
    d.add_argument("--norm-stats", default=None, help="openpi norm_stats.json to use instead of computing")
    d.add_argument("--default-prompt", default=None)
    o = p.add_argument_group("optimization")
    o.add_argument("--steps", type=int, default=None, help="total steps (default 1000)")
    o.add_argument("--batch-size", type=positive_int, default=8, help="per process")
    o.add_argument("--lr", type=float, default=2.5e-5, help="peak learning rate")
    o.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    o.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    o.add_argument("--weight-decay", type=float, default=1e-10)
    o.add_argument("--grad-clip", type=float, default=1.0)
    o.add_argument("--ema", type=float, default=None, help="EMA decay (e.g. 0.999); checkpoints hold EMA weights")
    o.add_argument("--freeze", default="none", choices=FREEZE_CHOICES)
    o.add_argument("--lora-rank", type=int, default=0, help="LoRA on the language model (0: off)")
    o.add_argument("--lora-alpha", type=float, default=None)
    o.add_argument("--grad-checkpointing", action="store_true")
    o.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    o.add_argument("--no-augment", action="store_true",
                   help="train on the images as recorded (default: random crop/rotation on fixed cameras and "
                        "color jitter on all, as openpi trains pi0)")
    o.add_argument("--augment-crop-area", type=float, default=0.95,
                   help="with augmentation: area kept by the random crop of fixed cameras (1: no crop; "
                        "default: %(default)s)")
    o.add_argument("--augment-rotation-deg", type=float, default=5.0,
                   help="with augmentation: largest random rotation of fixed cameras (0: none; default: %(default)s)")
    o.add_argument("--fast-state-noise", type=float, default=0.03,
                   help="pi0-FAST with augmentation: Gaussian noise std on the normalized state before its "
                        "discretization into the prompt (default: %(default)s, ~4 of 256 bins)")
    o.add_argument("--mask-padded-actions", action="store_true", help="leave padded chunk steps out of the loss")
    o.add_argument("--max-resting-chunks", type=int, default=None,
                   help="train on only each episode's first N chunks that tell the robot to stay (every action "
                        "within --resting-tolerance of the chunk's first; default: all)")
    o.add_argument("--resting-tolerance", type=float, default=0.02,
                   help="in action units (rad for joint positions; default: %(default)s)")
    o.add_argument("--fast-scale", type=float, default=10.0)
    o.add_argument("--fast-vocab-size", type=int, default=None,
                   help="BPE vocabulary of the FAST tokenizer fitted on the dataset (default: the config's; at "
                        "least the number of distinct quantized coefficients)")
    r = p.add_argument_group("run")
    r.add_argument("--save-every", type=positive_int, default=500)
    r.add_argument("--keep-last", type=int, default=3)
    r.add_argument("--log-every", type=positive_int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--num-workers", type=int, default=0)
    r.add_argument("--cache-images", action="store_true",
                   help="decode every image once into memory before training (faster epochs; needs RAM: "
                        "frames x cameras x H x W x 3 bytes)")
    r.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    r.add_argument("--fsdp", action="store_true", help="shard the model over the processes (torchrun)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this step")
    return p


def config_from_args(args: argparse.Namespace):
    """TrainConfig from parsed arguments."""
    from pi0_ros.training.trainer import TrainConfig

    config = args.config or ("pi0_tiny" if args.model == "pi0" else "pi0_fast_tiny")
    cameras = None if args.cameras is None else [c.strip() for c in args.cameras.split(",")]
    return TrainConfig(
        dataset=args.dataset, out=args.out, model=args.model, config=config, init=args.init,
        new_embodiment=args.new_embodiment, action_horizon=args.action_horizon, cameras=cameras,
        delta_dims=args.delta_dims, delta_layout=args.delta_layout, embodiment=args.embodiment,
        action_space=args.action_space, normalization=args.normalization, norm_stats=args.norm_stats,
        default_prompt=args.default_prompt, steps=args.steps or 1000, batch_size=args.batch_size, lr=args.lr,
        min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, ema_decay=args.ema, freeze=args.freeze, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, grad_checkpointing=args.grad_checkpointing, precision=args.precision,
        mask_padded_actions=args.mask_padded_actions, augment=not args.no_augment,
        augment_crop_area=args.augment_crop_area, augment_rotation_deg=args.augment_rotation_deg,
        fast_state_noise=args.fast_state_noise, max_resting_chunks=args.max_resting_chunks,
        resting_tolerance=args.resting_tolerance, fast_scale=args.fast_scale,
        fast_vocab_size=args.fast_vocab_size, save_every=args.save_every, keep_last=args.keep_last,
        log_every=args.log_every, seed=args.seed, num_workers=args.num_workers, cache_images=args.cache_images,
        max_episodes=args.max_episodes, val_dataset=args.val_dataset, device=args.device,
        fsdp=args.fsdp, progress=not args.no_progress, stop_after=args.stop_after)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (2: bad data or arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from pi0_ros.training.trainer import TrainConfig, Trainer

    try:
        if args.resume:
            cfg = TrainConfig(dataset="", out=args.out, steps=args.steps or 0, num_workers=args.num_workers,
                              device=args.device, progress=not args.no_progress, stop_after=args.stop_after)
            trainer = Trainer(cfg, resume=args.resume)
        else:
            if not args.dataset or not args.out:
                parser.error("--dataset and --out are required (or --resume)")
            trainer = Trainer(config_from_args(args))
    except DatasetError as err:
        print(f"pi0-train: {err}", file=sys.stderr)
        return 2
    trainer.run()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
