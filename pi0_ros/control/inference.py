"""Runs the policy in a worker thread so that the control loop never waits for it.

The control loop hands over an :class:`InferenceRequest` (a snapshot of raw inputs taken at one
instant, decoded in the worker) and picks up :class:`InferenceOutcome` s without blocking. Each
request carries the control core's ``epoch``; outcomes from an older epoch (a mode switch happened
meanwhile) are stale and dropped by the caller.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional

import numpy as np

from pi0_ros.control.action_codec import ActionDecoder
from pi0_ros.control.chunking import Chunk
from pi0_ros.policy_api import Observation, Policy, PolicyInputError, PolicyOutputError


@dataclass
class InferenceRequest:
    """Everything one inference needs, captured by the control loop at ``obs_time``."""

    request_id: int
    epoch: int
    obs_time: float
    build_observation: Callable[[], Observation]  # runs in the worker (image decoding)
    start: Mapping[str, np.ndarray]  # measured joints per group at obs_time (delta actions, IK seed)
    inputs_received: Mapping[str, float] = field(default_factory=dict)  # camera -> arrival of the frame used


@dataclass
class InferenceOutcome:
    """A decoded chunk, or the error that replaced it."""

    request_id: int
    epoch: int
    chunk: Optional[Chunk] = None
    error_kind: str = ""  # "", "input", "output", "server_unavailable", "exception"
    error: str = ""
    infer_s: float = 0.0  # policy.infer only
    total_s: float = 0.0  # observation decode + infer + action decode


def _is_server_unavailable(exc: BaseException) -> bool:
    # Matched by class name so that the node does not import the websocket client unless it is used.
    return any(cls.__name__ == "PolicyServerUnavailable" for cls in type(exc).__mro__)


class InferenceWorker:
    """One daemon thread, at most one request in flight."""

    def __init__(self, policy: Policy, decoder: ActionDecoder, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.decoder = decoder
        self.clock = clock
        self._requests: "queue.Queue[Optional[InferenceRequest]]" = queue.Queue(maxsize=1)
        self._outcomes: "queue.Queue[InferenceOutcome]" = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy_inference", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is queued or running."""
        return self._busy.is_set()

    def submit(self, request: InferenceRequest) -> bool:
        """Start an inference unless one is in flight; never blocks."""
        if self._busy.is_set():
            return False
        self._busy.set()
        self._requests.put_nowait(request)
        return True

    def outcomes(self) -> List[InferenceOutcome]:
        """Finished outcomes since the last call; never blocks."""
        found = []
        while True:
            try:
                found.append(self._outcomes.get_nowait())
            except queue.Empty:
                return found

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the thread to finish after its current request (bounded wait)."""
        try:
            self._requests.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            try:
                self._outcomes.put(self._serve(request))
            finally:
                self._busy.clear()

    def _serve(self, request: InferenceRequest) -> InferenceOutcome:
        outcome = InferenceOutcome(request.request_id, request.epoch)
        started = self.clock()
        try:
            observation = request.build_observation()
            t_infer = self.clock()
            result = self.policy.infer(observation)
            outcome.infer_s = self.clock() - t_infer
            if not isinstance(result, dict) or "actions" not in result:
                raise PolicyOutputError(f"policy result has no 'actions' (got {type(result).__name__})")
            decoded = self.decoder.decode(result["actions"], request.start)
            outcome.chunk = Chunk(
                actions=np.asarray(result["actions"], dtype=np.float64),
                decoded=decoded,
                obs_time=request.obs_time,
                ready_time=self.clock(),
                request_id=request.request_id,
                inputs_received=dict(request.inputs_received),
            )
        except PolicyInputError as exc:
            outcome.error_kind, outcome.error = "input", str(exc)
        except PolicyOutputError as exc:
            outcome.error_kind, outcome.error = "output", str(exc)
        except Exception as exc:  # noqa: BLE001 - any policy failure must become a hold, not a dead thread
            if _is_server_unavailable(exc):
                outcome.error_kind, outcome.error = "server_unavailable", str(exc)
            else:
                outcome.error_kind = "exception"
                outcome.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        outcome.total_s = self.clock() - started
        return outcome
