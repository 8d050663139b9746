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
