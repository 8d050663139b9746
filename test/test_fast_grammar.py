"""Length-constrained FAST decoding: the grammar's rules, generation under it, the policy default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pi0_ros.model.fast_grammar import ChunkLengthGrammar
from pi0_ros.model.fast_prompt import FastPromptBuilder
from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks
from pi0_ros.model.fast_tokenizer import FastDecodeError, FastTokenizer
from pi0_ros.model.normalization import NormStats
from pi0_ros.model.pi0_fast import Pi0FastInputs, Pi0FastModel, get_pi0_fast_config
from pi0_ros.model.pi0_fast_checkpoint import save_fast_checkpoint
from pi0_ros.model.pi0_fast_decode import FastGenerator
from pi0_ros.model.pi0_fast_policy import Pi0FastPolicy
from pi0_ros.model.policy import policy_config_for
from pi0_ros.model.tokenizer import EOS_ID, default_corpus, train_tokenizer

CFG = get_pi0_fast_config("pi0_fast_test")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts():
    text = train_tokenizer(default_corpus(), vocab_size=320, max_len=CFG.max_token_len)
    chunks = make_chunks(200, SyntheticChunkConfig(horizon=10, action_dim=4, gripper_dims=(3,)), seed=0)
    fast = FastTokenizer.fit(chunks, scale=10, vocab_size=256)
    return text, fast, FastPromptBuilder(text, fast, CFG)


def _inputs(builder, batch, seed):
    rows = [builder.inference_tokens("pick up the cube", np.random.default_rng(seed + i).uniform(-1, 1, 4))
            for i in range(batch)]
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, CFG.num_cameras, 3, CFG.image_size, CFG.image_size, generator=g) * 2 - 1
    stack = [torch.from_numpy(np.stack([r[k] for r in rows])) for k in range(4)]
    return Pi0FastInputs(images=images, image_masks=torch.ones(batch, CFG.num_cameras, dtype=torch.bool),
                         tokens=stack[0], token_masks=stack[1], token_ar=stack[2], loss_masks=stack[3])


def _model(seed, prefer_actions=False):
    torch.manual_seed(seed)
    model = Pi0FastModel(CFG).eval()
    if prefer_actions:  # shrink the text rows of the LM head: greedy picks stay on action tokens
        weight = model.paligemma.lm_head.weight
        with torch.no_grad():
            keep = torch.zeros(weight.shape[0], dtype=torch.bool)
            keep[CFG.first_action_id: CFG.first_action_id + CFG.fast_vocab_size] = True
            weight[~keep] *= 0.01
    return model


def test_grammar_rules_on_a_small_vocabulary():
    # ids 0-1 text, 2-4 actions of 1, 2, 3 coefficients, 5 the end marker.
    grammar = ChunkLengthGrammar.build(6, [2, 3, 4], [1, 2, 3], [5], budget=4)
    allowed = grammar.allowed(torch.tensor([4, 2, 1, 0]))
    expected = torch.tensor([
        [False, False, True, True, True, False],   # 4 missing: every action fits, no end
        [False, False, True, True, False, False],  # 2 missing: the 3-coefficient token does not fit
        [False, False, True, False, False, False],  # 1 missing: only the single coefficient
        [False, False, False, False, False, True],  # complete: only the end marker
    ])
    assert torch.equal(allowed, expected)
    logits = grammar.mask_logits(torch.zeros(4, 6), torch.tensor([4, 2, 1, 0]))
    assert torch.equal(torch.isfinite(logits), expected)
    assert torch.equal(grammar.advance(torch.tensor([4, 4]), torch.tensor([4, 2])), torch.tensor([1, 3]))
    sub = grammar.restricted_to(torch.tensor([4, 5]))
    assert sub.coefficient_counts.tolist() == [3, 0] and sub.end_mask.tolist() == [False, True]


def test_grammar_refuses_tables_that_could_dead_end_or_overlap():
    with pytest.raises(ValueError, match="dead end"):
        ChunkLengthGrammar.build(6, [2, 3], [2, 3], [5], budget=4)
    with pytest.raises(ValueError, match="end id"):
        ChunkLengthGrammar.build(6, [2, 3], [1, 2], [3], budget=4)
    with pytest.raises(ValueError):
        ChunkLengthGrammar.build(6, [2, 3], [1, 0], [5], budget=4)


def test_builder_grammar_counts_match_the_tokenizer(parts):
    _, fast, builder = parts
    grammar = builder.length_grammar()
    counts = fast.token_coefficient_counts()
    assert grammar.budget == fast.config.num_coefficients == 40
    action_ids = builder.action_ids(range(len(counts)))
    assert grammar.coefficient_counts[action_ids].tolist() == counts.tolist()
    assert grammar.end_mask[EOS_ID] and grammar.end_mask[builder.end_ids[0]]
    assert int(grammar.coefficient_counts.sum()) == int(counts.sum())  # nothing outside the action ids
    # A real chunk's tokens add up to exactly the budget.
    chunk = make_chunks(1, SyntheticChunkConfig(horizon=10, action_dim=4, gripper_dims=(3,)), seed=5)[0]
    assert int(counts[fast.encode(chunk)].sum()) == grammar.budget


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_generation_always_yields_a_whole_chunk_and_keeps_the_models_choices(parts, seed):
    _, fast, builder = parts
    grammar = builder.length_grammar()
    model, inputs = _model(seed, prefer_actions=True), _inputs(builder, batch=3, seed=seed)
    with torch.no_grad():
        free = model.generate(inputs, stop_at_non_action=False)
        constrained = model.generate(inputs, grammar=grammar)
    counts = grammar.coefficient_counts
    for row in range(3):
        ids = constrained[row].tolist()
        span = builder.extract_fast_tokens(ids)  # raises if the span has no end marker
        assert sum(fast.token_coefficient_counts()[span]) == grammar.budget
        try:
            assert fast.decode(span).shape == (10, 4)  # strict length: no relaxation needed
        except FastDecodeError as err:  # a random model's values may be out of range, never its length
            assert "expected" not in str(err)
        # Up to the first step where the grammar had to intervene, the output is the model's own greedy pick.
        remaining, agree = grammar.budget, 0
        for token in free[row].tolist():
            if not bool(grammar.allowed(torch.tensor([remaining]))[0, token]):
                break
            agree += 1
            remaining -= int(counts[token])
            if grammar.end_mask[token]:
                break
        assert agree > 0 and ids[:agree] == free[row, :agree].tolist()


def test_generation_refuses_a_budget_the_token_limit_cannot_hold(parts):
    _, _, builder = parts
    grammar = builder.length_grammar()
    with pytest.raises(ValueError, match="cannot hold"):
        _model(0).generate(_inputs(builder, 1, 0), max_new_tokens=grammar.budget, grammar=grammar)
    with pytest.raises(ValueError, match="cannot hold"):
        FastGenerator(_model(0), batch=1, max_new_tokens=grammar.budget, restrict_vocab=True,
                      end_ids=(EOS_ID, builder.end_ids[0]), grammar=grammar)
    with pytest.raises(ValueError, match="restrict_vocab"):
        FastGenerator(_model(0), batch=1, grammar=grammar)


def test_fast_generator_under_the_grammar_equals_model_generate(parts):
    _, _, builder = parts
    grammar = builder.length_grammar()
    model, inputs = _model(4), _inputs(builder, batch=2, seed=4)
    with torch.no_grad():
        expected = model.generate(inputs, grammar=grammar)
        gen = FastGenerator(model, batch=2, restrict_vocab=True, end_ids=(EOS_ID, builder.end_ids[0]),
                            grammar=grammar)
        got = gen.generate(inputs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert gen.last_outside_steps == []


def test_policy_decodes_under_the_grammar_by_default(parts, tmp_path):
    text, fast, _ = parts
    torch.manual_seed(1)
    stats = {"state": NormStats.identity(4), "actions": NormStats.identity(3)}
    policy_cfg = policy_config_for(["head", "", "right"], 4, 3, normalization="quantile",
                                   delta_mask=[True, True, False])
    save_fast_checkpoint(str(tmp_path / "ckpt"), Pi0FastModel(CFG).eval(), policy_cfg, stats, text, fast)
    constrained = Pi0FastPolicy.from_checkpoint(str(tmp_path / "ckpt"), device="cpu")
    free = Pi0FastPolicy.from_checkpoint(str(tmp_path / "ckpt"), device="cpu", constrain_length=False,
                                         length_tolerance=0)
    assert constrained.metadata["length_constrained_decoding"] and not free.metadata["length_constrained_decoding"]
    obs = {"images": {"head": np.zeros((30, 40, 3), np.uint8)}, "prompt": "pick up the cube"}
    range_refusals = 0
    for seed in range(6):
        obs["state"] = np.random.default_rng(seed).uniform(-1, 1, 4)
        try:
            free.infer(obs)
        except FastDecodeError:
            pass
        try:
            result = constrained.infer(obs)
        except FastDecodeError as err:
            # The grammar fixes the length; the range check still guards the decoded values.
            assert "normalized units" in str(err) or "out of range" in str(err)
            range_refusals += 1
            continue
        assert result["actions"].shape == (CFG.action_horizon, 3) and np.isfinite(result["actions"]).all()
    assert constrained.stats["relaxed_decodes"] == 0
    assert constrained.stats["decode_failures"] == range_refusals
    assert free.stats["decode_failures"] > constrained.stats["decode_failures"]  # a random model misses the length


def test_byte_level_tokenizer_has_no_grammar(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["abc" * 10], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = FastTokenizer(bpe, FastTokenizer.fit(np.zeros((2, 10, 4)), vocab_size=256).config)
    with pytest.raises(ValueError, match="byte-level"):
        fast.token_coefficient_counts()


def test_trimmed_prompt_generates_the_same_tokens_and_loss(parts):
    _, _, builder = parts
    model, inputs = _model(6, prefer_actions=True), _inputs(builder, batch=2, seed=6)
    trimmed = inputs.trimmed()
    valid = int(inputs.token_masks.sum(dim=1).max())
    assert trimmed.tokens.shape[1] == valid < inputs.tokens.shape[1]
    assert torch.equal(trimmed.tokens, inputs.tokens[:, :valid])
    with torch.no_grad():
        torch.testing.assert_close(model.generate(trimmed, stop_at_non_action=False),
                                   model.generate(inputs, stop_at_non_action=False), rtol=0, atol=0)
        # The loss drops all-padding columns itself: same value as the uncached full-width pass.
        hidden, num_image = model.forward_hidden(inputs)
        hidden_trim, _ = model.forward_hidden(trimmed)
        keep = torch.cat([torch.ones(2, num_image, dtype=torch.bool), trimmed.token_masks], dim=1)
        torch.testing.assert_close(hidden_trim[keep], hidden[:, :num_image + valid][keep], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_and_compiled_generator_under_the_grammar_equals_eager_on_gpu(parts):
    _, _, builder = parts
    grammar = builder.length_grammar()
    model = _model(7, prefer_actions=True).cuda()
    inputs = _inputs(builder, batch=2, seed=7).to("cuda")
    with torch.no_grad():
        expected = model.generate(inputs, grammar=grammar)
        for compiled in (False, True):
            gen = FastGenerator(model, batch=2, restrict_vocab=True, end_ids=(EOS_ID, builder.end_ids[0]),
                                grammar=grammar, compile_step=compiled)
            assert gen._step_graph is not None
            got = gen.generate(inputs)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
            # Run twice: the graph resets the grammar's budget on every prefill.
            torch.testing.assert_close(gen.generate(inputs), expected, rtol=0, atol=0)
