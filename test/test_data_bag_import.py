"""rosbag2 import: bags written with rosbags itself (sqlite3 and MCAP) become the recorder's dataset."""

import numpy as np
import pytest

from pi0_ros.control.action_codec import ActionDecoder
from pi0_ros.data.bag_import import import_bags, main
from pi0_ros.data.features import STATE_KEY, image_key
from pi0_ros.data.lerobot_dataset import DatasetReader
from pi0_ros.embodiment import load_embodiment
from pi0_ros.image_conversion import encode_compressed

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

EMB = load_embodiment()
GROUPS = ("left_arm", "left_gripper", "right_arm", "right_gripper")
TYPES = get_typestore(Stores.ROS2_HUMBLE)
SECOND = 1_000_000_000


def trajectory(t):
    """Joint positions at time t: a slow sine around home (grippers closing)."""
    return {g: EMB.groups[g].home + (0.2 * np.sin(t + np.arange(EMB.groups[g].size)) if "arm" in g else -20 * t)
            for g in GROUPS}


def joint_state(names, positions, t_ns):
    header = TYPES.types["std_msgs/msg/Header"](stamp=TYPES.types["builtin_interfaces/msg/Time"](
        sec=t_ns // SECOND, nanosec=t_ns % SECOND), frame_id="")
    return TYPES.types["sensor_msgs/msg/JointState"](header=header, name=list(names),
                                                     position=np.ascontiguousarray(positions, dtype=np.float64),
                                                     velocity=np.zeros(0), effort=np.zeros(0))


def write_bag(path, storage, seconds=1.0, instruction="touch the green cube with the left hand"):
    jpeg = np.frombuffer(encode_compressed(np.full((48, 64, 3), 120, np.uint8), "jpeg"), np.uint8)
    with Writer(path, version=8, storage_plugin=storage) as writer:
        conns = {}
        for g in GROUPS:
            conns[("fb", g)] = writer.add_connection(EMB.groups[g].feedback_topic, "sensor_msgs/msg/JointState",
                                                     typestore=TYPES)
            conns[("cmd", g)] = writer.add_connection(EMB.groups[g].command_topic, "sensor_msgs/msg/JointState",
                                                      typestore=TYPES)
        cam = writer.add_connection(EMB.cameras["head"].topic, "sensor_msgs/msg/CompressedImage", typestore=TYPES)
        text = writer.add_connection("/instruction", "std_msgs/msg/String", typestore=TYPES)
        writer.write(text, 0, TYPES.serialize_cdr(TYPES.types["std_msgs/msg/String"](data=instruction),
                                                  "std_msgs/msg/String"))
        events = [(int(k * SECOND / 100), "fb") for k in range(int(seconds * 100))]
        events += [(int(k * SECOND / 50) + 3_000_000, "cmd") for k in range(int(seconds * 50))]
        events += [(int(k * SECOND / 15) + 1_000_000, "img") for k in range(int(seconds * 15))]
        for t_ns, kind in sorted(events):
            t = t_ns / SECOND
            if kind == "img":
                header = TYPES.types["std_msgs/msg/Header"](
                    stamp=TYPES.types["builtin_interfaces/msg/Time"](sec=0, nanosec=t_ns % SECOND), frame_id="zed")
                msg = TYPES.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=jpeg)
                writer.write(cam, t_ns, TYPES.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
                continue
            values = trajectory(t if kind == "fb" else t + 0.1)  # commands lead the state by 0.1 s
            for g in GROUPS:
                names = list(EMB.groups[g].joints)[::-1]  # reversed order: mapped by name
                msg = joint_state(names, values[g][::-1], t_ns)
                writer.write(conns[(kind, g)], t_ns, TYPES.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_bag_becomes_an_episode_with_the_recorder_mapping(tmp_path, storage):
    bag = tmp_path / "bag"
    write_bag(bag, storage)
    results = import_bags([bag], tmp_path / "ds", action_space="joint_delta", fps=10, image_sizes={"head": (24, 32)})
    assert results[0].episode is not None and results[0].task == "touch the green cube with the left hand"
    reader = DatasetReader(tmp_path / "ds")
    ep = reader.episode(0)
    assert 8 <= len(ep[STATE_KEY]) <= 10
    assert ep[image_key("head")][0].shape == (24, 32, 3)
    decoder = ActionDecoder(EMB, EMB.action_layout("joint_delta"))
    state, action = ep[STATE_KEY][3], ep["action"][3]
    measured = {"left_arm": state[:7], "left_gripper": EMB.groups["left_gripper"].position_limits[0, 1] * state[7:8],
                "right_arm": state[8:15], "right_gripper": 100.0 * state[15:16]}
    decoded = decoder.decode(action[None], start=measured)
    # The frame's target is the latest command (log time <= the frame), i.e. the trajectory 0.1 s ahead.
    frame_time = (3 + 1) * 0.1
    expected = [trajectory(t + 0.1) for t in np.arange(0, 1, 0.02) + 0.003 if t <= frame_time][-1]
    for g in GROUPS:
        np.testing.assert_allclose(decoded.targets[g][0], expected[g], atol=1e-4)


def test_cli_with_explicit_task(tmp_path, capsys):
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3, seconds=0.6)
    code = main([str(bag), "--root", str(tmp_path / "ds"), "--task", "wave", "--fps", "5", "--cameras", "head",
                 "--image-size", "12", "16"])
    assert code == 0 and "episode 0" in capsys.readouterr().out
    assert DatasetReader(tmp_path / "ds").tasks == ["wave"]


@pytest.mark.parametrize("fps", ["0", "-5", "x"])
def test_cli_refuses_a_bad_fps_before_writing(tmp_path, capsys, fps):
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3, seconds=0.5)
    with pytest.raises(SystemExit) as exc:
        main([str(bag), "--root", str(tmp_path / "ds"), "--fps", fps, "--cameras", "head", "--image-size", "4", "4"])
    assert exc.value.code == 2 and "--fps" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_cli_names_an_unknown_camera(tmp_path, capsys):
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3, seconds=0.5)
    with pytest.raises(SystemExit) as exc:
        main([str(bag), "--root", str(tmp_path / "ds"), "--cameras", "nosuch"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "nosuch" in err and "head" in err
    assert not (tmp_path / "ds").exists()


def test_bag_without_robot_topics_is_refused(tmp_path):
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection("/other", "std_msgs/msg/String", typestore=TYPES)
        writer.write(conn, 1, TYPES.serialize_cdr(TYPES.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    with pytest.raises(ValueError, match="no command or feedback topics"):
        import_bags([bag], tmp_path / "ds", task="t", image_sizes={})
