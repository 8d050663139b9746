"""FastGenerator (fused/graphed/restricted-vocabulary decoding) equals Pi0FastModel.generate."""

from __future__ import annotations

import pytest
import torch

from pi0_ros.model.pi0_fast import (
    Pi0FastInputs,
    Pi0FastModel,
    StaticKVCache,
    fast_to_vocab,
    get_pi0_fast_config,
)
from pi0_ros.model.pi0_fast_decode import FastGenerator
from pi0_ros.model.tokenizer import EOS_ID

CFG = get_pi0_fast_config("pi0_fast_test")
END_IDS = (EOS_ID, 300)  # EOS and a stand-in for "|"
STEPS = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    length = CFG.max_token_len
    tokens = torch.randint(3, 300, (batch, length), generator=g)
    valid = torch.tensor([30, 41, 25][:batch])
    mask = torch.arange(length)[None] < valid[:, None]
    ar = (torch.arange(length)[None] >= (valid - 3)[:, None]) & mask
    image_masks = torch.ones(batch, CFG.num_cameras, dtype=torch.bool)
    image_masks[-1, 1] = False  # a masked camera inside the sequence
    images = torch.rand(batch, CFG.num_cameras, 3, CFG.image_size, CFG.image_size, generator=g) * 2 - 1
    return Pi0FastInputs(images=images, image_masks=image_masks, tokens=tokens, token_masks=mask,
                         token_ar=ar, loss_masks=torch.zeros_like(mask))


def _model(seed=3):
    torch.manual_seed(seed)
    return Pi0FastModel(CFG).eval()


def _allowed_ids():
    top = fast_to_vocab(0, CFG.llm.vocab_size)
    return list(range(CFG.first_action_id, top + 1)) + list(END_IDS)


def _prefer_allowed(model):
    """Shrink every non-allowed embedding row, so the model's greedy picks stay inside the allowed set."""
    weight = model.paligemma.lm_head.weight
    keep = torch.zeros(weight.shape[0], dtype=torch.bool)
    keep[_allowed_ids()] = True
    with torch.no_grad():
        weight[~keep] *= 0.01


@pytest.mark.parametrize("fuse,attention", [(True, "matmul"), (False, "matmul"), (True, "sdpa")])
def test_fast_generator_equals_model_generate(fuse, attention):
    model, inputs = _model(), _inputs()
    with torch.no_grad():
        expected = model.generate(inputs, max_new_tokens=STEPS, stop_at_non_action=False)
        gen = FastGenerator(model, batch=2, max_new_tokens=STEPS, fuse=fuse, attention=attention)
        got = gen.generate(inputs, stop_at_non_action=False)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        # The recorded final hidden states give the model's own logits.
        cache = StaticKVCache.allocate(model.language_model.config, 2, gen.cache.length, torch.float32, "cpu")
        ref_logits, _ = model.prefill(inputs, cache)
        got_logits = model.paligemma.logits(gen.out_hidden[0])
        torch.testing.assert_close(got_logits, ref_logits, rtol=1e-4, atol=1e-4)
        # A second prompt through the same generator (state and cache are fully reset).
        other = _inputs(seed=1)
        torch.testing.assert_close(gen.generate(other, stop_at_non_action=False),
                                   model.generate(other, max_new_tokens=STEPS, stop_at_non_action=False))


def test_restricted_vocab_equals_full_vocab_when_the_best_token_is_allowed():
    model, inputs = _model(), _inputs()
    _prefer_allowed(model)
    with torch.no_grad():
        expected = model.generate(inputs, max_new_tokens=STEPS, stop_at_non_action=False)
        assert all(int(t) in set(_allowed_ids()) for t in expected.flatten())
        gen = FastGenerator(model, batch=2, max_new_tokens=STEPS, restrict_vocab=True, end_ids=END_IDS)
        assert gen.head.shape[0] == CFG.fast_vocab_size + len(END_IDS)
        torch.testing.assert_close(gen.generate(inputs, stop_at_non_action=False), expected, rtol=0, atol=0)
        assert gen.last_outside_steps == []
        # With stopping too (same rule and output length as the model's generate), and fewer steps.
        torch.testing.assert_close(gen.generate(inputs), model.generate(inputs, max_new_tokens=STEPS))
        torch.testing.assert_close(gen.generate(inputs, max_new_tokens=4, stop_at_non_action=False), expected[:, :4])


def test_restricted_vocab_reports_a_best_token_outside_the_allowed_set():
    model, inputs = _model(), _inputs(batch=1)
    _prefer_allowed(model)
    with torch.no_grad():
        gen = FastGenerator(model, batch=1, max_new_tokens=STEPS, restrict_vocab=True, end_ids=END_IDS)
        first = gen.generate(inputs, stop_at_non_action=False)
        # Make text id 7 the model's best token at step 2 (a row scaled up beyond the chosen action's).
        step = 2
        hidden = gen.out_hidden[step, 0]
        weight = model.paligemma.lm_head.weight
        weight[7] = weight[int(first[0, step])] * 4.0
        logits = model.paligemma.logits(hidden)
        assert int(torch.argmax(logits)) == 7
        full = model.generate(inputs, max_new_tokens=STEPS)  # full vocabulary: stops at the text token
        got = gen.generate(inputs)  # derived weights are refreshed after the in-place edit
    outside = gen.last_outside_steps
    assert outside and outside[0][0] == 0 and int(got[0, outside[0][1]]) == 7
    j = outside[0][1]
    # Output = full-vocabulary greedy decoding: same tokens up to and including the outside token.
    torch.testing.assert_close(got[0, :j + 1], full[0, :j + 1], rtol=0, atol=0)
    assert int(full[0, j]) == 7 and j == full.shape[1] - 1


def test_restricted_vocab_needs_end_ids_and_refuses_replaced_weights():
    model = _model()
    with pytest.raises(ValueError):
        FastGenerator(model, batch=1, max_new_tokens=4, restrict_vocab=True)
    with pytest.raises(ValueError):
        FastGenerator(model, batch=1, max_new_tokens=4, restrict_vocab=True, end_ids=(CFG.first_action_id,))
    gen = FastGenerator(model, batch=1, max_new_tokens=4)
    model.to(torch.float64)
    with pytest.raises(RuntimeError, match="build a new one"):
        gen.generate(_inputs(batch=1))


def test_a_failing_compile_falls_back_to_the_uncompiled_step(monkeypatch):
    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model, inputs = _model(), _inputs()
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="decoding uncompiled"):
        gen = FastGenerator(model, batch=2, max_new_tokens=4, compile_step=True)
    assert not gen.compiled
    with torch.no_grad():
        torch.testing.assert_close(gen.generate(inputs, stop_at_non_action=False),
                                   model.generate(inputs, max_new_tokens=4, stop_at_non_action=False))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_generator_equals_eager_on_gpu():
    model = _model().cuda()
    inputs = _inputs().to("cuda")
    with torch.no_grad():
        expected = model.generate(inputs, max_new_tokens=STEPS, stop_at_non_action=False)
        for attention, compiled in (("matmul", False), ("sdpa", False), ("matmul", True)):
            gen = FastGenerator(model, batch=2, max_new_tokens=STEPS, attention=attention, compile_step=compiled)
            assert gen.compiled == compiled
            torch.testing.assert_close(gen.generate(inputs, stop_at_non_action=False), expected)
