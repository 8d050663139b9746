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
from typing import Any, Dict, List, Sequence, Tuple

from pi0_ros.training.evaluate import summarize

# What summarize() and the plots read from every episode.
REQUIRED_EPISODE_KEYS = frozenset({"seed", "success", "reset_ok", "faults", "time_to_success_s"})

# What decides an episode's outcome besides its seed: a report made with other values cannot be continued.
# (The checkpoint is compared by its path: one retrained into the same directory is not told apart.)
SETUP_KEYS = ("backend", "checkpoint", "policy_parameters", "instruction", "layout", "tasks", "success",
              "touch_distance_m", "episode_timeout_s", "hold_s", "feedback_hz", "sim_params")


def build_report(setup: Dict[str, Any], seeds: Sequence[int], episodes: List[Dict[str, Any]],
                 resumed_episodes: int = 0) -> Dict[str, Any]:
    """The report: ``setup`` (label, SETUP_KEYS, logs), the seeds asked for, the episodes run so far (in seed
    order) with their summary, and whether that is all of them."""
    done = {e["seed"] for e in episodes}
    return {**setup, "seeds": list(seeds), "complete": all(s in done for s in seeds),
            "resumed_episodes": resumed_episodes, "summary": summarize(episodes), "episodes": episodes}


def write_report(path: Path, report: Dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (a reader sees the old file or the new one, never a part) and
    durably (on disk before it replaces the old one, so that a power cut leaves one of the two)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # as an ordinary file (mkstemp makes it private)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def finished_episodes(path: Path, setup: Dict[str, Any],
                      seeds: Sequence[int]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """For ``--resume``: the episodes of the report at ``path`` (none when there is no report yet) and the log
    folders of the runs that made them. Raises ValueError when the file is not a report, was made with another
    setup, or holds seeds that ``seeds`` leaves out (rewriting it would drop them)."""
    if not path.exists():
        return [], []
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        episodes = earlier["episodes"]
        if not (isinstance(episodes, list)
                and all(isinstance(e, dict) and REQUIRED_EPISODE_KEYS <= e.keys() for e in episodes)):
            raise ValueError(f"'episodes' is not a list of episodes with {sorted(REQUIRED_EPISODE_KEYS)}")
        logs = list(earlier.get("earlier_logs") or []) + ([earlier["logs"]] if earlier.get("logs") else [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a pi0-eval report that can be resumed ({exc})") from None
    # Compared as stored (JSON, sorted keys): True, 1 and 1.0 are different ROS parameter values.
    as_stored = {k: json.dumps(earlier.get(k), sort_keys=True) for k in SETUP_KEYS}
    differing = [k for k in SETUP_KEYS if as_stored[k] != json.dumps(setup.get(k), sort_keys=True)]
    if differing:
        raise ValueError(f"{path} was made with another setup ({', '.join(differing)} differ: "
                         + "; ".join(f"{k}: {earlier.get(k)!r} there, {setup.get(k)!r} now" for k in differing)
                         + "); give another --out or the same options")
    left_out = sorted({e["seed"] for e in episodes} - set(seeds))
    if left_out:
        raise ValueError(f"{path} holds seeds that --seeds leaves out ({left_out[:10]}"
                         f"{' ...' if len(left_out) > 10 else ''}); resuming would drop them: give them too")
    return episodes, logs
