"""Asynchronous chunk strategies (pi0_ros.control.chunk_strategies): alignment, ensembling, blending, rtc requests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pi0_ros.control import chunk_strategies as cs
from pi0_ros.control.action_codec import DecodedChunk
from pi0_ros.control.chunking import STRATEGIES, Chunk, SyncStrategy, make_strategy

DT = 0.02
ASYNC = ("async_naive", "temporal_ensemble", "fast_blend", "rtc")


def chunk(values, obs_time, ready_time=None, request_id=0) -> Chunk:
    """A chunk whose single joint target at step k is values[k] (and the policy output equals it)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return Chunk(actions=arr.astype(np.float32), decoded=DecodedChunk(targets={"arm": arr.copy()}),
                 obs_time=obs_time, ready_time=obs_time if ready_time is None else ready_time,
                 request_id=request_id)


def value(targets):
    return float(targets["arm"][0])


def test_registered_and_built_by_name():
    for name in ASYNC:
        assert name in STRATEGIES
        strategy = make_strategy(name, DT, execute_steps=5, margin_steps=1)
        assert strategy.name == name and strategy.execute_steps == 5 and strategy.dt == DT
    assert cs.inference_request(SyncStrategy(DT, 5), 0.0, 0.1) == {}


@pytest.mark.parametrize("name", ["async_naive", "rtc", "fast_blend", "temporal_ensemble"])
def test_alignment_skips_exactly_the_elapsed_steps(name):
    s = make_strategy(name, DT, execute_steps=10)
    assert s.next_targets(1.0) is None
    s.add(chunk(np.arange(20), obs_time=1.0, ready_time=1.1))
    # First tick after arrival, 100 ms = 5 steps after the observation: actions 0..4 are in the past.
    assert value(s.next_targets(1.1)) == 5
    assert [value(s.next_targets(1.1 + i * DT)) for i in range(1, 4)] == [6, 7, 8]
    assert s.started == 1 and s.measured_delays == [5]
    # A tick that comes late skips with the clock, not with the tick count.
    assert value(s.next_targets(1.1 + 6 * DT)) == 11
    assert s.queue_depth == 20 - 12


def test_async_naive_switches_on_arrival_and_ignores_stale_chunks():
    s = make_strategy("async_naive", DT, execute_steps=10)
    s.add(chunk(np.arange(30), obs_time=0.0))
    assert value(s.next_targets(0.0)) == 0
    s.add(chunk(100 + np.arange(30), obs_time=0.2, ready_time=0.3))
    assert value(s.next_targets(0.3)) == 105  # 5 steps of the new chunk already elapsed
    assert s.started == 2 and s.current.obs_time == 0.2
    s.add(chunk(200 + np.arange(30), obs_time=0.1))  # out of order: older than the current chunk
    assert value(s.next_targets(0.32)) == 106 and s.current.obs_time == 0.2


def test_temporal_ensemble_uses_act_weights_over_covering_chunks():
    s = make_strategy("temporal_ensemble", DT, execute_steps=5)
    s.add(chunk(np.zeros(20), obs_time=0.0))
    assert value(s.next_targets(0.0)) == 0.0
    s.add(chunk(np.ones(20), obs_time=0.1))  # 5 steps newer
    w_old, w_new = 1.0, math.exp(-cs.ACT_ENSEMBLE_DECAY * 5)
    assert value(s.next_targets(0.12)) == pytest.approx(w_new / (w_old + w_new))
    np.testing.assert_allclose(s.weights([s._chunks[0], s._chunks[1]]), [w_old, w_new] / np.float64(w_old + w_new))
    # Once the old chunk ends (step 20 = t 0.4) only the new one remains.
    assert value(s.next_targets(0.4)) == 1.0
    # m = 0: a plain mean; a larger m favours the older chunk more.
    flat = cs.TemporalEnsembleStrategy(DT, 5, ensemble_decay=0.0)
    steep = cs.TemporalEnsembleStrategy(DT, 5, ensemble_decay=0.5)
    for strat in (flat, steep):
        strat.add(chunk(np.zeros(20), 0.0))
        strat.add(chunk(np.ones(20), 0.1))
    assert value(flat.next_targets(0.12)) == pytest.approx(0.5)
    assert value(steep.next_targets(0.12)) == pytest.approx(math.exp(-2.5) / (1 + math.exp(-2.5)))


def test_fast_blend_crossfades_linearly_then_follows_the_new_chunk():
    s = cs.FastBlendStrategy(DT, execute_steps=10, blend_steps=4)
    s.add(chunk(np.zeros(40), obs_time=0.0))
    assert value(s.next_targets(0.0)) == 0.0
    s.add(chunk(np.ones(40), obs_time=0.1, ready_time=0.15))
    got = [value(s.next_targets(0.16 + i * DT)) for i in range(6)]
    np.testing.assert_allclose(got, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    zero = cs.FastBlendStrategy(DT, execute_steps=10, blend_steps=0)
    zero.add(chunk(np.zeros(40), 0.0))
    zero.next_targets(0.0)
    zero.add(chunk(np.ones(40), 0.1))
    assert value(zero.next_targets(0.16)) == 1.0


def test_rtc_request_carries_remaining_actions_and_online_delay():
    s = make_strategy("rtc", DT, execute_steps=8)
    assert s.inference_request(0.0, 0.05) == {}, "nothing to guide toward before the first chunk"
    actions = np.arange(25, dtype=np.float32)
    s.add(chunk(actions, obs_time=1.0, ready_time=1.13))
    s.next_targets(1.14)  # 7 steps after the observation
    assert s.measured_delays == [7]
    request = s.inference_request(1.16, expected_latency_s=0.05)["rtc"]
    np.testing.assert_array_equal(request["prev_actions"][:, 0], actions[8:])  # index 0 = action at 1.16
    assert request["prev_actions"].dtype == np.float32
    assert request["delay_steps"] == 7, "running max of measured delays beats a smaller expectation"
    assert request["execute_steps"] == 8
    assert s.inference_request(1.16, expected_latency_s=0.2)["rtc"]["delay_steps"] == 10
    # Past the end of the chunk there is nothing left to guide toward.
    assert s.inference_request(1.0 + 25 * DT, 0.05) == {}


def test_rtc_delay_estimate_is_a_running_max_over_a_window():
    s = cs.RTCStrategy(DT, execute_steps=4, delay_window=3)
    for i, delay in enumerate([9, 2, 3, 4]):
        obs = 1.0 * i
        s.add(chunk(np.zeros(30), obs_time=obs))
        s.next_targets(obs + delay * DT)
    assert s.measured_delays == [2, 3, 4] and s.delay_steps() == 4


@pytest.mark.parametrize("name", ASYNC)
def test_async_strategies_never_return_none_while_a_chunk_covers_now(name):
    rng = np.random.default_rng(0)
    s = make_strategy(name, DT, execute_steps=4, margin_steps=1)
    horizon, pending, received = 12, None, []
    for tick in range(400):
        now = tick * DT
        if pending is not None and now >= pending.ready_time:
            s.add(pending)
            received.append(pending)
            pending = None
        covered = any(c.obs_time <= now + 1e-9 and cs.chunk_index(c, now, DT) < horizon for c in received)
        targets = s.next_targets(now)
        assert (targets is not None) == covered, (tick, covered)
        if pending is None and s.wants_inference(now, 0.1):
            latency = rng.choice([0.0, 0.03, 0.1, 0.17, 0.3])  # the last one outlasts the chunk
            pending = chunk(rng.normal(size=horizon), obs_time=now, ready_time=now + latency)
    assert s.started > 10


@pytest.mark.parametrize("name", ASYNC)
def test_wants_inference_after_execute_steps_or_before_running_dry(name):
    s = make_strategy(name, DT, execute_steps=6, margin_steps=0)
    assert s.wants_inference(0.0, 0.0)
    s.add(chunk(np.zeros(10), obs_time=0.0))
    s.next_targets(0.0)
    assert not s.wants_inference(0.1, 0.0)  # 5 steps run
    assert s.wants_inference(0.12, 0.0)  # 6 steps run
    assert not s.wants_inference(0.04, 0.14)  # 8 steps left, the next chunk arrives in 7
    assert s.wants_inference(0.04, 0.16)  # 8 steps left, the next chunk would take 8


@pytest.mark.parametrize("name", ASYNC)
def test_reset_drops_everything(name):
    s = make_strategy(name, DT, execute_steps=4)
    s.add(chunk(np.arange(20), obs_time=0.0))
    s.next_targets(0.04)
    s.add(chunk(np.arange(20), obs_time=0.06))
    s.reset()
    assert s.current is None and s.queue_depth == 0
    assert s.next_targets(0.1) is None
    assert s.measured_delays == [] and s.delay_steps() == 0
    assert cs.inference_request(s, 0.1, 0.0) == {}
    assert s.wants_inference(0.1, 0.0)
    s.add(chunk(7 + np.arange(20), obs_time=0.1))  # works again afterwards
    assert value(s.next_targets(0.1)) == 7
