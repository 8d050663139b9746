"""Where the time goes in full-size pi0 on a GPU: top CUDA kernels of one prefill and one denoise step
(torch.profiler), and each SDPA backend's time on the denoise-step and prefix attention shapes.

Usage (device machine): python3 bench/pi0_gpu_profile.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_ros.model.config import get_pi0_config  # noqa: E402
from pi0_ros.model.pi0 import Pi0Model  # noqa: E402
from pi0_ros.model.random_inputs import random_inputs  # noqa: E402


def bench_ms(fn, iters=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def attention_us(q, k, v, mask, backend) -> float:
    def run():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    if backend is None:
        return bench_ms(run) * 1e3
    with sdpa_kernel(backend):
        return bench_ms(run) * 1e3


def main() -> int:
    cfg = get_pi0_config("pi0")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Pi0Model(cfg).eval()
    model.set_inference_dtype(torch.bfloat16).set_attention_impl("sdpa")
    inputs = random_inputs(cfg, batch=1, missing_camera=False).to("cuda")
    inputs.token_masks[:] = True
    noise = torch.randn(1, cfg.action_horizon, cfg.action_dim, device="cuda")
    t = torch.full((1,), 0.5, device="cuda")
    with torch.inference_mode():
        cache = model.prefill(inputs)
        for _ in range(3):
            model.denoise_step(noise, t, cache)
        torch.cuda.synchronize()
        for name, fn in (("denoise_step", lambda: model.denoise_step(noise, t, cache)),
                         ("prefill", lambda: model.prefill(inputs))):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            print(f"=== {name}")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
        for label, lq, lk in (("denoise", 8 * 51, 867), ("prefix", 8 * 816, 816)):
            q = torch.randn(1, 1, lq, 256, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, 1, lk, 256, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            bias = torch.zeros(1, 1, lq, lk, device="cuda", dtype=torch.bfloat16)
            for backend in (None, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                            SDPBackend.FLASH_ATTENTION):
                for mask in (bias, None):
                    name = backend.name if backend else "default"
                    try:
                        print(f"sdpa {label:8} {name:20} mask={mask is not None}: "
                              f"{attention_us(q, k, v, mask, backend):8.1f} us")
                    except RuntimeError as err:
                        print(f"sdpa {label:8} {name:20} mask={mask is not None}: unavailable {str(err)[:50]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
