"""pi0 inference latency on a GPU: full-size pi0, random weights, batch 1, 3 cameras, bf16.

Measures, for each execution mode, p50/p99 of one whole ``sample_actions`` (vision + prefix + 10
denoising steps) with CUDA events, a breakdown (vision, prefix LM, denoising loop), peak GPU memory,
the first-call (warm-up) time, and the bf16 error against an fp32 run of the same weights.

Modes:
  eager    bf16 weights (norms and the velocity head fp32), fused q/k/v and gate/up matmuls, SDPA
           attention for vision and prefix, matmul (eager) attention for the 51-token denoising steps
  graph    the same kernels captured once in CUDA graphs and replayed (static shapes and buffers)
  compile  torch.compile (Inductor, fused norms/RoPE/GeGLU) of prefill and denoise_step, then CUDA graphs
  autotune as compile, with denoise_step compiled in max-autotune-no-cudagraphs mode
  kgraph, kcompile   graph / compile with the Triton kernels of the denoising steps
           (Pi0Model.enable_gpu_kernels: split-K suffix attention, skinny GEMMs where faster than cuBLAS)

Usage (device machine): python3 bench/pi0_gpu.py --modes eager,graph,compile --out $OUT/pi0_gpu.json
CPU smoke test:         python bench/pi0_gpu.py --config pi0_test --device cpu --modes eager --iters 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from _timing import capture_graph, cuda_event_ms  # bench/, the script's folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_ros.model.config import get_pi0_config  # noqa: E402
from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model  # noqa: E402
from pi0_ros.model.random_inputs import random_inputs  # noqa: E402


def timed(fn: Callable[[], object], device: torch.device, iters: int) -> List[float]:
    """Milliseconds per call, device events on CUDA, perf_counter on CPU."""
    out = []
    for _ in range(iters):
        if device.type == "cuda":
            out.append(cuda_event_ms(fn))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: List[float]) -> Dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.median(a)), "p99": float(np.percentile(a, 99)), "min": float(a.min()), "n": len(a)}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Stages:
    """The three stages as zero-argument callables over static buffers (graph-capturable)."""

    def __init__(self, model: Pi0Model, inputs: Pi0Inputs, noise: torch.Tensor, num_steps: int,
                 prefill: Callable, step: Callable):
        self.model, self.inputs, self.noise, self.num_steps = model, inputs, noise, num_steps
        self.prefill_fn, self.step_fn = prefill, step
        self.cache = None

    def vision(self):
        images = self.inputs.images
        return self.model.paligemma_with_expert.paligemma.embed_image(images.flatten(0, 1))

    def prefill(self):
        self.cache = self.prefill_fn(self.inputs)
        return self.cache

    def denoise(self):
        m, cache = self.model, self.cache
        b = self.noise.shape[0]
        dt = np.float32(-1.0 / self.num_steps)
        t = np.float32(1.0)
        x = self.noise
        for _ in range(self.num_steps):
            v = self.step_fn(x, torch.full((b,), float(t), device=x.device), cache)
            x = x + float(dt) * v
            t = np.float32(t + dt)
        del m
        return x

    def full(self):
        self.prefill()
        return self.denoise()


def run_mode(mode: str, model: Pi0Model, inputs: Pi0Inputs, noise: torch.Tensor, ref: torch.Tensor,
             args, device: torch.device) -> Dict[str, object]:
    result: Dict[str, object] = {"mode": mode}
    # Private copies: the graph check below overwrites them, and every mode must see the reference inputs.
    inputs = Pi0Inputs(*(t.clone() for t in (inputs.images, inputs.image_masks, inputs.tokens,
                                              inputs.token_masks, inputs.state)))
    noise = noise.clone()
    kernels_on = mode.startswith("k")
    base = mode[1:] if kernels_on else mode
    if kernels_on:
        t_k = time.perf_counter()
        result["kernel_tuning"] = model.enable_gpu_kernels()
        sync(device)
        result["kernel_setup_s"] = time.perf_counter() - t_k
        print("\n".join(result["kernel_tuning"]), flush=True)
    else:
        model.disable_gpu_kernels()
    prefill, step = model.prefill, model.denoise_step
    if base in ("compile", "autotune"):
        prefill = torch.compile(model.prefill, dynamic=False, fullgraph=False)
        # autotune: Inductor benchmarks Triton GEMM templates against cuBLAS for the skinny (51-row)
        # matmuls of the denoising step; CUDA graphs stay ours.
        step_mode = "max-autotune-no-cudagraphs" if base == "autotune" else None
        step = torch.compile(model.denoise_step, dynamic=False, fullgraph=False, mode=step_mode)
    st = Stages(model, inputs, noise, args.steps, prefill, step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        first = st.full()
        sync(device)
        result["first_call_ms"] = (time.perf_counter() - t0) * 1e3
        result["rel_err_vs_fp32"] = rel_err(first, ref)
        if base == "eager":
            for _ in range(args.warmup):
                st.full()
            sync(device)
            result["total"] = stats(timed(st.full, device, args.iters))
            result["vision"] = stats(timed(st.vision, device, args.iters))
            result["prefix_incl_vision"] = stats(timed(st.prefill, device, args.iters))
            result["denoise"] = stats(timed(st.denoise, device, args.iters))
        else:
            t1 = time.perf_counter()
            g_full, out = capture_graph(st.full)
            g_vision, _ = capture_graph(st.vision)
            g_prefill, _ = capture_graph(st.prefill)
            # The denoise graph reads the cache the prefill graph wrote (its last capture's buffers).
            g_denoise, _ = capture_graph(st.denoise)
            sync(device)
            result["capture_ms"] = (time.perf_counter() - t1) * 1e3
            g_full.replay()
            sync(device)
            result["rel_err_vs_fp32_graph"] = rel_err(out, ref)
            for _ in range(args.warmup):
                g_full.replay()
            result["total"] = stats(timed(g_full.replay, device, args.iters))
            result["vision"] = stats(timed(g_vision.replay, device, args.iters))
            result["prefix_incl_vision"] = stats(timed(g_prefill.replay, device, args.iters))
            result["denoise"] = stats(timed(g_denoise.replay, device, args.iters))
            # Fresh inputs through the same graph must still give the eager answer (no stale buffers).
            inputs.images.uniform_(-1, 1)
            noise.normal_()
            g_full.replay()
            eager_again = model.sample_actions(inputs, noise=noise.clone())
            sync(device)
            result["rel_err_graph_vs_eager_new_inputs"] = rel_err(out, eager_again)
    if args.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode():
            x, t = noise.clone(), torch.full((1,), 0.5, device=device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                st.step_fn(x, t, st.cache)
                sync(device)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
        Path(args.out or ".").with_name(f"profile_{mode}.txt").write_text(table)
    result["prefix_lm"] = {"p50": result["prefix_incl_vision"]["p50"] - result["vision"]["p50"]}
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pi0")
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="eager,graph,compile")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prompt-len", type=int, default=48)
    p.add_argument("--suffix-attn", default="eager", help="attention of the denoising steps: eager | sdpa")
    p.add_argument("--no-fuse", action="store_true", help="keep separate q/k/v and gate/up matmuls")
    p.add_argument("--tf32", type=int, default=1,
                   help="TF32 for fp32 matmuls after the reference; exact for the bf16-valued attention logits")
    p.add_argument("--profile", action="store_true", help="write profile_<mode>.txt next to --out")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False  # the fp32 reference must really be fp32 (patch conv)
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = get_pi0_config(args.config)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = Pi0Model(cfg).eval()
    sync(device)
    header = {"config": args.config, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
              "build_s": time.perf_counter() - t0, "steps": args.steps, "prompt_len": args.prompt_len,
              "horizon": cfg.action_horizon, "cameras": cfg.num_cameras, "image_size": cfg.image_size}
    print(json.dumps(header), flush=True)
    inputs = random_inputs(cfg, batch=1, seed=1, missing_camera=False)
    inputs.token_masks[:] = False
    inputs.token_masks[:, : args.prompt_len] = True
    inputs = inputs.to(device)
    noise = torch.randn(1, cfg.action_horizon, cfg.action_dim, device=device)
    with torch.inference_mode():
        ref = model.sample_actions(inputs, noise=noise.clone(), num_steps=args.steps)  # fp32 eager reference
    # q and k are bf16 values, so TF32 products of them are exact (fp32 accumulation, fp32 logits), as in
    # openpi's einsum with preferred_element_type=float32; only the fp32 velocity head is rounded.
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    model.set_inference_dtype(torch.bfloat16 if device.type == "cuda" else torch.float32)
    model.set_attention_impl("sdpa", suffix_impl=args.suffix_attn)
    if not args.no_fuse:
        model.fuse_projections()
    results = [header]
    for mode in args.modes.split(","):
        try:
            res = run_mode(mode, model, inputs, noise, ref, args, device)
        except Exception as err:  # keep the other modes' numbers
            res = {"mode": mode, "error": f"{type(err).__name__}: {err}"[:2000]}
        results.append(res)
        print(json.dumps(res), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'mode':8} {'p50 ms':>8} {'p99 ms':>8} {'vision':>7} {'prefixLM':>8} {'denoise':>8} "
          f"{'first ms':>9} {'peak GiB':>8} {'relerr':>8}")
    for r in results[1:]:
        if "error" in r:
            print(f"{r['mode']:8} ERROR {r['error'][:200]}")
            continue
        print(f"{r['mode']:8} {r['total']['p50']:8.2f} {r['total']['p99']:8.2f} {r['vision']['p50']:7.2f} "
              f"{r['prefix_lm']['p50']:8.2f} {r['denoise']['p50']:8.2f} {r['first_call_ms']:9.0f} "
              f"{r.get('peak_mem_gib', 0):8.2f} {r['rel_err_vs_fp32']:8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
