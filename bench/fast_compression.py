"""FAST compression vs naive per-step binning on synthetic 1 s, 50 Hz dual-arm chunks.

Naive binning (256 uniform bins over [-1, 1], one token per step and dimension) always spends T * D
tokens. FAST's token count depends on the DCT scale, which also sets its error, so the script sweeps
the scale and reports, per action dimension count, tokens per chunk and reconstruction error (RMS and
max, normalized units) on held-out chunks, plus the smallest scale whose RMS error is no larger than
naive binning's and the token ratio there.

    .venv/bin/python bench/fast_compression.py [--fit 4000] [--eval 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks  # noqa: E402
from pi0_ros.model.fast_tokenizer import FastTokenizer  # noqa: E402

NAIVE_BINS = 256


def naive_binning_error(chunks: np.ndarray, bins: int = NAIVE_BINS) -> "tuple[float, float]":
    """RMS and max error of uniform binning over [-1, 1] with bin-center reconstruction."""
    width = 2.0 / bins
    index = np.clip(np.floor((chunks + 1.0) / width), 0, bins - 1)
    recon = -1.0 + (index + 0.5) * width
    err = recon - chunks
    return float(np.sqrt(np.mean(err**2))), float(np.max(np.abs(err)))


def measure(fit: np.ndarray, held_out: np.ndarray, scale: float, vocab_size: int) -> dict:
    """Fit FAST at one scale; tokens per held-out chunk and its reconstruction errors."""
    t0 = time.perf_counter()
    tok = FastTokenizer.fit(fit, scale=scale, vocab_size=vocab_size, max_abs_normalized=10.0)
    fit_s = time.perf_counter() - t0
    lengths, sq, peak = [], [], 0.0
    t0 = time.perf_counter()
    for chunk in held_out:
        ids = tok.encode(chunk)
        lengths.append(len(ids))
        err = tok.decode(ids).astype(np.float64) - chunk
        sq.append(np.mean(err**2))
        peak = max(peak, float(np.max(np.abs(err))))
    codec_ms = (time.perf_counter() - t0) * 1e3 / len(held_out)
    lengths = np.asarray(lengths)
    return {
        "scale": scale,
        "vocab_size": vocab_size,
        "alphabet": tok.config.max_token - tok.config.min_token + 1,
        "tokens_mean": float(lengths.mean()),
        "tokens_median": float(np.median(lengths)),
        "tokens_p99": float(np.percentile(lengths, 99)),
        "rms_error": float(np.sqrt(np.mean(sq))),
        "max_error": peak,
        "fit_s": fit_s,
        "encode_decode_ms_per_chunk": codec_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=4000, help="chunks to fit the BPE on")
    parser.add_argument("--eval", type=int, default=500, help="held-out chunks to measure")
    parser.add_argument("--dims", type=int, nargs="+", default=[14, 16])
    parser.add_argument("--scales", type=float, nargs="+", default=[10, 25, 50, 60, 70, 80, 100])
    parser.add_argument("--hard", action="store_true",
                        help="every gripper switches inside every chunk and up to 3 moves per second")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args()

    summary = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "hard": args.hard,
               "results": []}
    for dims in args.dims:
        grippers = (dims // 2 - 1, dims - 1)  # the last dim of each arm
        cfg = SyntheticChunkConfig(horizon=50, action_dim=dims, gripper_dims=grippers)
        if args.hard:
            cfg.gripper_switch_prob, cfg.max_waypoints = 1.0, 3
        fit = make_chunks(args.fit, cfg, seed=dims)
        held_out = make_chunks(args.eval, cfg, seed=1000 + dims)
        naive_rms, naive_max = naive_binning_error(held_out)
        naive_tokens = cfg.horizon * dims
        rows = []
        for scale in args.scales:
            # The alphabet grows with the scale; keep room for merges.
            vocab = 1024 if scale <= 25 else 2048
            row = measure(fit, held_out, scale, vocab)
            row["ratio_vs_naive"] = naive_tokens / row["tokens_mean"]
            rows.append(row)
            print(f"D={dims} scale={scale:g} vocab={vocab}: {row['tokens_mean']:.1f} tokens "
                  f"(p99 {row['tokens_p99']:.0f}), rms {row['rms_error']:.4f}, max {row['max_error']:.4f}, "
                  f"{row['ratio_vs_naive']:.1f}x fewer than naive", flush=True)
        matched = [r for r in rows if r["rms_error"] <= naive_rms]
        result = {
            "action_dim": dims,
            "horizon": cfg.horizon,
            "naive": {"bins": NAIVE_BINS, "tokens": naive_tokens, "rms_error": naive_rms, "max_error": naive_max},
            "fast": rows,
            "matched_error": min(matched, key=lambda r: r["tokens_mean"]) if matched else None,
        }
        print(f"D={dims} naive: {naive_tokens} tokens, rms {naive_rms:.4f}, max {naive_max:.4f}; "
              f"matched-error FAST: {result['matched_error']}", flush=True)
        summary["results"].append(result)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
