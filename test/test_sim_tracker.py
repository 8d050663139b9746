"""The joint tracker (speed and acceleration limits, convergence) and target validation, without MuJoCo."""

from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.embodiment import load_embodiment
from pi0_ros.sim.targets import TargetRejected, validate_target
from pi0_ros.sim.tracker import JointTracker

DT = 0.002


def run(tracker: JointTracker, seconds: float):
    positions, velocities = [], []
    for _ in range(int(round(seconds / DT))):
        tracker.step(DT)
        positions.append(tracker.position.copy())
        velocities.append(tracker.velocity.copy())
    return np.array(positions), np.array(velocities)


def make_tracker(n=3, vmax=2.0, ratio=1.5):
    return JointTracker(lower=-np.full(n, 5.0), upper=np.full(n, 5.0), max_velocity=np.full(n, vmax),
                        acceleration_per_speed=ratio)


def test_respects_commanded_speed_and_acceleration_and_converges_exactly():
    tracker = make_tracker()
    tracker.reset(np.zeros(3))
    speeds = np.array([0.5, 1.0, 10.0])  # the last is above the 2.0 limit: capped
    tracker.set_target(np.arange(3), np.array([1.0, -2.0, 3.0]), speeds)
    pos, vel = run(tracker, 8.0)
    cap = np.array([0.5, 1.0, 2.0])
    assert np.all(np.abs(vel) <= cap + 1e-12)
    accel = np.diff(np.vstack([np.zeros(3), vel]), axis=0) / DT
    assert np.all(np.abs(accel) <= 1.5 * cap + 1e-6)
    # Cruise speed is actually reached, so the limits are what shaped the motion.
    assert np.allclose(np.abs(vel).max(axis=0), cap, rtol=1e-6)
    assert np.array_equal(tracker.position, [1.0, -2.0, 3.0])
    assert np.all(tracker.velocity == 0.0)
    # Discrete braking overshoots by less than one step's worth of acceleration (a dt^2).
    slack = 1.5 * cap * DT * DT
    assert pos[:, 0].max() <= 1.0 + slack[0] and pos[:, 1].min() >= -2.0 - slack[1]
    assert pos[:, 2].max() <= 3.0 + slack[2]


def test_default_speed_is_the_joint_limit_and_nonpositive_means_default():
    tracker = make_tracker(n=2, vmax=1.0)
    tracker.reset(np.zeros(2))
    tracker.set_target(np.arange(2), np.array([4.0, 4.0]), np.array([0.0, -1.0]))
    _, vel = run(tracker, 3.0)
    assert np.allclose(np.abs(vel).max(axis=0), 1.0)


def test_new_target_mid_motion_decelerates_within_limits_and_reverses():
    tracker = make_tracker(n=1, vmax=2.0)
    tracker.reset(np.zeros(1))
    tracker.set_target(np.array([0]), np.array([4.0]))
    run(tracker, 1.5)
    assert tracker.velocity[0] > 1.5
    tracker.set_target(np.array([0]), np.array([-1.0]))
    before = tracker.velocity.copy()
    pos, vel = run(tracker, 10.0)
    accel = np.diff(np.concatenate([before, vel[:, 0]])) / DT
    assert np.all(np.abs(accel) <= 3.0 + 1e-6)
    assert tracker.position[0] == -1.0


def test_targets_clip_to_position_limits():
    tracker = JointTracker(lower=np.array([-1.0]), upper=np.array([1.0]), max_velocity=np.array([5.0]))
    tracker.reset(np.array([3.0]))
    assert tracker.position[0] == 1.0
    tracker.set_target(np.array([0]), np.array([-7.0]))
    run(tracker, 5.0)
    assert tracker.position[0] == -1.0


# -- target validation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment()


def test_named_subset_in_any_order_is_accepted(embodiment):
    arm = embodiment.groups["left_arm"]
    target = validate_target(arm, ["left_arm_joint3", "left_arm_joint1"], [0.5, -0.2], [1.0, 2.0])
    assert target.indices.tolist() == [2, 0]
    assert target.positions.tolist() == [0.5, -0.2]
    assert target.speeds.tolist() == [1.0, 2.0]


def test_unnamed_target_needs_every_joint(embodiment):
    arm = embodiment.groups["left_arm"]
    target = validate_target(arm, [], list(arm.home))
    assert target.indices.tolist() == list(range(7)) and target.speeds is None
    with pytest.raises(TargetRejected, match="7 joints"):
        validate_target(arm, [], list(arm.home[:6]))


def test_gripper_single_value_with_or_without_name(embodiment):
    gripper = embodiment.groups["left_gripper"]
    assert validate_target(gripper, [], [40.0]).positions.tolist() == [40.0]
    assert validate_target(gripper, ["left_gripper"], [0.0]).positions.tolist() == [0.0]
    with pytest.raises(TargetRejected, match="outside limits"):
        validate_target(gripper, [], [100.5])


@pytest.mark.parametrize("names, positions, velocities, reason", [
    (["left_arm_joint1", "nope"], [0.0, 0.0], [], "unknown joints"),
    (["left_arm_joint1", "left_arm_joint1"], [0.0, 0.0], [], "duplicate"),
    (["left_arm_joint1"], [0.0, 0.1], [], "1 names but 2 positions"),
    (["left_arm_joint1"], [float("nan")], [], "non-finite"),
    (["left_arm_joint1"], [0.0], [float("inf")], "non-finite"),
    (["left_arm_joint1"], [0.0], [1.0, 2.0], "velocities"),
    (["left_arm_joint2"], [-0.5], [], "outside limits"),
    ([], [], [], "empty"),
    (["left_arm_joint1"], ["x"], [], "numbers"),
])
def test_malformed_targets_are_rejected_with_a_reason(embodiment, names, positions, velocities, reason):
    with pytest.raises(TargetRejected, match=reason):
        validate_target(embodiment.groups["left_arm"], names, positions, velocities)


def test_a_hair_outside_a_limit_is_float_noise_and_clipped(embodiment):
    arm = embodiment.groups["left_arm"]
    upper = arm.position_limits[1, 1]
    target = validate_target(arm, ["left_arm_joint2"], [upper + 1e-9])
    assert target.positions[0] == upper
