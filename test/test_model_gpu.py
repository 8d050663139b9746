"""pi0 on CUDA: the bf16 dtype policy and CUDA-graph replay of the whole inference.

Marked ``gpu`` (not run here); the same logic runs on CPU in test_model_pi0.py (bf16 policy, sdpa vs
eager, cached vs uncached). Run on the device machine: python3 -m pytest -m gpu test/test_model_gpu.py
"""

from __future__ import annotations

import pytest
import torch

from pi0_ros.model.config import get_pi0_config
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.random_inputs import random_inputs, randomize_weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_bf16_cuda_path_tracks_fp32_and_graph_replay_matches_eager():
    cfg = get_pi0_config("pi0_tiny")
    model = randomize_weights(Pi0Model(cfg).eval(), seed=0, std=0.05).cuda()
    inputs = random_inputs(cfg, batch=1, missing_camera=False).to("cuda")
    noise = model.sample_noise(1, device="cuda")
    ref = model.sample_actions(inputs, noise=noise)
    model.set_inference_dtype(torch.bfloat16).set_attention_impl("sdpa", suffix_impl="eager").fuse_projections()
    out = model.sample_actions(inputs, noise=noise)
    assert torch.isfinite(out).all() and rel_err(out, ref) < 3e-2
    static_noise = noise.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        model.sample_actions(inputs, noise=static_noise)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_out = model.sample_actions(inputs, noise=static_noise)
    inputs.images.uniform_(-1, 1)
    static_noise.normal_()
    graph.replay()
    torch.testing.assert_close(graph_out, model.sample_actions(inputs, noise=static_noise.clone()), atol=0, rtol=0)


def _gpu_kernels_ready() -> bool:
    from pi0_ros.model import kernels

    return kernels.triton_available()


@pytest.mark.parametrize("cfg", [(64, 64, 128, 8, 2), (32, 64, 64, 4, 2), (16, 32, 64, 4, 2)])
@pytest.mark.parametrize("shape", [(1, 8, 1, 51, 816, 256), (2, 4, 2, 51, 240, 32)])
def test_triton_suffix_attention_matches_reference(cfg, shape):
    if not _gpu_kernels_ready():
        pytest.skip("no triton")
    from pi0_ros.model import kernels

    b, h, kvh, length, prefix, d = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = torch.bfloat16
    q = (torch.randn(b, length, h, d, device="cuda", generator=g) * d ** -0.5).to(bf).transpose(1, 2)
    kp, vp = (torch.randn(b, kvh, prefix, d, device="cuda", generator=g).to(bf) for _ in range(2))
    ks, vs = (torch.randn(b, kvh, length, d, device="cuda", generator=g).to(bf) for _ in range(2))
    mask = torch.rand(b, length, prefix + length, device="cuda", generator=g) > 0.3
    mask[0, 0] = False
    mask = mask.to(torch.uint8)
    ref64 = kernels.attention_reference(*(t.double() for t in (q, kp, vp, ks, vs)), mask)
    ref_bf = kernels.attention_reference(q, kp, vp, ks, vs, mask)
    out = kernels.attention_triton(q, kp, vp, ks, vs, mask, config=cfg)
    torch.cuda.synchronize()
    assert out.shape == ref_bf.shape and out.dtype == bf and torch.isfinite(out).all()
    # as close to float64 as the bf16 torch reference is (both round probabilities and output to bf16)
    assert rel_err(out, ref64) < 2 * rel_err(ref_bf, ref64) + 1e-3
    assert rel_err(out, ref_bf) < 1e-2


@pytest.mark.parametrize("mnk", [(51, 2560, 1024), (51, 1024, 4096), (51, 192, 64), (130, 96, 320)])
def test_skinny_linear_matches_cublas(mnk):
    if not _gpu_kernels_ready():
        pytest.skip("no triton")
    from pi0_ros.model import kernels

    m, n, k = mnk
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(m, k, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    ref = x.double() @ w.double().t()
    for cfg in [(64, 64, 128, 2, 4, 4), (64, 32, 64, 3, 4, 3), (64, 128, 128, 1, 8, 3)]:
        out = kernels.skinny_linear(x, w, cfg)
        assert out.dtype == torch.bfloat16 and out.shape == (m, n)
        assert rel_err(out, ref) < 2 * rel_err(torch.nn.functional.linear(x, w), ref) + 1e-3


def test_gpu_kernels_in_pi0_track_reference_and_replay_in_a_graph():
    if not _gpu_kernels_ready():
        pytest.skip("no triton")
    cfg = get_pi0_config("pi0_tiny")
    model = randomize_weights(Pi0Model(cfg).eval(), seed=0, std=0.05).cuda()
    inputs = random_inputs(cfg, batch=1, missing_camera=False).to("cuda")
    noise = model.sample_noise(1, device="cuda")
    ref32 = model.sample_actions(inputs, noise=noise)
    model.set_inference_dtype(torch.bfloat16).set_attention_impl("sdpa", suffix_impl="eager").fuse_projections()
    ref = model.sample_actions(inputs, noise=noise)
    model.set_attention_impl("sdpa", suffix_impl="triton")
    for layer in model.paligemma_with_expert.gemma_expert.model.layers:
        layer.self_attn.qkv_gemm = layer.self_attn.o_gemm = (64, 32, 64, 2, 4, 3)
        layer.mlp.gate_up_gemm = layer.mlp.down_gemm = (64, 64, 64, 1, 4, 3)
    out = model.sample_actions(inputs, noise=noise)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 2e-2 and rel_err(out, ref32) < 2 * rel_err(ref, ref32) + 5e-3
    static_noise = noise.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        model.sample_actions(inputs, noise=static_noise)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_out = model.sample_actions(inputs, noise=static_noise)
    inputs.images.uniform_(-1, 1)
    static_noise.normal_()
    graph.replay()
    torch.testing.assert_close(graph_out, model.sample_actions(inputs, noise=static_noise.clone()), atol=0, rtol=0)
    # gradients (RTC guidance) take the reference path
    with torch.no_grad():
        cache = model.prefill(inputs)
    x_t = static_noise.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.denoise_step(x_t, torch.tensor([0.5], device="cuda"), cache).sum(), x_t)
    assert torch.isfinite(grad).all()
    model.disable_gpu_kernels()
