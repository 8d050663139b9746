"""Normalization statistics of a dataset in openpi's ``norm_stats.json`` format.

``state``: over every frame. ``actions``: over every non-padded entry of every training chunk AFTER
the delta conversion, i.e. over exactly the quantity the model is trained to output (openpi computes
its stats after its data transforms too). mean / std (population) / q01 / q99 per dimension; the
quantiles are exact (``np.quantile``) over at most ``max_chunks`` chunk starts, chosen evenly.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from pi0_ros.model.action_transforms import to_delta
from pi0_ros.model.normalization import NormStats
from pi0_ros.training.chunks import chunk_at
from pi0_ros.training.dataset import EpisodeArrays


def describe(values: np.ndarray) -> NormStats:
    """mean, std, q01, q99 over axis 0 of [N, D]."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"need [N > 0, D] values for statistics, got {values.shape}")
    q01, q99 = np.quantile(values, [0.01, 0.99], axis=0)
    return NormStats(mean=values.mean(axis=0), std=values.std(axis=0), q01=q01, q99=q99)


def training_action_values(episodes: Sequence[EpisodeArrays], horizon: int, delta_mask: np.ndarray,
                           max_chunks: int = 20000) -> np.ndarray:
    """Every non-padded action entry the model is trained on (delta dims relative to the chunk start)."""
    starts = [(e, t) for e, ep in enumerate(episodes) for t in range(ep.length)]
    if len(starts) > max_chunks:
        pick = np.linspace(0, len(starts) - 1, max_chunks).round().astype(int)
        starts = [starts[i] for i in pick]
    rows: List[np.ndarray] = []
    for e, t in starts:
        ep = episodes[e]
        chunk, is_pad = chunk_at(ep.actions, t, horizon)
        chunk = to_delta(chunk, ep.states[t], delta_mask)
        rows.append(chunk[~is_pad])
    return np.concatenate(rows, axis=0)


def compute_norm_stats(episodes: Sequence[EpisodeArrays], horizon: int, delta_mask: Sequence[bool],
                       max_chunks: int = 20000) -> Dict[str, NormStats]:
    """``{"state": ..., "actions": ...}`` ready for ``save_norm_stats``."""
    states = np.concatenate([ep.states for ep in episodes], axis=0)
    mask = np.asarray(delta_mask, dtype=bool)
    actions = training_action_values(episodes, horizon, mask, max_chunks)
    return {"state": describe(states), "actions": describe(actions)}
