"""CPU answer time of a trained checkpoint on recorded frames (``policy.infer``, as pi0-serve runs it).

    .venv/bin/python bench/policy_cpu.py CHECKPOINT pi0_fast|pi0 DATASET [--stride 6] [--episodes 2] [--threads 1]

Loads the checkpoint the way pi0-serve does, feeds it every ``--stride``-th frame of the dataset's first
``--episodes`` episodes (images, state, the episode's instruction) and prints the median and maximum wall time
per answer. A trained pi0-FAST checkpoint decodes as many tokens as its answers need, so its time depends on the
weights and the frames, not only on the config (bench/pi0_cpu.py times random-weight pi0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("policy_type", choices=("pi0", "pi0_fast"))
    parser.add_argument("dataset")
    parser.add_argument("--stride", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pi0-serve in the evaluations: 1)")
    args = parser.parse_args()
    import torch

    from pi0_ros.serving.loader import load_policy
    from pi0_ros.training.dataset import open_dataset
    from pi0_ros.training.offline_eval import open_loop_errors

    torch.set_num_threads(args.threads)
    policy = load_policy(checkpoint_dir=args.checkpoint, policy_type=args.policy_type)
    seconds = []

    class Timed:
        """The policy, with the wall time of each answer kept: the frames are offline_eval's."""

        @staticmethod
        def infer(observation):
            started = time.perf_counter()
            try:
                return policy.infer(observation)
            finally:
                seconds.append(time.perf_counter() - started)

    open_loop_errors(Timed(), open_dataset(args.dataset), stride=args.stride, max_episodes=args.episodes)
    print(json.dumps({"checkpoint": args.checkpoint, "answers": len(seconds), "threads": args.threads,
                      "median_ms": round(1000 * statistics.median(seconds), 1),
                      "max_ms": round(1000 * max(seconds), 1)}))


if __name__ == "__main__":
    main()
