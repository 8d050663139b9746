"""Frame assembly: the recorded action decodes, through the policy node's codec, to the commanded target."""

from types import SimpleNamespace

import numpy as np
import pytest

from pi0_ros.control.action_codec import ActionDecoder
from pi0_ros.control.kinematics import arm_fk
from pi0_ros.data.features import image_key
from pi0_ros.data.frames import Frame, FrameAssembler, FrameLimits, image_to_stored
from pi0_ros.data.lerobot_dataset import decode_image_bytes
from pi0_ros.embodiment import load_embodiment
from pi0_ros.image_conversion import encode_compressed

EMB = load_embodiment()
GROUPS = ("left_arm", "left_gripper", "right_arm", "right_gripper")


def compressed(rgb, fmt="jpeg"):
    return SimpleNamespace(format=fmt, data=encode_compressed(rgb, fmt))


def feed(assembler, rng, now, sizes):
    measured = {g: EMB.groups[g].home + (rng.normal(0, 0.1, EMB.groups[g].size) if "arm" in g else -30.0)
                for g in GROUPS}
    targets = {g: measured[g] + (rng.normal(0, 0.05, EMB.groups[g].size) if "arm" in g else 12.5) for g in GROUPS}
    for g in GROUPS:
        joints = list(EMB.groups[g].joints)
        order = rng.permutation(len(joints))  # any joint order: matched by name
        assembler.on_feedback(g, [joints[i] for i in order], measured[g][order].tolist(), now)
        assembler.on_command(g, [joints[i] for i in order], targets[g][order].tolist(), now)
    for camera, (h, w) in sizes.items():
        assembler.on_image(camera, compressed(np.full((h, w, 3), 90, np.uint8)), now)
    return measured, targets


@pytest.mark.parametrize("space", ["joint_position", "joint_delta"])
def test_recorded_action_decodes_to_the_commanded_target(space):
    sizes = {"head": (16, 16)}
    assembler = FrameAssembler(EMB, space, sizes)
    rng = np.random.default_rng(0)
    decoder = ActionDecoder(EMB, EMB.action_layout(space))
    for step in range(5):
        measured, targets = feed(assembler, rng, 10.0 + step, sizes)
        frame = assembler.assemble(10.0 + step + 0.01)
        assert isinstance(frame, Frame)
        decoded = decoder.decode(frame.action[None], start=measured)
        for g in GROUPS:
            np.testing.assert_allclose(decoded.targets[g][0], targets[g], atol=1e-5)
        # The state is the policy node's state vector: joints in rad, grippers in policy units.
        np.testing.assert_allclose(frame.state[:7], measured["left_arm"], atol=1e-6)
        np.testing.assert_allclose(frame.state[7], (EMB.groups["left_gripper"].home[0] - 30) / 100, atol=1e-6)
    if space == "joint_delta":
        assert EMB.action_layout(space).delta_mask[:7].all()
        np.testing.assert_allclose(frame.action[:7], targets["left_arm"] - measured["left_arm"], atol=1e-6)


def test_ee_pose_action_is_the_fk_of_the_target():
    sizes = {}
    assembler = FrameAssembler(EMB, "ee_pose", sizes)
    measured, targets = feed(assembler, np.random.default_rng(1), 5.0, sizes)
    frame = assembler.assemble(5.05)
    assert isinstance(frame, Frame)
    fk = arm_fk(EMB, EMB.groups["right_arm"])
    np.testing.assert_allclose(frame.action[8:15], fk.forward(targets["right_arm"]), atol=1e-5)


def test_stale_or_missing_inputs_skip_frames_and_are_counted():
    sizes = {"head": (16, 16)}
    assembler = FrameAssembler(EMB, "joint_position", sizes, FrameLimits(0.2, 0.2, 0.5))
    problems = assembler.assemble(1.0)
    assert "joint_state_missing:left_arm" in problems and "image_missing:head" in problems
    feed(assembler, np.random.default_rng(2), 1.0, sizes)
    assert isinstance(assembler.assemble(1.1), Frame)
    problems = assembler.assemble(1.3)  # feedback and commands 0.3 s old, image still fresh
    assert "joint_state_stale:right_arm" in problems and "command_stale:right_arm" in problems
    assert not any(p.startswith("image") for p in problems)
    assert any(p.startswith("image_stale") for p in assembler.assemble(1.6))
    assert assembler.skipped["joint_state_missing"] == 4 and assembler.skipped["image_stale"] == 1
    assert assembler.frames == 1


def test_images_are_kept_when_sized_and_resized_to_png_otherwise():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, 24:] = (200, 30, 10)
    msg = compressed(rgb, "png")
    kept = image_to_stored(msg, (32, 48), "keep")
    assert kept.data == bytes(msg.data)
    resized = image_to_stored(msg, (16, 24), "keep")
    assert resized.data[:4] == b"\x89PNG"
    np.testing.assert_array_equal(decode_image_bytes(resized.data)[:, 12:], np.broadcast_to((200, 30, 10), (16, 12, 3)))
    raw = SimpleNamespace(encoding="bgr8", width=48, height=32, step=48 * 3, is_bigendian=0,
                          data=np.ascontiguousarray(rgb[..., ::-1]).tobytes())
    np.testing.assert_array_equal(image_to_stored(raw, (32, 48)).rgb, rgb)
    assert image_key("head") == "observation.images.head"


def test_every_frame_stores_the_newest_image_when_camera_messages_are_freed():
    # A 30 Hz camera recorded at 15 fps, each image a new message object that is freed once replaced (as
    # rclpy delivers them): CPython then reuses addresses, so a cache keyed by id() returned old images.
    assembler = FrameAssembler(EMB, "joint_position", {"head": (16, 16)})
    pixels = [encode_compressed(np.full((16, 16, 3), value, np.uint8), "png") for value in range(60)]
    now = 0.0
    for value in range(60):
        now += 1 / 30
        for g in GROUPS:
            joints = list(EMB.groups[g].joints)
            assembler.on_feedback(g, joints, EMB.groups[g].home.tolist(), now)
            assembler.on_command(g, joints, EMB.groups[g].home.tolist(), now)
        assembler.on_image("head", SimpleNamespace(format="png", data=pixels[value]), now)
        if value % 2:
            frame = assembler.assemble(now + 0.001)
            assert decode_image_bytes(frame.images[image_key("head")].data)[0, 0, 0] == value
