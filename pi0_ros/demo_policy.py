"""The demo's policy: a small pi0 that this package's own pipeline trains on first use, cached after.

First use (a few minutes on two CPU cores): ``pi0-collect`` records scripted demonstrations of the
language-conditioned touch skill in the simulator (the fixed cube layout: red left, green middle, blue
right; "touch the <colour> cube with the <left|right> hand"), then ``pi0-train`` trains a small pi0 on
them with a progress bar. Both run as child processes, exactly as a user would run them. Later uses
find the checkpoint under ``<out>/skill_<recipe key>/run/last`` and start at once; a changed recipe gets
a new key (and a new training), and an interrupted collection or training continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import List


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """Data and training of the demo policy (measured in BENCHMARKS.md, "make demo's policy")."""

    episodes: int = 24
    first_seed: int = 0  # demonstrations use seeds from here; the demo itself runs held-out seeds (>= 1000)
    layout: str = "fixed"
    config: str = "pi0_tiny_112"
    action_horizon: int = 10
    steps: int = 1500
    batch_size: int = 8
    lr: float = 3e-4
    warmup: int = 100
    ema: float = 0.99
    augment: bool = False  # the recipe as measured (image augmentation came later; not measured for 1,500 steps)

    def key(self) -> str:
        """Short hash of the recipe: the cache folder's name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def committed_episodes(dataset: Path) -> int:
    """Episodes already recorded in ``dataset`` (0 when it does not exist yet)."""
    if not (dataset / "meta" / "info.json").is_file():
        return 0
    from pi0_ros.data.lerobot_dataset import DatasetReader

    return len(DatasetReader(dataset).episodes)


def trained_step(run: Path) -> int:
    """The step of ``run``'s last checkpoint (0 when there is none)."""
    try:
        return int(json.loads((run / "last" / "training.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def collect_command(recipe: DemoRecipe, dataset: Path, episodes: int, seed: int, log_dir: Path) -> List[str]:
    """pi0-collect of ``episodes`` more demonstrations from ``seed`` on (appends to ``dataset``)."""
    return [sys.executable, "-m", "pi0_ros.tools.collect", "--root", str(dataset), "--episodes", str(episodes),
            "--seed", str(seed), "--layout", recipe.layout, "--log-dir", str(log_dir)]


def train_command(recipe: DemoRecipe, dataset: Path, run: Path) -> List[str]:
    """pi0-train from scratch on the CPU, or ``--resume`` of an interrupted run."""
    if (run / "last").exists():
        return [sys.executable, "-m", "pi0_ros.training.cli", "--resume", str(run), "--device", "cpu"]
    return [sys.executable, "-m", "pi0_ros.training.cli", "--dataset", str(dataset), "--out", str(run),
            "--model", "pi0", "--config", recipe.config, "--action-horizon", str(recipe.action_horizon),
            "--delta-layout", "joint_delta", "--steps", str(recipe.steps), "--batch-size", str(recipe.batch_size),
            "--lr", str(recipe.lr), "--warmup", str(recipe.warmup), "--ema", str(recipe.ema),
            "--save-every", str(max(1, recipe.steps // 4)), "--keep-last", "1", "--device", "cpu",
            "--max-episodes", str(recipe.episodes), "--cache-images"] + ([] if recipe.augment else ["--no-augment"])


def ensure_demo_policy(out_dir: Path, recipe: DemoRecipe = DemoRecipe()) -> Path:
    """The trained checkpoint for ``recipe`` under ``out_dir``: collected and trained now if missing."""
    root = Path(out_dir) / f"skill_{recipe.key()}"
    dataset, run = root / "demos", root / "run"
    if trained_step(run) >= recipe.steps:
        print(f"demo policy: using the trained checkpoint {run / 'last'}", flush=True)
        return run / "last"
    have = committed_episodes(dataset)
    next_seed = recipe.first_seed + have
    for _ in range(3):  # the expert misses now and then; a missed seed is dropped and another one tried
        if have >= recipe.episodes:
            break
        missing = recipe.episodes - have
        print(f"demo policy (first use): recording {missing} scripted demonstrations of the touch skill in the "
              f"simulator into {dataset} ...", flush=True)
        subprocess.run(collect_command(recipe, dataset, missing, next_seed, root / "collect_logs"), check=True)
        next_seed += missing
        have = committed_episodes(dataset)
    if have < recipe.episodes:
        raise RuntimeError(f"only {have} of {recipe.episodes} demonstrations were recorded in {dataset}")
    print(f"demo policy (first use): training {recipe.config} for {recipe.steps} steps on the CPU into {run} ...",
          flush=True)
    subprocess.run(train_command(recipe, dataset, run), check=True)
    if trained_step(run) < recipe.steps:
        raise RuntimeError(f"training stopped before step {recipe.steps} (see {run})")
    return run / "last"
