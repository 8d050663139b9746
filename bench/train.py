"""Training throughput: steps/s and samples/s of pi0-train's loop on synthetic data (no dataset needed).

CPU, the simulator's tiny config::

    .venv/bin/python bench/train.py --config pi0_tiny --steps 30 --batch-size 4

GPU, the FULL pi0 (random init on the GPU, bf16 autocast, gradient checkpointing, frozen vision)::

    python bench/train.py --config pi0 --device cuda --freeze vision --grad-checkpointing --batch-size 8 \\
        --steps 20 --num-workers 8

Prints one JSON line: samples/s over the steps after ``--skip`` warm-up steps, and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pi0_ros.training.synthetic import make_dataset  # noqa: E402
from pi0_ros.training.trainer import TrainConfig, Trainer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pi0", choices=("pi0", "pi0_fast"))
    p.add_argument("--config", default="pi0_tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the rate")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--freeze", default="none")
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image = 224
    ds = make_dataset(num_episodes=8, length=20, state_dim=16, action_dim=16, image_size=image, seed=0)
    out = tempfile.mkdtemp(prefix="bench_train_")
    cfg = TrainConfig(dataset="synthetic", out=out, model=args.model, config=args.config, steps=args.steps,
                      batch_size=args.batch_size, lr=1e-4, warmup_steps=2, save_every=10**9, progress=False,
                      freeze=args.freeze, lora_rank=args.lora_rank, grad_checkpointing=args.grad_checkpointing,
                      num_workers=args.num_workers, device=args.device, delta_dims="0-6,8-14")
    t0 = time.perf_counter()
    with torch.device(args.device):  # a full-size model is created (and initialized) on the GPU directly
        trainer = Trainer(cfg, dataset=ds)
    setup_s = time.perf_counter() - t0
    trainer.save = lambda step: None  # throughput only: no multi-GB checkpoint at the end
    summary = trainer.run()
    times = [h["time"] for h in trainer.history]
    span = times[-1] - times[args.skip - 1] if len(times) > args.skip else float("nan")
    timed = len(times) - args.skip
    result = {
        "model": args.model, "config": args.config, "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "freeze": args.freeze, "lora_rank": args.lora_rank, "grad_checkpointing": args.grad_checkpointing,
        "trainable_params_M": round(summary["trainable_params"] / 1e6, 1),
        "total_params_M": round(summary["total_params"] / 1e6, 1), "setup_s": round(setup_s, 1),
        "timed_steps": timed, "steps_per_s": timed / span, "samples_per_s": timed * args.batch_size / span,
        "loss_first": summary["loss_first"], "loss_last": summary["loss_last"],
        "peak_gpu_mem_gib": summary["peak_gpu_mem_gib"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
