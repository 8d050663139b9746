"""pi0-FAST latency: prefill (SigLIP + prompt), per-token decode (eager and CUDA graph), end to end.

Standalone (torch only, no ROS, no network), run from the repository root:

    python bench/fast_gpu.py                 # full size (PaliGemma 3B), bf16, CUDA
    python bench/fast_gpu.py --small         # the tiny CPU config, to check the script anywhere
    python bench/fast_gpu.py --compare-pi0   # also time pi0 (10 flow steps) on the same inputs
    python bench/fast_gpu.py --variants all --profile   # FastGenerator variants + kernel tables

Weights are random (latency does not depend on their values), so decoding never stops by itself:
every timing runs a fixed number of steps. "End to end" = prefill + ``--action-tokens`` greedy steps
(+ the "|" step) + FAST decoding of a typical token sequence on the CPU. Prints one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks  # noqa: E402
from pi0_ros.model.fast_tokenizer import FastTokenizer  # noqa: E402
from pi0_ros.model.pi0_fast import (  # noqa: E402
    GraphedDecoder,
    Pi0FastInputs,
    Pi0FastModel,
    StaticKVCache,
    get_pi0_fast_config,
)
from pi0_ros.model.pi0_fast_decode import FastGenerator  # noqa: E402
from pi0_ros.model.tokenizer import EOS_ID  # noqa: E402

# FastGenerator variants: name -> constructor keywords. "|" of the PaliGemma tokenizer is a stand-in id
# here (the weights are random; only the size of the restricted head matters for timing).
VARIANTS = {
    "full": dict(fuse=True, attention="matmul", restrict_vocab=False),
    "restricted": dict(fuse=True, attention="matmul", restrict_vocab=True),
    "restricted_sdpa": dict(fuse=True, attention="sdpa", restrict_vocab=True),
    "restricted_nofuse": dict(fuse=False, attention="matmul", restrict_vocab=True),
    "restricted_compiled": dict(fuse=True, attention="matmul", restrict_vocab=True, compile_step=True),
    "full_compiled": dict(fuse=True, attention="matmul", restrict_vocab=False, compile_step=True),
}
BAR_ID = 235371


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> List[float]:
    """Wall times (ms) of ``fn`` after ``warmup`` untimed calls, synchronizing the device around each."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(values: List[float]) -> Dict[str, float]:
    """Median, p99, min of a list of milliseconds."""
    return {"median_ms": statistics.median(values), "p99_ms": float(np.percentile(values, 99)),
            "min_ms": min(values), "n": len(values)}


def make_inputs(cfg, batch: int, prompt_len: int, device: torch.device, dtype: torch.dtype) -> Pi0FastInputs:
    """Random images for every camera, ``prompt_len`` valid text tokens right-padded to max_token_len."""
    g = torch.Generator().manual_seed(0)
    size, n, length = cfg.image_size, cfg.num_cameras, cfg.max_token_len
    tokens = torch.randint(3, cfg.first_action_id, (batch, length), generator=g)
    mask = torch.arange(length)[None].expand(batch, -1) < prompt_len
    ar = torch.zeros(batch, length, dtype=torch.bool)
    ar[:, prompt_len - 3:prompt_len] = True  # the teacher-forced "Action: " tokens are causal
    return Pi0FastInputs(
        images=(torch.rand(batch, n, 3, size, size, generator=g) * 2 - 1).to(device, dtype),
        image_masks=torch.ones(batch, n, dtype=torch.bool, device=device),
        tokens=tokens.to(device), token_masks=mask.to(device), token_ar=ar.to(device),
        loss_masks=torch.zeros(batch, length, dtype=torch.bool, device=device))


def bench_fast(args, device: torch.device, dtype: torch.dtype) -> Dict[str, object]:
    cfg = get_pi0_fast_config("pi0_fast_tiny" if args.small else "pi0_fast")
    torch.manual_seed(0)
    with torch.device(device):
        model = Pi0FastModel(cfg)
    model.eval().set_inference_dtype(dtype)
    if device.type == "cuda":
        model.set_attention_impl("sdpa")
    result: Dict[str, object] = {"config": "pi0_fast_tiny" if args.small else "pi0_fast",
                                 "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if not args.no_baseline:
        for batch in args.batch:
            result[f"batch_{batch}"] = bench_batch(model, cfg, args, batch, device, dtype)
            print(json.dumps({f"batch_{batch}": result[f"batch_{batch}"]}), flush=True)
    if args.profile:
        result["profile"] = profile_steps(model, cfg, args, device, dtype)
        print(json.dumps({"profile": result["profile"]}, indent=0), flush=True)
    names = list(VARIANTS) if args.variants == ["all"] else args.variants
    for name in names:
        result[f"gen_{name}"] = bench_generator(model, cfg, args, name, device, dtype)
        print(json.dumps({name: result[f"gen_{name}"]}), flush=True)
    return result


def _kernel_table(prof, top: int) -> List[Dict[str, object]]:
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        if t > 0 and e.key and not e.key.startswith(("aten::", "cuda", "Memcpy")):
            rows.append({"kernel": e.key[:70], "calls": e.count, "total_us": round(t, 1)})
    rows.sort(key=lambda r: -r["total_us"])
    total = sum(r["total_us"] for r in rows)
    calls = sum(r["calls"] for r in rows)
    return [{"kernels": calls, "sum_us": round(total, 1)}] + rows[:top]


def profile_steps(model: Pi0FastModel, cfg, args, device: torch.device, dtype: torch.dtype) -> Dict[str, object]:
    """Kernel tables (device time per kernel) of one eager decode step, old and new, and one prefill."""
    from torch.profiler import ProfilerActivity, profile

    inputs = make_inputs(cfg, 1, args.prompt_len, device, dtype)
    slots = cfg.num_cameras * cfg.vision.num_patches + cfg.max_token_len
    cache = StaticKVCache.allocate(model.language_model.config, 1, slots + cfg.max_decoding_steps, model.dtype, device)
    out: Dict[str, object] = {}
    with torch.no_grad():
        logits, num_valid = model.prefill(inputs, cache)
        token = torch.argmax(logits, dim=-1)
        index = torch.tensor([slots], device=device)
        for _ in range(2):
            model.decode_step(token, num_valid, index, cache)
        _sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.decode_step(token, num_valid, index, cache)
            _sync(device)
        out["decode_step_old"] = _kernel_table(prof, 12)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.prefill(inputs, cache)
            _sync(device)
        out["prefill_old"] = _kernel_table(prof, 10)
        if args.profile_compiled:
            out = {}  # only the compiled step's table
        del cache
        gen = FastGenerator(model, 1, cfg.max_decoding_steps, restrict_vocab=True, end_ids=_end_ids(cfg),
                            graphs=False, compile_step=args.profile_compiled)
        gen.prefill(inputs)
        for _ in range(2):
            gen.step()
        _sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            gen.step()
            _sync(device)
        out["decode_step_new_compiled" if args.profile_compiled else "decode_step_new_eager"] = _kernel_table(prof, 14)
    gen = None
    torch.cuda.empty_cache()
    return out


def _end_ids(cfg) -> tuple:
    return (EOS_ID, BAR_ID if BAR_ID < cfg.first_action_id else 5)


def bench_generator(model: Pi0FastModel, cfg, args, name: str, device: torch.device,
                    dtype: torch.dtype) -> Dict[str, object]:
    """One FastGenerator variant: build (capture/compile) time, prefill, per-token step, end to end,
    and agreement with the model's own generate."""
    new_tokens = args.action_tokens + 1
    inputs = make_inputs(cfg, 1, args.prompt_len, device, dtype)
    row: Dict[str, object] = {}
    try:
        t0 = time.perf_counter()
        gen = FastGenerator(model, 1, cfg.max_decoding_steps, end_ids=_end_ids(cfg), **VARIANTS[name])
        _sync(device)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        row["compiled"] = gen.compiled
    except Exception as err:  # report and go on with the other variants
        return {"error": repr(err)[:400]}
    steps = args.decode_steps

    def run_steps():
        # Rewind the step counters (a few tiny kernels) so every timed run decodes the same slots.
        gen.step_index.fill_(1)
        gen.slot.fill_(gen.prompt_slots)
        gen.position.copy_(start_position)
        for _ in range(steps):
            gen.step()

    with torch.no_grad():
        row["prefill"] = stats(timed(lambda: gen.prefill(inputs), device, args.repeats))
        gen.prefill(inputs)
        start_position = gen.position.clone()
        row["decode_per_token"] = stats([t / steps for t in timed(run_steps, device, args.repeats, warmup=1)])
        row["generate_end_to_end"] = stats(timed(
            lambda: gen.generate(inputs, max_new_tokens=new_tokens, stop_at_non_action=False), device,
            args.repeats))
        ours = gen.generate(inputs, max_new_tokens=new_tokens, stop_at_non_action=False)[0]
        ref = model.generate(inputs, max_new_tokens=new_tokens, stop_at_non_action=False)[0]
        same = (ours == ref).long()
        row["tokens_equal_to_model_generate"] = f"{int(same.cumprod(0).sum())} first / {int(same.sum())} of {len(ref)}"
        row["outside_corrections"] = len(gen.last_outside_steps)
    gen = None  # free its cache and fused weights before the next variant
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_batch(model: Pi0FastModel, cfg, args, batch: int, device: torch.device,
                dtype: torch.dtype) -> Dict[str, object]:
    """Prefill, per-token decode (eager, graph) and whole generation for one batch size."""
    new_tokens = args.action_tokens + 1  # the action tokens and the closing "|"
    inputs = make_inputs(cfg, batch, args.prompt_len, device, dtype)
    slots = cfg.num_cameras * cfg.vision.num_patches + cfg.max_token_len
    cache = StaticKVCache.allocate(model.language_model.config, batch, slots + cfg.max_decoding_steps,
                                   model.dtype, device)
    row: Dict[str, object] = {"batch": batch, "prompt_tokens": args.prompt_len, "cache_slots": cache.length}
    graphed = None
    if device.type == "cuda" and not args.no_graph:
        try:
            graphed = GraphedDecoder(model, cache)
        except Exception as err:  # report, and fall back to eager decoding
            row["graph_error"] = repr(err)
    with torch.no_grad():
        row["prefill"] = stats(timed(lambda: model.prefill(inputs, cache), device, args.repeats))
        logits, num_valid = model.prefill(inputs, cache)
        token = torch.argmax(logits, dim=-1)

        write_slots = torch.arange(slots, slots + args.decode_steps, device=device)

        def decode_run(step_fn):
            tok = token
            for k in range(args.decode_steps):
                tok = torch.argmax(step_fn(tok, num_valid + k, write_slots[k:k + 1], cache), dim=-1)
            return tok

        eager = timed(lambda: decode_run(model.decode_step), device, min(args.repeats, 3), warmup=1)
        row["decode_eager_per_token"] = stats([t / args.decode_steps for t in eager])
        step = graphed if graphed is not None else model.decode_step
        if graphed is not None:
            graph_times = timed(lambda: decode_run(graphed), device, args.repeats)
            row["decode_graph_per_token"] = stats([t / args.decode_steps for t in graph_times])
        row["generate_end_to_end_model"] = stats(timed(
            lambda: model.generate(inputs, max_new_tokens=new_tokens, cache=cache, step_fn=step,
                                   stop_at_non_action=False), device, args.repeats))
    return row


def bench_fast_decode_cpu(args) -> Dict[str, object]:
    """FAST token -> chunk decoding on the host (part of every inference)."""
    chunk_cfg = SyntheticChunkConfig(horizon=50, action_dim=16, gripper_dims=(7, 15))
    chunks = make_chunks(1000, chunk_cfg, seed=0)
    tok = FastTokenizer.fit(chunks[:900], scale=10, vocab_size=1024)
    ids = [tok.encode(c) for c in chunks[900:]]
    times = []
    for seq in ids:
        t0 = time.perf_counter()
        tok.decode(seq)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"tokens_per_chunk_median": float(np.median([len(s) for s in ids])), **stats(times)}


def bench_pi0(args, device: torch.device, dtype: torch.dtype) -> Dict[str, object]:
    """pi0 (10 Euler steps, cached prefix) on the same images and a 48-token prompt."""
    from pi0_ros.model.config import get_pi0_config
    from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model

    cfg = get_pi0_config("pi0_tiny" if args.small else "pi0")
    torch.manual_seed(0)
    with torch.device(device):
        model = Pi0Model(cfg)
    model.eval()
    if dtype != torch.float32:
        model.set_inference_dtype(dtype)
    if device.type == "cuda":
        model.set_attention_impl("sdpa")
    g = torch.Generator().manual_seed(0)
    size, length = cfg.image_size, cfg.max_token_len
    inputs = Pi0Inputs(
        images=(torch.rand(1, cfg.num_cameras, 3, size, size, generator=g) * 2 - 1).to(device),
        image_masks=torch.ones(1, cfg.num_cameras, dtype=torch.bool, device=device),
        tokens=torch.randint(3, 200, (1, length), generator=g).to(device),
        token_masks=torch.ones(1, length, dtype=torch.bool, device=device),
        state=torch.zeros(1, cfg.action_dim, device=device))
    with torch.no_grad():
        times = timed(lambda: model.sample_actions(inputs), device, args.repeats)
    return {"config": "pi0_tiny" if args.small else "pi0", **stats(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny config (CPU check)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--prompt-len", type=int, default=None,
                        help="valid prompt tokens (default 110: task text + 32 state ints + 'Action: ')")
    parser.add_argument("--action-tokens", type=int, default=80, help="action tokens of a typical chunk")
    parser.add_argument("--decode-steps", type=int, default=64, help="steps per per-token timing")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph decoder")
    parser.add_argument("--compare-pi0", action="store_true")
    parser.add_argument("--variants", nargs="*", default=[], help=f"FastGenerator variants: all | {list(VARIANTS)}")
    parser.add_argument("--no-baseline", action="store_true", help="skip Pi0FastModel.generate timings")
    parser.add_argument("--profile", action="store_true", help="kernel tables of one eager decode step")
    parser.add_argument("--profile-compiled", action="store_true", help="--profile the compiled new step")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.prompt_len is None:
        args.prompt_len = 60 if args.small else 110
    if args.small:
        args.repeats = min(args.repeats, 5)
        args.decode_steps = min(args.decode_steps, 16)
    summary: Dict[str, object] = {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "action_tokens": args.action_tokens,
    }
    summary["pi0_fast"] = bench_fast(args, device, dtype)
    summary["fast_decode_cpu"] = bench_fast_decode_cpu(args)
    rows = summary["pi0_fast"].get("batch_1") if 1 in args.batch else None
    if rows is not None:
        summary["end_to_end_median_ms"] = (rows["generate_end_to_end_model"]["median_ms"]
                                           + summary["fast_decode_cpu"]["median_ms"])
    if args.compare_pi0:
        try:
            summary["pi0"] = bench_pi0(args, device, dtype)
        except Exception as err:  # pi0 is someone else's module: report instead of failing the run
            summary["pi0"] = {"error": repr(err)}
    print(json.dumps(summary, indent=1))
    print_table(summary)


def print_table(summary: Dict[str, object]) -> None:
    """Short medians table (the last lines of the output)."""
    fast = summary["pi0_fast"]
    print("variant | build s | prefill ms | per token ms | end to end ms | tokens equal")
    base = fast.get("batch_1")
    if base:
        graph = base.get("decode_graph_per_token", base["decode_eager_per_token"])["median_ms"]
        print(f"baseline | - | {base['prefill']['median_ms']:.2f} | {graph:.3f} (eager "
              f"{base['decode_eager_per_token']['median_ms']:.2f}) | "
              f"{base['generate_end_to_end_model']['median_ms']:.1f} | -")
    for key, row in fast.items():
        if not key.startswith("gen_"):
            continue
        if "error" in row:
            print(f"{key[4:]} | error {row['error'][:150]}")
            continue
        print(f"{key[4:]} | {row['build_s']} | {row['prefill']['median_ms']:.2f} | "
              f"{row['decode_per_token']['median_ms']:.3f} | {row['generate_end_to_end']['median_ms']:.1f} | "
              f"{row['tokens_equal_to_model_generate']}")


if __name__ == "__main__":
    main()
