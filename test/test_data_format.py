"""LeRobot v3.0 dataset writer/reader: round trip, statistics, atomic commits and crash recovery."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pi0_ros.data.features import ACTION_KEY, STATE_KEY, image_key, layout_names, make_spec
from pi0_ros.data.lerobot_dataset import (
    DATA_PATH,
    EPISODES_PATH,
    INFO_PATH,
    RECORDING_DIR,
    STATS_PATH,
    DatasetError,
    DatasetReader,
    DatasetWriter,
    EncodedImage,
    chunk_file,
)
from pi0_ros.embodiment import load_embodiment

EMB = load_embodiment()
SIZES = {"head": (24, 32), "left_wrist": (24, 32)}
REPO = Path(__file__).resolve().parents[1]


def png(rgb):
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return EncodedImage(data.tobytes(), rgb)


def random_frames(rng, n):
    for _ in range(n):
        images = {image_key(c): png(rng.integers(0, 256, (*SIZES[c], 3), dtype=np.uint8)) for c in SIZES}
        yield rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32), images


def write_episodes(root, lengths, tasks, seed=0, action_space="joint_delta"):
    spec = make_spec(EMB, action_space, 10, SIZES)
    writer = DatasetWriter(root, spec)
    rng = np.random.default_rng(seed)
    written = []
    for length, task in zip(lengths, tasks, strict=True):
        writer.start_episode(task)
        frames = list(random_frames(rng, length))
        for state, action, images in frames:
            writer.add_frame(state, action, images)
        writer.finish_episode()
        written.append(frames)
    return writer, written


def test_round_trip_and_layout(tmp_path):
    tasks = ["touch the red cube with the left hand", "touch the blue cube with the right hand",
             "touch the red cube with the left hand"]
    _, written = write_episodes(tmp_path, [5, 17, 3], tasks)
    reader = DatasetReader(tmp_path)
    info = json.loads((tmp_path / INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 25, 2)
    assert info["features"][STATE_KEY]["names"] == layout_names(EMB, EMB.state_layout)
    assert info["features"][STATE_KEY]["names"][:8] == [*EMB.groups["left_arm"].joints, "left_gripper"]
    assert info["features"][ACTION_KEY]["names"][0] == "left_arm_joint1.delta"
    assert info["features"][image_key("head")]["shape"] == [24, 32, 3]
    assert reader.tasks == tasks[:2]
    assert [r.tasks[0] for r in reader.episodes] == tasks
    start = 0
    for i, frames in enumerate(written):
        ep = reader.episode(i)
        np.testing.assert_array_equal(ep[STATE_KEY], np.stack([f[0] for f in frames]))
        np.testing.assert_array_equal(ep[ACTION_KEY], np.stack([f[1] for f in frames]))
        for camera in SIZES:
            for got, frame in zip(ep[image_key(camera)], frames, strict=True):
                np.testing.assert_array_equal(got, frame[2][image_key(camera)].rgb)
        np.testing.assert_array_equal(ep["frame_index"], np.arange(len(frames)))
        np.testing.assert_array_equal(ep["index"], start + np.arange(len(frames)))
        np.testing.assert_allclose(ep["timestamp"], np.arange(len(frames)) / 10, rtol=1e-6)
        assert set(ep["episode_index"]) == {i}
        assert set(ep["task_index"]) == {reader.tasks.index(tasks[i])}
        start += len(frames)
    for ep in range(3):
        assert (tmp_path / DATA_PATH.format(**chunk_file(ep))).exists()


def test_statistics_match_numpy(tmp_path):
    _, written = write_episodes(tmp_path, [30, 11], ["a", "b"], seed=3)
    stats = DatasetReader(tmp_path).stats
    actions = np.concatenate([np.stack([f[1] for f in frames]) for frames in written]).astype(np.float64)
    got = stats[ACTION_KEY]
    np.testing.assert_allclose(got["mean"], actions.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["std"], actions.std(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["min"], actions.min(0))
    np.testing.assert_allclose(got["max"], actions.max(0))
    np.testing.assert_allclose(got["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(got["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
    assert got["count"].tolist() == [41]
    image = stats[image_key("head")]
    assert image["mean"].shape == (3, 1, 1) and image["q01"].shape == (3, 1, 1)
    assert np.all((image["min"] >= 0) & (image["max"] <= 1)) and np.all(abs(image["mean"] - 0.5) < 0.05)
    assert stats["frame_index"]["max"].tolist() == [29]


def test_discard_and_empty_episode_leave_nothing(tmp_path):
    writer, _ = write_episodes(tmp_path, [4], ["keep"])
    writer.start_episode("drop me")
    for state, action, images in random_frames(np.random.default_rng(1), 6):
        writer.add_frame(state, action, images)
    writer.discard_episode()
    writer.start_episode("empty")
    with pytest.raises(DatasetError, match="at least one frame"):
        writer.finish_episode()
    reader = DatasetReader(tmp_path)
    assert [r.length for r in reader.episodes] == [4] and reader.tasks == ["keep"]
    assert not any((tmp_path / RECORDING_DIR).iterdir())
    assert len(list((tmp_path / "data").glob("*/*.parquet"))) == 1


@pytest.mark.parametrize("fps", [0, -5, 2.5, float("inf"), float("nan")])
def test_make_spec_refuses_a_bad_fps(fps):
    with pytest.raises(ValueError, match="fps"):
        make_spec(EMB, "joint_position", fps, SIZES)


def test_bad_frames_and_spec_mismatch_are_refused(tmp_path):
    writer, _ = write_episodes(tmp_path, [2], ["t"])
    writer.start_episode("t")
    state, action, images = next(random_frames(np.random.default_rng(2), 1))
    with pytest.raises(ValueError, match="finite"):
        writer.add_frame(np.full(16, np.nan), action, images)
    with pytest.raises(ValueError, match="lacks images"):
        writer.add_frame(state, action, {})
    with pytest.raises(DatasetError, match="other features"):
        DatasetWriter(tmp_path, make_spec(EMB, "joint_position", 10, SIZES))


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {test_dir!r})
    from test_data_format import write_episodes, random_frames
    writer, _ = write_episodes(sys.argv[1], [3, 4], ["first", "second"])
    writer.start_episode("never finished")
    for i, (state, action, images) in enumerate(random_frames(np.random.default_rng(9), 40)):
        writer.add_frame(state, action, images)
        if i == 35:
            print("MID_EPISODE", flush=True)
    time.sleep(60)
""")


def test_sigkill_mid_episode_keeps_dataset_loadable_and_recovers(tmp_path):
    root = tmp_path / "ds"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(test_dir=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "MID_EPISODE" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "writer process exited early"
        assert "MID_EPISODE" in line
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert any((root / RECORDING_DIR).iterdir()), "the killed writer should have left a partial episode"
    # Readers see exactly the committed episodes, without any repair.
    reader = DatasetReader(root)
    assert [r.length for r in reader.episodes] == [3, 4] and reader.tasks == ["first", "second"]
    assert json.loads((root / INFO_PATH).read_text())["total_frames"] == 7
    assert len(list((root / "data").glob("*/*.parquet"))) == 2
    # A new writer drops the leftovers and carries on.
    writer = DatasetWriter(root, make_spec(EMB, "joint_delta", 10, SIZES))
    assert writer.recovery.dropped_partial and not writer.recovery.rewrote_meta
    assert not (root / RECORDING_DIR).exists() or not any((root / RECORDING_DIR).iterdir())
    writer.start_episode("third")
    for state, action, images in random_frames(np.random.default_rng(4), 2):
        writer.add_frame(state, action, images)
    record = writer.finish_episode()
    assert (record.episode_index, record.from_index, record.to_index) == (2, 7, 9)
    assert DatasetReader(root).num_frames == 9


def test_repair_after_crash_between_commit_steps(tmp_path):
    write_episodes(tmp_path, [3, 2], ["a", "b"])
    # A crash after the data file's rename but before its episode metadata: an orphan data file.
    orphan = tmp_path / DATA_PATH.format(**chunk_file(2))
    orphan.write_bytes((tmp_path / DATA_PATH.format(**chunk_file(1))).read_bytes())
    # A crash after the episode metadata but before info.json / stats.json: stale totals.
    info = json.loads((tmp_path / INFO_PATH).read_text())
    info["total_episodes"], info["total_frames"] = 1, 3
    (tmp_path / INFO_PATH).write_text(json.dumps(info))
    (tmp_path / STATS_PATH).unlink()
    (tmp_path / "meta" / "info.json.tmp").write_text("{half")
    writer = DatasetWriter(tmp_path, make_spec(EMB, "joint_delta", 10, SIZES))
    report = writer.recovery
    assert report.rewrote_meta and not report.dropped_partial
    assert sorted(report.removed_files) == ["data/chunk-000/file-002.parquet", "meta/info.json.tmp"]
    info = json.loads((tmp_path / INFO_PATH).read_text())
    assert (info["total_episodes"], info["total_frames"]) == (2, 5)
    assert DatasetReader(tmp_path).stats[STATE_KEY]["count"].tolist() == [5]


def test_damaged_metadata_is_a_dataset_error_naming_the_file(tmp_path):
    write_episodes(tmp_path, [3, 2], ["a", "b"])
    info = tmp_path / INFO_PATH
    text = info.read_text()
    info.write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match="info.json"):
        DatasetReader(tmp_path)
    info.write_text(text)
    row = tmp_path / EPISODES_PATH.format(**chunk_file(1))
    row.write_bytes(row.read_bytes()[:40])
    with pytest.raises(DatasetError, match="file-001.parquet"):
        DatasetReader(tmp_path)


def test_reader_refuses_info_claiming_episodes_that_are_missing(tmp_path):
    write_episodes(tmp_path, [3, 2], ["a", "b"])
    (tmp_path / EPISODES_PATH.format(**chunk_file(1))).unlink()
    with pytest.raises(DatasetError, match="2 episodes / 5 frames, but only 1 episodes / 3 frames"):
        DatasetReader(tmp_path)
