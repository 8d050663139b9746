"""Real-time chunking (RTC) for pi0: training-free guided inpainting toward the still-executing chunk.

Black, Galliker, Levine 2025 ("Real-Time Execution of Action Chunking Flow Policies"). While chunk A
executes, the next chunk is sampled; by the time it is ready, ``d`` more actions of A have run. The new
chunk is therefore sampled with guidance toward A's remaining actions ``Y``: each denoising step
predicts the clean chunk, measures its error to ``Y`` under a soft mask ``W`` (1 on the first ``d``
steps, which are committed; decaying over the rest of the overlap; 0 from ``H - s`` on, where ``s`` is
the execution horizon) and corrects the velocity with a vector-Jacobian product.

Conventions are openpi's (t = 1 noise, t = 0 data, x_t = t * noise + (1 - t) * a, v = noise - a,
Euler with dt = -1/num_steps), the OPPOSITE of the paper's (tau = 1 - t, v_paper = -v). So here:

- clean prediction: ``x1_hat = x_t - t * v``;
- error: ``e = (Y - x1_hat) * W``;
- ``g = e^T d x1_hat / d x_t`` (one ``torch.autograd.grad`` through the action expert; the prefix K/V
  cache is a constant that takes no gradient);
- guided velocity: ``v - w(t) * g`` (minus: moving x_t along +g shrinks the error, and the Euler step
  multiplies v by a negative dt);
- weight: the paper's ``min(beta, (1 - tau) / (tau * r^2))``, ``r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``,
  which in t reads ``min(beta, (t^2 + (1 - t)^2) / (t * (1 - t)))`` (symmetric, infinite at both ends,
  so the clip ``beta`` is what acts at t = 1).

Everything happens in model space (normalized, delta, padded). :func:`infer_guided` turns a policy-level
request (previous actions in the policy's OUTPUT units) into model space and samples.

Speed: guidance costs one backward pass through the action expert per denoising step (about 2-3x the
expert's forward). pi0 has no CUDA-graph / compiled fast path today; RTC runs eagerly by design
(autograd cannot run inside a captured graph), so a future fast path must fall back to this module
whenever a request carries ``rtc``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from pi0_ros.model import action_transforms
from pi0_ros.model.normalization import normalize
from pi0_ros.policy_api import PolicyInputError

# Defaults chosen by bench/rtc.py (BENCHMARKS.md "Real-time chunking"): a linear decay and beta = 10
# gave smaller boundary jumps than the paper's exponential decay and/or beta = 5 at 0-300 ms delays.
DEFAULT_MAX_GUIDANCE = 10.0  # the clip beta
SCHEDULES = ("exp", "linear")
DEFAULT_SCHEDULE = "linear"

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, H, A], t 0-d) -> v [B, H, A]


def soft_mask(horizon: int, delay: int, overlap_end: int, schedule: str = DEFAULT_SCHEDULE) -> np.ndarray:
    """Per-step guidance weights W [horizon] in [0, 1].

    1 for i < ``delay`` (actions that execute before the new chunk can); for delay <= i < overlap_end
    a decay with c_i = (overlap_end - i) / (overlap_end - delay + 1): ``c_i * (e^c_i - 1) / (e - 1)``
    ("exp", the paper's) or ``c_i`` ("linear"); 0 from ``overlap_end`` on. ``delay`` is clipped into
    [0, overlap_end] and ``overlap_end`` into [0, horizon].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {SCHEDULES}")
    overlap_end = int(min(max(overlap_end, 0), horizon))
    delay = int(min(max(delay, 0), overlap_end))
    w = np.zeros(horizon, dtype=np.float32)
    w[:delay] = 1.0
    i = np.arange(delay, overlap_end)
    c = (overlap_end - i) / (overlap_end - delay + 1)
    w[delay:overlap_end] = c * np.expm1(c) / math.expm1(1.0) if schedule == "exp" else c
    return w


def guidance_weight(t: float, max_weight: float) -> float:
    """The paper's PiGDM weight at openpi time ``t`` (1 = noise), clipped to ``max_weight``."""
    if max_weight <= 0.0:
        return 0.0
    tau = 1.0 - t
    if tau <= 0.0 or tau >= 1.0:
        return float(max_weight)
    return float(min(max_weight, (tau * tau + t * t) / (tau * t)))


def guided_velocity(velocity_fn: VelocityFn, x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor,
                    weights: torch.Tensor, max_weight: float) -> torch.Tensor:
    """v(x_t, t) corrected toward ``target`` [B, H, A] under ``weights`` [B or 1, H, A] (see module doc)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        v = velocity_fn(x, t)
        x1_hat = x - t * v
        error = (target - x1_hat) * weights
        (g,) = torch.autograd.grad(x1_hat, x, grad_outputs=error)
    return v.detach() - guidance_weight(float(t), max_weight) * g


def guided_sample(velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int, target: torch.Tensor,
                  weights: torch.Tensor, max_weight: float = DEFAULT_MAX_GUIDANCE) -> torch.Tensor:
    """Euler integration from t = 1 (``noise``) to t = 0 with RTC-guided velocities, in fp32.

    Time is accumulated exactly as in ``Pi0Model.sample_actions`` so that zero guidance reproduces it.
    """
    device = noise.device
    dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=device)
    t = torch.tensor(1.0, dtype=torch.float32, device=device)
    x_t = noise.to(torch.float32)
    target = target.to(device=device, dtype=torch.float32)
    weights = weights.to(device=device, dtype=torch.float32)
    for _ in range(num_steps):
        v = guided_velocity(velocity_fn, x_t, t, target, weights, max_weight)
        x_t = x_t + dt * v
        t = t + dt
    return x_t.detach()


def sample_actions_rtc(model: Any, inputs: Any, noise: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                       num_steps: Optional[int] = None, max_weight: float = DEFAULT_MAX_GUIDANCE) -> torch.Tensor:
    """``Pi0Model.sample_actions`` with RTC guidance: the prefix runs once without grad, each step through
    ``denoise_step`` with grad w.r.t. x_t only. Returns normalized padded actions [B, H, A]."""
    num_steps = num_steps or model.config.num_steps
    with torch.no_grad():  # not inference_mode: its tensors could not take part in the backward pass
        cache = model.prefill(inputs)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.denoise_step(x, t, cache)

    return guided_sample(velocity, noise, num_steps, target, weights, max_weight)


@dataclasses.dataclass
class RTCRequest:
    """The ``observation["rtc"]`` entry, validated.

    ``prev_actions``: the previous chunk's not-yet-executed actions [n, action_dim] in the policy's
    output units, index 0 being the action that executes at this observation's time. ``delay_steps``:
    control steps until the new chunk can take over. ``execute_steps``: the execution horizon s (the
    guidance stops at ``H - s``). ``max_guidance_weight`` and ``schedule`` are optional.
    """

    prev_actions: np.ndarray
    delay_steps: int
    execute_steps: int
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE
    schedule: str = DEFAULT_SCHEDULE

    @classmethod
    def parse(cls, raw: Any, action_dim: int) -> "RTCRequest":
        """Validate an ``observation["rtc"]`` value; PolicyInputError says what is wrong."""
        if not isinstance(raw, Mapping):
            raise PolicyInputError("observation['rtc'] must be a dict")
        missing = [k for k in ("prev_actions", "delay_steps", "execute_steps") if k not in raw]
        if missing:
            raise PolicyInputError(f"observation['rtc'] lacks {missing}")
        try:
            prev = np.asarray(raw["prev_actions"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise PolicyInputError(f"rtc prev_actions is not numeric: {err}") from err
        if prev.ndim != 2 or prev.shape[1] != action_dim:
            raise PolicyInputError(f"rtc prev_actions must be [n, {action_dim}], got {prev.shape}")
        if not np.isfinite(prev).all():
            raise PolicyInputError("rtc prev_actions has NaN/inf")
        ints = {}
        for key in ("delay_steps", "execute_steps"):
            value = raw[key]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
                raise PolicyInputError(f"rtc {key} must be a non-negative int, got {value!r}")
            ints[key] = int(value)
        beta = raw.get("max_guidance_weight", DEFAULT_MAX_GUIDANCE)
        if not isinstance(beta, (int, float, np.floating, np.integer)) or not math.isfinite(beta) or beta < 0:
            raise PolicyInputError(f"rtc max_guidance_weight must be a finite number >= 0, got {beta!r}")
        schedule = raw.get("schedule", DEFAULT_SCHEDULE)
        if schedule not in SCHEDULES:
            raise PolicyInputError(f"rtc schedule must be one of {SCHEDULES}, got {schedule!r}")
        return cls(prev, ints["delay_steps"], ints["execute_steps"], float(beta), schedule)

    def model_space(self, horizon: int, model_dim: int, state: np.ndarray, delta_mask: np.ndarray,
                    stats: Any, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """(target, weights), both float32 [horizon, model_dim]: the previous actions converted like
        training targets (absolute -> delta where configured, normalized, zero-padded) and the soft mask
        restricted to the real action dims and to the steps ``prev_actions`` covers."""
        n = min(self.prev_actions.shape[0], horizon)
        action_dim = self.prev_actions.shape[1]
        target = np.zeros((horizon, model_dim), dtype=np.float32)
        weights = np.zeros((horizon, model_dim), dtype=np.float32)
        if n == 0:
            return target, weights
        prev = action_transforms.to_delta(self.prev_actions[:n], state, delta_mask)
        target[:n, :action_dim] = normalize(prev, stats, mode)
        overlap_end = min(n, horizon - self.execute_steps) if self.execute_steps else n
        overlap_end = max(overlap_end, min(self.delay_steps, n))  # committed steps are always guided
        mask = soft_mask(horizon, self.delay_steps, overlap_end, self.schedule)
        weights[:, :action_dim] = mask[:, None]
        return target, weights


def infer_guided(policy: Any, inputs: Any, state: np.ndarray, raw_request: Any,
                 noise: Optional[torch.Tensor]) -> torch.Tensor:
    """The RTC branch of ``Pi0Policy.infer``: model-space output [1, H, A_model] (eager, with grad)."""
    mc = policy.model_config
    request = RTCRequest.parse(raw_request, policy.config.action_dim)
    target, weights = request.model_space(mc.action_horizon, mc.action_dim, state,
                                          np.asarray(policy.config.delta_mask, dtype=bool),
                                          policy.action_stats, policy.config.normalization)
    device = inputs.state.device
    if request.max_guidance_weight == 0.0 or not weights.any():
        with torch.inference_mode():  # nothing to guide toward: exactly the plain sampler
            return policy.model.sample_actions(inputs, noise=noise, num_steps=policy.num_steps)
    if noise is None:
        noise = policy.model.sample_noise(1, None, device)
    return sample_actions_rtc(policy.model, inputs, noise,
                              torch.from_numpy(target)[None].to(device), torch.from_numpy(weights)[None].to(device),
                              num_steps=policy.num_steps, max_weight=request.max_guidance_weight)
