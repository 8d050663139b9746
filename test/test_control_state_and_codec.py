"""ROS-free tests: state assembly by joint name, gripper units, action decoding/encoding."""

import dataclasses

import numpy as np
import pytest

from pi0_ros.control.action_codec import ActionDecoder, encode_action
from pi0_ros.control.kinematics import ArmIK, IKCheck, apply_increment, arm_fk, pose_increment
from pi0_ros.control.robot_state import RobotStateTracker, build_state_vector
from pi0_ros.control.units import gripper_to_policy, gripper_to_robot
from pi0_ros.embodiment import load_embodiment
from pi0_ros.policy_api import PolicyOutputError


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


def test_joint_state_mapped_by_name_not_position(emb):
    arm = emb.groups["left_arm"]
    tracker = RobotStateTracker([arm])
    names = list(reversed(arm.joints)) + ["unrelated_joint"]
    values = list(reversed(np.arange(7) * 0.05)) + [99.0]
    assert tracker.update("left_arm", names, values, now=1.0) is None
    np.testing.assert_array_equal(tracker.measured("left_arm"), np.arange(7) * 0.05)


def test_joint_state_refusals_keep_last_good_reading_and_report_fault(emb):
    arm = emb.groups["left_arm"]
    tracker = RobotStateTracker([arm])
    tracker.update("left_arm", arm.joints, np.zeros(7), now=0.0)
    assert "missing" in tracker.update("left_arm", arm.joints[:6], np.ones(6), now=0.1)
    assert "no joint names" in tracker.update("left_arm", [], np.ones(7), now=0.1)
    assert "non-finite" in tracker.update("left_arm", arm.joints, [np.nan] + [1.0] * 6, now=0.1)
    np.testing.assert_array_equal(tracker.measured("left_arm"), np.zeros(7))
    assert tracker.faults(0.15, max_age_s=0.2) == ["joint_state_invalid:left_arm"]
    assert tracker.update("left_arm", arm.joints, np.full(7, 0.1), now=0.2) is None
    assert tracker.faults(0.25, max_age_s=0.2) == []
    assert tracker.faults(0.5, max_age_s=0.2) == ["joint_state_stale:left_arm"]


def test_feedback_beyond_the_limits_is_refused(emb):
    arm, gripper = emb.groups["left_arm"], emb.groups["left_gripper"]
    tracker = RobotStateTracker([arm, gripper])
    lower, upper = arm.position_limits[0]
    inside = arm.home.copy()
    inside[0] = upper + 0.04 * (upper - lower)  # within the 5 % tolerance (calibration slack at a hard stop)
    assert tracker.update("left_arm", arm.joints, inside, now=0.0) is None
    glitch = arm.home.copy()
    glitch[0] = 100.0
    problem = tracker.update("left_arm", arm.joints, glitch, now=0.02)
    assert "left_arm_joint1 at 100 beyond its limits" in problem
    np.testing.assert_array_equal(tracker.measured("left_arm"), inside)
    assert tracker.faults(0.03, max_age_s=0.2, groups=["left_arm"]) == ["joint_state_invalid:left_arm"]
    assert "beyond its limits" in tracker.update("left_gripper", [], [250.0], now=0.0)


def test_a_jump_is_used_only_once_the_next_message_confirms_it(emb):
    arm = emb.groups["left_arm"]
    tracker = RobotStateTracker([arm])
    home = arm.home.copy()
    tracker.update("left_arm", arm.joints, home, now=0.0)
    # Joint 3 may move 8.38 rad/s x (0.02 + 0.05) s = 0.59 rad here: 0.8 rad in 20 ms is a glitch until confirmed.
    spike = home.copy()
    spike[2] += 0.8
    assert "left_arm_joint3 jumped +0.8" in tracker.update("left_arm", arm.joints, spike, now=0.02)
    np.testing.assert_array_equal(tracker.measured("left_arm"), home)
    assert tracker.faults(0.03, max_age_s=0.2) == []  # held back, not a fault: the last good reading stays
    assert tracker.update("left_arm", arm.joints, home, now=0.04) is None  # the spike was a glitch
    np.testing.assert_array_equal(tracker.measured("left_arm"), home)
    # A real displacement: the next message agrees with the jumped one, so it is taken.
    assert tracker.update("left_arm", arm.joints, spike, now=0.06) is not None
    assert tracker.update("left_arm", arm.joints, spike + 0.01, now=0.08) is None
    np.testing.assert_allclose(tracker.measured("left_arm"), spike + 0.01)
    assert tracker.held_back == 2 and tracker.refused == 0
    # Slower than the limits allow, nothing is held back, however far it goes over time.
    assert tracker.update("left_arm", arm.joints, spike + 0.5, now=0.28) is None


def test_unnamed_single_gripper_value_is_the_stroke(emb):
    tracker = RobotStateTracker([emb.groups["left_gripper"]])
    assert tracker.update("left_gripper", [], [42.0], now=0.0) is None
    assert tracker.measured("left_gripper")[0] == 42.0
    assert tracker.faults(0.0, 0.2, ["left_gripper"]) == []
    assert RobotStateTracker([emb.groups["right_gripper"]]).faults(0.0, 0.2) == ["joint_state_missing:right_gripper"]


def test_state_vector_layout_and_gripper_units(emb):
    measured = {g: emb.groups[g].home.copy() for g in ("left_arm", "right_arm")}
    measured["left_gripper"] = np.array([25.0])
    measured["right_gripper"] = np.array([100.0])
    state = build_state_vector(emb, emb.state_layout, measured)
    assert state.shape == (16,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:7], emb.groups["left_arm"].home, rtol=1e-6)
    assert state[7] == pytest.approx(0.25) and state[15] == pytest.approx(1.0)
    g = emb.groups["left_gripper"]
    np.testing.assert_allclose(gripper_to_robot(g, gripper_to_policy(g, np.array([37.0]))), [37.0])


def _start(emb):
    return {"left_arm": emb.groups["left_arm"].home.copy(), "right_arm": emb.groups["right_arm"].home.copy(),
            "left_gripper": np.array([50.0]), "right_gripper": np.array([50.0])}


def test_decode_joint_delta_adds_chunk_start_state_and_maps_gripper(emb):
    layout = emb.action_layout("joint_delta")
    decoder = ActionDecoder(emb, layout)
    actions = np.zeros((4, layout.dim))
    actions[:, layout.segments[0].slice] = 0.1
    actions[:, layout.segments[1].slice] = 0.0  # closed
    actions[:, layout.segments[3].slice] = 1.0  # open
    decoded = decoder.decode(actions, _start(emb))
    np.testing.assert_allclose(decoded.targets["left_arm"][2], emb.groups["left_arm"].home + 0.1)
    np.testing.assert_allclose(decoded.targets["right_arm"][2], emb.groups["right_arm"].home)
    assert decoded.targets["left_gripper"][0, 0] == 0.0 and decoded.targets["right_gripper"][0, 0] == 100.0


@pytest.mark.parametrize("space", ["joint_position", "joint_delta"])
def test_encode_is_the_inverse_of_decode(emb, space):
    layout = emb.action_layout(space)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, size=(3, layout.dim))
    start = _start(emb)
    decoded = ActionDecoder(emb, layout).decode(actions, start)
    for k in range(3):
        np.testing.assert_allclose(encode_action(emb, layout, decoded.step(k), start), actions[k], atol=1e-9)


def test_bad_chunks_raise_policy_output_error(emb):
    layout = emb.action_layout("joint_position")
    decoder = ActionDecoder(emb, layout)
    bad = np.zeros((5, layout.dim))
    bad[3, 2] = np.nan
    with pytest.raises(PolicyOutputError, match="NaN"):
        decoder.decode(bad, _start(emb))
    with pytest.raises(PolicyOutputError, match="must be"):
        decoder.decode(np.zeros((5, layout.dim + 1)), _start(emb))
    # A cast would keep the real part of complex values and parse numeric strings: neither is an action.
    for not_real in (0.1 + 2j, "0.1", None):
        with pytest.raises(PolicyOutputError, match="real numbers"):
            decoder.decode(np.full((5, layout.dim), not_real), _start(emb))
    with pytest.raises(ValueError, match="IK solver"):
        ActionDecoder(emb, emb.action_layout("ee_pose"))


class LookupSolver:
    """Stands in for relaxed-IK where the native library is not needed: it knows the joint
    vectors of a few goals and, like the real solver after a failed optimization, returns its
    previous solution for any other goal."""

    def __init__(self, fk, known):
        self.fk, self.known, self.q = fk, known, None

    def reset(self, q):
        self.q = np.asarray(q, dtype=float)
        self.goal = self.fk.forward(self.q)

    def _lookup(self, goal):
        for q in self.known:
            p = self.fk.forward(q)
            if np.allclose(p[:3], goal[:3], atol=1e-6):
                self.q = q
        return self.q.copy()

    def solve_position(self, pos, quat, tol):
        self.goal = np.concatenate([pos, quat])
        return self._lookup(self.goal)

    def solve_velocity(self, dpos, drot, tol):
        self.goal = apply_increment(self.goal, np.concatenate([dpos, drot]))
        return self._lookup(self.goal)


def test_ee_pose_decoding_keeps_last_safe_target_on_ik_failure(emb):
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    reachable = arm.home + 0.05
    ik = ArmIK(arm, fk, LookupSolver(fk, [reachable]), IKCheck())
    layout = emb.action_layout("ee_pose")
    right = emb.groups["right_arm"]
    rfk = arm_fk(emb, right)
    decoder = ActionDecoder(emb, layout, {"left_arm": ik, "right_arm": ArmIK(right, rfk, LookupSolver(rfk, []))})
    actions = np.zeros((3, layout.dim))
    far = fk.forward(reachable)
    far[0] += 5.0  # 5 m away: unreachable
    actions[0, layout.segments[0].slice] = fk.forward(reachable)
    actions[1, layout.segments[0].slice] = far
    actions[2, layout.segments[0].slice] = fk.forward(reachable)
    actions[:, layout.segments[2].slice] = rfk.forward(right.home)
    decoded = decoder.decode(actions, _start(emb))
    np.testing.assert_allclose(decoded.targets["left_arm"][0], reachable)
    np.testing.assert_allclose(decoded.targets["left_arm"][1], reachable)  # failure: last safe target kept
    assert decoded.ik_failures["left_arm"] == 1
    assert decoded.ik_failures["right_arm"] == 0  # the right goal is FK(seed): the seed is a solution


def test_ee_delta_increments_accumulate_from_chunk_start(emb):
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    q1, q2 = arm.home + 0.02, arm.home + 0.04
    ik = ArmIK(arm, fk, LookupSolver(fk, [q1, q2]))
    inc1 = pose_increment(fk.forward(arm.home), fk.forward(q1))
    inc2 = pose_increment(fk.forward(q1), fk.forward(q2))
    targets = ActionDecoder(emb, emb.action_layout("ee_delta"), {"left_arm": ik, "right_arm": ik})._solve_arm(
        "left_arm", "ee_delta", np.stack([inc1, inc2]), arm.home, 2)[0]
    np.testing.assert_allclose(targets, np.stack([q1, q2]))
    fks = {"left_arm": fk, "right_arm": arm_fk(emb, emb.groups["right_arm"])}
    start = _start(emb)
    action = encode_action(emb, emb.action_layout("ee_delta"), {**start, "left_arm": q2}, start, fks,
                           previous={**start, "left_arm": q1})
    np.testing.assert_allclose(action[:6], inc2, atol=1e-9)


def test_ee_pose_chunk_through_the_real_relaxed_ik(emb):
    ik = {g: ArmIK.from_embodiment(emb, emb.groups[g]) for g in ("left_arm", "right_arm")}
    layout = emb.action_layout("ee_pose")
    decoder = ActionDecoder(emb, layout, ik)
    start = _start(emb)
    actions = np.zeros((6, layout.dim))
    for k in range(6):
        for seg in layout.segments:
            if seg.kind == "ee_pose":
                actions[k, seg.slice] = ik[seg.group].forward(start[seg.group] + 0.02 * k)
            else:
                actions[k, seg.slice] = 0.5
    actions[4, layout.segments[0].slice][0] += 3.0  # 3 m out of reach
    decoded = decoder.decode(actions, start)
    left = decoded.targets["left_arm"]
    for k in (1, 3, 5):
        reached = ik["left_arm"].forward(left[k])
        assert np.linalg.norm(reached[:3] - actions[k, :3]) < 0.01
    np.testing.assert_allclose(left[4], left[3])  # unreachable: the last safe target is kept
    assert decoded.ik_failures == {"left_arm": 1, "right_arm": 0}
    for solver in ik.values():
        solver.close()


def test_ik_solution_on_another_branch_is_refused_and_the_solver_put_back(emb):
    # The solver can answer a reachable goal with a configuration on another IK branch (same pose, joints
    # far away): executing it would swing the arm. Such a jump is an IK failure and the solver restarts
    # from the branch the arm is on.
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    near = arm.home + 0.05
    jumped = arm.home.copy()
    jumped[0] -= 1.5  # a different configuration the stub reports for this goal
    solver = LookupSolver(fk, [near, jumped])
    ik = ArmIK(arm, fk, solver, IKCheck(max_joint_step_rad=1.0))
    ik.reset(arm.home)
    np.testing.assert_allclose(ik.solve_pose(fk.forward(near)), near)
    assert ik.solve_pose(fk.forward(jumped)) is None and ik.failures == 1
    np.testing.assert_allclose(solver.q, near)  # put back on the arm's branch
    np.testing.assert_allclose(ik.solve_pose(fk.forward(near)), near)


@pytest.mark.parametrize("rotation", [1e200, 2 * np.pi], ids=["overflows", "full-turn"])
def test_an_ee_delta_beyond_one_step_is_an_ik_failure_not_an_exception(emb, rotation):
    # A rotation past pi wraps around (a full turn reads as no rotation at all, so the solver's previous
    # solution passes the FK check); 1e200 used to raise "math domain error" and drop the whole chunk.
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    ik = ArmIK(arm, fk, LookupSolver(fk, []))
    ik.reset(arm.home)
    goal = ik._goal.copy()
    assert ik.solve_increment(np.array([0.0, 0.0, 0.0, rotation, 0.0, 0.0])) is None
    assert ik.solve_increment(np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])) is None  # 1 m in one step
    assert ik.failures == 2
    np.testing.assert_allclose(ik._goal, goal)


def test_a_quaternion_whose_norm_overflows_is_refused(emb):
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    ik = ArmIK(arm, fk, LookupSolver(fk, []))  # returns its previous solution, as relaxed-IK does on failure
    ik.reset(arm.home)
    pose = fk.forward(arm.home)
    pose[3:] = [1e200, 0.0, 0.0, 0.0]
    assert ik.solve_pose(pose) is None and ik.failures == 1


def test_an_ik_solution_outside_the_embodiment_limits_is_refused(emb):
    # The IK URDF may allow more than the embodiment: the safety layer would clip such a solution, and the
    # clipped joints no longer reach the pose that FK checked.
    arm = emb.groups["left_arm"]
    fk = arm_fk(emb, arm)
    beyond = arm.home.copy()
    beyond[0] = arm.position_limits[0, 1] + 0.02
    ik = ArmIK(arm, fk, LookupSolver(fk, [beyond]), IKCheck(max_joint_step_rad=3.0))
    ik.reset(arm.home)
    assert ik.solve_pose(fk.forward(beyond)) is None and ik.failures == 1


def test_ik_settings_for_another_arm_are_refused_at_start(emb):
    left = emb.groups["left_arm"]
    swapped = dataclasses.replace(left, ik_settings=emb.groups["right_arm"].ik_settings)
    with pytest.raises(ValueError, match="not left_arm's"):
        ArmIK.from_embodiment(emb, swapped)
