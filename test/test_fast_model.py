"""pi0-FAST model: vocabulary mapping, cached vs uncached decoding, batching, overfitting a tiny set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pi0_ros.model.fast_prompt import FastPromptBuilder, discretize_state
from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks
from pi0_ros.model.fast_tokenizer import FastDecodeError, FastTokenizer
from pi0_ros.model.pi0_fast import (
    Pi0FastInputs,
    Pi0FastModel,
    fast_to_vocab,
    get_pi0_fast_config,
    vocab_to_fast,
)
from pi0_ros.model.tokenizer import EOS_ID, default_corpus, train_tokenizer

CFG = get_pi0_fast_config("pi0_fast_test")
SAMPLES = [("Pick_up the RED cube", np.array([0.1, 0.2, -0.3, 0.9])),
           ("open the drawer", np.array([-0.5, 0.25, 0.3, -0.9]))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def builder():
    text = train_tokenizer(default_corpus(), vocab_size=320, max_len=CFG.max_token_len)
    chunks = make_chunks(300, SyntheticChunkConfig(horizon=10, action_dim=4, gripper_dims=(3,)), seed=0)
    fast = FastTokenizer.fit(chunks, scale=10, vocab_size=256)
    return FastPromptBuilder(text, fast, CFG), chunks


def _batch(rows, images):
    stack = [torch.from_numpy(np.stack([r[i] for r in rows])) for i in range(4)]
    b = len(rows)
    return Pi0FastInputs(images=images[:b], image_masks=torch.ones(b, CFG.num_cameras, dtype=torch.bool),
                         tokens=stack[0], token_masks=stack[1], token_ar=stack[2], loss_masks=stack[3])


def _images(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, CFG.num_cameras, 3, CFG.image_size, CFG.image_size, generator=g) * 2 - 1


def test_vocab_mapping_round_trip_and_placement():
    # PaliGemma: FAST token 0 is id 257023, skipping the top 128 special ids.
    assert fast_to_vocab(0, 257_152) == 257_023
    fast_ids = np.arange(CFG.fast_vocab_size)
    vocab_ids = fast_to_vocab(fast_ids, CFG.llm.vocab_size)
    np.testing.assert_array_equal(vocab_to_fast(vocab_ids, CFG.llm.vocab_size), fast_ids)
    assert len(set(vocab_ids.tolist())) == CFG.fast_vocab_size
    assert vocab_ids.max() == CFG.llm.vocab_size - 1 - 128 and vocab_ids.min() == CFG.first_action_id
    model = Pi0FastModel(CFG)
    ids = torch.arange(CFG.llm.vocab_size)
    np.testing.assert_array_equal(model.is_action_token(ids).nonzero().flatten().numpy(), np.sort(vocab_ids))


def test_builder_refuses_overlapping_text_ids(builder):
    b, _ = builder
    small = get_pi0_fast_config("pi0_fast_test", fast_vocab_size=400)  # action ids would reach below 320
    with pytest.raises(ValueError, match="overlap"):
        FastPromptBuilder(b.text, b.fast, small)


def test_state_discretization_and_prompt_layout(builder):
    b, chunks = builder
    assert discretize_state(np.array([-1.0, -0.999, 0.0, 0.999, 1.0, -7.0, 7.0])).tolist() == [
        0, 0, 128, 255, 255, 0, 255]
    tokens, mask, ar, loss = b.training_tokens(*SAMPLES[0], chunks[0], max_len=96)
    n = int(mask.sum())
    prefix_len = len(b.prefix_ids(*SAMPLES[0]))
    assert tokens[0] == 2 and tokens[n - 1] == EOS_ID
    assert not ar[:prefix_len].any() and ar[prefix_len:n].all() and not ar[n:].any()
    np.testing.assert_array_equal(loss, ar)
    text = b.text.sp.decode(tokens[1:prefix_len].tolist())
    assert text.startswith("Task: pick up the red cube, State: ") and text.endswith(";\n")
    inf_tokens, inf_mask, inf_ar, inf_loss = b.inference_tokens(*SAMPLES[0])
    assert inf_tokens.shape == (CFG.max_token_len,) and not inf_loss.any()
    np.testing.assert_array_equal(inf_tokens[: int(inf_mask.sum())], tokens[: prefix_len + len(b.action_prefix_ids)])


def test_extract_rejects_malformed_generations(builder):
    b, chunks = builder
    good = b.action_ids(b.fast.encode(chunks[3]))
    expected = b.fast.decode(b.fast.encode(chunks[3]))
    np.testing.assert_array_equal(b.decode_actions(good + b.end_ids + [EOS_ID]), expected)
    for bad, message in [(good, "no end marker"), (b.end_ids, "without any action"),
                         (good[:2] + [300] + good[2:] + b.end_ids, "non-action token"),
                         (good[:-1] + b.end_ids, "coefficients")]:
        with pytest.raises(FastDecodeError, match=message):
            b.decode_actions(bad)
    # relaxed: a span cut by the generation limit (no end marker) or running on past the chunk still decodes
    np.testing.assert_array_equal(b.decode_actions(good, cut_extra=True), expected)
    np.testing.assert_array_equal(b.decode_actions(good + good, cut_extra=True), expected)
    with pytest.raises(FastDecodeError, match="non-action token"):
        b.decode_actions(good[:2] + [300] + good[2:], cut_extra=True)


def test_cached_batched_decoding_equals_uncached(builder):
    b, _ = builder
    torch.manual_seed(3)
    model = Pi0FastModel(CFG).eval()
    rows = [b.inference_tokens(*s) for s in SAMPLES]  # two prompt lengths in one padded batch
    images = _images()
    inputs = _batch(rows, images)
    inputs.image_masks[1, 2] = False  # a masked camera in the middle of row 1's sequence
    steps = 8
    with torch.no_grad():
        generated = model.generate(inputs, max_new_tokens=steps, stop_at_non_action=False)
        assert generated.shape == (2, steps)
        for i in range(2):
            sample_images = images[i:i + 1].clone()
            if i == 1:  # the masked camera must not matter: give the reference other pixels there
                sample_images[0, 2] = -1.0
            logits = _uncached_logits(model, rows[i], sample_images, inputs.image_masks[i:i + 1],
                                      generated[i].numpy())
            np.testing.assert_array_equal(logits.argmax(-1).numpy(), generated[i].numpy())


def _uncached_logits(model, row, images, image_masks, generated):
    """Reference: one sample, no cache, the whole sequence re-run after each generated token."""
    tokens, mask, ar, _ = row
    n = int(mask.sum())
    out = []
    for k in range(len(generated)):
        ids = np.concatenate([tokens[:n], generated[:k]]).astype(np.int64)
        seq_ar = np.concatenate([ar[:n], np.ones(k, dtype=bool)])
        inp = Pi0FastInputs(images=images, image_masks=image_masks, tokens=torch.from_numpy(ids)[None],
                            token_masks=torch.ones(1, len(ids), dtype=torch.bool),
                            token_ar=torch.from_numpy(seq_ar)[None],
                            loss_masks=torch.zeros(1, len(ids), dtype=torch.bool))
        hidden, _ = model.forward_hidden(inp)
        out.append(model.paligemma.logits(hidden[0, -1]))
    return torch.stack(out)


def test_tiny_model_overfits_and_decodes_the_trained_chunks_in_a_batch(builder):
    b, chunks = builder
    torch.manual_seed(0)
    model = Pi0FastModel(CFG)
    images = _images(seed=1)
    train = _batch([b.training_tokens(p, s, chunks[i], max_len=80) for i, (p, s) in enumerate(SAMPLES)], images)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(150):
        loss = model.compute_loss(train).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    model.eval()
    inference = _batch([b.inference_tokens(p, s) for p, s in SAMPLES], images)
    generated = model.generate(inference)
    for i in range(2):
        expected_fast = b.fast.encode(chunks[i])
        assert b.extract_fast_tokens(generated[i].tolist()) == expected_fast
        np.testing.assert_array_equal(b.decode_actions(generated[i].tolist()), b.fast.decode(expected_fast))
        single = model.generate(_batch([b.inference_tokens(*SAMPLES[i])], images[i:i + 1]))
        assert b.extract_fast_tokens(single[0].tolist()) == expected_fast
