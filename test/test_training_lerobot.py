"""pi0-train on a LeRobot v3.0 dataset written by pi0_ros.data's writer: the CLI end to end, bad data."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pi0_ros.data.features import ACTION_KEY, INDEX_KEYS, STATE_KEY, DatasetSpec, image_key
from pi0_ros.data.lerobot_dataset import DATA_PATH, DatasetReader, DatasetWriter, EncodedImage, chunk_file
from pi0_ros.model.policy import Pi0Policy
from pi0_ros.training.cli import main as train_main
from pi0_ros.training.synthetic import make_dataset


def write_dataset(root, nan_episode=None):
    spec = DatasetSpec(fps=10, robot_type="test", action_space="joint_position", features={
        image_key("head"): {"dtype": "image", "shape": [28, 28, 3], "names": ["height", "width", "channel"]},
        STATE_KEY: {"dtype": "float32", "shape": [4], "names": None},
        ACTION_KEY: {"dtype": "float32", "shape": [4], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in INDEX_KEYS[1:]},
    })
    ds = make_dataset(num_episodes=3, length=6, cameras=("head",), seed=4)
    writer = DatasetWriter(root, spec)
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        writer.start_episode(ep.task)
        for t in range(ep.length):
            action = ep.actions[t].copy()
            png = cv2.imencode(".png", ds.images(i, t)["head"][:, :, ::-1])[1].tobytes()
            writer.add_frame(ep.states[t], action, {image_key("head"): EncodedImage(png)})
        writer.finish_episode()
    writer.close()
    if nan_episode is not None:  # the writer refuses NaN: corrupt the file as a broken copy would be
        path = os.path.join(root, DATA_PATH.format(**chunk_file(nan_episode)))
        table = pq.read_table(path)
        actions = np.asarray(table.column(ACTION_KEY).to_pylist(), dtype=np.float32)
        actions[2, 1] = np.nan
        column = pa.array(list(actions), type=table.schema.field(ACTION_KEY).type)
        pq.write_table(table.set_column(table.schema.get_field_index(ACTION_KEY), ACTION_KEY, column), path)
    return ds


def test_cli_trains_on_a_team_dataset_and_the_policy_loads_it(tmp_path):
    root, out = str(tmp_path / "data"), str(tmp_path / "run")
    ds = write_dataset(root)
    code = train_main(["--dataset", root, "--out", out, "--config", "pi0_test", "--steps", "3", "--batch-size", "2",
                       "--warmup", "1", "--save-every", "2", "--cameras", "head,,", "--delta-dims", "0-2",
                       "--no-progress"])
    assert code == 0
    ckpt = os.path.join(out, "last")
    assert os.path.basename(os.path.realpath(ckpt)) == "step_000003"
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000002", "step_000003"]
    assert {"loss.png", "lr.png", "metrics.jsonl", "summary.json", "norm_stats.json"} <= set(os.listdir(out))
    with open(os.path.join(ckpt, "training.json")) as f:
        assert json.load(f)["action_space"] == "joint_position"
    policy = Pi0Policy.from_checkpoint(ckpt, device="cpu")
    ep = ds.episode(0)
    result = policy.infer({"images": {"head": ds.images(0, 0)["head"]}, "state": ep.states[0], "prompt": ep.task})
    assert result["actions"].shape == (6, 4)
    # Resume from the run directory: continues at step 3 up to the new total.
    assert train_main(["--resume", out, "--steps", "4", "--no-progress"]) == 0
    assert os.path.basename(os.path.realpath(ckpt)) == "step_000004"


def test_cli_reports_nan_in_a_team_dataset(tmp_path, capsys):
    root = str(tmp_path / "data")
    write_dataset(root, nan_episode=1)
    code = train_main(["--dataset", root, "--out", str(tmp_path / "run"), "--config", "pi0_test", "--steps", "2",
                       "--cameras", "head,,", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "episode 1: 1 NaN/inf value(s) in 'action' (first at frame 2, dim 1)" in err
    assert not os.path.exists(tmp_path / "run")


def test_lerobot_packed_episodes_are_refused_not_read_as_one_episode(tmp_path, capsys):
    # LeRobot's own v3.0 writer packs several episodes into one data file and one metadata file; reading the
    # metadata's first row would train on all of them as one episode, chunks crossing episode boundaries.
    root = tmp_path / "data"
    write_dataset(str(root))
    for kind in ("data", "meta/episodes"):
        files = sorted((root / kind / "chunk-000").glob("*.parquet"))
        packed = pa.concat_tables([pq.read_table(f) for f in files])
        for extra in files[1:]:
            extra.unlink()
        pq.write_table(packed, files[0])
    code = train_main(["--dataset", str(root), "--out", str(tmp_path / "run"), "--config", "pi0_test", "--steps", "2",
                       "--cameras", "head,,", "--no-progress"])
    assert code == 2
    assert "3 episodes in one metadata file" in capsys.readouterr().err


def test_a_damaged_image_past_frame_zero_is_reported_with_its_place(tmp_path, capsys):
    # The writer decodes only a sample of frames: a truncated image can reach training. Preloading finds it
    # before the first step and says where it is.
    root = str(tmp_path / "data")
    ds = write_dataset(root)
    writer = DatasetWriter(root, DatasetReader(root).spec)
    writer.start_episode(ds.episode(0).task)
    for t in range(6):
        png = cv2.imencode(".png", ds.images(0, t)["head"][:, :, ::-1])[1].tobytes()
        writer.add_frame(ds.episode(0).states[t], ds.episode(0).actions[t],
                         {image_key("head"): EncodedImage(png[:40] if t == 3 else png)})
    writer.finish_episode()
    writer.close()
    code = train_main(["--dataset", root, "--out", str(tmp_path / "run"), "--config", "pi0_test", "--steps", "2",
                       "--cameras", "head,,", "--cache-images", "--no-progress"])
    assert code == 2
    assert "episode 3, frame 3, camera 'head'" in capsys.readouterr().err


def test_preloaded_images_equal_the_decoded_ones_and_training_uses_them(tmp_path):
    from pi0_ros.training.dataset import open_dataset

    root, out = str(tmp_path / "data"), str(tmp_path / "run")
    ds = write_dataset(root)
    lazy, cached = open_dataset(root), open_dataset(root)
    held = cached.preload_images()
    assert held == sum(ds.episode(i).length for i in range(ds.num_episodes)) * 28 * 28 * 3
    for i in range(ds.num_episodes):
        for t in (0, ds.episode(i).length - 1):
            np.testing.assert_array_equal(cached.images(i, t)["head"], lazy.images(i, t)["head"])
            np.testing.assert_array_equal(cached.images(i, t)["head"], ds.images(i, t)["head"])  # PNG: lossless
    code = train_main(["--dataset", root, "--out", out, "--config", "pi0_test", "--steps", "2", "--batch-size", "2",
                       "--warmup", "1", "--cameras", "head,,", "--cache-images", "--num-workers", "1",
                       "--no-progress"])
    assert code == 0 and os.path.isfile(os.path.join(out, "last", "model.safetensors"))
