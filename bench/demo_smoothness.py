"""How evenly the demonstrations of a dataset move: a check of the recording graph's timing.

    .venv/bin/python bench/demo_smoothness.py DATASET [DATASET ...] [--episodes N]

The scripted expert moves the named arm along a piecewise-linear path at constant speed, so between the
first frames and the dwell on the cube (frames 2 to 60 % of each episode) the measured joint step per frame
should be nearly constant and the commanded target should lead the measured position. Printed per dataset:
- hold-like frames: the named arm's commanded target within 2 mrad of its measured position (the node held);
- step CV: the median over episodes of std/mean of the per-frame joint step (0 = perfectly even);
- outlier steps: per-frame steps above 2.5x the episode's median (a late frame or a catch-up after a hold).
Demonstrations from perturbed starts (pi0-collect --perturbed-starts) may start close to the cube and move
slowly throughout; count only the nominal ones with ``--episodes`` when they come first.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import numpy as np

from pi0_ros.data.features import STATE_KEY
from pi0_ros.data.lerobot_dataset import DatasetReader
from pi0_ros.embodiment import Layout, load_embodiment


def group_slice(layout: Layout, group: str) -> slice:
    """Where ``group`` sits in a state or action vector."""
    return next(segment.slice for segment in layout.segments if segment.group == group)


def smoothness(root: str, episodes: Optional[int] = None) -> dict:
    """The three measures above for one dataset (joint_position actions), its first ``episodes`` only if given."""
    reader = DatasetReader(root)
    space = reader.info.get("pi0_ros", {}).get("action_space")
    if space != "joint_position":
        raise SystemExit(f"{root}: action space {space!r}; this check reads joint_position datasets")
    embodiment = load_embodiment()
    action_layout = embodiment.action_layout(space)
    holds = frames = outliers = 0
    variation = []
    count = len(reader.episodes) if episodes is None else min(episodes, len(reader.episodes))
    for index in range(count):
        episode = reader.episode(index)
        arm = "left_arm" if "left hand" in episode["task"] else "right_arm"
        state = np.asarray(episode[STATE_KEY])[:, group_slice(embodiment.state_layout, arm)]
        action = np.asarray(episode["action"])[:, group_slice(action_layout, arm)]
        moving = slice(2, int(0.6 * len(state)))
        step = np.linalg.norm(np.diff(state, axis=0), axis=1)[moving]
        lead = np.abs(action - state).max(axis=1)[moving]
        holds += int((lead < 0.002).sum())
        frames += len(lead)
        variation.append(float(step.std() / max(step.mean(), 1e-9)))
        outliers += int((step > 2.5 * np.median(step)).sum())
    return {"dataset": root, "episodes": count, "hold_like_frames": holds, "frames": frames,
            "step_cv_median": round(float(np.median(variation)), 3), "outlier_steps": outliers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--episodes", type=int, default=None, help="the first N episodes of each dataset only")
    args = parser.parse_args()
    for root in args.datasets:
        print(json.dumps(smoothness(root, args.episodes)))


if __name__ == "__main__":
    main()
