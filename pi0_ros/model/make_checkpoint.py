"""Create a pi0 checkpoint directory: random weights (for the simulator) or imported openpi/LeRobot weights.

Example (the simulator's model)::

    python -m pi0_ros.model.make_checkpoint --config pi0_tiny --out /tmp/pi0_tiny \\
        --state-dim 16 --action-dim 16 --cameras head,left_wrist,right_wrist --delta-dims 0-6,8-14

Defaults: identity state norm stats; action stats mean 0 and std ``--action-std``; a SentencePiece
tokenizer trained on the built-in instruction corpus (``--tokenizer`` to use PaliGemma's file).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch

from pi0_ros.model.checkpoint import load_weights_file, save_checkpoint
from pi0_ros.model.config import PI0_CONFIGS, get_pi0_config
from pi0_ros.model.normalization import NormStats, load_norm_stats
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.policy import policy_config_for
from pi0_ros.model.tokenizer import PromptTokenizer, default_corpus, train_tokenizer


def parse_dims(text: str, count: int) -> List[bool]:
    """'0-6,8-14' -> a bool mask of length ``count`` (empty text: all False)."""
    mask = [False] * count
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            if not 0 <= i < count:
                raise ValueError(f"delta dim {i} outside 0..{count - 1}")
            mask[i] = True
    return mask


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m pi0_ros.model.make_checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pi0_tiny", choices=sorted(PI0_CONFIGS))
    p.add_argument("--out", required=True, help="checkpoint directory to (re)write atomically")
    p.add_argument("--state-dim", type=int, default=16)
    p.add_argument("--action-dim", type=int, default=16)
    p.add_argument("--cameras", default="head,left_wrist,right_wrist",
                   help="camera names for the image slots base,left_wrist,right_wrist ('' leaves a slot empty)")
    p.add_argument("--delta-dims", default="", help="action dims that are deltas to the state, e.g. 0-6,8-14")
    p.add_argument("--normalization", default="zscore", choices=("zscore", "quantile"))
    p.add_argument("--action-std", type=float, default=1.0, help="std of the default action norm stats")
    p.add_argument("--action-horizon", type=int, default=None)
    p.add_argument("--default-prompt", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--weights", default=None, help="openpi/LeRobot model.safetensors to import instead")
    p.add_argument("--norm-stats", default=None, help="openpi norm_stats.json to use instead of defaults")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model file (PaliGemma's for real weights)")
    p.add_argument("--vocab-size", type=int, default=None, help="size of the trained tokenizer")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    overrides = {} if args.action_horizon is None else {"action_horizon": args.action_horizon}
    cfg = get_pi0_config(args.config, **overrides)
    torch.manual_seed(args.seed)
    model = Pi0Model(cfg).eval()
    if args.weights:
        report = load_weights_file(model, args.weights, strict=True)
        print(f"loaded {args.weights}: filled {report.filled}, ignored {report.ignored}")
    if args.tokenizer:
        tokenizer = PromptTokenizer.from_file(args.tokenizer, cfg.max_token_len)
    else:
        vocab = args.vocab_size or min(cfg.llm.vocab_size, 512)
        tokenizer = train_tokenizer(default_corpus(), vocab_size=vocab, max_len=cfg.max_token_len)
    if tokenizer.vocab_size > cfg.llm.vocab_size:
        raise SystemExit(f"tokenizer has {tokenizer.vocab_size} ids but {args.config} only {cfg.llm.vocab_size}")
    if args.norm_stats:
        stats = load_norm_stats(args.norm_stats)
    else:
        a = args.action_dim
        stats = {"state": NormStats.identity(args.state_dim),
                 "actions": NormStats(mean=np.zeros(a), std=np.full(a, args.action_std),
                                      q01=np.full(a, -args.action_std), q99=np.full(a, args.action_std))}
    policy = policy_config_for(
        [c.strip() for c in args.cameras.split(",")], args.state_dim, args.action_dim,
        delta_mask=parse_dims(args.delta_dims, args.action_dim), normalization=args.normalization,
        default_prompt=args.default_prompt)
    out = save_checkpoint(args.out, model, policy, stats, tokenizer)
    print(f"wrote {out} ({args.config}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
