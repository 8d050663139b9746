"""Training curves (PNG, matplotlib Agg) and the end-of-run summary."""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Sequence

import numpy as np


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what exists)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def save_curves(history: List[Mapping[str, float]], out_dir: str) -> Dict[str, str]:
    """Write loss.png (training loss, and the held-out loss where measured) and lr.png; returns their paths (none
    where matplotlib is not installed)."""
    try:
        import matplotlib
    except ImportError:
        return {}

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    steps = [h["step"] for h in history]
    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    losses = [h["loss"] for h in history]
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth(losses, max(1, len(losses) // 20)), label="moving average")
    held_out = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if held_out:
        ax.plot([s for s, _ in held_out], [v for _, v in held_out], "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and min(losses + [v for _, v in held_out]) > 0:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths["loss"] = os.path.join(out_dir, "loss.png")
    fig.savefig(paths["loss"], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, [h["lr"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    paths["lr"] = os.path.join(out_dir, "lr.png")
    fig.savefig(paths["lr"], dpi=100)
    plt.close(fig)
    return paths


def format_summary(summary: Mapping[str, object]) -> str:
    """Human-readable block for the end of a run."""
    lines = ["", "=== pi0-train summary ==="]
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        lines.append(f"  {key:<22} {value}")
    return "\n".join(lines)
