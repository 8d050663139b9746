"""The embodiment description: the shipped file is valid and broken files are reported with key paths."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from pi0_ros.embodiment import EmbodimentError, load_embodiment
from pi0_ros.paths import config_path

CONFIG = config_path("r1pro.yaml")


@pytest.fixture()
def raw():
    return yaml.safe_load(CONFIG.read_text())


def write(tmp_path: Path, data) -> Path:
    """Write a variant next to a copy of the URDF and IK settings so relative paths still resolve."""
    (tmp_path / "urdf").mkdir(exist_ok=True)
    (tmp_path / "urdf" / "r1pro.urdf").write_text(config_path("urdf", "r1pro.urdf").read_text())
    (tmp_path / "relaxed_ik").mkdir(exist_ok=True)
    for side in ("left", "right"):
        name = f"r1pro_{side}.yaml"
        (tmp_path / "relaxed_ik" / name).write_text(config_path("relaxed_ik", name).read_text())
    path = tmp_path / "embodiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def problems_of(tmp_path, data) -> list:
    with pytest.raises(EmbodimentError) as info:
        load_embodiment(write(tmp_path, data))
    return info.value.problems


def test_shipped_description_matches_the_r1pro_facts():
    emb = load_embodiment()
    left, right = emb.groups["left_arm"], emb.groups["right_arm"]
    assert left.joints == tuple(f"left_arm_joint{i}" for i in range(1, 8))
    # The arms differ only in joint 2's range (r1pro.md).
    assert left.position_limits[1].tolist() == [-0.1745, 3.1416]
    assert right.position_limits[1].tolist() == [-3.1416, 0.1745]
    np.testing.assert_array_equal(np.delete(left.position_limits, 1, 0), np.delete(right.position_limits, 1, 0))
    assert emb.groups["left_gripper"].position_limits.tolist() == [[0.0, 100.0]]
    assert emb.base_frame == "torso_link4" and left.ee_link == "left_gripper_link"
    assert left.ik_settings.is_file() and emb.robot_description.is_file()
    assert set(emb.cameras) == {"head", "left_wrist", "right_wrist"}
    assert emb.cameras["head"].topic == "/hdas/camera_head/left_raw/image_raw_color/compressed"


def test_layouts_have_consistent_dimensions():
    emb = load_embodiment()
    assert emb.state_layout.dim == 16
    assert emb.action_layout("joint_position").dim == 16
    assert emb.action_layout("ee_pose").dim == 2 * 7 + 2
    assert emb.action_layout("ee_delta").dim == 2 * 6 + 2
    mask = emb.action_layout("joint_delta").delta_mask
    assert mask.sum() == 14 and not mask[7] and not mask[15]  # grippers stay absolute
    segments = emb.action_layout("ee_delta").segments
    assert [s.start for s in segments] == [0, 6, 7, 13]
    with pytest.raises(KeyError, match="unknown action space"):
        emb.action_layout("torque")


def test_reversed_limits_are_reported_with_their_key_path(tmp_path, raw):
    raw["groups"]["left_arm"]["position_limits"][3] = [0.5, -0.5]
    problems = problems_of(tmp_path, raw)
    assert any(p.startswith("groups.left_arm.position_limits[3]: reversed") for p in problems)


def test_unknown_joint_and_link_are_reported(tmp_path, raw):
    raw["groups"]["right_arm"]["joints"][6] = "right_arm_joint8"
    raw["groups"]["right_arm"]["ee_link"] = "right_hand"
    raw["cameras"]["head"]["frame"] = "nowhere_link"
    problems = problems_of(tmp_path, raw)
    assert any(p.startswith("groups.right_arm.joints[6]: unknown joint 'right_arm_joint8'") for p in problems)
    assert any(p.startswith("groups.right_arm.ee_link: unknown link") for p in problems)
    assert any(p.startswith("cameras.head.frame: unknown link") for p in problems)


def test_every_problem_is_reported_at_once(tmp_path, raw):
    raw["groups"]["torso"]["velocity_limits"] = [2.5, 2.5, -1.0, 2.5]
    raw["groups"]["left_gripper"]["home"] = [150.0]
    raw["cameras"]["left_wrist"]["topic"] = raw["cameras"]["right_wrist"]["topic"]
    raw["cameras"]["head"]["format"] = "rgb8"  # a raw encoding on a compressed transport
    raw["rates"]["control_hz"] = 0
    problems = problems_of(tmp_path, raw)
    expected = ["groups.torso.velocity_limits[2]", "groups.left_gripper.home[0]", "cameras.right_wrist.topic",
                "cameras.head.format", "rates.control_hz"]
    for key in expected:
        assert any(p.startswith(key + ":") for p in problems), (key, problems)


def test_layout_errors(tmp_path, raw):
    bad = copy.deepcopy(raw)
    bad["state_layout"].append({"group": "wings", "kind": "joint_position"})
    bad["action_spaces"]["joint_delta"][1]["kind"] = "joint_delta"  # a gripper cannot be a joint delta
    bad["action_spaces"]["ee_pose"].append({"group": "torso", "kind": "ee_pose"})
    bad["action_spaces"]["ee_delta"][0]["kind"] = "wiggle"
    problems = problems_of(tmp_path, bad)
    assert any(p.startswith("state_layout[4].group: unknown group 'wings'") for p in problems)
    assert any(p.startswith("action_spaces.joint_delta[1].kind") for p in problems)
    assert any(p.startswith("action_spaces.ee_pose[4].kind") for p in problems)
    assert any(p.startswith("action_spaces.ee_delta[0].kind: unknown kind 'wiggle'") for p in problems)


def test_wrong_lengths_and_types(tmp_path, raw):
    raw["groups"]["left_arm"]["velocity_limits"] = raw["groups"]["left_arm"]["velocity_limits"][:6]
    raw["groups"]["right_arm"]["home"] = "zero"
    raw["cameras"]["head"]["width"] = "wide"
    problems = problems_of(tmp_path, raw)
    assert any(p.startswith("groups.left_arm.velocity_limits: has 6 entries") for p in problems)
    assert any(p.startswith("groups.right_arm.home: expected a list") for p in problems)
    assert any(p.startswith("cameras.head.width: expected an integer") for p in problems)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(EmbodimentError, match="file not found"):
        load_embodiment(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups: [unclosed\n")
    with pytest.raises(EmbodimentError, match="not valid YAML"):
        load_embodiment(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(EmbodimentError, match="top level must be a mapping"):
        load_embodiment(scalar)


def test_missing_urdf_is_reported(tmp_path, raw):
    raw["robot_description"] = "urdf/absent.urdf"
    problems = problems_of(tmp_path, raw)
    assert any(p.startswith("robot_description: cannot read URDF") for p in problems)


INF, NAN = float("inf"), float("nan")
# The shipped torso with every per-joint list emptied, so only the empty joint list is wrong.
ZERO_JOINT_TORSO = {
    **yaml.safe_load(CONFIG.read_text())["groups"]["torso"],
    **dict.fromkeys(("joints", "position_limits", "velocity_limits", "acceleration_limits", "home"), []),
}


MALFORMED = [
    # policy_range: two finite numbers, low < high
    (("groups", "left_gripper", "policy_range"), 5, "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), None, "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), ["a", "b"], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), ["0", "1"], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), [0.0, INF], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), [NAN, 1.0], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), [0.0], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), [1.0, 1.0], "groups.left_gripper.policy_range"),
    (("groups", "left_gripper", "policy_range"), [1.0, 0.0], "groups.left_gripper.policy_range"),
    # joint name lists: lists of non-empty strings, and a group needs at least one joint
    (("groups", "left_gripper", "finger_joints"), None, "groups.left_gripper.finger_joints"),
    (("groups", "left_gripper", "finger_joints"), 3, "groups.left_gripper.finger_joints"),
    (("groups", "left_gripper", "finger_joints", 1), "", "groups.left_gripper.finger_joints[1]"),
    (("groups", "torso", "joints", 0), ["torso_joint1"], "groups.torso.joints[0]"),
    (("groups", "torso", "joints", 2), {"a": 1}, "groups.torso.joints[2]"),
    (("groups", "torso", "joints", 3), "", "groups.torso.joints[3]"),
    (("groups", "torso", "joints"), None, "groups.torso.joints"),
    (("groups", "torso"), ZERO_JOINT_TORSO, "groups.torso.joints"),
    # topics: non-empty strings (a list used to crash the duplicate-topic check as unhashable)
    (("groups", "left_arm", "pose_command_topic"), ["x"], "groups.left_arm.pose_command_topic"),
    (("groups", "left_arm", "pose_command_topic"), 5, "groups.left_arm.pose_command_topic"),
    (("groups", "left_arm", "pose_command_topic"), None, "groups.left_arm.pose_command_topic"),
    (("groups", "torso", "feedback_topic"), ["/x"], "groups.torso.feedback_topic"),
    (("groups", "torso", "command_topic"), "", "groups.torso.command_topic"),
    (("cameras", "head", "topic"), {"a": 1}, "cameras.head.topic"),
    (("cameras", "head", "topic"), " ", "cameras.head.topic"),
    # ik_settings: a string path or absent, never silently dropped
    (("groups", "left_arm", "ik_settings"), ["x"], "groups.left_arm.ik_settings"),
    (("groups", "left_arm", "ik_settings"), None, "groups.left_arm.ik_settings"),
    # rates, camera timing and limits: finite and > 0 (nan <= 0 is False)
    (("rates", "control_hz"), NAN, "rates.control_hz"),
    (("rates", "control_hz"), INF, "rates.control_hz"),
    (("rates", "feedback_hz"), NAN, "rates.feedback_hz"),
    (("rates", "feedback_hz"), -INF, "rates.feedback_hz"),
    (("cameras", "head", "rate_hz"), INF, "cameras.head.rate_hz"),
    (("cameras", "head", "rate_hz"), NAN, "cameras.head.rate_hz"),
    (("cameras", "head", "max_age_s"), NAN, "cameras.head.max_age_s"),
    (("cameras", "head", "max_age_s"), INF, "cameras.head.max_age_s"),
    (("cameras", "head", "width"), 10**400, "cameras.head.width"),
    (("groups", "torso", "velocity_limits", 1), NAN, "groups.torso.velocity_limits"),
    (("groups", "torso", "velocity_limits", 1), INF, "groups.torso.velocity_limits"),
    (("groups", "torso", "velocity_limits", 1), 10**400, "groups.torso.velocity_limits"),
    (("groups", "torso", "acceleration_limits", 0), NAN, "groups.torso.acceleration_limits"),
    (("groups", "torso", "position_limits", 2), [NAN, 1.0], "groups.torso.position_limits[2]"),
    (("groups", "torso", "position_limits", 2), [-1.0, INF], "groups.torso.position_limits[2]"),
]
MALFORMED_IDS = [f"{reported}={value!r:.20}" for _, value, reported in MALFORMED]


@pytest.mark.parametrize(("keys", "value", "reported"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed_values_are_reported_with_their_key_path(tmp_path, raw, keys, value, reported):
    target = raw
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    problems = problems_of(tmp_path, raw)
    assert any(p.startswith(reported) for p in problems), problems
