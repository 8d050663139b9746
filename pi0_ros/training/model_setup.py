"""The network being trained: created from a named config or read from a checkpoint directory, then
frozen / LoRA-adapted / gradient-checkpointed as asked, and exported back to a plain state dict.

Freezing (``freeze``):
  ``none``   everything trains;
  ``vision`` the SigLIP tower and the image projector are frozen;
  ``vlm``    the whole PaliGemma (vision + language model + embeddings) is frozen: for pi0 only the
             action expert and the small action/state/time heads train ("expert only").
LoRA (``lora_rank > 0``): every linear layer of the PaliGemma language model (q/k/v/o, gate/up/down)
gets a trainable low-rank update ``B @ A * alpha / rank`` (B starts at zero) and its base weights, the
embedding table included, are frozen. Exported checkpoints carry the MERGED weights, so the policy node
loads them like any other checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pi0_ros.model.checkpoint import EMBED_KEY, LM_HEAD_KEY, load_weights, read_checkpoint
from pi0_ros.model.config import get_pi0_config
from pi0_ros.model.fast_tokenizer import FastTokenizer
from pi0_ros.model.normalization import NormStats
from pi0_ros.model.pi0 import Pi0Model
from pi0_ros.model.pi0_fast import Pi0FastModel, get_pi0_fast_config
from pi0_ros.model.pi0_fast_checkpoint import read_fast_checkpoint
from pi0_ros.model.tokenizer import PromptTokenizer, default_corpus, train_tokenizer

FREEZE_CHOICES = ("none", "vision", "vlm")
MODEL_KINDS = ("pi0", "pi0_fast")


@dataclasses.dataclass
class ModelBundle:
    """A network and what travels with it in a checkpoint."""

    kind: str  # pi0 | pi0_fast
    model: nn.Module
    tokenizer: PromptTokenizer
    fast_tokenizer: Optional[FastTokenizer] = None
    init_policy_config: Optional[Dict[str, Any]] = None  # from the initial checkpoint
    init_norm_stats: Optional[Dict[str, NormStats]] = None

    @property
    def config(self):
        """The network configuration (Pi0Config or Pi0FastConfig)."""
        return self.model.config


def checkpoint_kind(ckpt_dir: str) -> str:
    """``pi0`` or ``pi0_fast`` from a checkpoint directory's config.json."""
    path = os.path.join(ckpt_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            fmt = json.load(f).get("format")
    except (OSError, ValueError) as err:
        raise ValueError(f"{ckpt_dir}: not a pi0_ros checkpoint directory ({err})") from err
    kinds = {"pi0_ros.pi0": "pi0", "pi0_ros.pi0_fast": "pi0_fast"}
    if fmt not in kinds:
        raise ValueError(f"{path}: unknown checkpoint format {fmt!r}")
    return kinds[fmt]


def create(kind: str, config_name: str, overrides: Mapping[str, Any], corpus: Iterable[str], seed: int) -> ModelBundle:
    """A freshly initialized network (PyTorch default init) and a prompt tokenizer trained on
    the built-in instruction corpus plus ``corpus`` (the dataset's tasks)."""
    torch.manual_seed(seed)
    lines = default_corpus() + [t for t in corpus if t]
    if kind == "pi0":
        cfg = get_pi0_config(config_name, **overrides)
        model: nn.Module = Pi0Model(cfg)
        vocab = min(cfg.llm.vocab_size, 512)
    elif kind == "pi0_fast":
        cfg = get_pi0_fast_config(config_name, **overrides)
        model = Pi0FastModel(cfg)
        vocab = min(1024, cfg.first_action_id)
    else:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {kind!r}")
    init_weights(model)
    tokenizer = train_tokenizer(lines, vocab_size=vocab, max_len=cfg.max_token_len)
    return ModelBundle(kind, model, tokenizer)


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """From-scratch init: linear/embedding weights N(0, std^2), biases 0 (PyTorch's default N(0, 1)
    embedding, tied to the LM head, starts pi0-FAST with logits of size ~width)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()


def load(ckpt_dir: str) -> ModelBundle:
    """A network with a checkpoint's weights (strict), its tokenizers, policy config and norm stats."""
    kind = checkpoint_kind(ckpt_dir)
    if kind == "pi0":
        ckpt = read_checkpoint(ckpt_dir)
        model: nn.Module = Pi0Model(ckpt.model_config)
        fast = None
    else:
        ckpt = read_fast_checkpoint(ckpt_dir)
        model = Pi0FastModel(ckpt.model_config)
        fast = ckpt.fast_tokenizer
    load_weights(model, ckpt.weights, strict=True)
    return ModelBundle(kind, model, ckpt.tokenizer, fast, dict(ckpt.policy_config), dict(ckpt.norm_stats))


# ------------------------------------------------------------------------------------- freezing
def _paligemma(model: nn.Module) -> nn.Module:
    return model.paligemma_with_expert.paligemma


def apply_freezing(model: nn.Module, freeze: str) -> None:
    """Set ``requires_grad`` per the ``freeze`` option (see the module docstring)."""
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    for p in model.parameters():
        p.requires_grad_(True)
    pg = _paligemma(model)
    if freeze == "vision":
        for module in (pg.model.vision_tower, pg.model.multi_modal_projector):
            module.requires_grad_(False)
    elif freeze == "vlm":
        pg.requires_grad_(False)


class LoRALinear(nn.Linear):
    """nn.Linear plus a trainable low-rank update; ``weight``/``bias`` keep their names (and objects)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype)) * self.scaling
        return F.linear(x, self.weight, self.bias) + update

    def merged_weight(self) -> torch.Tensor:
        """weight + B @ A * scaling (float32 math, weight's dtype)."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling
        return (self.weight.float() + delta).to(self.weight.dtype)


def apply_lora(model: nn.Module, rank: int, alpha: Optional[float] = None) -> int:
    """Wrap the language model's linears with LoRA and freeze its base weights; returns wrapped count."""
    lm = _paligemma(model).model.language_model
    lm.requires_grad_(False)
    alpha = float(alpha if alpha is not None else rank)
    count = 0
    for layer in lm.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    setattr(parent, name, LoRALinear(child, rank, alpha))
                    count += 1
    return count


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Per-layer activation recomputation in every Gemma stack and the SigLIP encoder."""
    from pi0_ros.model.gemma import GemmaModel
    from pi0_ros.model.siglip import SiglipEncoder

    for module in model.modules():
        if isinstance(module, (GemmaModel, SiglipEncoder)):
            module.gradient_checkpointing = enabled


def trainable_summary(model: nn.Module) -> Dict[str, int]:
    """Parameter counts (tied tensors counted once)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


# -------------------------------------------------------------------------------------- export
def export_state_dict(model: nn.Module, replacements: Optional[Mapping[str, torch.Tensor]] = None
                      ) -> Dict[str, torch.Tensor]:
    """The deployable state dict: LoRA merged (lora tensors dropped), ``replacements`` (EMA) applied."""
    state = dict(model.state_dict())
    if replacements:
        for name, value in replacements.items():
            state[name] = value.to(state[name].dtype)
        if EMBED_KEY in replacements and LM_HEAD_KEY in state:  # tied: the head IS the embedding
            state[LM_HEAD_KEY] = state[EMBED_KEY]
    for mod_name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            a, b = state.pop(f"{mod_name}.lora_A"), state.pop(f"{mod_name}.lora_B")
            w = state[f"{mod_name}.weight"]
            state[f"{mod_name}.weight"] = (w.float() + (b.float() @ a.float()) * module.scaling).to(w.dtype)
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


class ExportView:
    """Looks like the model to ``save_checkpoint``/``save_fast_checkpoint``: ``config`` and ``state_dict()``."""

    def __init__(self, config: Any, state: Dict[str, torch.Tensor]):
        self.config = config
        self._state = state

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self._state


class EMA:
    """Exponential moving average of the trainable parameters (float32 shadows)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().float().clone() for n in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].lerp_(params[n].detach().float(), 1.0 - self.decay)

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.decay = float(state["decay"])
        for n, v in state["shadow"].items():
            self.shadow[n].copy_(v)
