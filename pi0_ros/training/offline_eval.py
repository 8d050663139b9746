"""Open-loop error of a policy on recorded demonstrations: what the node would execute, against the demo.

Why: on the simulator's touch skill the pi0-FAST token loss on held-out demonstrations stopped ranking
checkpoints the way the closed loop did (BENCHMARKS.md, third attempt). The loss averages every DCT
coefficient under teacher forcing; the robot executes the first few actions of a greedy (grammar-constrained)
decode. This measures exactly that: for every ``stride``-th frame of every episode, the policy's chunk from
the recorded observation, and the mean absolute difference of its first ``steps`` actions (the ones a
``execute_steps`` node runs) from the recorded actions, in the dataset's action units. Answers the policy
refuses (undecodable FAST tokens, bad input) are counted, not scored.

    python -m pi0_ros.training.offline_eval --checkpoint C --policy-type pi0_fast --dataset HELD_OUT --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from pi0_ros.training.dataset import EpisodeDataset, open_dataset


def open_loop_errors(policy: Any, dataset: EpisodeDataset, steps: int = 5, stride: int = 5,
                     max_episodes: Optional[int] = None) -> Dict[str, Any]:
    """Mean absolute error of the first ``steps`` actions of ``policy.infer`` on recorded frames.

    ``policy.infer({"images", "state", "prompt"})`` returns ``{"actions": [T, D]}`` in the dataset's action
    space (the policies do the delta and normalization transforms themselves)."""
    if steps < 1 or stride < 1:
        raise ValueError("steps and stride must be >= 1")
    per_episode: List[float] = []
    errors: List[float] = []
    refused: List[str] = []
    count = dataset.num_episodes if max_episodes is None else min(max_episodes, dataset.num_episodes)
    for i in range(count):
        episode = dataset.episode(i)
        episode_errors = []
        for t in range(0, episode.length, stride):
            observation = {"images": dataset.images(i, t), "state": episode.states[t], "prompt": episode.task}
            try:
                actions = np.asarray(policy.infer(observation)["actions"], dtype=np.float64)
            except (ValueError, RuntimeError) as err:  # FastDecodeError / PolicyInputError are ValueErrors
                refused.append(f"episode {i} frame {t}: {type(err).__name__}: {err}")
                continue
            n = min(steps, episode.length - t, actions.shape[0])
            target = episode.actions[t:t + n]
            error = float(np.mean(np.abs(actions[:n, :target.shape[1]] - target)))
            if not np.isfinite(error):
                refused.append(f"episode {i} frame {t}: non-finite actions")
                continue
            episode_errors.append(error)
        errors.extend(episode_errors)
        if episode_errors:
            per_episode.append(float(np.mean(episode_errors)))
    return {"frames": len(errors) + len(refused), "scored": len(errors), "refused": len(refused),
            "refusals": refused[:20], "steps": steps, "stride": stride,
            "mean_abs_error": float(np.mean(errors)) if errors else None,
            "median_abs_error": statistics.median(errors) if errors else None,
            "per_episode_mean_abs_error": per_episode}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pi0_ros.training.offline_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--policy-type", default="pi0_fast", choices=("pi0", "pi0_fast"))
    p.add_argument("--dataset", required=True, help="recorded (held-out) demonstrations")
    p.add_argument("--steps", type=int, default=5, help="actions compared per chunk (the node's execute_steps)")
    p.add_argument("--stride", type=int, default=5, help="every n-th frame of each episode")
    p.add_argument("--max-episodes", type=int, default=None)
    p.add_argument("--loader-kwargs", default="{}", help="JSON keyword arguments for the policy's loader")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args(argv)
    from pi0_ros.serving.loader import PolicyLoadError, load_policy

    try:
        policy = load_policy(checkpoint_dir=args.checkpoint, policy_type=args.policy_type,
                             loader_kwargs=json.loads(args.loader_kwargs))
        report = open_loop_errors(policy, open_dataset(args.dataset), args.steps, args.stride, args.max_episodes)
    except (PolicyLoadError, OSError, ValueError) as err:
        print(f"offline_eval: {err}", file=sys.stderr)
        return 2
    report.update({"checkpoint": args.checkpoint, "dataset": args.dataset})
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    mean = report["mean_abs_error"]
    print(f"{args.checkpoint}: {report['scored']} of {report['frames']} frames scored, {report['refused']} refused; "
          f"mean abs error of the first {args.steps} actions "
          f"{'-' if mean is None else f'{mean:.4f}'} (median {report['median_abs_error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
