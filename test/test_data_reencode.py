"""Re-encoding a dataset's images: smaller files at lower quality, the same frames (to JPEG precision),
everything else equal; a subset of the first episodes; bad arguments refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_training_lerobot import write_dataset

from pi0_ros.data.reencode import main as reencode_main
from pi0_ros.data.reencode import reencode_dataset
from pi0_ros.training.dataset import open_dataset


def test_reencoded_copy_is_smaller_and_holds_the_same_frames(tmp_path):
    write_dataset(tmp_path / "src")
    before, fine = reencode_dataset(tmp_path / "src", tmp_path / "fine", quality=95)
    again, after = reencode_dataset(tmp_path / "src", tmp_path / "dst", quality=30)
    assert before == again and 0 < after < fine
    src, dst = open_dataset(tmp_path / "src"), open_dataset(tmp_path / "dst")
    assert dst.num_episodes == src.num_episodes and dst.camera_names == src.camera_names
    for i in range(src.num_episodes):
        a, b = src.episode(i), dst.episode(i)
        assert a.task == b.task
        np.testing.assert_array_equal(a.states, b.states)
        np.testing.assert_array_equal(a.actions, b.actions)
        for t in range(a.length):
            x, y = src.images(i, t)["head"], dst.images(i, t)["head"]
            assert x.shape == y.shape
            # JPEG is lossy but close; the copy is not the same bytes decoded again.
            assert 0 < np.abs(x.astype(int) - y.astype(int)).mean() < 20


def test_reencode_refuses_what_it_cannot_do(tmp_path, capsys):
    write_dataset(tmp_path / "src")
    with pytest.raises(ValueError):
        reencode_dataset(tmp_path / "src", tmp_path / "q0", quality=0)
    assert reencode_main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    (tmp_path / "taken").mkdir()
    assert reencode_main([str(tmp_path / "src"), str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err


def test_first_episodes_copied_with_their_bytes_kept(tmp_path):
    write_dataset(tmp_path / "src")
    before, after = reencode_dataset(tmp_path / "src", tmp_path / "dst", quality=None, episodes=2)
    assert before == after > 0
    src, dst = open_dataset(tmp_path / "src"), open_dataset(tmp_path / "dst")
    assert src.num_episodes == 3 and dst.num_episodes == 2
    info = json.loads((tmp_path / "dst" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == sum(dst.episode(i).length for i in range(2))
    for i in range(2):
        np.testing.assert_array_equal(src.episode(i).actions, dst.episode(i).actions)
        np.testing.assert_array_equal(src.images(i, 0)["head"], dst.images(i, 0)["head"])
    with pytest.raises(ValueError):
        reencode_dataset(tmp_path / "src", tmp_path / "none", quality=None, episodes=0)


def test_interrupted_copy_leaves_no_destination_and_a_rerun_works(tmp_path, monkeypatch):
    import pi0_ros.data.reencode as reencode

    write_dataset(tmp_path / "src")
    real_copy = reencode.shutil.copy2

    def interrupted(src, dst, *args, **kwargs):
        if "meta/episodes" in str(src) and "file-001" in str(src):
            raise KeyboardInterrupt
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(reencode.shutil, "copy2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reencode_dataset(tmp_path / "src", tmp_path / "dst", quality=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    monkeypatch.setattr(reencode.shutil, "copy2", real_copy)
    reencode_dataset(tmp_path / "src", tmp_path / "dst", quality=60)
    assert open_dataset(tmp_path / "dst").num_episodes == open_dataset(tmp_path / "src").num_episodes
