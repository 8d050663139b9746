"""Launch-level simulation test: the graph of `sim.launch.py`, started as real processes on loopback DDS.

The simulated robot and the policy node run exactly as `ros2 launch pi0_ros sim.launch.py` would start
them (same specs, parameter files and parameters); an in-process operator steers and observes them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pi0_ros.embodiment import load_embodiment
from pi0_ros.launch_graph import GraphOptions, sim_graph
from pi0_ros.testing.graph_process import GraphProcesses
from pi0_ros.testing.operator import Operator

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def running_graph(tmp_path_factory):
    embodiment = load_embodiment()
    options = GraphOptions(control_mode="hold", policy_backend="scripted",
                           extra_policy_parameters={"action_space": "joint_position"})
    log_dir = tmp_path_factory.mktemp("sim_graph")
    with GraphProcesses(sim_graph(options), log_dir=log_dir) as graph, Operator(embodiment) as op:
        op.wait_for(lambda: op.positions("left_arm") is not None and op.positions("right_arm") is not None, 60)
        op.wait_for(op.param_client.service_is_ready, 60)
        yield graph, op


def test_graph_speaks_the_r1pro_topics(running_graph):
    graph, op = running_graph
    emb = op.embodiment
    for group in emb.groups.values():
        op.wait_for(lambda g=group.name: op.positions(g) is not None, 10)
    # The policy node holds: it commands the measured position on every arm and gripper topic.
    t0 = time.monotonic()
    op.wait_for(lambda: all(len(op.since(op.commands[g], t0)) > 10 for g in ("left_arm", "right_gripper")), 10)
    jpeg = op.wait_for(lambda: op.latest(op.images), 20).value
    assert jpeg[:2] == b"\xff\xd8"  # the head camera is JPEG, as on the robot
    graph.check_alive()


def test_teleop_targets_are_reached_then_policy_then_hold(running_graph):
    graph, op = running_graph
    emb = op.embodiment
    assert op.set_parameters(control_mode="teleop") == [(True, "")]
    goal = emb.groups["left_arm"].home + np.array([0.2, -0.2, 0.1, 0.2, 0.0, 0.1, 0.0])
    t0 = time.monotonic()

    def reached():
        op.send_joint_targets({"left_arm": goal})
        return np.max(np.abs(op.positions("left_arm") - goal)) < 0.01

    op.wait_for(reached, 40, poll=0.05)
    names = emb.groups["left_arm"].joints
    commands = np.array([[s.value[n] for n in names] for s in op.since(op.commands["left_arm"], t0)])
    assert len(commands) > 20
    dt = 1.0 / emb.rates.control_hz
    assert np.max(np.abs(np.diff(commands, axis=0))) <= np.max(emb.groups["left_arm"].velocity_limits) * dt + 1e-9
    lower, upper = emb.groups["left_arm"].position_limits.T
    assert np.all(commands >= lower) and np.all(commands <= upper)

    assert op.set_parameters(control_mode="policy") == [(True, "")]
    t1 = time.monotonic()
    time.sleep(3.0)
    count = len(op.since(op.commands["left_arm"], t1 + 1.0))
    assert count > 10  # the command stream keeps flowing under the policy (its rate is a benchmark's job)

    assert op.set_parameters(control_mode="hold") == [(True, "")]
    time.sleep(0.5)
    before = op.positions("left_arm")
    time.sleep(1.0)
    assert np.max(np.abs(op.positions("left_arm") - before)) < 1e-3
    graph.check_alive()


def test_invalid_mode_is_refused_with_a_reason(running_graph):
    _, op = running_graph
    ((ok, reason),) = op.set_parameters(control_mode="autopilot")
    assert not ok and "autopilot" in reason


def test_pi0_eval_episode_protocol_on_the_running_graph(running_graph):
    # pi0-eval's episode: parked at home in teleop, reset to a seed, instruction, policy mode, back to teleop.
    from pi0_ros.testing.sim_driver import EpisodeDriver
    from pi0_ros.training.evaluate import fixed_plan, run_episodes, success_check

    graph, op = running_graph
    driver = EpisodeDriver(op, op.embodiment, settle_s=0.5)
    (episode,) = run_episodes(driver, [7], fixed_plan("touch the red cube", success_check("touched:nothing")),
                              timeout=2.0, log=lambda m: None)
    assert episode["reset_ok"] and not episode["success"] and episode["instruction"] == "touch the red cube"
    assert int(driver.current_state()["seed"]) == 7
    assert episode["command_jerk_rms"] is not None  # the policy's arm commands were recorded and measured
    # parked again: teleop (or its hold while no teleop target arrives)
    op.wait_for(lambda: "teleop" in op.latest(op.modes).value, 10)
    assert driver.park(10.0)  # and back at home
    graph.check_alive()
