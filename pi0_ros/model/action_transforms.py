"""State/action padding to the model width and per-dimension delta <-> absolute conversion.

Delta dims (usually joints) are trained relative to the state at the chunk start; absolute dims
(usually grippers) are not. Action dim i pairs with state dim i (openpi's convention), so every
delta dim must have a state dim.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pad_to(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad the last axis up to ``width``; a longer input is an error (never silently cut)."""
    if x.shape[-1] > width:
        raise ValueError(f"{x.shape[-1]} dims do not fit the model width {width}")
    pad = [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])]
    return np.pad(x, pad)


def check_delta_mask(delta_mask: Sequence[bool], action_dim: int, state_dim: int) -> np.ndarray:
    """Validate a per-action-dim delta mask against the dims; returns it as a bool array."""
    mask = np.asarray(delta_mask, dtype=bool).reshape(-1)
    if mask.shape[0] != action_dim:
        raise ValueError(f"delta mask has {mask.shape[0]} entries for {action_dim} action dims")
    if mask[state_dim:].any():
        raise ValueError(f"delta action dims beyond the state's {state_dim} dims have no reference")
    return mask


def to_absolute(actions: np.ndarray, state: np.ndarray, delta_mask: np.ndarray) -> np.ndarray:
    """actions [..., H, D] with delta dims relative to ``state`` [..., S] -> absolute actions."""
    dims = delta_mask.shape[0]
    offset = np.where(delta_mask, state[..., :dims], 0.0)[..., None, :]
    return (actions + offset).astype(np.float32)


def to_delta(actions: np.ndarray, state: np.ndarray, delta_mask: np.ndarray) -> np.ndarray:
    """Inverse of ``to_absolute`` (for building training targets)."""
    dims = delta_mask.shape[0]
    offset = np.where(delta_mask, state[..., :dims], 0.0)[..., None, :]
    return (actions - offset).astype(np.float32)
