"""pi0 network: mask/position rules, cached vs uncached equality, loss, dtype policy (CPU, pi0_test)."""

from __future__ import annotations

import pytest
import torch

from pi0_ros.model.config import Pi0Config, get_pi0_config
from pi0_ros.model.gemma import GemmaConfig, GemmaModel, RMSNorm
from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model, make_attn_mask, sinusoidal_time_embedding
from pi0_ros.model.random_inputs import random_inputs, randomize_weights


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    randomize_weights(model, seed, std)


def make_inputs(cfg: Pi0Config, batch: int = 2, seed: int = 1) -> Pi0Inputs:
    return random_inputs(cfg, batch, seed)


@pytest.fixture(scope="module")
def model_and_cfg():
    torch.manual_seed(0)
    cfg = get_pi0_config("pi0_test")
    model = Pi0Model(cfg).eval()
    randomize(model)
    return model, cfg


def test_block_mask_rules():
    # prefix: 3 valid tokens + 1 pad; suffix: state + 3 actions.
    pad = torch.tensor([[True, True, True, False, True, True, True, True]])
    ar = torch.tensor([0, 0, 0, 0, 1, 1, 0, 0])
    m = make_attn_mask(pad, ar)[0]
    prefix, state, actions, padded = [0, 1, 2], 4, [5, 6, 7], 3
    for i in prefix:
        assert all(m[i, j] for j in prefix), "prefix is bidirectional"
        assert not m[i, state] and not any(m[i, j] for j in actions), "prefix sees nothing later"
    assert all(m[state, j] for j in prefix) and m[state, state]
    assert not any(m[state, j] for j in actions), "state must not see actions"
    for i in actions:
        assert all(m[i, j] for j in prefix + [state] + actions), "actions see everything valid"
    assert not m[padded].any() and not m[:, padded].any(), "padding neither sees nor is seen"


def test_time_embedding_sin_half_first():
    emb = sinusoidal_time_embedding(torch.tensor([0.0, 0.5]), 16)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb[0, :8], torch.zeros(8))
    torch.testing.assert_close(emb[0, 8:], torch.ones(8))
    # The longest period is 4.0: its sin at t = 0.5 is sin(2*pi*0.5/4) = sin(pi/4).
    assert emb[1, 7].item() == pytest.approx(2 ** -0.5, abs=1e-6)


def test_cached_denoise_equals_full_forward(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=g)
    time = torch.tensor([0.9, 0.3])
    with torch.no_grad():
        full = model.forward_velocity(inputs, x_t, time)
        cache = model.prefill(inputs)
        cached = model.denoise_step(x_t, time, cache)
        cached_again = model.denoise_step(x_t, time, cache)  # the cache is reused, not extended
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached_again, cached, atol=0, rtol=0)


def test_sample_actions_is_euler_on_full_forward(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(4))
    with torch.no_grad():
        sampled = model.sample_actions(inputs, noise=noise)
        x = noise.clone()
        t = torch.tensor(1.0)
        dt = torch.tensor(-0.1)
        for _ in range(10):
            x = x + dt * model.forward_velocity(inputs, x, t.expand(2))
            t = t + dt
        assert abs(t.item()) < 1e-6  # ten steps end at t = 0
    torch.testing.assert_close(sampled, x, atol=1e-5, rtol=1e-5)
    again = model.sample_actions(inputs, noise=noise)
    torch.testing.assert_close(again, sampled, atol=0, rtol=0)


def test_padding_and_masked_camera_content_is_ignored(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(5))
    changed = make_inputs(cfg)
    changed.images[0, 1] = -1.0  # the masked camera's pixels
    changed.tokens[0, 4:] = 7  # padded prompt positions
    a = model.sample_actions(inputs, noise=noise)
    b = model.sample_actions(changed, noise=noise)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # A visible camera does matter, so the test above is not vacuous.
    changed.images[1, 0] = -1.0
    c = model.sample_actions(changed, noise=noise)
    assert (c[1] - a[1]).abs().max() > 1e-4


def test_positions_continue_after_valid_prefix(model_and_cfg):
    # The same valid tokens followed by more padding must give the same actions: positions count valid
    # tokens only, so the suffix positions do not move.
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg, batch=1)
    inputs.token_masks[:] = False
    inputs.token_masks[0, :3] = True
    noise = model.sample_noise(1, torch.Generator().manual_seed(6))
    a = model.sample_actions(inputs, noise=noise)
    longer = get_pi0_config("pi0_test", max_token_len=cfg.max_token_len + 5)
    padded = Pi0Inputs(inputs.images, inputs.image_masks,
                       torch.cat([inputs.tokens, torch.full((1, 5), 9)], dim=1),
                       torch.cat([inputs.token_masks, torch.zeros(1, 5, dtype=torch.bool)], dim=1),
                       inputs.state)
    other = Pi0Model(longer).eval()
    other.load_state_dict(model.state_dict())
    b = other.sample_actions(padded, noise=noise)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sdpa_matches_eager_in_fp32(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(7))
    eager = model.sample_actions(inputs, noise=noise)
    model.set_attention_impl("sdpa")
    try:
        sdpa = model.sample_actions(inputs, noise=noise)
    finally:
        model.set_attention_impl("eager")
    torch.testing.assert_close(sdpa, eager, atol=1e-4, rtol=1e-4)


def test_bf16_policy_keeps_norms_fp32_and_stays_close():
    cfg = get_pi0_config("pi0_test")
    model = Pi0Model(cfg).eval()
    randomize(model, std=0.1)
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(8))
    ref = model.sample_actions(inputs, noise=noise)
    model.set_inference_dtype(torch.bfloat16)
    norms = [m for m in model.modules() if isinstance(m, (RMSNorm, torch.nn.LayerNorm))]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert model.paligemma_with_expert.gemma_expert.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    out = model.sample_actions(inputs, noise=noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_noise_shape_is_checked(model_and_cfg):
    model, cfg = model_and_cfg
    with pytest.raises(ValueError, match="noise"):
        model.sample_actions(make_inputs(cfg), noise=torch.zeros(2, 3, 3))


def test_loss_falls_when_overfitting_tiny_batch():
    # A fixed batch with fixed noise and times: the flow target is then learnable exactly.
    torch.manual_seed(0)
    cfg = get_pi0_config("pi0_test")
    model = Pi0Model(cfg)
    inputs = make_inputs(cfg)
    g = torch.Generator().manual_seed(9)
    actions = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=g)
    noise = torch.randn(actions.shape, generator=g)
    time = torch.tensor([0.8, 0.4])
    with torch.no_grad():
        before = model.compute_loss(inputs, actions, noise=noise, time=time).mean().item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model.compute_loss(inputs, actions, noise=noise, time=time).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.compute_loss(inputs, actions, noise=noise, time=time).mean().item()
    assert after < 0.1 * before
    # Random times come from Beta(1.5, 1) squeezed into [0.001, 1]; the loss stays finite there.
    sampled = model.compute_loss(inputs, actions, generator=g)
    assert sampled.shape == actions.shape and torch.isfinite(sampled).all()


def test_gemma_cache_extension_matches_full_causal_pass():
    cfg = GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=50)
    lm = GemmaModel(cfg).eval()
    randomize(lm)
    tokens = torch.randint(0, 50, (1, 6))
    x = lm.embed_text(tokens)
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))[None]
    pos = torch.arange(6)[None]
    with torch.no_grad():
        full, _ = lm(x, mask, pos)
        out, cache = lm(x[:, :4], mask[:, :4, :4], pos[:, :4], use_cache=True)
        for i in (4, 5):
            step, cache = lm(x[:, i:i + 1], mask[:, i:i + 1, : i + 1], pos[:, i:i + 1], past_kv=cache,
                             use_cache=True)
            torch.testing.assert_close(step[:, 0], full[:, i], atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape == (1, 2, 6, 8)


def test_mismatched_expert_shapes_are_refused():
    cfg = get_pi0_config("pi0_test")
    bad = GemmaConfig(width=16, depth=3, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=16)
    with pytest.raises(ValueError, match="depth"):
        Pi0Config(vision=cfg.vision, llm=cfg.llm, expert=bad)


def test_fused_projections_give_the_same_actions_and_follow_later_loads(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(10))
    fused = Pi0Model(cfg).eval()
    fused.fuse_projections()
    fused.load_state_dict(model.state_dict())  # loads write through the views into the fused tensors
    lm_layer = fused.paligemma_with_expert.paligemma.model.language_model.layers[0]
    assert lm_layer.self_attn.qkv_weight is not None
    torch.testing.assert_close(lm_layer.self_attn.qkv_weight[: lm_layer.self_attn.q_size],
                               lm_layer.self_attn.q_proj.weight, atol=0, rtol=0)
    torch.testing.assert_close(fused.sample_actions(inputs, noise=noise), model.sample_actions(inputs, noise=noise),
                               atol=1e-5, rtol=1e-5)


def test_suffix_attention_impl_is_separate(model_and_cfg):
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    noise = model.sample_noise(2, torch.Generator().manual_seed(11))
    ref = model.sample_actions(inputs, noise=noise)
    try:
        model.set_attention_impl("sdpa", suffix_impl="eager")
        assert (model.attn_impl, model.suffix_attn_impl) == ("sdpa", "eager")
        torch.testing.assert_close(model.sample_actions(inputs, noise=noise), ref, atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError):
            model.set_attention_impl("sdpa", suffix_impl="flash")
    finally:
        model.set_attention_impl("eager")


def test_denoise_step_is_differentiable_in_x_t(model_and_cfg):
    # Real-time chunking guidance needs d v / d x_t through one step on a fixed prefix cache.
    model, cfg = model_and_cfg
    inputs = make_inputs(cfg)
    with torch.no_grad():
        cache = model.prefill(inputs)
    x_t = torch.randn(2, cfg.action_horizon, cfg.action_dim, requires_grad=True)
    v = model.denoise_step(x_t, torch.tensor([0.7, 0.7]), cache)
    (grad,) = torch.autograd.grad((v ** 2).sum(), x_t)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
