"""GPU-kernel plumbing on CPU: the custom ops' reference implementations, the ``triton`` suffix-attention
impl and skinny-GEMM configs falling back to the reference math off CUDA (the kernels themselves are
compared with the reference on the device in test_model_gpu.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pi0_ros.model import kernels
from pi0_ros.model.config import get_pi0_config
from pi0_ros.model.gemma import ATTENTION_MASK_VALUE, attention, linear, prepare_mask
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.random_inputs import random_inputs, randomize_weights


def test_mask_fill_matches_gemma():
    assert kernels.MASK_FILL == ATTENTION_MASK_VALUE


@pytest.mark.parametrize("batch,heads,kv_heads", [(1, 4, 1), (2, 4, 2)])
def test_suffix_attention_op_matches_concatenated_eager_attention(batch, heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    length, prefix, d = 5, 9, 16
    q = torch.randn(batch, heads, length, d, generator=g)
    kp, vp = (torch.randn(batch, kv_heads, prefix, d, generator=g) for _ in range(2))
    ks, vs = (torch.randn(batch, kv_heads, length, d, generator=g) for _ in range(2))
    mask = torch.rand(batch, length, prefix + length, generator=g) > 0.3
    mask[0, 0] = False  # fully masked row: uniform weights in both
    out = torch.ops.pi0.suffix_attention(q, kp, vp, ks, vs, prepare_mask(mask, heads // kv_heads, "triton",
                                                                          torch.float32))
    ref = attention(q, torch.cat([kp, ks], 2), torch.cat([vp, vs], 2), mask[:, None, None], "eager")
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(batch, length, heads * d))


def test_linear_partials_op_sums_to_linear():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(7, 320, generator=g), torch.randn(24, 320, generator=g)
    parts = torch.ops.pi0.linear_partials(x, w, 64, 32, 64, 3, 4, 2)
    assert parts.shape == (3, 7, 24)  # 320 = 128 + 128 + 64
    torch.testing.assert_close(parts.sum(0), x @ w.t(), atol=1e-4, rtol=1e-4)
    # On CPU a config never reaches the kernel.
    torch.testing.assert_close(linear(x, w, (64, 32, 64, 3, 4, 2)), F.linear(x, w))


def test_triton_suffix_impl_and_gemm_configs_fall_back_on_cpu():
    cfg = get_pi0_config("pi0_test")
    model = randomize_weights(Pi0Model(cfg).eval(), seed=0, std=0.3).fuse_projections()
    inputs = random_inputs(cfg, batch=2, seed=1)
    noise = model.sample_noise(2, torch.Generator().manual_seed(3))
    ref = model.sample_actions(inputs, noise=noise)
    model.set_attention_impl("eager", suffix_impl="triton")
    for layer in model.paligemma_with_expert.gemma_expert.model.layers:
        layer.self_attn.qkv_gemm = layer.self_attn.o_gemm = (64, 32, 64, 2, 4, 2)
        layer.mlp.gate_up_gemm = layer.mlp.down_gemm = (64, 32, 64, 2, 4, 2)
    try:
        assert model.prefill(inputs).suffix_plan.mask.dtype == torch.uint8
        torch.testing.assert_close(model.sample_actions(inputs, noise=noise), ref, atol=1e-5, rtol=1e-5)
    finally:
        model.disable_gpu_kernels()
    assert model.suffix_attn_impl == "eager"
    assert model.paligemma_with_expert.gemma_expert.model.layers[0].mlp.down_gemm is None
    with pytest.raises(ValueError):
        model.set_attention_impl("triton")
    with pytest.raises(RuntimeError):
        if not kernels.triton_available():
            model.enable_gpu_kernels()
        else:
            raise RuntimeError("triton present: nothing to check here")
