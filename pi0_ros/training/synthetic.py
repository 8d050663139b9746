"""A small synthetic demonstration set with a learnable structure (tests, benchmarks, smoke runs).

Each episode reaches a goal: the state moves smoothly from a random start to a goal that is drawn in
the images (a bright square whose position encodes the goal), and the action at each frame is the
next state (absolute joint targets). The task text names which of two behaviours the episode shows
("reach the red square" moves to the goal, "go home" moves to zero), so images, state and language
all matter.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from pi0_ros.training.dataset import EpisodeArrays, InMemoryDataset

TASKS = ("reach the red square", "go home")


def make_episode(rng: np.random.Generator, index: int, length: int, state_dim: int, action_dim: int,
                 image_size: int, cameras: Sequence[str]) -> Tuple[EpisodeArrays, dict]:
    """One episode and its images {camera: uint8 [T, S, S, 3]}."""
    goal_xy = rng.uniform(-1, 1, size=2)
    task = TASKS[index % len(TASKS)]
    goal = np.zeros(state_dim)
    if task == TASKS[0]:
        goal[: min(2, state_dim)] = goal_xy[: min(2, state_dim)]
        goal[2:] = 0.5 * goal_xy[0]
    start = rng.uniform(-1, 1, size=state_dim)
    alpha = 1.0 - np.exp(-np.arange(length + 1) / (length / 3.0))
    traj = start[None] + (goal - start)[None] * alpha[:, None]
    states = traj[:-1]
    actions = np.zeros((length, action_dim))
    actions[:, : min(state_dim, action_dim)] = traj[1:, : min(state_dim, action_dim)]
    images = {}
    for c, cam in enumerate(cameras):
        frames = np.full((length, image_size, image_size, 3), 40 + 30 * c, dtype=np.uint8)
        half = max(1, image_size // 8)
        cx, cy = ((goal_xy + 1) / 2 * (image_size - 2 * half) + half).astype(int)
        frames[:, cy - half:cy + half, cx - half:cx + half] = (230, 30, 30)
        images[cam] = frames
    return EpisodeArrays(index, states, actions, task), images


def make_dataset(num_episodes: int = 8, length: int = 12, state_dim: int = 4, action_dim: int = 4,
                 image_size: int = 28, cameras: Sequence[str] = ("head", "left_wrist", "right_wrist"),
                 seed: int = 0, lengths: Optional[Sequence[int]] = None) -> InMemoryDataset:
    """``num_episodes`` episodes of ``length`` frames (or the given ``lengths``)."""
    rng = np.random.default_rng(seed)
    episodes: List[EpisodeArrays] = []
    images: List[dict] = []
    for i in range(num_episodes):
        ep, im = make_episode(rng, i, int(lengths[i]) if lengths is not None else length, state_dim, action_dim,
                              image_size, cameras)
        episodes.append(ep)
        images.append(im)
    return InMemoryDataset(episodes, images, camera_names=list(cameras), name="synthetic")
