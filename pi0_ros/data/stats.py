"""Per-feature statistics in LeRobot's ``stats.json`` form: min, max, mean, std, count and the
quantiles q01, q10, q50, q90, q99 (openpi normalizes with q01/q99).

Vectors get exact statistics over every frame. Images get per-channel statistics of pixel values
scaled to [0, 1] (shape [3, 1, 1], LeRobot's convention) from a sample of frames; episodes are merged
by count-weighted moments, and image quantiles by the count-weighted mean of the episodes' quantiles
(an approximation, as in LeRobot).
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
IMAGE_SAMPLE_SIDE = 64  # pixels are subsampled to about this size first


def vector_stats(values: np.ndarray) -> Dict[str, np.ndarray]:
    """Statistics of ``[N, D]`` values along N."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"need [N>0, D] values, got shape {arr.shape}")
    stats = {"min": arr.min(0), "max": arr.max(0), "mean": arr.mean(0), "std": arr.std(0),
             "count": np.array([arr.shape[0]])}
    for key, q in zip(QUANTILE_KEYS, np.quantile(arr, QUANTILES, axis=0), strict=True):
        stats[key] = q
    return stats


def image_stats(images: Iterable[np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-channel statistics of RGB uint8 ``[H, W, 3]`` images, values in [0, 1], shaped [3, 1, 1]."""
    pixels = []
    for image in images:
        step = max(1, max(image.shape[:2]) // IMAGE_SAMPLE_SIDE)
        pixels.append(np.asarray(image[::step, ::step, :3], dtype=np.float64).reshape(-1, 3) / 255.0)
    if not pixels:
        raise ValueError("no images")
    stats = vector_stats(np.concatenate(pixels))
    out = {k: v.reshape(3, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([len(pixels)])
    return out


def merge_stats(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Combine per-episode statistics of one feature (count-weighted)."""
    if not parts:
        raise ValueError("nothing to merge")
    counts = np.array([float(p["count"][0]) for p in parts])
    weights = counts / counts.sum()
    shape = np.asarray(parts[0]["mean"]).shape
    w = weights.reshape((-1,) + (1,) * len(shape))
    means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
    stds = np.stack([np.asarray(p["std"], dtype=np.float64) for p in parts])
    mean = (w * means).sum(0)
    variance = (w * (stds ** 2 + (means - mean) ** 2)).sum(0)
    merged = {"min": np.min(np.stack([p["min"] for p in parts]), 0),
              "max": np.max(np.stack([p["max"] for p in parts]), 0),
              "mean": mean, "std": np.sqrt(np.maximum(variance, 0.0)),
              "count": np.array([int(counts.sum())])}
    for key in QUANTILE_KEYS:
        merged[key] = (w * np.stack([np.asarray(p[key], dtype=np.float64) for p in parts])).sum(0)
    return merged


def to_json(stats: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, list]]:
    """Nested lists for ``stats.json``."""
    return {feature: {k: np.asarray(v).tolist() for k, v in values.items()} for feature, values in stats.items()}


def from_json(raw: Dict[str, Dict[str, list]]) -> Dict[str, Dict[str, np.ndarray]]:
    """Arrays from ``stats.json``."""
    return {feature: {k: np.asarray(v) for k, v in values.items()} for feature, values in raw.items()}
