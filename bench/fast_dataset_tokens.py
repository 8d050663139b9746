"""The FAST tokenizer on a recorded dataset: what its quantization costs at the hand, and how often each token occurs.

Builds the training chunks with pi0-train's own target transform for pi0-FAST (``action_target``: joint deltas to
the chunk-start state, quantile normalization with statistics of these episodes), fits a tokenizer per (scale,
vocabulary) and reports:
- tokens per chunk (mean / max), vocabulary entries used, entries used fewer than 5 times;
- the round trip's error at the hand: every ``--stride``-th chunk is encoded, decoded and taken back to joint
  positions, and both arms' end-effector positions (forward kinematics of the embodiment's URDF) are compared with
  the recorded chunk's at steps 0, H/2 and H-1 (the largest of the six distances per chunk, in mm).

    .venv/bin/python bench/fast_dataset_tokens.py build/skill/data --episodes 30 --scales 5 10 20 --vocab 1024
    .venv/bin/python bench/fast_dataset_tokens.py build/skill/gpu --episodes 200 --scales 10 --vocab 1024 512 256

Results: BENCHMARKS.md, "pi0-FAST on the same skill, sixth attempt".
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from pi0_ros.control.kinematics import arm_fk  # noqa: E402
from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.model import action_transforms  # noqa: E402
from pi0_ros.model.fast_tokenizer import FastTokenizer  # noqa: E402
from pi0_ros.model.normalization import unnormalize  # noqa: E402
from pi0_ros.training.chunks import chunk_at  # noqa: E402
from pi0_ros.training.dataset import open_dataset  # noqa: E402
from pi0_ros.training.samples import action_target  # noqa: E402
from pi0_ros.training.stats import compute_norm_stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--episodes", type=int, default=200, help="the dataset's first N episodes")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--layout", default="joint_delta", help="embodiment action space giving the delta mask")
    parser.add_argument("--scales", type=float, nargs="+", default=[10.0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[1024])
    parser.add_argument("--stride", type=int, default=7, help="round-trip every N-th chunk")
    args = parser.parse_args()

    dataset = open_dataset(args.dataset)
    episodes = [dataset.episode(i) for i in range(min(args.episodes, dataset.num_episodes))]
    embodiment = load_embodiment()
    layout = embodiment.action_layout(args.layout)
    mask = layout.delta_mask
    stats = compute_norm_stats(episodes, args.horizon, mask)["actions"]
    # Each arm's FK and its joints' slice of the (absolute) action vector.
    arms = [(arm_fk(embodiment, embodiment.groups[seg.group]), seg.slice) for seg in layout.segments
            if embodiment.groups[seg.group].kind == "arm"]

    chunks, states = [], []
    for ep in episodes:
        for t in range(ep.length):
            chunk, _ = chunk_at(ep.actions, t, args.horizon)
            chunks.append(action_target(chunk, ep.states[t], mask, stats, "quantile", chunk.shape[1]))
            states.append(ep.states[t])
    chunks_arr, states_arr = np.stack(chunks), np.stack(states)
    print(f"{len(episodes)} episodes, {len(chunks_arr)} chunks of {args.horizon} x {chunks_arr.shape[2]}")

    def hands(q: np.ndarray) -> np.ndarray:
        return np.stack([fk.forward(q[idx])[:3] for fk, idx in arms])

    steps = (0, args.horizon // 2, args.horizon - 1)
    for scale in args.scales:
        for vocab in args.vocab:
            tokenizer = FastTokenizer.fit(chunks_arr, scale=scale, vocab_size=vocab)
            counts: collections.Counter = collections.Counter()
            lengths = []
            for chunk in chunks_arr:
                ids = tokenizer.encode(chunk)
                counts.update(ids)
                lengths.append(len(ids))
            errors = []
            for i in range(0, len(chunks_arr), args.stride):
                back = tokenizer.decode(tokenizer.encode(chunks_arr[i]))
                recorded = action_transforms.to_absolute(unnormalize(chunks_arr[i], stats, "quantile"), states_arr[i],
                                                         mask)
                decoded = action_transforms.to_absolute(unnormalize(back, stats, "quantile"), states_arr[i], mask)
                errors.append(max(np.linalg.norm(hands(recorded[k]) - hands(decoded[k]), axis=1).max() for k in steps))
            mm = 1000.0 * np.asarray(errors)
            rare = sum(1 for n in counts.values() if n < 5)
            print(f"scale {scale:g} vocabulary {vocab}: "
                  f"tokens per chunk {np.mean(lengths):.1f} mean / {max(lengths)} max; "
                  f"entries used {len(counts)}, used < 5 times {rare}; "
                  f"hand error mm median {np.median(mm):.2f}, p95 {np.percentile(mm, 95):.2f}, "
                  f"max {mm.max():.2f} ({len(mm)} chunks)")


if __name__ == "__main__":
    main()
