"""pi0 weights and checkpoint directories.

Weights: openpi-PyTorch and LeRobot ``model.safetensors`` use our parameter names (LeRobot adds a
``model.`` prefix, which is stripped; files written with transformers < 4.52 nest PaliGemma as
``paligemma.language_model.model.*`` / ``paligemma.vision_tower.*``, which is renamed). Converted
files usually lack the tied token embedding: it is filled from ``paligemma.lm_head.weight``. Every
missing, unexpected or wrongly-shaped tensor is named in a ``LoadReport``, and a strict load refuses
to leave a half-loaded model.

Checkpoint directory (ours), written atomically (temp dir + rename)::

    config.json        {"format": "pi0_ros.pi0", "version": 1, "model": Pi0Config, "policy": {...}}
    model.safetensors  openpi layout (lm_head kept, tied embed_tokens omitted)
    norm_stats.json    openpi layout
    tokenizer.model    SentencePiece
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from pi0_ros.model.config import Pi0Config
from pi0_ros.model.normalization import NormStats, load_norm_stats, save_norm_stats
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.provenance import read_provenance
from pi0_ros.model.tokenizer import PromptTokenizer

FORMAT = "pi0_ros.pi0"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORM_STATS_FILE = "norm_stats.json"
TOKENIZER_FILE = "tokenizer.model"

EMBED_KEY = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "paligemma_with_expert.paligemma.lm_head.weight"
# Present in converted files but unused by pi0: the expert's LM head (a 257k x 1024 matrix).
IGNORED_KEYS = frozenset({"paligemma_with_expert.gemma_expert.lm_head.weight"})
_TOP_LEVEL = ("paligemma_with_expert.", "action_in_proj.", "action_out_proj.", "state_proj.",
              "action_time_mlp_in.", "action_time_mlp_out.", "time_mlp_in.", "time_mlp_out.")


# transformers < 4.52 nested PaliGemma differently; older LeRobot pi0 files use these names.
_LEGACY_PALIGEMMA = (
    ("paligemma_with_expert.paligemma.language_model.model.", "paligemma_with_expert.paligemma.model.language_model."),
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "paligemma_with_expert.paligemma.lm_head."),
    ("paligemma_with_expert.paligemma.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."),
    ("paligemma_with_expert.paligemma.multi_modal_projector.",
     "paligemma_with_expert.paligemma.model.multi_modal_projector."),
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded completely and correctly."""


@dataclasses.dataclass
class LoadReport:
    """What a weight load found, by tensor name."""

    missing: List[str] = dataclasses.field(default_factory=list)
    unexpected: List[str] = dataclasses.field(default_factory=list)
    wrong_shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = dataclasses.field(default_factory=list)
    ignored: List[str] = dataclasses.field(default_factory=list)
    filled: List[str] = dataclasses.field(default_factory=list)
    stripped_prefix: str = ""
    legacy_renamed: int = 0  # keys moved from the pre-4.52 transformers PaliGemma layout

    @property
    def ok(self) -> bool:
        """True when every model tensor was found with the right shape and nothing was left over."""
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 20) -> str:
        """Human-readable summary listing the offending names (first ``limit`` of each kind)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {self.missing[:limit]}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {self.unexpected[:limit]}")
        if self.wrong_shape:
            shown = [f"{n} (model {tuple(m)}, file {tuple(f)})" for n, m, f in self.wrong_shape[:limit]]
            parts.append(f"{len(self.wrong_shape)} wrong shape: {shown}")
        return "; ".join(parts) if parts else "all tensors loaded"


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Remove LeRobot's ``model.`` prefix from keys that carry it before a pi0 top-level name."""
    out, stripped = {}, ""
    for key, value in state_dict.items():
        if key.startswith("model.") and key[len("model."):].startswith(_TOP_LEVEL):
            key, stripped = key[len("model."):], "model."
        out[key] = value
    return out, stripped


def rename_legacy(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], int]:
    """Map the old transformers PaliGemma nesting onto the current one; returns (dict, renamed count)."""
    out, renamed = {}, 0
    for key, value in state_dict.items():
        for old, new in _LEGACY_PALIGEMMA:
            if key.startswith(old):
                key, renamed = new + key[len(old):], renamed + 1
                break
        out[key] = value
    return out, renamed


def load_weights(model: Pi0Model, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Copy ``state_dict`` (openpi or LeRobot layout) into ``model``; see the module docstring.

    With ``strict`` (the default) any missing, unexpected or wrongly-shaped tensor raises CheckpointError
    before a single parameter is changed. Without it, the matching tensors are loaded and the report
    says what was not.
    """
    sd, stripped = strip_prefix(state_dict)
    sd, legacy = rename_legacy(sd)
    report = LoadReport(stripped_prefix=stripped, legacy_renamed=legacy)
    if EMBED_KEY not in sd and LM_HEAD_KEY in sd:
        sd[EMBED_KEY] = sd[LM_HEAD_KEY]
        report.filled.append(EMBED_KEY)
    elif LM_HEAD_KEY not in sd and EMBED_KEY in sd:
        sd[LM_HEAD_KEY] = sd[EMBED_KEY]
        report.filled.append(LM_HEAD_KEY)
    expected = model.state_dict()
    usable = {}
    for key, value in sd.items():
        if key in IGNORED_KEYS:
            report.ignored.append(key)
        elif key not in expected:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            report.wrong_shape.append((key, tuple(expected[key].shape), tuple(value.shape)))
        else:
            usable[key] = value
    report.missing = [k for k in expected if k not in sd]
    if strict and not report.ok:
        raise CheckpointError(f"refusing a partial load: {report.describe()}")
    model.load_state_dict(usable, strict=False)
    return report


def load_weights_file(model: Pi0Model, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """``load_weights`` from a ``model.safetensors`` file."""
    return load_weights(model, load_file(str(path)), strict=strict)


def weights_for_saving(model: Pi0Model) -> Dict[str, torch.Tensor]:
    """openpi layout: the tied embedding is omitted (lm_head holds it); tensors own their memory."""
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != EMBED_KEY}


@dataclasses.dataclass
class Checkpoint:
    """Everything a checkpoint directory holds, loaded."""

    model_config: Pi0Config
    policy_config: Dict[str, Any]
    weights: Dict[str, torch.Tensor]
    norm_stats: Dict[str, NormStats]
    tokenizer: PromptTokenizer
    provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)  # training.json, when pi0-train wrote it


def _apply_umask(directory: str) -> None:
    # mkdtemp creates 0700; give the finished checkpoint the permissions a plain mkdir/open would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def write_directory_atomically(out_dir: str | os.PathLike, fill: Callable[[str], None]) -> str:
    """Let ``fill`` write into a temporary sibling directory, then swap it in for ``out_dir``.

    A reader sees the old directory or the whole new one, never a partial one; an old checkpoint is
    removed only after the new one is in place.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        fill(tmp)
        _apply_umask(tmp)
        old: Optional[str] = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "ckpt"))
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_checkpoint_files(directory: str, model: torch.nn.Module, model_config: Mapping[str, Any],
                           policy_config: Mapping[str, Any], norm_stats: Mapping[str, NormStats],
                           tokenizer: PromptTokenizer, format_name: str = FORMAT) -> None:
    """The files every checkpoint has: weights, config (format + model + policy), norm stats, tokenizer."""
    save_file(weights_for_saving(model), os.path.join(directory, WEIGHTS_FILE))
    config = {"format": format_name, "version": FORMAT_VERSION, "model": dict(model_config),
              "policy": dict(policy_config)}
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    save_norm_stats(os.path.join(directory, NORM_STATS_FILE), dict(norm_stats))
    tokenizer.save(os.path.join(directory, TOKENIZER_FILE))


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: Pi0Model,
    policy_config: Mapping[str, Any],
    norm_stats: Mapping[str, NormStats],
    tokenizer: PromptTokenizer,
) -> str:
    """Write a checkpoint directory atomically; an existing one is replaced only once the new one is whole."""
    return write_directory_atomically(out_dir, lambda tmp: write_checkpoint_files(
        tmp, model, model.config.to_dict(), policy_config, norm_stats, tokenizer))


def read_config_file(config_path: str, expected_format: str, expected_version: int) -> Dict[str, Any]:
    """A checkpoint's config.json: a JSON object of the expected format and version, with a 'model' object."""
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    if config.get("format") != expected_format or config.get("version") != expected_version:
        raise CheckpointError(f"{config_path}: format {config.get('format')!r} v{config.get('version')} "
                              f"is not {expected_format} v{expected_version}")
    for key, required in (("model", True), ("policy", False)):
        if (required or key in config) and not isinstance(config.get(key), dict):
            raise CheckpointError(f"{config_path}: {key!r} must be a JSON object")
    return config


def model_config_from(from_dict: Callable[[Dict[str, Any]], Any], config: Dict[str, Any], config_path: str) -> Any:
    """``from_dict(config['model'])``, with a missing, unknown or mistyped setting named as the file's fault."""
    try:
        return from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: invalid 'model' settings ({type(err).__name__}: {err})") from None


def read_checkpoint(ckpt_dir: str | os.PathLike) -> Checkpoint:
    """Read (not yet load into a model) a checkpoint directory written by ``save_checkpoint``."""
    ckpt_dir = os.fspath(ckpt_dir)
    config_path = os.path.join(ckpt_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{ckpt_dir}: no {CONFIG_FILE} (not a pi0_ros checkpoint directory)")
    config = read_config_file(config_path, FORMAT, FORMAT_VERSION)
    model_config = model_config_from(Pi0Config.from_dict, config, config_path)
    for name in (WEIGHTS_FILE, NORM_STATS_FILE, TOKENIZER_FILE):
        if not os.path.isfile(os.path.join(ckpt_dir, name)):
            raise CheckpointError(f"{ckpt_dir}: missing {name}")
    tokenizer = PromptTokenizer.from_file(os.path.join(ckpt_dir, TOKENIZER_FILE), model_config.max_token_len)
    if tokenizer.vocab_size > model_config.llm.vocab_size:
        raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids, the model only "
                              f"{model_config.llm.vocab_size}")
    return Checkpoint(
        model_config=model_config,
        policy_config=config.get("policy", {}),
        weights=load_file(os.path.join(ckpt_dir, WEIGHTS_FILE)),
        norm_stats=load_norm_stats(os.path.join(ckpt_dir, NORM_STATS_FILE)),
        tokenizer=tokenizer,
        provenance=read_provenance(ckpt_dir),
    )


def build_model(config: Pi0Config, weights: Optional[Mapping[str, torch.Tensor]] = None) -> Pi0Model:
    """A Pi0Model for ``config`` (eval mode), strictly loaded with ``weights`` when given."""
    model = Pi0Model(config).eval()
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model
