"""pi0-FAST checkpoint directories, and a maker for them (random weights or imported PaliGemma weights).

Layout (pi0's, plus the FAST tokenizer folder)::

    config.json        {"format": "pi0_ros.pi0_fast", "version": 1, "model": Pi0FastConfig, "policy": {...}}
    model.safetensors  openpi layout (``paligemma_with_expert.paligemma.*``), loaded by pi0's load_weights
    norm_stats.json    openpi layout (quantiles are required: pi0-FAST normalizes with them)
    tokenizer.model    SentencePiece prompt tokenizer
    fast_tokenizer/    FAST tokenizer (tokenizer.json, processor_config.json, pi0_ros_fast.json)

Maker (a tiny simulator model with a FAST tokenizer fitted on synthetic chunks)::

    python -m pi0_ros.model.pi0_fast_checkpoint --config pi0_fast_tiny --out /tmp/pi0_fast_tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from safetensors.torch import load_file

from pi0_ros.model.checkpoint import (
    CheckpointError,
    load_weights,
    load_weights_file,
    model_config_from,
    read_config_file,
    write_checkpoint_files,
    write_directory_atomically,
)
from pi0_ros.model.fast_synthetic import SyntheticChunkConfig, make_chunks
from pi0_ros.model.fast_tokenizer import FastTokenizer
from pi0_ros.model.normalization import NormStats, load_norm_stats
from pi0_ros.model.pi0_fast import PI0_FAST_CONFIGS, Pi0FastConfig, Pi0FastModel, get_pi0_fast_config
from pi0_ros.model.policy import policy_config_for
from pi0_ros.model.provenance import read_provenance
from pi0_ros.model.tokenizer import PromptTokenizer, default_corpus, train_tokenizer

FORMAT = "pi0_ros.pi0_fast"
FORMAT_VERSION = 1
FAST_DIR = "fast_tokenizer"


@dataclasses.dataclass
class FastCheckpoint:
    """Everything a pi0-FAST checkpoint directory holds, read."""

    model_config: Pi0FastConfig
    policy_config: Dict[str, Any]
    weights: Dict[str, torch.Tensor]
    norm_stats: Dict[str, NormStats]
    tokenizer: PromptTokenizer
    fast_tokenizer: FastTokenizer
    provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)  # training.json, when pi0-train wrote it


def save_fast_checkpoint(out_dir: str, model: Pi0FastModel, policy_config: Mapping[str, Any],
                         norm_stats: Mapping[str, NormStats], tokenizer: PromptTokenizer,
                         fast_tokenizer: FastTokenizer) -> str:
    """Write a checkpoint directory atomically: pi0's files plus the FAST tokenizer folder."""
    def fill(tmp: str) -> None:
        write_checkpoint_files(tmp, model, model.config.to_dict(), policy_config, norm_stats, tokenizer, FORMAT)
        fast_tokenizer.save(os.path.join(tmp, FAST_DIR))

    return write_directory_atomically(out_dir, fill)


def read_fast_checkpoint(ckpt_dir: str) -> FastCheckpoint:
    """Read a directory written by ``save_fast_checkpoint``; raises CheckpointError when incomplete."""
    config_path = os.path.join(ckpt_dir, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{ckpt_dir}: no config.json")
    config = read_config_file(config_path, FORMAT, FORMAT_VERSION)
    for name in ("model.safetensors", "norm_stats.json", "tokenizer.model", os.path.join(FAST_DIR, "tokenizer.json")):
        if not os.path.isfile(os.path.join(ckpt_dir, name)):
            raise CheckpointError(f"{ckpt_dir}: missing {name}")
    model_config = model_config_from(Pi0FastConfig.from_dict, config, config_path)
    return FastCheckpoint(
        model_config=model_config,
        policy_config=config.get("policy", {}),
        weights=load_file(os.path.join(ckpt_dir, "model.safetensors")),
        norm_stats=load_norm_stats(os.path.join(ckpt_dir, "norm_stats.json")),
        tokenizer=PromptTokenizer.from_file(os.path.join(ckpt_dir, "tokenizer.model"), model_config.max_token_len),
        fast_tokenizer=FastTokenizer.load(os.path.join(ckpt_dir, FAST_DIR)),
        provenance=read_provenance(ckpt_dir),
    )


def build_fast_model(config: Pi0FastConfig, weights: Optional[Mapping[str, torch.Tensor]] = None) -> Pi0FastModel:
    """A Pi0FastModel in eval mode, strictly loaded with ``weights`` (openpi/LeRobot names) when given."""
    model = Pi0FastModel(config).eval()
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write a pi0-FAST checkpoint; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pi0_ros.model.pi0_fast_checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pi0_fast_tiny", choices=sorted(PI0_FAST_CONFIGS))
    p.add_argument("--out", required=True)
    p.add_argument("--state-dim", type=int, default=16)
    p.add_argument("--action-dim", type=int, default=16)
    p.add_argument("--cameras", default="head,left_wrist,right_wrist")
    p.add_argument("--weights", default=None, help="openpi/LeRobot PaliGemma model.safetensors to import")
    p.add_argument("--norm-stats", default=None, help="openpi norm_stats.json (with q01/q99)")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model (PaliGemma's for real weights)")
    p.add_argument("--fast-tokenizer", default=None, help="FAST tokenizer folder (ours or FAST+)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cfg = get_pi0_fast_config(args.config)
    torch.manual_seed(args.seed)
    model = Pi0FastModel(cfg).eval()
    if args.weights:
        print(f"loaded {args.weights}: {load_weights_file(model, args.weights).describe()}")
    if args.tokenizer:
        tokenizer = PromptTokenizer.from_file(args.tokenizer, cfg.max_token_len)
    else:
        vocab = min(1024, cfg.first_action_id)
        tokenizer = train_tokenizer(default_corpus(), vocab_size=vocab, max_len=cfg.max_token_len)
    if args.fast_tokenizer:
        fast = FastTokenizer.load(args.fast_tokenizer, action_horizon=cfg.action_horizon, action_dim=cfg.action_dim)
    else:
        grippers = (cfg.action_dim // 2 - 1, cfg.action_dim - 1)
        chunk_cfg = SyntheticChunkConfig(horizon=cfg.action_horizon, action_dim=cfg.action_dim, gripper_dims=grippers)
        fast = FastTokenizer.fit(make_chunks(2000, chunk_cfg, seed=args.seed), vocab_size=cfg.fast_vocab_size)
    if args.norm_stats:
        stats = load_norm_stats(args.norm_stats)
    else:
        stats = {"state": NormStats.identity(args.state_dim), "actions": NormStats.identity(args.action_dim)}
    policy = policy_config_for([c.strip() for c in args.cameras.split(",")], args.state_dim, args.action_dim,
                               normalization="quantile")
    out = save_fast_checkpoint(args.out, model, policy, stats, tokenizer, fast)
    print(f"wrote {out} ({args.config}, {sum(q.numel() for q in model.parameters()) / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

