"""CPU latency of the simulator's pi0 config through the whole policy (``Pi0Policy.infer``).

Builds a random-weight checkpoint with ``make_checkpoint`` (pi0_tiny, 16-dim state/actions, 3 cameras),
then times ``infer`` on 224x224 RGB images (no resize needed) and, separately, the model stages
(prefill = vision + prefix LM; denoise = 10 expert steps). Reports p50/p99 per attention
implementation and thread count.

Usage: python bench/pi0_cpu.py [--config pi0_tiny] [--iters 30] [--threads 1,2] [--impls eager,sdpa]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_ros.model import make_checkpoint  # noqa: E402
from pi0_ros.model.policy import Pi0Policy  # noqa: E402


def pct(ms):
    a = np.asarray(ms)
    return {"p50": round(float(np.median(a)), 2), "p99": round(float(np.percentile(a, 99)), 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pi0_tiny")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--impls", default="eager,sdpa")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "ckpt")
        make_checkpoint.main(["--config", args.config, "--out", ckpt, "--delta-dims", "0-6,8-14"])
        policy = Pi0Policy.from_checkpoint(ckpt, device="cpu")
    rng = np.random.default_rng(0)
    size = policy.metadata["image_size"]
    obs = {"images": {n: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                      for n in policy.metadata["camera_names"]},
           "state": rng.normal(size=16).astype(np.float32), "prompt": "pick up the red cube with the left arm"}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for impl in args.impls.split(","):
            policy.model.set_attention_impl(impl)
            for _ in range(3):
                policy.infer(obs, seed=0)
            infer_ms, prefill_ms, denoise_ms = [], [], []
            inputs, _ = policy.prepare(obs)
            noise = policy.model.sample_noise(1, torch.Generator().manual_seed(0))
            with torch.inference_mode():
                for i in range(args.iters):
                    t0 = time.perf_counter()
                    policy.infer(obs, seed=i)
                    t1 = time.perf_counter()
                    cache = policy.model.prefill(inputs)
                    t2 = time.perf_counter()
                    policy.model.denoise(noise, cache, policy.num_steps)
                    t3 = time.perf_counter()
                    infer_ms.append((t1 - t0) * 1e3)
                    prefill_ms.append((t2 - t1) * 1e3)
                    denoise_ms.append((t3 - t2) * 1e3)
            row = {"threads": threads, "impl": impl, "infer": pct(infer_ms), "prefill": pct(prefill_ms),
                   "denoise": pct(denoise_ms)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()
    print(f"\nconfig {args.config}, {args.iters} iters, load average at end {load[0]:.2f}")
    print(f"{'threads':>7} {'impl':>6} {'infer p50':>10} {'p99':>8} {'prefill':>8} {'denoise':>8}")
    for r in rows:
        print(f"{r['threads']:>7} {r['impl']:>6} {r['infer']['p50']:>10} {r['infer']['p99']:>8} "
              f"{r['prefill']['p50']:>8} {r['denoise']['p50']:>8}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "loadavg": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
