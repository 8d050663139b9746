"""Inference-delay injection (policy-node parameter ``inject_delay_s``, testing/benchmarks only): ROS-free."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from pi0_ros.control.backends import BackendOptions, DelayedPolicy, make_policy
from pi0_ros.control.scripted_policy import ScriptedPolicy
from pi0_ros.embodiment import load_embodiment
from pi0_ros.paths import config_path
from pi0_ros.policy_api import Policy


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment()


def _observation(policy) -> dict:
    return {"images": {}, "state": policy.home_state() + 0.3, "prompt": ""}


def test_zero_delay_builds_the_plain_backend(embodiment):
    policy = make_policy(BackendOptions("scripted", "joint_position"), embodiment)
    assert type(policy) is ScriptedPolicy  # nothing in the inference path when the delay is 0


def test_delay_wraps_any_backend_and_keeps_its_interface(embodiment):
    plain = make_policy(BackendOptions("scripted", "joint_position"), embodiment)
    delayed = make_policy(BackendOptions("scripted", "joint_position", inject_delay_s=0.15), embodiment)
    assert isinstance(delayed, DelayedPolicy) and isinstance(delayed, Policy)
    assert delayed.metadata == plain.metadata
    assert delayed.config.horizon == plain.config.horizon  # other attributes pass through
    delayed.reset()
    observation = _observation(plain)
    started = time.monotonic()
    result = delayed.infer(observation)
    assert time.monotonic() - started >= 0.15
    np.testing.assert_array_equal(result["actions"], plain.infer(observation)["actions"])


def test_negative_delay_is_refused(embodiment):
    with pytest.raises(ValueError, match="inject_delay_s"):
        make_policy(BackendOptions("scripted", "joint_position", inject_delay_s=-0.1), embodiment)


def test_parameter_file_default_is_off():
    params = yaml.safe_load(config_path("policy_node.yaml").read_text())["policy_node"]["ros__parameters"]
    assert params["inject_delay_s"] == 0.0
