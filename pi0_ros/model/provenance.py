"""A checkpoint's training record (``training.json``, written by pi0-train beside the checkpoint files).

Light on purpose (json only): pi0-eval reads it without importing torch.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional

PROVENANCE_FILE = "training.json"


def read_provenance(ckpt_dir: str | os.PathLike) -> Dict[str, Any]:
    """The checkpoint's training.json (dataset, action space, fps, step, ...), or {} without a readable one."""
    try:
        with open(os.path.join(os.fspath(ckpt_dir), PROVENANCE_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trained_action_space(provenance: Mapping[str, Any]) -> Optional[str]:
    """The action layout a checkpoint was trained on, or None when not recorded."""
    space = provenance.get("action_space")
    return space if isinstance(space, str) and space else None
