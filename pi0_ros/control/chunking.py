"""Chunk scheduling: which action of which chunk the control loop executes at each tick.

A :class:`Chunk` keeps the time of the observation it was computed from, so strategies can align
chunks to that time. Strategies implement :class:`ChunkStrategy`; ``sync`` (open-loop execution of
the first N of H actions, next inference started early enough to be ready when they run out) is
implemented here; other strategies (``async_naive``, ``temporal_ensemble``, ``rtc``) register in
:data:`STRATEGIES` with the same interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from pi0_ros.control.action_codec import DecodedChunk


@dataclass
class Chunk:
    """One policy result, decoded to joint targets."""

    actions: np.ndarray  # [H, action_dim] as the policy returned them (layout units)
    decoded: DecodedChunk  # per-group joint targets [H, n], robot units
    obs_time: float  # monotonic time of the observation the chunk was computed from
    ready_time: float  # monotonic time the decoded chunk reached the control loop
    request_id: int
    inputs_received: Dict[str, float] = field(default_factory=dict)  # camera -> arrival time of its frame

    @property
    def latency_s(self) -> float:
        """Observation to ready."""
        return self.ready_time - self.obs_time


def chunk_index(chunk: Chunk, now: float, dt: float) -> int:
    """Index of the action of ``chunk`` meant for time ``now`` (nearest control step, never negative)."""
    return max(0, int(math.floor((now - chunk.obs_time) / dt + 0.5)))


class ChunkStrategy(ABC):
    """Turns a stream of chunks into one target per control tick."""

    name = "?"

    def __init__(self, dt: float):
        self.dt = dt

    @abstractmethod
    def reset(self) -> None:
        """Drop every chunk (mode switch, fault): nothing stale may run afterwards."""

    @abstractmethod
    def add(self, chunk: Chunk) -> None:
        """A new chunk is ready."""

    @abstractmethod
    def next_targets(self, now: float) -> Optional[Dict[str, np.ndarray]]:
        """Targets for this tick (advancing the schedule), or None when no action is available."""

    @abstractmethod
    def wants_inference(self, now: float, latency_s: float) -> bool:
        """Whether a new inference should start now, given the expected latency."""

    @property
    @abstractmethod
    def queue_depth(self) -> int:
        """Actions left to execute (including pending chunks)."""

    @property
    @abstractmethod
    def current(self) -> Optional[Chunk]:
        """The chunk being executed, if any."""


class SyncStrategy(ChunkStrategy):
    """Open loop: run N actions of a chunk, then the next chunk.

    The next inference starts when the actions left cover no more than the expected latency plus
    ``margin_steps``, so with a latency below N control periods the queue never runs dry. Action k of a
    chunk is meant for ``obs_time + k dt``: a chunk starts at the action meant for the tick it starts on
    (the ones whose time passed while the model ran and the previous chunk finished are skipped), then
    runs N actions (fewer where the horizon ends). Starting at action 0 instead replays, every chunk, the
    motion of the ticks between its observation and its start: the robot then moves at a fraction of
    the demonstrated speed (seen: a third, with a 5-of-10 schedule and 3-4 ticks of prefetch).
    """

    name = "sync"

    def __init__(self, dt: float, execute_steps: int, margin_steps: int = 2):
        super().__init__(dt)
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        self.execute_steps = execute_steps
        self.margin_steps = max(0, margin_steps)
        self._current: Optional[Chunk] = None
        self._index = 0
        self._end = 0  # one past the current chunk's last action to run
        self._pending: Optional[Chunk] = None
        self.started = 0  # chunks that began executing (the node publishes each once)
        self.last_start_index: Optional[int] = None  # the action the newest started chunk began at

    def _limit(self, chunk: Chunk) -> int:
        return min(self.execute_steps, chunk.decoded.horizon)

    def reset(self) -> None:
        """Drop the current and pending chunks."""
        self._current, self._pending, self._index, self._end = None, None, 0, 0

    def add(self, chunk: Chunk) -> None:
        """Queue a chunk behind the current one (a newer pending chunk replaces an older one)."""
        self._pending = chunk

    def next_targets(self, now: float) -> Optional[Dict[str, np.ndarray]]:
        """The next action of the current chunk, switching to the pending chunk when it runs out."""
        if self._current is None or self._index >= self._end:
            if self._pending is None:
                self._current = None
                return None
            chunk, self._pending = self._pending, None
            horizon = chunk.decoded.horizon
            self._current, self._index = chunk, min(chunk_index(chunk, now, self.dt), horizon - 1)
            self._end = min(self._index + self._limit(chunk), horizon)
            self.started += 1
            self.last_start_index = self._index
        targets = self._current.decoded.step(self._index)
        self._index += 1
        return targets

    def wants_inference(self, now: float, latency_s: float) -> bool:
        """No chunk pending and the current one ends within the expected latency (plus margin)."""
        if self._pending is not None:
            return False
        lead = math.ceil(max(latency_s, 0.0) / self.dt) + self.margin_steps
        return self.queue_depth <= lead

    @property
    def queue_depth(self) -> int:
        """Actions left in the current chunk plus the pending chunk's executable actions."""
        left = 0 if self._current is None else max(0, self._end - self._index)
        return left + (0 if self._pending is None else self._limit(self._pending))

    @property
    def current(self) -> Optional[Chunk]:
        """The chunk being executed."""
        return self._current

    @property
    def observes_a_chunk_late(self) -> bool:
        """Whether the newest chunk's observation was taken before the previous chunk had moved the arm.

        A chunk that starts at action ``execute_steps`` or later was observed on or before the previous chunk's
        first tick, before that tick's target could act (the inference lead, latency plus margin, covered the
        whole execution). Then the even and the odd chunks form two chains that never see each other's motion,
        and a policy that answers "stay" near its goal makes the arm alternate between two poses at the chunk
        period (BENCHMARKS.md, pi0-FAST seventh attempt). An arm that lags its targets sees little of the
        previous chunk one action earlier too. A smaller margin, more actions per chunk or an asynchronous
        strategy avoids it."""
        return self.last_start_index is not None and self.last_start_index >= self.execute_steps


StrategyFactory = Callable[..., ChunkStrategy]
STRATEGIES: Dict[str, StrategyFactory] = {"sync": SyncStrategy}


def make_strategy(name: str, dt: float, execute_steps: int, margin_steps: int = 2) -> ChunkStrategy:
    """Build a registered strategy; ValueError lists the known names."""
    factory = STRATEGIES.get(name)
    if factory is None:
        raise ValueError(f"unknown chunk strategy {name!r}; known: {sorted(STRATEGIES)}")
    return factory(dt=dt, execute_steps=execute_steps, margin_steps=margin_steps)


# The asynchronous strategies (async_naive, temporal_ensemble, fast_blend, rtc) register themselves here.
from pi0_ros.control import chunk_strategies  # noqa: E402,F401
