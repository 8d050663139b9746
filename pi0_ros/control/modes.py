"""Which source drives the arms: ``policy``, ``teleop`` or ``hold``, and when that changes.

The requested mode comes from the ``control_mode`` parameter; the effective mode is ``hold`` while
``paused`` or while any watchdog fault is active. Every change of the effective mode is a *switch*:
the caller restarts from the measured state (bumpless) and limits speed with :meth:`ModeMachine.ramp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

MODES = ("policy", "teleop", "hold")


def mode_problem(mode: object) -> Optional[str]:
    """Why ``mode`` is not a valid control mode (None when it is)."""
    if not isinstance(mode, str) or mode not in MODES:
        return f"control_mode must be one of {list(MODES)}, got {mode!r}"
    return None


@dataclass
class ModeState:
    """The effective mode and why."""

    mode: str
    reason: str  # "requested", "paused" or the first fault


class ModeMachine:
    """Requested mode + pause + faults -> effective mode, with switch detection and speed ramp."""

    def __init__(self, requested: str = "hold", paused: bool = False):
        problem = mode_problem(requested)
        if problem:
            raise ValueError(problem)
        self.requested = requested
        self.paused = paused
        self.current: Optional[str] = None  # None until the first update: the first one is a switch
        self.reason = "start"
        self.switched_at = float("-inf")
        self.switches = 0

    def request(self, mode: object) -> Tuple[bool, str]:
        """Ask for a mode; returns (accepted, reason) and changes nothing when refused."""
        problem = mode_problem(mode)
        if problem:
            return False, problem
        self.requested = mode  # type: ignore[assignment]
        return True, ""

    def update(self, faults: Sequence[str], now: float) -> Tuple[ModeState, bool]:
        """The effective mode for this tick and whether it differs from the previous tick's."""
        if self.requested == "hold":
            state = ModeState("hold", "requested")
        elif self.paused:
            state = ModeState("hold", "paused")
        elif faults:
            state = ModeState("hold", faults[0])
        else:
            state = ModeState(self.requested, "requested")
        switched = state.mode != self.current
        if switched:
            self.current = state.mode
            self.switched_at = now
            self.switches += 1
        self.reason = state.reason
        return state, switched

    def ramp(self, now: float, ramp_s: float, start: float) -> float:
        """Speed-limit factor after the last switch: ``start`` rising linearly to 1 over ``ramp_s``."""
        if ramp_s <= 0.0:
            return 1.0
        progress = min(max((now - self.switched_at) / ramp_s, 0.0), 1.0)
        return start + (1.0 - start) * progress
