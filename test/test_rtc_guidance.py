"""RTC guidance for pi0 (pi0_ros.model.rtc): mask, weight schedule, guided sampling, Pi0Policy's rtc request.

CPU, the pi0_test config (horizon 6, model width 8).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pi0_ros.model import rtc
from pi0_ros.model.checkpoint import Checkpoint, weights_for_saving
from pi0_ros.model.config import get_pi0_config
from pi0_ros.model.normalization import NormStats
from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model
from pi0_ros.model.policy import Pi0Policy, policy_config_for
from pi0_ros.model.tokenizer import default_corpus, train_tokenizer
from pi0_ros.policy_api import PolicyInputError

HORIZON = 16


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def make_inputs(cfg, seed: int = 1) -> Pi0Inputs:
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    images = torch.rand(1, cfg.num_cameras, 3, s, s, generator=g) * 2 - 1
    tokens = torch.randint(3, cfg.llm.vocab_size, (1, cfg.max_token_len), generator=g)
    token_masks = torch.zeros(1, cfg.max_token_len, dtype=torch.bool)
    token_masks[0, :5] = True
    state = torch.randn(1, cfg.action_dim, generator=g)
    return Pi0Inputs(images, torch.ones(1, cfg.num_cameras, dtype=torch.bool), tokens, token_masks, state)


@pytest.fixture(scope="module")
def model_and_cfg():
    cfg = get_pi0_config("pi0_test", action_horizon=HORIZON)
    model = Pi0Model(cfg).eval()
    randomize(model)
    return model, cfg


# -------------------------------------------------------------------------------------------- mask


def test_soft_mask_shape_and_regions():
    w = rtc.soft_mask(horizon=50, delay=5, overlap_end=25, schedule="exp")
    assert w.shape == (50,) and w.dtype == np.float32
    np.testing.assert_array_equal(w[:5], 1.0)
    np.testing.assert_array_equal(w[25:], 0.0)
    decay = w[5:25]
    assert (decay > 0).all() and (decay < 1).all()
    assert (np.diff(decay) < 0).all(), "strictly decaying over the overlap"
    # The paper's exponential form at the first decaying step: c = 20/21.
    c = 20 / 21
    assert decay[0] == pytest.approx(c * math.expm1(c) / math.expm1(1.0), rel=1e-6)
    lin = rtc.soft_mask(50, 5, 25, schedule="linear")
    np.testing.assert_allclose(lin[5:25], (25 - np.arange(5, 25)) / 21, rtol=1e-6)
    assert (w[5:25] <= lin[5:25]).all(), "exponential decays faster than linear"


def test_soft_mask_clips_out_of_range_arguments():
    np.testing.assert_array_equal(rtc.soft_mask(10, delay=20, overlap_end=30), np.ones(10))
    np.testing.assert_array_equal(rtc.soft_mask(10, delay=0, overlap_end=0), np.zeros(10))
    w = rtc.soft_mask(10, delay=4, overlap_end=4)
    np.testing.assert_array_equal(w, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        rtc.soft_mask(10, 2, 5, schedule="cosine")


def test_guidance_weight_schedule_is_clipped_and_symmetric():
    assert rtc.guidance_weight(1.0, 5.0) == 5.0  # pure noise: unbounded, clipped
    assert rtc.guidance_weight(0.5, 10.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert rtc.guidance_weight(0.1, 100.0) == pytest.approx(rtc.guidance_weight(0.9, 100.0))
    assert rtc.guidance_weight(0.1, 100.0) == pytest.approx((0.81 + 0.01) / 0.09)
    assert rtc.guidance_weight(0.3, 0.0) == 0.0


# ------------------------------------------------------------------------------ guided sampling


def test_guided_velocity_sign_reduces_the_error_for_a_linear_field():
    # v = noise - a for a point mass at a = 0 is v = x_t / t; x1_hat = x_t - t v = 0 for every x_t.
    # With v = c (constant) instead, x1_hat = x_t - t c and d x1_hat / d x_t = I: guidance must move
    # x1_hat toward the target over one Euler step.
    target = torch.full((1, 4, 2), 2.0)
    weights = torch.ones(1, 4, 2)
    x_t = torch.zeros(1, 4, 2)
    t = torch.tensor(0.5)
    v = rtc.guided_velocity(lambda x, _t: torch.zeros_like(x) + 0.3, x_t, t, target, weights, 5.0)
    dt = -0.1
    before = (target - (x_t - t * 0.3)).abs().sum()
    x_next = x_t + dt * v
    after = (target - (x_next - (t + dt) * 0.3)).abs().sum()
    assert after < before


def test_large_guidance_makes_committed_prefix_follow_previous_chunk(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    g = torch.Generator().manual_seed(7)
    prev = torch.randn(1, HORIZON, cfg.action_dim, generator=g) * 0.8
    noise = model.sample_noise(1, torch.Generator().manual_seed(11))
    delay, overlap_end = 4, 10
    mask = torch.from_numpy(rtc.soft_mask(HORIZON, delay, overlap_end, "exp"))
    weights = mask[None, :, None].expand(1, -1, cfg.action_dim)
    plain = model.sample_actions(inputs, noise=noise)
    guided = rtc.sample_actions_rtc(model, inputs, noise, prev, weights, max_weight=10.0)
    err_plain = (plain[:, :delay] - prev[:, :delay]).abs().max().item()
    err_guided = (guided[:, :delay] - prev[:, :delay]).abs().max().item()
    assert err_plain > 0.5, "unguided sampling does not reproduce the previous chunk by chance"
    assert err_guided < 0.1 * err_plain, (err_guided, err_plain)
    # Beyond the guided region the chunk is the model's own: guidance does not force it to the target.
    tail_guided = (guided[:, overlap_end:] - prev[:, overlap_end:]).abs().mean().item()
    assert tail_guided > 5 * (guided[:, :delay] - prev[:, :delay]).abs().mean().item()


def test_zero_guidance_equals_plain_sampling(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg, seed=3)
    noise = model.sample_noise(1, torch.Generator().manual_seed(5))
    prev = torch.randn(1, HORIZON, cfg.action_dim, generator=torch.Generator().manual_seed(2))
    plain = model.sample_actions(inputs, noise=noise)
    ones = torch.ones(1, HORIZON, cfg.action_dim)
    # Both ways to switch guidance off run the full VJP path and must give the plain sampler's result.
    no_weight = rtc.sample_actions_rtc(model, inputs, noise, prev, ones, max_weight=0.0)
    no_mask = rtc.sample_actions_rtc(model, inputs, noise, prev, torch.zeros_like(ones), max_weight=10.0)
    torch.testing.assert_close(no_weight, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_mask, plain, rtol=1e-5, atol=1e-5)
    guided = rtc.sample_actions_rtc(model, inputs, noise, prev, ones, max_weight=10.0)
    assert (guided - plain).abs().max() > 1e-2, "and guidance does change the result"


def test_vjp_runs_through_the_expert_only_and_leaves_the_prefix_cache_alone(model_and_cfg, monkeypatch):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg, seed=4)
    prefills, caches = [], []
    real_prefill, real_step = model.prefill, model.denoise_step

    def counting_prefill(inp):
        cache = real_prefill(inp)
        prefills.append(1)
        caches.append([(k.clone(), v.clone()) for k, v in _kv_pairs(cache.kv)])
        return cache

    seen_grad = []

    def watching_step(x, t, cache):
        seen_grad.append(x.requires_grad)
        assert torch.is_grad_enabled()
        for k, v in _kv_pairs(cache.kv):
            assert not k.requires_grad and not v.requires_grad and k.grad_fn is None
        return real_step(x, t, cache)

    monkeypatch.setattr(model, "prefill", counting_prefill)
    monkeypatch.setattr(model, "denoise_step", watching_step)
    ones = torch.ones(1, HORIZON, cfg.action_dim)
    noise = model.sample_noise(1, torch.Generator().manual_seed(1))
    out = rtc.sample_actions_rtc(model, inputs, noise, torch.zeros_like(ones), ones, num_steps=4)
    assert len(prefills) == 1, "the prefix runs once"
    assert seen_grad == [True] * 4, "every step differentiates w.r.t. x_t"
    assert not out.requires_grad
    assert all(p.grad is None for p in model.parameters()), "no weight gradients are accumulated"
    # The cache is read, never written: recompute it and compare with the snapshot.
    fresh = real_prefill(inputs)
    for (k0, v0), (k1, v1) in zip(caches[0], _kv_pairs(fresh.kv), strict=True):
        torch.testing.assert_close(k0, k1)
        torch.testing.assert_close(v0, v1)


def _kv_pairs(kv):
    """(K, V) tensors of a KVCache, whatever container the gemma module uses."""
    if isinstance(kv, torch.Tensor):
        return [(kv, kv)]
    if isinstance(kv, (list, tuple)):
        if len(kv) == 2 and all(isinstance(x, torch.Tensor) for x in kv):
            return [tuple(kv)]
        return [pair for item in kv for pair in _kv_pairs(item)]
    if isinstance(kv, dict):
        return [pair for item in kv.values() for pair in _kv_pairs(item)]
    tensors = [v for v in vars(kv).values() if isinstance(v, (torch.Tensor, list, tuple, dict))]
    return [pair for item in tensors for pair in _kv_pairs(item)]


# ---------------------------------------------------------------------------- Pi0Policy request


@pytest.fixture(scope="module")
def policy():
    cfg = get_pi0_config("pi0_test", action_horizon=HORIZON)
    model = Pi0Model(cfg).eval()
    randomize(model, seed=3)
    tok = train_tokenizer(default_corpus(), vocab_size=300, max_len=cfg.max_token_len)
    action_dim, state_dim = 4, 5
    stats = {"state": NormStats(mean=np.arange(state_dim) * 0.1, std=np.full(state_dim, 2.0)),
             "actions": NormStats(mean=np.array([0.5, -0.2, 0.1, 0.0]), std=np.array([0.5, 2.0, 1.0, 0.3]))}
    policy_cfg = policy_config_for(["head", "", ""], state_dim, action_dim, delta_mask=[True, True, False, False])
    ckpt = Checkpoint(cfg, policy_cfg, weights_for_saving(model), stats, tok)
    return Pi0Policy(ckpt, device="cpu")


def observation(policy, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": {"head": rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)},
            "state": rng.normal(size=policy.config.state_dim).astype(np.float32), "prompt": "pick up the cup"}


def test_policy_rtc_request_pulls_committed_actions_to_previous_chunk(policy):
    obs = observation(policy)
    noise = np.random.default_rng(9).normal(size=(HORIZON, policy.model_config.action_dim)).astype(np.float32)
    plain = policy.infer(obs, noise=noise)["actions"]
    # A previous chunk far from what the model would produce, in OUTPUT units (absolute: delta dims
    # include the state), already shifted to the new observation's time.
    prev = plain[:12] + np.array([1.5, -3.0, 1.0, 0.5], dtype=np.float32)
    delay = 4
    guided = policy.infer({**obs, "rtc": {"prev_actions": prev, "delay_steps": delay, "execute_steps": 4,
                                          "max_guidance_weight": 10.0}}, noise=noise)["actions"]
    scale = policy.action_stats.std  # compare in normalized units so each dim counts alike
    err_plain = np.abs((plain[:delay] - prev[:delay]) / scale).max()
    err_guided = np.abs((guided[:delay] - prev[:delay]) / scale).max()
    assert err_guided < 0.15 * err_plain, (err_guided, err_plain)
    assert guided.shape == plain.shape and guided.dtype == np.float32


def test_policy_rtc_without_guidance_equals_plain(policy):
    obs = observation(policy, seed=1)
    noise = np.random.default_rng(2).normal(size=(HORIZON, policy.model_config.action_dim)).astype(np.float32)
    plain = policy.infer(obs, noise=noise)["actions"]
    empty = {"prev_actions": np.zeros((0, 4), np.float32), "delay_steps": 3, "execute_steps": 5}
    np.testing.assert_array_equal(policy.infer({**obs, "rtc": empty}, noise=noise)["actions"], plain)
    off = {"prev_actions": plain + 1.0, "delay_steps": 3, "execute_steps": 5, "max_guidance_weight": 0.0}
    np.testing.assert_array_equal(policy.infer({**obs, "rtc": off}, noise=noise)["actions"], plain)


@pytest.mark.parametrize("bad", [
    "not a dict",
    {"prev_actions": np.zeros((3, 4)), "delay_steps": 2},  # no execute_steps
    {"prev_actions": np.zeros((3, 5)), "delay_steps": 2, "execute_steps": 1},  # wrong action_dim
    {"prev_actions": np.full((3, 4), np.nan), "delay_steps": 2, "execute_steps": 1},
    {"prev_actions": np.zeros((3, 4)), "delay_steps": -1, "execute_steps": 1},
    {"prev_actions": np.zeros((3, 4)), "delay_steps": 2.5, "execute_steps": 1},
    {"prev_actions": np.zeros((3, 4)), "delay_steps": 2, "execute_steps": 1, "max_guidance_weight": float("inf")},
    {"prev_actions": np.zeros((3, 4)), "delay_steps": 2, "execute_steps": 1, "schedule": "cosine"},
])
def test_policy_rejects_malformed_rtc_requests(policy, bad):
    with pytest.raises(PolicyInputError):
        policy.infer({**observation(policy), "rtc": bad})


def test_request_converts_output_units_like_training_targets(policy):
    state = np.array([1.0, -2.0, 0.5, 0.3, 0.0])
    prev = np.array([[1.5, -1.0, 0.1, 0.3], [2.0, -1.5, 0.2, 0.0]])
    request = rtc.RTCRequest.parse({"prev_actions": prev, "delay_steps": 1, "execute_steps": 14}, 4)
    target, weights = request.model_space(HORIZON, 8, state, np.array([True, True, False, False]),
                                          policy.action_stats, "zscore")
    stats = policy.action_stats
    expected = (prev - np.where([True, True, False, False], state[:4], 0.0) - stats.mean) / (stats.std + 1e-6)
    np.testing.assert_allclose(target[:2, :4], expected, rtol=1e-5, atol=1e-6)
    assert not target[2:].any() and not target[:, 4:].any()
    # delay 1 -> step 0 weight 1; overlap ends at min(2 prev steps, H - s = 2): nothing else guided.
    np.testing.assert_array_equal(weights[:, :4], np.repeat(rtc.soft_mask(HORIZON, 1, 2)[:, None], 4, axis=1))
    assert not weights[:, 4:].any(), "padded dims are never guided"
