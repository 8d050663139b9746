"""openpi ``norm_stats.json`` and the two normalizations pi0-family models use.

z-score (pi0): (x - mean) / (std + 1e-6). Quantile (pi0-FAST, pi0.5): (x - q01) / (q99 - q01 + 1e-6) * 2 - 1.
Normalization happens on the robot's real dimensions, before padding to the model width; padded
dimensions are never touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional

import numpy as np

EPS = 1e-6
MODES = ("zscore", "quantile")


@dataclasses.dataclass
class NormStats:
    """Per-dimension statistics of one quantity (state or actions)."""

    mean: np.ndarray
    std: np.ndarray
    q01: Optional[np.ndarray] = None
    q99: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, np.asarray(value, dtype=np.float64).reshape(-1))
        n = self.mean.shape[0]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (value.shape[0] != n or not np.isfinite(value).all()):
                raise ValueError(f"norm stat {f.name!r} must be {n} finite numbers")
        if (self.std < 0).any():
            raise ValueError("norm stat 'std' must be non-negative")
        # Swapped quantiles would flip the sign of every normalized value and action, with finite output.
        if self.q01 is not None and self.q99 is not None and (self.q01 > self.q99).any():
            dims = np.flatnonzero(self.q01 > self.q99).tolist()
            raise ValueError(f"norm stat 'q01' exceeds 'q99' in dims {dims}")

    @property
    def dim(self) -> int:
        """Number of dimensions described."""
        return self.mean.shape[0]

    def to_json(self) -> Dict[str, list]:
        """openpi's JSON form (absent quantiles omitted)."""
        return {f.name: getattr(self, f.name).tolist() for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def identity(cls, dim: int) -> "NormStats":
        """Stats that leave values (almost) unchanged: mean 0, std 1, quantiles -1 / 1."""
        return cls(mean=np.zeros(dim), std=np.ones(dim), q01=-np.ones(dim), q99=np.ones(dim))


def _check(x: np.ndarray, stats: NormStats, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown normalization {mode!r}; known: {MODES}")
    if x.shape[-1] != stats.dim:
        raise ValueError(f"expected {stats.dim} dims to normalize, got {x.shape[-1]}")
    if mode == "quantile" and (stats.q01 is None or stats.q99 is None):
        raise ValueError("quantile normalization needs q01 and q99 in the norm stats")


def normalize(x: np.ndarray, stats: NormStats, mode: str) -> np.ndarray:
    """Robot units -> normalized (float32), over the last axis."""
    _check(x, stats, mode)
    if mode == "zscore":
        out = (x - stats.mean) / (stats.std + EPS)
    else:
        out = (x - stats.q01) / (stats.q99 - stats.q01 + EPS) * 2.0 - 1.0
    return out.astype(np.float32)


def unnormalize(x: np.ndarray, stats: NormStats, mode: str) -> np.ndarray:
    """Normalized -> robot units (float32), the exact inverse of ``normalize``."""
    _check(x, stats, mode)
    if mode == "zscore":
        out = x * (stats.std + EPS) + stats.mean
    else:
        out = (x + 1.0) / 2.0 * (stats.q99 - stats.q01 + EPS) + stats.q01
    return out.astype(np.float32)


def load_norm_stats(path: str | os.PathLike) -> Dict[str, NormStats]:
    """Read openpi's ``{"norm_stats": {"state": {...}, "actions": {...}}}`` (extra keys are kept)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if "norm_stats" not in data or not isinstance(data["norm_stats"], dict):
        raise ValueError(f"{path}: no 'norm_stats' object")
    out = {}
    for key, value in data["norm_stats"].items():
        if not isinstance(value, dict):
            raise ValueError(f"{path}: norm stats for {key!r} must be an object, got {type(value).__name__}")
        missing = [name for name in ("mean", "std") if value.get(name) is None]
        if missing:
            raise ValueError(f"{path}: norm stats for {key!r} lack {' and '.join(missing)}")
        try:
            out[key] = NormStats(**{k: value.get(k) for k in ("mean", "std", "q01", "q99")})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad norm stats for {key!r}: {err}") from err
    return out


def save_norm_stats(path: str | os.PathLike, stats: Dict[str, NormStats]) -> None:
    """Write openpi's layout."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"norm_stats": {k: v.to_json() for k, v in stats.items()}}, f, indent=2)
