"""ROS-free regression tests from the adversarial review of the command path (one test per finding)."""

import numpy as np
import pytest

from pi0_ros.control.safety import SafetyConfig, SafetyLimiter
from pi0_ros.embodiment import load_embodiment

DT = 0.02


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


def test_command_stays_within_max_step_of_a_measured_position_that_jumped_away(emb):
    # The robot's motor protection trips on a large gap between command and position, so the gap bound
    # holds for every command, also when the measured position moved away from the last command (arm
    # pushed, moved by another controller, feedback resumed after an outage).
    arm = emb.groups["left_arm"]
    lim = SafetyLimiter({"left_arm": arm}, SafetyConfig(max_step_arm_rad=0.25, ramp_s=0.0), DT)
    home = arm.home.copy()
    lim.limit("left_arm", home, home)
    measured = home + 0.5
    for _ in range(3):
        out = lim.limit("left_arm", home, measured, ramp=0.1)
        assert np.all(np.abs(out.position - measured) <= 0.25 + 1e-9)
        assert np.all(out.position >= arm.position_limits[:, 0] + 0.01 - 1e-12)
        assert np.all(out.position <= arm.position_limits[:, 1] - 0.01 + 1e-12)
