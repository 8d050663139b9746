"""Asynchronous chunk strategies: ``async_naive``, ``temporal_ensemble``, ``fast_blend`` and ``rtc``.

They register in :data:`pi0_ros.control.chunking.STRATEGIES` (importing this module is enough; the
chunking module imports it at its end). Unlike ``sync``, every one of them aligns a chunk to the time of
the observation it was computed from: action ``k`` of a chunk is meant for ``obs_time + k * dt``, so when
a chunk arrives ``latency`` late its first ``round(latency / dt)`` actions are already in the past and
are skipped. Inference runs while a chunk executes: a new one is wanted once the newest chunk has run
for ``execute_steps`` (the execution horizon s) or would run dry within the expected latency.

- ``async_naive``: switch to a new chunk on arrival.
- ``temporal_ensemble`` (ACT): average every chunk that covers the current time, weight
  ``exp(-m * age)`` with ``age`` the steps by which a chunk is newer than the oldest one (ACT favours
  older predictions; ``m`` = ``ensemble_decay``).
- ``fast_blend``: switch on arrival with a linear cross-fade from the old chunk to the new one over
  ``blend_steps`` ticks. The smoothing option for pi0-FAST (autoregressive tokens: nothing to guide,
  and a DCT-coded chunk cannot be prefix-constrained action by action); it works for any policy.
- ``rtc``: ``async_naive`` alignment, and :meth:`RTCStrategy.inference_request` supplies
  ``observation["rtc"]`` so that the policy guides the new chunk toward the remaining actions of the
  current one (pi0: ``pi0_ros.model.rtc``). The delay ``d`` is measured online as the number of steps
  each new chunk skipped on arrival (a running max over the last ``delay_window`` chunks, never below
  the caller's expected latency).

How a node drives them (in addition to the ``ChunkStrategy`` calls): when it builds an observation at
``obs_time`` it merges ``inference_request(obs_time, expected_latency_s)`` into it (every strategy here
has the method; it returns ``{}`` except for ``rtc``; :func:`inference_request` also accepts strategies
without it), and it creates the resulting :class:`Chunk` with that same ``obs_time``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from pi0_ros.control import chunking
from pi0_ros.control.chunking import Chunk, ChunkStrategy, chunk_index

ACT_ENSEMBLE_DECAY = 0.01  # ACT's m, per step of age
DEFAULT_BLEND_STEPS = 10
DEFAULT_DELAY_WINDOW = 10


def steps_for(seconds: float, dt: float) -> int:
    """Control steps needed to cover ``seconds`` (ceil, tolerant of float noise such as 0.14 / 0.02)."""
    return max(0, math.ceil(seconds / dt - 1e-6))


def inference_request(strategy: ChunkStrategy, now: float, expected_latency_s: float) -> Dict[str, Any]:
    """Extra observation fields the strategy wants for the inference starting at ``now`` ({} for most)."""
    method = getattr(strategy, "inference_request", None)
    return method(now, expected_latency_s) if method is not None else {}


class AsyncStrategy(ChunkStrategy):
    """Shared machinery: time alignment, the inference trigger, online delay measurement."""

    name = "async"

    def __init__(self, dt: float, execute_steps: int, margin_steps: int = 2,
                 delay_window: int = DEFAULT_DELAY_WINDOW):
        super().__init__(dt)
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        self.execute_steps = execute_steps
        self.margin_steps = max(0, margin_steps)
        self._delays: Deque[int] = deque(maxlen=max(1, delay_window))
        self._chunks: List[Chunk] = []  # oldest first; the last one is the newest
        self._fresh: List[Chunk] = []  # added, not used yet (their first use measures the delay)
        self._last_index = -1  # index into the newest chunk at the last tick that produced targets
        self.started = 0  # chunks that began to influence the targets

    # -- ChunkStrategy ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every chunk and the delay history."""
        self._chunks, self._fresh, self._last_index = [], [], -1
        self._delays.clear()

    def add(self, chunk: Chunk) -> None:
        """Keep a chunk newer than every known one; an older one (out of order) is ignored."""
        if self._chunks and chunk.obs_time <= self._chunks[-1].obs_time:
            return
        self._chunks.append(chunk)
        self._fresh.append(chunk)

    def wants_inference(self, now: float, latency_s: float) -> bool:
        """No chunk yet, the newest has run ``execute_steps``, or it runs dry within the latency."""
        newest = self.current
        if newest is None:
            return True
        elapsed = chunk_index(newest, now, self.dt)
        if elapsed >= self.execute_steps:
            return True
        lead = steps_for(latency_s, self.dt) + self.margin_steps
        return newest.decoded.horizon - elapsed <= lead

    @property
    def queue_depth(self) -> int:
        """Actions of the newest chunk after the last executed one."""
        newest = self.current
        if newest is None:
            return 0
        return max(0, newest.decoded.horizon - max(self._last_index + 1, 0))

    @property
    def current(self) -> Optional[Chunk]:
        """The newest chunk (the one being switched to or executed)."""
        return self._chunks[-1] if self._chunks else None

    # -- extras ----------------------------------------------------------------------------------

    def inference_request(self, now: float, expected_latency_s: float) -> Dict[str, Any]:
        """Extra observation fields for an inference starting at ``now``: none by default."""
        return {}

    def delay_steps(self, expected_latency_s: float = 0.0) -> int:
        """Estimated steps a new chunk will skip: max of recent measurements and the expected latency."""
        return max([steps_for(expected_latency_s, self.dt), *self._delays])

    @property
    def measured_delays(self) -> List[int]:
        """Recent delays (steps skipped by each new chunk on its first use), oldest first."""
        return list(self._delays)

    def _covering(self, now: float) -> List[Tuple[Chunk, int]]:
        """(chunk, index) for every chunk with an action for ``now``; expired chunks are dropped."""
        alive, covering = [], []
        for chunk in self._chunks:
            k = chunk_index(chunk, now, self.dt)
            if k < chunk.decoded.horizon:
                covering.append((chunk, k))
                alive.append(chunk)
            elif chunk is self._chunks[-1]:
                alive.append(chunk)  # the newest stays (``current``) until a newer one replaces it
        self._chunks = alive
        return covering

    def _use_newest(self, covering: List[Tuple[Chunk, int]]) -> Tuple[Chunk, int]:
        """Execute the newest covering chunk: only it counts as started; chunks it superseded never ran."""
        chunk, k = covering[-1]
        self._fresh = [c for c in self._fresh if c.obs_time >= chunk.obs_time]
        self._note_first_use([(chunk, k)])
        self._last_index = k
        return chunk, k

    def _note_first_use(self, covering: List[Tuple[Chunk, int]]) -> None:
        # Identity, not ==: Chunk is a dataclass of arrays.
        used = {id(c): k for c, k in covering}
        alive = {id(c) for c in self._chunks}
        still_fresh = []
        for chunk in self._fresh:
            if id(chunk) in used:
                self._delays.append(used[id(chunk)])
                self.started += 1
            elif id(chunk) in alive:
                still_fresh.append(chunk)  # (a chunk that expired before it was ever used is dropped)
        self._fresh = still_fresh


class AsyncNaiveStrategy(AsyncStrategy):
    """Switch to a new chunk as soon as it arrives, at the action meant for the current time."""

    name = "async_naive"

    def next_targets(self, now: float) -> Optional[Dict[str, np.ndarray]]:
        """The newest chunk's action for ``now``; an older chunk only while the newest does not cover it."""
        covering = self._covering(now)
        if not covering:
            return None
        chunk, k = self._use_newest(covering)
        self._chunks = [c for c in self._chunks if c.obs_time >= chunk.obs_time]
        return chunk.decoded.step(k)


class TemporalEnsembleStrategy(AsyncStrategy):
    """ACT's temporal ensembling over every chunk that has an action for the current time."""

    name = "temporal_ensemble"

    def __init__(self, dt: float, execute_steps: int, margin_steps: int = 2,
                 ensemble_decay: float = ACT_ENSEMBLE_DECAY, delay_window: int = DEFAULT_DELAY_WINDOW):
        super().__init__(dt, execute_steps, margin_steps, delay_window)
        self.ensemble_decay = float(ensemble_decay)

    def weights(self, chunks: List[Chunk]) -> np.ndarray:
        """Normalized weights, oldest first: exp(-m * steps newer than the oldest chunk)."""
        ages = np.array([(c.obs_time - chunks[0].obs_time) / self.dt for c in chunks])
        w = np.exp(-self.ensemble_decay * ages)
        return w / w.sum()

    def next_targets(self, now: float) -> Optional[Dict[str, np.ndarray]]:
        """Weighted mean of the covering chunks' actions for ``now``."""
        covering = self._covering(now)
        if not covering:
            return None
        self._note_first_use(covering)
        w = self.weights([c for c, _ in covering])
        steps = [c.decoded.step(k) for c, k in covering]
        self._last_index = covering[-1][1] if covering[-1][0] is self.current else self._last_index
        return {group: sum(wi * s[group] for wi, s in zip(w, steps, strict=True)) for group in steps[-1]}


class FastBlendStrategy(AsyncStrategy):
    """``async_naive`` with a linear cross-fade from the old chunk to the new one over ``blend_steps``."""

    name = "fast_blend"

    def __init__(self, dt: float, execute_steps: int, margin_steps: int = 2,
                 blend_steps: int = DEFAULT_BLEND_STEPS, delay_window: int = DEFAULT_DELAY_WINDOW):
        super().__init__(dt, execute_steps, margin_steps, delay_window)
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        self.blend_steps = blend_steps
        self._used: Optional[Chunk] = None  # the chunk the last targets came from
        self._blend: Optional[Tuple[Chunk, int]] = None  # (old chunk, ticks since the switch)

    def reset(self) -> None:
        """Drop every chunk, the blend in progress and the delay history."""
        super().reset()
        self._used, self._blend = None, None

    def next_targets(self, now: float) -> Optional[Dict[str, np.ndarray]]:
        """The newest chunk's action, mixed with the previous chunk's for the first ``blend_steps`` ticks."""
        covering = self._covering(now)
        if not covering:
            return None
        chunk, k = self._use_newest(covering)
        if self._used is not None and self._used is not chunk:
            self._blend = (self._used, 0)  # a switch (mid-blend: fade out of the chunk last used)
        self._used = chunk
        target = chunk.decoded.step(k)
        if self._blend is None:
            return target
        old, ticks = self._blend
        k_old = chunk_index(old, now, self.dt)
        if ticks >= self.blend_steps or k_old >= old.decoded.horizon:
            self._blend = None
            return target
        self._blend = (old, ticks + 1)
        alpha = (ticks + 1) / (self.blend_steps + 1)
        before = old.decoded.step(k_old)
        return {group: (1 - alpha) * before[group] + alpha * target[group] for group in target}


class RTCStrategy(AsyncNaiveStrategy):
    """``async_naive`` execution plus the ``rtc`` request for guided inference (real-time chunking)."""

    name = "rtc"

    def __init__(self, dt: float, execute_steps: int, margin_steps: int = 2,
                 max_guidance_weight: Optional[float] = None, schedule: Optional[str] = None,
                 delay_window: int = DEFAULT_DELAY_WINDOW):
        super().__init__(dt, execute_steps, margin_steps, delay_window)
        self.max_guidance_weight = max_guidance_weight
        self.schedule = schedule

    def inference_request(self, now: float, expected_latency_s: float) -> Dict[str, Any]:
        """``{"rtc": {...}}`` for an observation taken at ``now``, or {} when there is nothing to guide toward.

        ``prev_actions``: the newest chunk's actions from the one meant for ``now`` on, in the policy's
        output units (as the policy returned them); ``delay_steps``: :meth:`delay_steps`;
        ``execute_steps``: the execution horizon.
        """
        newest = self.current
        if newest is None:
            return {}
        k = chunk_index(newest, now, self.dt)
        prev = np.asarray(newest.actions)[k:]
        if prev.shape[0] == 0:
            return {}
        request: Dict[str, Any] = {
            "prev_actions": prev.astype(np.float32),
            "delay_steps": int(self.delay_steps(expected_latency_s)),
            "execute_steps": int(self.execute_steps),
        }
        if self.schedule is not None:
            request["schedule"] = self.schedule
        if self.max_guidance_weight is not None:
            request["max_guidance_weight"] = float(self.max_guidance_weight)
        return {"rtc": request}


for _cls in (AsyncNaiveStrategy, TemporalEnsembleStrategy, FastBlendStrategy, RTCStrategy):
    chunking.STRATEGIES.setdefault(_cls.name, _cls)
