"""Held-out loss during training: the same loss as training, on demonstrations the run does not train on.

Why: on small demonstration sets the training loss keeps falling after the loss on unseen demonstrations has
turned (BENCHMARKS.md: 112 demos bottom out at step 2,500 of a continuation, then rise), so the run measures
that loss at every checkpoint and marks the lowest as ``best``. It measures the fit, not the closed loop: at
equal held-out loss, closed-loop success can differ (BENCHMARKS.md, pi0-FAST third attempt).

The measure is deterministic, so checkpoints compare on the same footing: every sample of the held-out set
in a fixed order, no image augmentation and no state noise (the sample builder given here is the inference
one), and pi0's flow-matching noise and times drawn from a generator seeded the same way every time. With
several processes each takes every ``world``-th sample and the sums are all-reduced. With EMA the loss is
that of the EMA weights, the ones a checkpoint holds.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from pi0_ros.training.samples import batch_to_device

VAL_NOISE_SEED = 1234


class HeldOutLoss:
    """Mean per-sample loss over a fixed list of samples.

    ``samples`` is indexable (a :class:`~pi0_ros.training.trainer.ChunkSamples`), ``collate`` its batcher and
    ``loss_fn(batch, generator)`` the training loss of one batch (a mean over its samples)."""

    def __init__(self, samples: Sequence[Any], collate: Callable[[List[Any]], Dict[str, Any]], batch_size: int,
                 rank: int = 0, world: int = 1):
        if len(samples) == 0:
            raise ValueError("the held-out set has no samples")
        self.samples, self.collate, self.batch_size = samples, collate, max(1, int(batch_size))
        self.indices = list(range(rank, len(samples), world))

    @torch.no_grad()
    def __call__(self, loss_fn: Callable[[Dict[str, Any], torch.Generator], torch.Tensor],
                 device: torch.device, autocast: bool = False) -> float:
        generator = torch.Generator(device=device).manual_seed(VAL_NOISE_SEED)
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, len(self.indices), self.batch_size):
            part = self.indices[start:start + self.batch_size]
            batch = batch_to_device(self.collate([self.samples[i] for i in part]), device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(batch, generator)
            total += loss.double() * len(part)
            count += len(part)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)
            dist.all_reduce(count)
        return float(total / count)


@contextlib.contextmanager
def weights_swapped(model: nn.Module, replacements: Optional[Dict[str, torch.Tensor]]) -> Iterator[None]:
    """Within the block, ``model``'s named parameters hold ``replacements`` (e.g. EMA shadows); restored after."""
    if not replacements:
        yield
        return
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in replacements}
    try:
        with torch.no_grad():
            for n, value in replacements.items():
                params[n].copy_(value.to(params[n].dtype))
        yield
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)
