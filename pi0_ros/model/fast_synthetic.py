"""Synthetic normalized dual-arm action chunks, for fitting/benchmarking FAST without robot data.

Each chunk is ``float[T, D]`` in the quantile-normalized range [-1, 1]: arm joints follow either
minimum-jerk segments between random waypoints (``max_waypoints`` moves per chunk) or sums of
low-frequency sinusoids (the two kinds of smooth motion teleoperation produces); gripper dimensions
are open/closed (+-1) and switch inside a chunk with probability ``gripper_switch_prob`` -- a step,
the least DCT-friendly part of a real chunk. ``noise_std`` adds white noise on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class SyntheticChunkConfig:
    """Shape and content of synthetic chunks (defaults: 1 s at 50 Hz, 2 x (7 joints + 1 gripper))."""

    horizon: int = 50
    action_dim: int = 16
    gripper_dims: Sequence[int] = (7, 15)
    max_waypoints: int = 2
    gripper_switch_prob: float = 0.25
    max_frequency_hz: float = 1.5
    control_hz: float = 50.0
    noise_std: float = 0.0


def _minimum_jerk(t: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 10 t^3 - 15 t^4 + 6 t^5 on t in [0, 1]."""
    return t**3 * (10.0 - 15.0 * t + 6.0 * t**2)


def _min_jerk_joint(rng: np.random.Generator, horizon: int, max_waypoints: int) -> np.ndarray:
    count = int(rng.integers(1, max_waypoints + 1))
    waypoints = rng.uniform(-0.9, 0.9, size=count + 1)
    # Segment boundaries at random steps; each segment blends between consecutive waypoints.
    bounds = np.sort(rng.choice(np.arange(1, horizon), size=count - 1, replace=False)) if count > 1 else []
    edges = np.concatenate([[0], bounds, [horizon]]).astype(int)
    out = np.empty(horizon)
    for i in range(count):
        lo, hi = edges[i], edges[i + 1]
        last = i == count - 1
        # Inner segments stop one step short of their end waypoint, where the next segment starts.
        s = np.linspace(0.0, 1.0, hi - lo) if last and hi - lo > 1 else np.arange(hi - lo) / (hi - lo)
        out[lo:hi] = waypoints[i] + (waypoints[i + 1] - waypoints[i]) * _minimum_jerk(s)
    return out


def _sinusoid_joint(rng: np.random.Generator, horizon: int, max_hz: float, control_hz: float) -> np.ndarray:
    t = np.arange(horizon) / control_hz
    out = np.full(horizon, rng.uniform(-0.5, 0.5))
    for _ in range(int(rng.integers(1, 4))):
        out += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.1, max_hz) * t + rng.uniform(0, 2 * np.pi))
    return out


def _gripper(rng: np.random.Generator, horizon: int, switch_prob: float) -> np.ndarray:
    # A gripper toggles a few times per episode, so most 1 s chunks hold it constant.
    start = rng.choice([-1.0, 1.0])
    end = -start if rng.random() < switch_prob else start
    switch = int(rng.integers(1, horizon))
    return np.where(np.arange(horizon) < switch, start, end)


def make_chunks(count: int, config: SyntheticChunkConfig, seed: int = 0) -> np.ndarray:
    """``count`` chunks ``float32[count, horizon, action_dim]`` clipped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    chunks = np.empty((count, config.horizon, config.action_dim))
    grippers = set(config.gripper_dims)
    for n in range(count):
        for d in range(config.action_dim):
            if d in grippers:
                chunks[n, :, d] = _gripper(rng, config.horizon, config.gripper_switch_prob)
            elif rng.random() < 0.5:
                chunks[n, :, d] = _min_jerk_joint(rng, config.horizon, config.max_waypoints)
            else:
                chunks[n, :, d] = _sinusoid_joint(rng, config.horizon, config.max_frequency_hz, config.control_hz)
    if config.noise_std > 0:
        chunks += rng.normal(0.0, config.noise_std, size=chunks.shape)
    return np.clip(chunks, -1.0, 1.0).astype(np.float32)
