"""ROS-free tests: safety limiter, watchdog helpers, mode machine, sync chunk strategy."""

import numpy as np
import pytest

from pi0_ros.control.action_codec import DecodedChunk
from pi0_ros.control.chunking import Chunk, SyncStrategy, make_strategy
from pi0_ros.control.modes import ModeMachine
from pi0_ros.control.safety import SafetyConfig, SafetyLimiter, Watchdog, WatchdogConfig, hold_target
from pi0_ros.embodiment import load_embodiment

DT = 0.02


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


def limiter(emb, **overrides):
    config = SafetyConfig(**{"speed_scale": 0.5, "ramp_s": 0.0, **overrides})
    return SafetyLimiter({"left_arm": emb.groups["left_arm"], "left_gripper": emb.groups["left_gripper"]}, config, DT)


def test_nan_target_is_rejected_and_last_safe_command_kept(emb):
    lim = limiter(emb)
    home = emb.groups["left_arm"].home
    first = lim.limit("left_arm", home + 0.001, home)
    bad = home.copy()
    bad[3] = np.inf
    out = lim.limit("left_arm", bad, home)
    assert out.rejected and np.all(np.isfinite(out.position))
    np.testing.assert_allclose(out.position, first.position)
    assert lim.rejected == 1
    assert lim.limit("left_arm", np.zeros(3), home).rejected  # wrong size


def test_commands_respect_position_velocity_step_and_acceleration_limits(emb):
    arm = emb.groups["left_arm"]
    lim = limiter(emb, max_step_arm_rad=0.2)
    measured = arm.home.copy()
    target = arm.position_limits[:, 1] + 1.0  # far beyond the upper limits
    v_max = arm.velocity_limits * 0.5
    a_max = arm.acceleration_limits
    previous, v_prev = measured.copy(), np.zeros(7)
    for _ in range(200):
        out = lim.limit("left_arm", target, measured)
        v = (out.position - previous) / DT
        assert np.all(np.abs(v) <= v_max + 1e-9)
        assert np.all(np.abs(v) - np.abs(v_prev) <= a_max * DT + 1e-9)  # speeding up is bounded
        assert np.all(np.abs(out.position - measured) <= 0.2 + 1e-9)
        assert np.all(out.position <= arm.position_limits[:, 1] - 0.01 + 1e-12)
        assert out.clamped
        previous, v_prev = out.position, v
        measured = measured + 0.5 * (out.position - measured)  # a lagging robot
    np.testing.assert_allclose(out.speed_limit, v_max)


def test_braking_is_not_delayed_by_the_acceleration_limit(emb):
    arm = emb.groups["left_arm"]
    lim = limiter(emb, max_step_arm_rad=10.0)
    measured = arm.home.copy()
    for _ in range(100):  # accelerate toward a far target
        out = lim.limit("left_arm", arm.home + 1.0, measured)
        measured = out.position
    hold = out.position.copy()
    stop = lim.limit("left_arm", hold, hold)
    np.testing.assert_allclose(stop.position, hold)  # holds exactly, no overshoot


def test_ramp_scales_speed(emb):
    lim = limiter(emb)
    arm = emb.groups["left_arm"]
    out = lim.limit("left_arm", arm.home + 1.0, arm.home, ramp=0.1)
    assert np.all(np.abs(out.position - arm.home) <= arm.velocity_limits * 0.5 * 0.1 * DT + 1e-12)


def test_invalid_safety_config_is_refused(emb):
    with pytest.raises(ValueError, match="speed_scale"):
        limiter(emb, speed_scale=2.0)


def test_watchdog_images_and_hold_target():
    wd = Watchdog(WatchdogConfig(image_max_age_s={"head": 0.5, "wrist": 0.5}))
    assert wd.image_faults({"head": 0.1}) == ["image_missing:wrist"]
    assert wd.image_faults({"head": 0.6, "wrist": 0.1}) == ["image_stale:head"]
    assert wd.evaluate(["x"]) == ["x"] and wd.trips == 1
    wd.evaluate(["x", "y"])
    assert wd.trips == 1
    np.testing.assert_array_equal(hold_target(np.ones(2), np.zeros(2), measured_ok=True), np.ones(2))
    np.testing.assert_array_equal(hold_target(np.ones(2), np.zeros(2), measured_ok=False), np.zeros(2))
    with pytest.raises(ValueError):
        hold_target(None, None, measured_ok=False)


def test_mode_machine_validates_and_holds_on_faults_and_pause():
    modes = ModeMachine("policy")
    ok, reason = modes.request("dance")
    assert not ok and "control_mode must be one of" in reason and modes.requested == "policy"
    state, switched = modes.update([], now=0.0)
    assert state.mode == "policy" and switched
    state, switched = modes.update(["image_stale:head"], now=0.1)
    assert (state.mode, state.reason, switched) == ("hold", "image_stale:head", True)
    state, switched = modes.update([], now=0.2)
    assert state.mode == "policy" and switched
    modes.paused = True
    assert modes.update([], now=0.3)[0].reason == "paused"
    assert modes.ramp(0.3, ramp_s=1.0, start=0.1) == pytest.approx(0.1)
    assert modes.ramp(0.8, ramp_s=1.0, start=0.1) == pytest.approx(0.55)
    assert modes.ramp(5.0, ramp_s=1.0, start=0.1) == 1.0


def _chunk(value, horizon=10, obs_time=0.0):
    targets = {"g": np.full((horizon, 1), float(value)) + np.arange(horizon)[:, None] / 100}
    return Chunk(np.zeros((horizon, 1)), DecodedChunk(targets), obs_time, obs_time + 0.1, int(value))


def test_sync_executes_first_n_then_the_next_chunk_from_its_start():
    strategy = make_strategy("sync", DT, execute_steps=4, margin_steps=1)
    assert isinstance(strategy, SyncStrategy)
    assert strategy.next_targets(0.0) is None and strategy.wants_inference(0.0, latency_s=0.0)
    strategy.add(_chunk(1))
    assert not strategy.wants_inference(0.0, 0.0)  # one pending already
    got = [strategy.next_targets(0.0)["g"][0] for _ in range(3)]
    np.testing.assert_allclose(got, [1.0, 1.01, 1.02])
    assert strategy.queue_depth == 1
    assert strategy.wants_inference(0.0, latency_s=0.0)  # 1 left <= 0 + margin 1
    strategy.add(_chunk(2))
    seq = [strategy.next_targets(0.0)["g"][0] for _ in range(5)]
    np.testing.assert_allclose(seq, [1.03, 2.0, 2.01, 2.02, 2.03])
    assert strategy.next_targets(0.0) is None and strategy.started == 2
    strategy.add(_chunk(3))
    strategy.reset()
    assert strategy.next_targets(0.0) is None and strategy.queue_depth == 0


def test_sync_starts_a_chunk_at_the_action_meant_for_now():
    # Action k of a chunk is meant for obs_time + k dt: a chunk observed 3 ticks ago starts at action 3 and
    # runs its N actions from there (replaying actions 0-2 would repeat motion the robot already made).
    strategy = SyncStrategy(DT, execute_steps=4, margin_steps=1)
    strategy.add(_chunk(1, horizon=10))
    now = 3 * DT
    got = [strategy.next_targets(now + k * DT)["g"][0] for k in range(4)]
    np.testing.assert_allclose(got, [1.03, 1.04, 1.05, 1.06])
    assert strategy.queue_depth == 0
    # a chunk older than its horizon still runs its last action rather than nothing
    strategy.add(_chunk(2, horizon=10))
    np.testing.assert_allclose(strategy.next_targets(1.0)["g"][0], 2.09)
    assert strategy.next_targets(1.0 + DT) is None


def test_sync_requests_early_by_latency():
    strategy = SyncStrategy(DT, execute_steps=20, margin_steps=0)
    strategy.add(_chunk(1, horizon=30))
    for _ in range(10):
        strategy.next_targets(0.0)
    assert strategy.queue_depth == 10
    assert not strategy.wants_inference(0.0, latency_s=0.1)  # 5 steps of latency, 10 left
    assert strategy.wants_inference(0.0, latency_s=0.2)
    with pytest.raises(ValueError, match="unknown chunk strategy"):
        make_strategy("magic", DT, 10)


def _hold_at_observation_run(margin_steps, latency_s=0.13, dt=0.1, execute=5, horizon=10, ticks=80):
    """A sync schedule in the control core's order (chunks that arrived, this tick's target, then the next
    inference observing the arm before that target acts) driving an arm that reaches each target by the next
    tick, with a policy whose first answer moves the arm from 0 to 1 and every later answer holds the observed
    position. Returns the positions per tick and the strategy."""
    strategy = SyncStrategy(dt, execute_steps=execute, margin_steps=margin_steps)
    position, pending, answers, positions = 0.0, None, 0, []
    for tick in range(ticks):
        now = tick * dt
        if pending is not None and pending[0] <= now + 1e-9:
            strategy.add(pending[1])
            pending = None
        targets = strategy.next_targets(now)
        if pending is None and strategy.wants_inference(now, latency_s):
            values = np.linspace(0.0, 1.0, horizon) if answers == 0 else np.full(horizon, position)
            chunk = Chunk(np.zeros((horizon, 1)), DecodedChunk({"g": values[:, None]}), now, now + latency_s, answers)
            pending, answers = (now + latency_s, chunk), answers + 1
        if targets is not None:
            position = float(targets["g"][0])
        positions.append(position)
    return np.array(positions), strategy


def test_sync_observing_a_chunk_late_makes_a_holding_arm_alternate_and_is_reported():
    # 10 Hz, 130 ms latency, 5 of 10 actions: margin 3 makes the lead (2 + 3 ticks) cover the whole execution,
    # so each chunk is observed on its predecessor's first tick: the odd and the even chunks hold two different
    # poses and the arm jumps between them for ever.
    late, strategy = _hold_at_observation_run(margin_steps=3)
    assert strategy.observes_a_chunk_late and strategy.last_start_index == 5
    assert np.ptp(late[-20:]) > 0.5 and len(np.unique(late[-20:])) == 2  # two poses, in turn, for ever
    # Margin 0: each chunk is observed after its predecessor moved the arm; the holds agree and the arm rests.
    fresh, strategy = _hold_at_observation_run(margin_steps=0)
    assert not strategy.observes_a_chunk_late and strategy.last_start_index == 3
    assert np.ptp(fresh[-20:]) < 1e-9
