"""A joint tracker like the R1 Pro controller's: per-joint position targets, speed-capped and acceleration-limited.

Each joint moves independently towards its target at no more than its commanded speed (the command's
``velocity`` field, else the joint's velocity limit), with acceleration limited to
``acceleration_per_speed`` x that speed, as the robot's tracker does. Braking follows the discrete-time
stopping curve, so joints overshoot by less than one step's acceleration (a dt^2, well below a
micro-radian at 500 Hz) and then settle exactly on the target.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class JointTracker:
    """Vectorised speed- and acceleration-limited position tracker for ``n`` joints.

    ``lower``/``upper`` are the position limits and ``max_velocity`` the hard per-joint speed caps;
    units are whatever the joints use (rad, or stroke mm for grippers).
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 acceleration_per_speed: float = 1.5):
        self.lower = np.asarray(lower, dtype=np.float64).copy()
        self.upper = np.asarray(upper, dtype=np.float64).copy()
        self.max_velocity = np.asarray(max_velocity, dtype=np.float64).copy()
        if not (self.lower.shape == self.upper.shape == self.max_velocity.shape) or self.lower.ndim != 1:
            raise ValueError("lower, upper and max_velocity must be 1-D arrays of one length")
        if np.any(self.max_velocity <= 0) or acceleration_per_speed <= 0:
            raise ValueError("max_velocity and acceleration_per_speed must be > 0")
        self.acceleration_per_speed = float(acceleration_per_speed)
        n = self.lower.size
        self.position = np.clip(np.zeros(n), self.lower, self.upper)
        self.velocity = np.zeros(n)
        self.target = self.position.copy()
        self.speed = self.max_velocity.copy()

    @property
    def size(self) -> int:
        """Number of joints."""
        return self.lower.size

    @property
    def acceleration(self) -> np.ndarray:
        """The current per-joint acceleration limit."""
        return self.acceleration_per_speed * self.speed

    def reset(self, position: np.ndarray) -> None:
        """Teleport to ``position`` at rest, holding it as the target."""
        self.position = np.clip(np.asarray(position, dtype=np.float64), self.lower, self.upper)
        self.velocity = np.zeros(self.size)
        self.target = self.position.copy()
        self.speed = self.max_velocity.copy()

    def set_target(self, indices: np.ndarray, positions: np.ndarray, speeds: Optional[np.ndarray] = None) -> None:
        """Move joints ``indices`` towards ``positions`` (clipped to limits) at most at ``speeds``.

        A speed that is missing, non-positive or above the joint's limit means the joint's limit.
        """
        indices = np.asarray(indices, dtype=np.intp)
        self.target[indices] = np.clip(positions, self.lower[indices], self.upper[indices])
        limit = self.max_velocity[indices]
        if speeds is None:
            self.speed[indices] = limit
        else:
            speeds = np.asarray(speeds, dtype=np.float64)
            self.speed[indices] = np.where(speeds > 0, np.minimum(speeds, limit), limit)

    def step(self, dt: float) -> None:
        """Advance by ``dt`` seconds."""
        error = self.target - self.position
        distance = np.abs(error)
        accel = self.acceleration
        step_dv = accel * dt
        # Largest speed from which the joint can still stop within `distance` when it slows by
        # step_dv per step: the discrete counterpart of sqrt(2 a d).
        braking = 0.5 * (np.sqrt(step_dv * step_dv + 8.0 * accel * distance) - step_dv)
        desired = np.sign(error) * np.minimum(np.minimum(self.speed, braking), distance / dt)
        self.velocity = np.clip(desired, self.velocity - step_dv, self.velocity + step_dv)
        self.position = np.clip(self.position + self.velocity * dt, self.lower, self.upper)
