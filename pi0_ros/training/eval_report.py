"""pi0-eval's JSON report, written after every episode.

A 100-seed evaluation runs for about 20 minutes on a small machine; a simulator crash, a Ctrl-C or a restarted
machine would otherwise lose every finished episode with it. The report on disk is therefore always a complete
JSON document (replaced atomically): ``complete`` says whether every seed was run, and ``pi0-eval --resume``
continues a partial one, running only the seeds it lacks, after checking that it was made with the same setup.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

from pi0_ros.training.evaluate import summarize

# What decides an episode's outcome besides its seed: a report made with other values cannot be continued.
SETUP_KEYS = ("backend", "checkpoint", "policy_parameters", "instruction", "layout", "tasks", "success",
              "touch_distance_m", "episode_timeout_s", "hold_s")


def build_report(setup: Dict[str, Any], seeds: Sequence[int], episodes: List[Dict[str, Any]],
                 resumed_episodes: int = 0) -> Dict[str, Any]:
    """The report: ``setup`` (label, SETUP_KEYS, logs), the seeds asked for, the episodes run so far (in seed
    order) with their summary, and whether that is all of them."""
    done = {e["seed"] for e in episodes}
    return {**setup, "seeds": list(seeds), "complete": all(s in done for s in seeds),
            "resumed_episodes": resumed_episodes, "summary": summarize(episodes), "episodes": episodes}


def write_report(path: Path, report: Dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (a reader sees the old file or the new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def finished_episodes(path: Path, setup: Dict[str, Any], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """The episodes of the report at ``path`` whose seed is among ``seeds`` (for ``--resume``); none when there
    is no report yet. Raises ValueError when the report cannot be read or was made with another setup."""
    if not path.exists():
        return []
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        episodes = earlier["episodes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a pi0-eval report that can be resumed ({exc})") from None
    # JSON round trip: compare the setup as it will be stored (tuples become lists).
    current = json.loads(json.dumps({k: setup.get(k) for k in SETUP_KEYS}))
    differing = [k for k in SETUP_KEYS if earlier.get(k) != current[k]]
    if differing:
        raise ValueError(f"{path} was made with another setup ({', '.join(differing)} differ: "
                         + "; ".join(f"{k}: {earlier.get(k)!r} there, {current[k]!r} now" for k in differing)
                         + "); give another --out or the same options")
    wanted = set(seeds)
    return [e for e in episodes if e.get("seed") in wanted]
