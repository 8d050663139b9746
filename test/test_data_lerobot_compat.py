"""Our datasets load in LeRobot's own ``LeRobotDataset`` (frames compared value by value).

LeRobot pulls torch, torchvision and HF datasets, so it is not a project dependency: point
``PI0_LEROBOT_PYTHON`` at an interpreter that has it (e.g. a separate venv) to run this check.
"""

import json
import os
import subprocess
import textwrap

import numpy as np
import pytest
from test_data_format import write_episodes

LEROBOT_PYTHON = os.environ.get("PI0_LEROBOT_PYTHON")
pytestmark = pytest.mark.skipif(not LEROBOT_PYTHON, reason="PI0_LEROBOT_PYTHON (a Python with lerobot) not set")

LOAD = textwrap.dedent("""
    import json, sys
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    ds = LeRobotDataset("local/pi0_ros_check", root=sys.argv[1], delta_timestamps={"action": [0.0, 0.1, 0.2]})
    out = {"version": lerobot.__version__, "len": len(ds), "episodes": ds.num_episodes, "frames": []}
    for i in (0, 4, len(ds) - 1):
        item = ds[i]
        out["frames"].append({"state": item["observation.state"].tolist(), "action": item["action"].tolist(),
                              "head": (item["observation.images.head"] * 255).round().int().tolist(),
                              "task": item["task"], "index": int(item["index"])})
    out["q99"] = ds.meta.stats["action"]["q99"].tolist()
    print(json.dumps(out))
""")


def test_lerobot_loads_our_dataset(tmp_path):
    _, written = write_episodes(tmp_path, [6, 9], ["first task", "second task"])
    proc = subprocess.run([LEROBOT_PYTHON, "-c", LOAD, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["len"], out["episodes"]) == (15, 2)
    flat = [f for frames in written for f in frames]
    for got, i in zip(out["frames"], (0, 4, 14), strict=True):
        state, action, images = flat[i]
        assert got["index"] == i
        np.testing.assert_allclose(got["state"], state, rtol=1e-6)
        # delta_timestamps: the action chunk of the frame, padded with the episode's last action.
        ep_end = 6 if i < 6 else 15
        chunk = [flat[min(i + k, ep_end - 1)][1] for k in range(3)]
        np.testing.assert_allclose(got["action"], chunk, rtol=1e-6)
        np.testing.assert_array_equal(np.transpose(np.asarray(got["head"]), (1, 2, 0)),
                                      images["observation.images.head"].rgb)
        assert got["task"] == ("first task" if i < 6 else "second task")
    actions = np.stack([f[1] for f in flat]).astype(np.float64)
    np.testing.assert_allclose(out["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-5)
    print(json.dumps({"lerobot": out["version"]}))
