"""pi0 / pi0-FAST training: data checks, statistics, the loop, checkpoints, resume, several processes.

One run writes ``<out>/``::

    checkpoints/step_000500/   a policy checkpoint directory (what the policy node loads) plus
                               training_state.pt (optimizer, scheduler, step, RNG, EMA, config) and
                               training.json (provenance); written atomically (staging dir + rename)
    last -> checkpoints/step_...   symlink to the newest checkpoint
    best -> checkpoints/step_...   with a held-out set (``val_dataset``): the checkpoint of lowest held-out
                                   loss (kept whatever ``keep_last`` says)
    norm_stats.json            the statistics, computed once at the start (openpi format)
    metrics.jsonl, loss.png, lr.png, summary.json

Decisions (the issue left them open):
- Chunks at episode ends are padded with the last action (``chunks.py``); padded steps count in the
  pi0 loss unless ``mask_padded_actions`` (then they are left out, LeRobot's choice).
- The pi0 loss averages over the robot's real action dims only (the padded model dims carry no data).
- Norm stats are computed on the training data (delta dims after the delta conversion) unless a file
  is given; a resumed run reuses the checkpoint's.
- Fine-tuning pi0-FAST keeps the initial checkpoint's FAST tokenizer (the network learned its ids);
  a run from scratch fits one on the dataset's normalized chunks.
- Data order: a seeded permutation per epoch, global batch ``batch_size * world_size``, rank r takes
  its slice; noise/time come from a per-rank generator whose state is checkpointed, so a resumed run
  takes exactly the steps the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pi0_ros.model.action_transforms import check_delta_mask
from pi0_ros.model.checkpoint import save_checkpoint
from pi0_ros.model.fast_tokenizer import FastTokenizer
from pi0_ros.model.make_checkpoint import parse_dims
from pi0_ros.model.normalization import NormStats, load_norm_stats, save_norm_stats
from pi0_ros.model.pi0_fast_checkpoint import save_fast_checkpoint
from pi0_ros.model.policy import Pi0PolicyConfig
from pi0_ros.model.provenance import PROVENANCE_FILE
from pi0_ros.training import model_setup
from pi0_ros.training.augment import ImageAugmentConfig, augment_images, is_wrist_camera
from pi0_ros.training.chunks import chunk_index, resting_chunk_starts
from pi0_ros.training.dataset import (
    DatasetError,
    EpisodeArrays,
    EpisodeDataset,
    Expectations,
    open_dataset,
    validate_dataset,
)
from pi0_ros.training.report import format_summary, save_curves
from pi0_ros.training.samples import FastSampleBuilder, Pi0SampleBuilder, batch_to_device, fast_training_chunks
from pi0_ros.training.stats import compute_norm_stats
from pi0_ros.training.validation import HeldOutLoss, weights_swapped

STATE_FILE = "training_state.pt"
STATE_FORMAT = "pi0_ros.train_state"


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint; a resumed run reuses it)."""

    dataset: str
    out: str
    model: str = "pi0"  # pi0 | pi0_fast
    config: str = "pi0_tiny"  # named network config when starting from scratch
    init: Optional[str] = None  # checkpoint directory to fine-tune
    new_embodiment: bool = False  # allow data dims/cameras that differ from the init checkpoint's
    action_horizon: Optional[int] = None  # from scratch only
    cameras: Optional[List[str]] = None  # dataset cameras for the image slots (base, left wrist, right wrist)
    delta_dims: Optional[str] = None  # e.g. "0-6,8-14"; None: the init checkpoint's, else none
    delta_layout: Optional[str] = None  # take the delta mask of this embodiment action space instead
    embodiment: Optional[str] = None
    action_space: Optional[str] = None  # the dataset's action layout (recorded for the policy node)
    normalization: Optional[str] = None  # zscore (pi0 default) | quantile (pi0-FAST: required)
    norm_stats: Optional[str] = None  # an openpi norm_stats.json to use instead of computing
    default_prompt: Optional[str] = None
    steps: int = 1000
    batch_size: int = 8  # per process
    lr: float = 2.5e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 1e-10
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: Optional[float] = None
    freeze: str = "none"  # none | vision | vlm
    lora_rank: int = 0
    lora_alpha: Optional[float] = None
    grad_checkpointing: bool = False
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    mask_padded_actions: bool = False
    augment: bool = False  # random crop/rotation (fixed cameras) and color jitter (all) on the training images
    augment_crop_area: float = 0.95  # with augment: area kept by the random crop (fixed cameras; 1: no crop)
    augment_rotation_deg: float = 5.0  # with augment: largest random rotation (fixed cameras; 0: none)
    fast_state_noise: float = 0.03  # with augment, pi0-FAST: noise std on the normalized state (~4 of 256 bins)
    # Demonstrations that end with a long dwell hold many "stay" chunks (the skill's: 7 of ~50 frames); a policy
    # that answers with the most likely chunk (pi0-FAST) may take "stay" where it is unsure it has arrived. None
    # keeps every chunk; N keeps each episode's first N chunks whose every action is within resting_tolerance
    # of their first.
    max_resting_chunks: Optional[int] = None
    resting_tolerance: float = 0.02  # in action units (rad for joint positions)
    fast_scale: float = 10.0
    fast_vocab_size: Optional[int] = None
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    cache_images: bool = False  # decode every image once into memory before training (datasets that support it)
    max_episodes: Optional[int] = None  # train on the dataset's first N episodes only
    val_dataset: Optional[str] = None  # held-out demonstrations: their loss at every checkpoint, `best` link
    device: Optional[str] = None
    fsdp: bool = False
    progress: bool = True
    stop_after: Optional[int] = None  # stop (with a checkpoint) after this many total steps

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        data["betas"] = tuple(data.get("betas", (0.9, 0.95)))
        return cls(**data)


# ------------------------------------------------------------------------------------ distributed
@dataclasses.dataclass
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: Optional[str]) -> DistInfo:
    """torchrun environment -> process group (nccl on GPU, gloo on CPU); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device_pref is None or device_pref.startswith("cuda"))
    if device_pref and not device_pref.startswith("cuda"):
        device = torch.device(device_pref)
    elif use_cuda:
        device = torch.device(device_pref if device_pref and ":" in device_pref else f"cuda:{local}")
    else:
        device = torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device)


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


# ------------------------------------------------------------------------------------ schedule
def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StepBatches(torch.utils.data.Sampler):
    """Index batches for steps ``start .. total - 1`` of one rank (seeded permutation per epoch)."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, start: int, total: int):
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.start, self.total = seed, start, total
        self._perms: Dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).numpy()}
        return self._perms[epoch]

    def indices(self, step: int) -> List[int]:
        global_batch = self.batch * self.world
        first = step * global_batch + self.rank * self.batch
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(first, first + self.batch)]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class ChunkSamples(torch.utils.data.Dataset):
    """(episode, frame) -> one training example through the sample builder; ``max_resting`` (with ``horizon``
    and ``resting_tolerance``) keeps only each episode's first that many chunks that tell the robot to stay."""

    def __init__(self, dataset: EpisodeDataset, episodes: List[EpisodeArrays], builder,
                 max_resting: Optional[int] = None, horizon: int = 0, resting_tolerance: float = 0.0):
        self.dataset, self.episodes, self.builder = dataset, episodes, builder
        dropped = None
        if max_resting is not None:
            if max_resting < 0:
                raise ValueError(f"max_resting_chunks must be >= 0, got {max_resting}")
            dropped = [resting_chunk_starts(ep.actions, horizon, resting_tolerance)[max_resting:] for ep in episodes]
        self.index = chunk_index([ep.length for ep in episodes], dropped)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        ep, frame = self.index[i]
        return self.builder.sample(self.dataset, self.episodes[int(ep)], int(frame))


class LossModule(nn.Module):
    """The loss as a module ``forward`` (what DDP/FSDP wrap)."""

    def __init__(self, model: nn.Module, kind: str, action_dim: int, mask_padded: bool):
        super().__init__()
        self.model, self.kind, self.action_dim, self.mask_padded = model, kind, action_dim, mask_padded

    def forward(self, batch: Dict[str, Any], generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.kind == "pi0_fast":
            return self.model.compute_loss(batch["inputs"]).mean()
        per = self.model.compute_loss(batch["inputs"], batch["actions"], generator=generator)
        per = per[..., : self.action_dim].float()
        if self.mask_padded:
            weight = (~batch["is_pad"]).to(per.dtype)[..., None]
            return (per * weight).sum() / (weight.sum() * self.action_dim).clamp(min=1.0)
        return per.mean()


def _single_threaded_worker(worker_id: int) -> None:
    # Each loader worker builds one sample at a time; letting torch and OpenCV start a thread pool per
    # worker oversubscribes the cores (N workers x N threads) and slows loading several-fold.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _check_prompts(episodes: List[EpisodeArrays], prompt_check, source: str) -> None:
    """Every task text must fit the model's prompt; all that do not are reported at once."""
    problems = []
    for task in sorted({ep.task for ep in episodes}):
        try:
            prompt_check(task)
        except ValueError as err:
            problems.append(f"task {task!r} does not fit the model: {err}")
    if problems:
        raise DatasetError(source, problems)


def _log(info: DistInfo, message: str) -> None:
    if info.main:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- trainer
class Trainer:
    """Set up from a TrainConfig (or a checkpoint to resume), then ``run()``."""

    def __init__(self, cfg: TrainConfig, resume: Optional[str] = None, dataset: Optional[EpisodeDataset] = None,
                 val_dataset: Optional[EpisodeDataset] = None):
        """``dataset`` / ``val_dataset`` override opening ``cfg.dataset`` / ``cfg.val_dataset`` (in-memory data;
        the config's fields then only name them)."""
        self.info = init_distributed(cfg.device)
        self.cfg = cfg
        self.start_step = 0
        self.history: List[Dict[str, float]] = []
        self.saved: List[str] = []
        self.best: Optional[Dict[str, Any]] = None  # {"step", "val_loss", "path"} of the lowest held-out loss
        self.held_out: Optional[HeldOutLoss] = None
        state: Optional[Dict[str, Any]] = None
        if resume is not None:
            ckpt_dir = resolve_checkpoint(resume)
            state = torch.load(os.path.join(ckpt_dir, STATE_FILE), map_location="cpu", weights_only=False)
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"{ckpt_dir}: no {STATE_FORMAT} training state")
            saved_cfg = TrainConfig.from_dict(state["config"])
            # What may change on resume: where to write, how long to go, how to show it.
            self.cfg = cfg = dataclasses.replace(saved_cfg, out=cfg.out or saved_cfg.out,
                                                 steps=cfg.steps or saved_cfg.steps,
                                                 stop_after=cfg.stop_after, progress=cfg.progress,
                                                 num_workers=cfg.num_workers, device=cfg.device)
            self.bundle = model_setup.load(ckpt_dir)
            self.start_step = int(state["step"])
            self.history = list(state.get("history", []))
            self.best = state.get("best")
            _log(self.info, f"resuming {ckpt_dir} at step {self.start_step}")
        if cfg.fsdp and cfg.ema_decay:
            raise ValueError("EMA is not supported with FSDP (the shadows would be shards)")
        self.dataset = dataset if dataset is not None else open_dataset(cfg.dataset)
        self._val_source = val_dataset
        self._prepare_data_and_model(state)
        self._prepare_optimization(state)

    # ---------------------------------------------------------------------------------- setup
    @property
    def episode_lengths(self) -> List[int]:
        """Frames per episode trained on (saved with the training state, checked on resume)."""
        return [ep.length for ep in self.episodes]

    def _check_same_episodes(self, state: Dict[str, Any], source: str) -> None:
        """A resumed run continues the same sampling order only on the same episodes (a recorder may have appended
        to the dataset since): refuse other data rather than silently train on other chunks."""
        saved = state.get("episode_lengths")
        if saved is None:  # a state saved before this check existed
            _log(self.info, "pi0-train: warning: the checkpoint does not record its dataset's episodes; "
                            "cannot check that the dataset is unchanged")
            return
        if list(saved) != self.episode_lengths:
            raise DatasetError(source, [
                f"changed since the checkpoint: it trained on {len(saved)} episodes ({sum(saved)} frames), "
                f"the dataset now gives {len(self.episode_lengths)} episodes ({sum(self.episode_lengths)} frames); "
                "resume needs the same episodes (start a new run with --init to train on the new data)"])

    def _prepare_data_and_model(self, state: Optional[Dict[str, Any]]) -> None:
        cfg, info = self.cfg, self.info
        if cfg.model not in model_setup.MODEL_KINDS:
            raise ValueError(f"model must be one of {model_setup.MODEL_KINDS}")
        source = str(cfg.dataset)
        # Pass 1: the numbers (dims, NaN, empty episodes, cameras) before anything expensive.
        init_policy: Optional[Dict[str, Any]] = None
        if state is None and cfg.init:
            kind = model_setup.checkpoint_kind(cfg.init)
            if kind != cfg.model:
                raise ValueError(f"--init {cfg.init} is a {kind} checkpoint but --model is {cfg.model}")
            self.bundle = model_setup.load(cfg.init)
            init_policy = self.bundle.init_policy_config
        elif state is not None:
            init_policy = self.bundle.init_policy_config
        model_width = self.bundle.config.action_dim if (state is not None or cfg.init) else None
        if model_width is None:
            model_width = self._scratch_width()
        expect = Expectations(model_width=model_width)
        if init_policy is not None and not (cfg.new_embodiment and state is None):
            expect.state_dim, expect.action_dim = init_policy["state_dim"], init_policy["action_dim"]
        cameras = self._camera_slots(init_policy)
        expect.cameras = [c for c in cameras if c]
        dims = validate_dataset(self.dataset, expect, source)
        used = self.dataset.num_episodes if cfg.max_episodes is None else min(cfg.max_episodes,
                                                                               self.dataset.num_episodes)
        self.episodes = [self.dataset.episode(i) for i in range(used)]
        if state is not None:
            self._check_same_episodes(state, source)
        if cfg.cache_images and hasattr(self.dataset, "preload_images"):
            held = self.dataset.preload_images(progress=cfg.progress and self.info.main, episodes=used)
            _log(self.info, f"pi0-train: {held / 2**30:.2f} GiB of decoded images held in memory")
        if state is None and not cfg.init:
            tasks = sorted({ep.task for ep in self.episodes})
            overrides = {} if cfg.action_horizon is None else {"action_horizon": cfg.action_horizon}
            self.bundle = model_setup.create(cfg.model, cfg.config, overrides, tasks, cfg.seed)
        model_cfg = self.bundle.config
        horizon = model_cfg.action_horizon
        # Policy config: the checkpoint's when fine-tuning/resuming, else built from the data and flags.
        if state is not None or (init_policy is not None and not cfg.new_embodiment):
            policy = dict(init_policy)
        else:
            normalization = cfg.normalization or ("quantile" if cfg.model == "pi0_fast" else "zscore")
            policy = Pi0PolicyConfig(camera_names=cameras, state_dim=dims["state_dim"], action_dim=dims["action_dim"],
                                     delta_mask=list(self._delta_mask(dims, init_policy)),
                                     normalization=normalization, default_prompt=cfg.default_prompt).to_dict()
        if cfg.model == "pi0_fast" and policy["normalization"] != "quantile":
            raise ValueError("pi0-FAST trains with quantile normalization")
        self.policy_config = policy
        # Camera slots that get the geometric augmentation (empty slots: no image, flags are moot).
        self.augment_geometric = ([bool(name) and not is_wrist_camera(name) for name in policy["camera_names"]]
                                  if cfg.augment else None)
        self.augment_config = dataclasses.replace(ImageAugmentConfig(), crop_area=cfg.augment_crop_area,
                                                  max_rotation_deg=cfg.augment_rotation_deg)
        delta_mask = np.asarray(policy["delta_mask"], dtype=bool)
        # Statistics: computed once (rank 0's numbers equal everyone's: same data, deterministic).
        if state is not None:
            stats = self.bundle.init_norm_stats
        elif cfg.norm_stats:
            stats = load_norm_stats(cfg.norm_stats)
        else:
            stats = compute_norm_stats(self.episodes, horizon, delta_mask)
        for key, dim in (("state", policy["state_dim"]), ("actions", policy["action_dim"])):
            if key not in stats or stats[key].dim != dim:
                raise DatasetError(source, [f"norm stats {key!r} do not have {dim} dims"])
        self.norm_stats: Dict[str, NormStats] = stats
        # pi0-FAST tokenizer: kept when fine-tuning, fitted on the data from scratch.
        if cfg.model == "pi0_fast" and self.bundle.fast_tokenizer is None:
            chunks = fast_training_chunks(self.episodes, horizon, delta_mask, stats["actions"], model_cfg.action_dim)
            vocab = cfg.fast_vocab_size or model_cfg.fast_vocab_size
            self.bundle.fast_tokenizer = FastTokenizer.fit(chunks, scale=cfg.fast_scale, vocab_size=vocab)
            counts = [len(self.bundle.fast_tokenizer.encode(c)) for c in chunks[:: max(1, len(chunks) // 500)]]
            _log(info, f"FAST tokenizer fitted on {len(chunks)} chunks: {np.mean(counts):.1f} tokens per chunk "
                       f"(max {max(counts)}, decoding budget {model_cfg.max_decoding_steps})")
        # Samples through the inference transforms; pass 2 of the checks: every task must fit the model.
        if cfg.model == "pi0":
            self.builder = Pi0SampleBuilder(model_cfg, policy, stats, self.bundle.tokenizer)
            prompt_check = self.builder.tokenizer.tokenize
        else:
            self.builder = FastSampleBuilder(model_cfg, policy, stats, self.bundle.tokenizer,
                                             self.bundle.fast_tokenizer,
                                             state_noise=cfg.fast_state_noise if cfg.augment else 0.0)
            prompt_check = self.builder.prompt_fits
        _check_prompts(self.episodes, prompt_check, source)
        self.samples = ChunkSamples(self.dataset, self.episodes, self.builder, cfg.max_resting_chunks,
                                    model_cfg.action_horizon, cfg.resting_tolerance)
        if cfg.max_resting_chunks is not None:
            total = sum(ep.length for ep in self.episodes)
            _log(info, f"pi0-train: {total - len(self.samples)} of {total} chunk starts left out (resting chunks "
                       f"beyond the first {cfg.max_resting_chunks} of an episode)")
        if cfg.val_dataset or self._val_source is not None:
            # The held-out data must have the training data's dims (from scratch nothing else fixes them).
            held_expect = dataclasses.replace(expect, state_dim=dims["state_dim"], action_dim=dims["action_dim"])
            self.held_out = self._open_held_out(held_expect, stats, policy, prompt_check)
        # The network: trainable parts, checkpointing, device, precision.
        model = self.bundle.model
        model_setup.apply_freezing(model, cfg.freeze)
        if cfg.lora_rank > 0:
            wrapped = model_setup.apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
            _log(info, f"LoRA rank {cfg.lora_rank} on {wrapped} language-model linears")
        if state is not None and state.get("model") is not None:
            model.load_state_dict(state["model"], strict=True)
        model_setup.set_gradient_checkpointing(model, cfg.grad_checkpointing)
        self.counts = model_setup.trainable_summary(model)
        if self.counts["trainable"] == 0:
            raise ValueError(f"freeze={cfg.freeze!r} leaves nothing to train (use LoRA or freeze less)")
        self.amp = self._use_bf16()
        if self.amp:  # frozen weights need no fp32 master copy
            for p in model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        model.to(info.device).train()
        if info.device.type == "cuda":
            model.set_attention_impl("sdpa")
        self.model = model
        self.loss_module = LossModule(model, cfg.model, policy["action_dim"], cfg.mask_padded_actions)
        self.engine: nn.Module = self.loss_module
        if info.world > 1:
            if cfg.fsdp:
                self.engine = _fully_shard(self.loss_module)
            else:
                ids = [info.device.index] if info.device.type == "cuda" else None
                # pi0 never uses the LM's last-layer output (only its K/V), so some parameters get no grad.
                self.engine = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids,
                                                                  find_unused_parameters=cfg.model == "pi0")
        self.ema = model_setup.EMA(model, cfg.ema_decay) if cfg.ema_decay else None
        if self.ema is not None and state is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

    def _open_held_out(self, expect: Expectations, stats: Dict[str, NormStats], policy: Dict[str, Any],
                       prompt_check) -> HeldOutLoss:
        """The held-out set, checked like the training data, through the inference transforms (no noise)."""
        cfg, info = self.cfg, self.info
        source = str(cfg.val_dataset or "held-out set")
        dataset = self._val_source if self._val_source is not None else open_dataset(cfg.val_dataset)
        validate_dataset(dataset, expect, source)
        episodes = [dataset.episode(i) for i in range(dataset.num_episodes)]
        _check_prompts(episodes, prompt_check, source)
        if cfg.cache_images and hasattr(dataset, "preload_images"):
            dataset.preload_images(progress=False)
        if cfg.model == "pi0":
            builder = self.builder  # no training-only randomness in pi0's samples
        else:
            builder = FastSampleBuilder(self.bundle.config, policy, stats, self.bundle.tokenizer,
                                        self.bundle.fast_tokenizer, state_noise=0.0)
        samples = ChunkSamples(dataset, episodes, builder)
        _log(info, f"pi0-train: held-out set {source}: {len(episodes)} episodes, {len(samples)} chunks")
        return HeldOutLoss(samples, builder.collate, cfg.batch_size, info.rank, info.world)

    def held_out_loss(self) -> Optional[float]:
        """The loss of the weights a checkpoint would hold (EMA if on) on the held-out set; None without one."""
        if self.held_out is None:
            return None
        with weights_swapped(self.model, self.ema.shadow if self.ema is not None else None):
            return self.held_out(self.engine, self.info.device, autocast=self.amp)

    def _scratch_width(self) -> int:
        cfg = self.cfg
        if cfg.model == "pi0":
            from pi0_ros.model.config import get_pi0_config

            return get_pi0_config(cfg.config).action_dim
        from pi0_ros.model.pi0_fast import get_pi0_fast_config

        return get_pi0_fast_config(cfg.config).action_dim

    def _camera_slots(self, init_policy: Optional[Dict[str, Any]]) -> List[str]:
        if self.cfg.cameras is not None:
            return list(self.cfg.cameras)
        if init_policy is not None and not self.cfg.new_embodiment:
            return list(init_policy["camera_names"])
        slots = 3
        return list(self.dataset.camera_names[:slots])

    def _delta_mask(self, dims: Dict[str, int], init_policy: Optional[Dict[str, Any]]) -> np.ndarray:
        cfg, a = self.cfg, dims["action_dim"]
        if cfg.delta_layout:
            from pi0_ros.embodiment import load_embodiment

            mask = load_embodiment(cfg.embodiment).action_layout(cfg.delta_layout).delta_mask
        elif cfg.delta_dims is not None:
            mask = np.asarray(parse_dims(cfg.delta_dims, a), dtype=bool)
        elif init_policy is not None and len(init_policy.get("delta_mask") or []) == a:
            mask = np.asarray(init_policy["delta_mask"], dtype=bool)
        else:
            mask = np.zeros(a, dtype=bool)
        return check_delta_mask(mask, a, dims["state_dim"])

    def _use_bf16(self) -> bool:
        p = self.cfg.precision
        if p not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {p!r}")
        return self.info.device.type == "cuda" and p in ("auto", "bf16")

    def _prepare_optimization(self, state: Optional[Dict[str, Any]]) -> None:
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in self.engine.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
        self.trainable = decay + no_decay
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.generator = torch.Generator(device=self.info.device).manual_seed(cfg.seed * 1000 + self.info.rank + 1)
        if state is not None:
            if cfg.fsdp and self.info.world > 1:
                _fsdp_load_optimizer(self.engine, self.optimizer, state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            gens = state["generators"]
            if len(gens) != self.info.world:
                raise ValueError(f"checkpoint was written by {len(gens)} processes, this run has {self.info.world}")
            self.generator.set_state(gens[self.info.rank])
            torch.set_rng_state(state["torch_rng"])

    # ------------------------------------------------------------------------------------ run
    def run(self) -> Dict[str, Any]:
        cfg, info = self.cfg, self.info
        total = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
        sampler = StepBatches(len(self.samples), cfg.batch_size, info.rank, info.world, cfg.seed,
                              self.start_step, total)
        loader = torch.utils.data.DataLoader(self.samples, batch_sampler=sampler, collate_fn=self.builder.collate,
                                             num_workers=cfg.num_workers, worker_init_fn=_single_threaded_worker,
                                             persistent_workers=False, pin_memory=info.device.type == "cuda")
        if info.main:
            os.makedirs(cfg.out, exist_ok=True)
            save_norm_stats(os.path.join(cfg.out, "norm_stats.json"), self.norm_stats)
            _log(info, f"pi0-train: {cfg.model} ({cfg.init or cfg.config}), {self.counts['trainable'] / 1e6:.2f} M of "
                       f"{self.counts['total'] / 1e6:.2f} M parameters trainable, {len(self.episodes)} episodes, "
                       f"{len(self.samples)} chunks, global batch {cfg.batch_size * info.world} on "
                       f"{info.world} x {info.device.type}, steps {self.start_step} -> {total}")
        bar = None
        if info.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.start_step, desc="pi0-train", unit="step", mininterval=1.0,
                       dynamic_ncols=True)
        t_start, last_loss, step = time.perf_counter(), float("nan"), self.start_step
        metrics_path = os.path.join(cfg.out, "metrics.jsonl")
        for step, batch in zip(range(self.start_step, total), loader, strict=True):
            batch = batch_to_device(batch, info.device)
            if self.augment_geometric is not None:
                inputs = batch["inputs"]
                batch["inputs"] = dataclasses.replace(inputs, images=augment_images(
                    inputs.images, self.augment_geometric, self.augment_config, generator=self.generator))
            with torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.engine(batch, self.generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            loss_value = loss.detach().float()
            if info.world > 1:
                dist.all_reduce(loss_value)
                loss_value /= info.world
            last_loss = float(loss_value)
            record = {"step": step + 1, "loss": last_loss, "lr": lr, "grad_norm": float(grad_norm),
                      "time": time.perf_counter() - t_start}
            saving = (step + 1) % cfg.save_every == 0 or step + 1 == total
            val_loss = self.held_out_loss() if saving else None
            if val_loss is not None:
                record["val_loss"] = val_loss
                _log(info, f"pi0-train: step {step + 1}: held-out loss {val_loss:.4f}")
            self.history.append(record)
            if info.main:
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.update(1)
                    if (step + 1) % cfg.log_every == 0:
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            if saving:
                self.save(step + 1, val_loss)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t_start
        done = total - self.start_step
        summary = self._summary(total, done, elapsed)
        if info.main:
            summary.update({f"curve_{k}": v for k, v in save_curves(self.history, cfg.out).items()})
            with open(os.path.join(cfg.out, "summary.json"), "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
            print(format_summary(summary), flush=True)
        _barrier(info)
        return summary

    def _summary(self, total: int, done: int, elapsed: float) -> Dict[str, Any]:
        cfg, info = self.cfg, self.info
        losses = [h["loss"] for h in self.history]
        head = losses[: max(1, min(10, len(losses) // 10 or 1))]
        tail = losses[-max(1, min(10, len(losses) // 10 or 1)):]
        return {
            "model": cfg.model, "steps": total, "steps_this_run": done, "seconds": round(elapsed, 2),
            "steps_per_s": done / elapsed if elapsed > 0 else float("nan"),
            "samples_per_s": done * cfg.batch_size * info.world / elapsed if elapsed > 0 else float("nan"),
            "loss_first": float(np.mean(head)) if losses else float("nan"),
            "loss_last": float(np.mean(tail)) if losses else float("nan"),
            "trainable_params": self.counts["trainable"], "total_params": self.counts["total"],
            "checkpoint": self.saved[-1] if self.saved else None, "out": os.path.abspath(cfg.out),
            "peak_gpu_mem_gib": (torch.cuda.max_memory_allocated(info.device) / 2**30
                                 if info.device.type == "cuda" else None),
            **({} if self.best is None else {"best_val_loss": self.best["val_loss"], "best_step": self.best["step"],
                                              "best_checkpoint": self.best["path"]}),
        }

    # ----------------------------------------------------------------------------- checkpoints
    def export_model(self) -> model_setup.ExportView:
        """The deployable weights (EMA if on, LoRA merged), gathered on every rank."""
        replacements = self.ema.shadow if self.ema is not None else None
        if self.cfg.fsdp and self.info.world > 1:
            state = _fsdp_full_state(self.engine)
            model_state = {k[len("model."):]: v for k, v in state.items()}
            return model_setup.ExportView(self.model.config, model_setup.export_state_dict(
                _StateOnly(model_state, self.model), replacements))
        return model_setup.ExportView(self.model.config, model_setup.export_state_dict(self.model, replacements))

    def save(self, step: int, val_loss: Optional[float] = None) -> Optional[str]:
        """Write checkpoints/step_XXXXXX atomically (rank 0); every rank takes part in gathering.
        ``val_loss``: its held-out loss; the lowest so far becomes ``best``."""
        cfg, info = self.cfg, self.info
        view = self.export_model()
        if cfg.fsdp and info.world > 1:
            optim_state = _fsdp_full_optimizer(self.engine, self.optimizer)
        else:
            optim_state = self.optimizer.state_dict()
        gens = [self.generator.get_state()]
        if info.world > 1:
            gathered: List[Any] = [None] * info.world
            dist.all_gather_object(gathered, self.generator.get_state())
            gens = gathered
        final = None
        ckpt_root = os.path.join(cfg.out, "checkpoints")
        name = f"step_{step:06d}"
        new_best = val_loss is not None and (self.best is None or val_loss < self.best["val_loss"])
        old_best = self.best["path"] if new_best and self.best is not None else None
        if new_best:
            self.best = {"step": step, "val_loss": float(val_loss), "path": os.path.join(ckpt_root, name)}
        if info.main:
            os.makedirs(ckpt_root, exist_ok=True)
            final = os.path.join(ckpt_root, name)
            staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=ckpt_root)
            try:
                inner = os.path.join(staging, name)
                if cfg.model == "pi0":
                    save_checkpoint(inner, view, self.policy_config, self.norm_stats, self.bundle.tokenizer)
                else:
                    save_fast_checkpoint(inner, view, self.policy_config, self.norm_stats, self.bundle.tokenizer,
                                         self.bundle.fast_tokenizer)
                raw = None
                if self.ema is not None or cfg.lora_rank > 0:
                    raw = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                torch.save({"format": STATE_FORMAT, "version": 1, "config": cfg.to_dict(), "step": step,
                            "optimizer": optim_state, "scheduler": self.scheduler.state_dict(), "generators": gens,
                            "torch_rng": torch.get_rng_state(), "ema": self.ema.state_dict() if self.ema else None,
                            "model": raw, "history": self.history, "world_size": info.world,
                            "best": self.best, "episode_lengths": self.episode_lengths},
                           os.path.join(inner, STATE_FILE))
                with open(os.path.join(inner, PROVENANCE_FILE), "w", encoding="utf-8") as f:
                    action_space = cfg.action_space or getattr(self.dataset, "action_space", None)
                    json.dump({"step": step, "dataset": str(cfg.dataset), "action_space": action_space,
                               "fps": getattr(self.dataset, "fps", None),
                               "model": cfg.model, "init": cfg.init, "ema": bool(self.ema),
                               "lora_rank": cfg.lora_rank, "freeze": cfg.freeze, "val_loss": val_loss}, f,
                              indent=2)
                if os.path.exists(final):
                    shutil.rmtree(final)
                os.rename(inner, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _point_link(cfg.out, final, "last")
            if new_best:
                _point_link(cfg.out, final, "best")
                if old_best is not None and old_best not in self.saved and old_best != final:
                    shutil.rmtree(old_best, ignore_errors=True)  # a former best kept past keep_last
            self.saved.append(final)
            for old in self.saved[: -cfg.keep_last] if cfg.keep_last > 0 else []:
                if self.best is None or old != self.best["path"]:
                    shutil.rmtree(old, ignore_errors=True)
            self.saved = self.saved[-cfg.keep_last:] if cfg.keep_last > 0 else self.saved
            save_curves(self.history, cfg.out)
        _barrier(info)
        return final


class _StateOnly(nn.Module):
    """A state dict with the module structure of ``like`` (for export after an FSDP gather)."""

    def __init__(self, state: Dict[str, torch.Tensor], like: nn.Module):
        super().__init__()
        self._state, self._like = state, like

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._state

    def named_modules(self, *args, **kwargs):  # noqa: D102
        return self._like.named_modules(*args, **kwargs)


def _point_link(out: str, target: str, name: str) -> None:
    link = os.path.join(out, name)
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(target, out), tmp)
    os.replace(tmp, link)


def resolve_checkpoint(path: str) -> str:
    """A step checkpoint directory, or a run directory (its ``last`` checkpoint)."""
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    last = os.path.join(path, "last")
    if os.path.isfile(os.path.join(last, STATE_FILE)):
        return os.path.realpath(last)
    raise FileNotFoundError(f"{path}: neither a training checkpoint nor a run directory with one")


# ------------------------------------------------------------------------------------------ FSDP
def _fully_shard(module: LossModule) -> nn.Module:
    """FSDP2 units: every SigLIP layer, every Gemma MLP (about 3/4 of a Gemma layer's weights), then the
    root. Whole Gemma layers cannot be units: ``joint_forward`` calls their submodules, never their
    ``forward``, so FSDP's unshard hook would not run."""
    from torch.distributed.fsdp import fully_shard

    from pi0_ros.model.gemma import GemmaMLP
    from pi0_ros.model.siglip import SiglipEncoderLayer

    for sub in module.modules():
        if isinstance(sub, (GemmaMLP, SiglipEncoderLayer)):
            fully_shard(sub)
    fully_shard(module)
    return module


def _fsdp_full_state(engine: nn.Module) -> Dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(engine, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _fsdp_full_optimizer(engine: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(engine, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                cpu_offload=True))


def _fsdp_load_optimizer(engine: nn.Module, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(engine, optimizer, state, options=StateDictOptions(full_state_dict=True,
                                                                                broadcast_from_rank0=False))
