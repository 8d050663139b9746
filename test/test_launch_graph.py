"""The launch graph description, and the launch files that turn it into launch_ros Nodes.

`launch`/`launch_ros` are not installable here, so the launch files are executed against a minimal
stand-in of the four launch classes they use; the test checks that they start exactly the nodes and
parameters of the shared graph description (which the simulation tests start as real processes).
"""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import pytest

from pi0_ros.launch_graph import (
    LAUNCH_ARGUMENTS,
    GraphOptions,
    NodeSpec,
    options_from_launch_arguments,
    robot_graph,
    sim_graph,
)

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def test_sim_graph_runs_simulator_and_policy_node_on_one_embodiment():
    options = GraphOptions(embodiment="/tmp/robot.yaml", checkpoint="/ckpt", instruction="touch the red cube")
    nodes = sim_graph(options)
    assert [n.name for n in nodes] == ["sim_robot", "policy_node"]
    assert {n.parameters["embodiment"] for n in nodes} == {"/tmp/robot.yaml"}
    policy = nodes[1].parameters
    assert policy["checkpoint"] == "/ckpt" and policy["instruction"] == "touch the red cube"
    assert "server_uri" not in policy  # unset options are left to the parameter file
    assert [n.name for n in sim_graph(options, with_policy=False)] == ["sim_robot"]


def test_robot_graph_is_the_policy_node_of_the_sim_graph():
    options = GraphOptions(control_mode="hold", policy_backend="remote", server_uri="ws://127.0.0.1:8000")
    assert robot_graph(options) == [n for n in sim_graph(options) if n.name == "policy_node"]


def test_ros_args_keep_types():
    spec = NodeSpec("x", "m", "node", (Path("/p.yaml"),),
                    {"flag": True, "rate": 50.0, "count": 3, "text": "true", "quote": "it's"}, (("a", "b"),))
    args = spec.ros_args()
    assert args[:4] == ["--ros-args", "-r", "__node:=node", "--params-file"]
    assert "flag:=true" in args and "rate:=50.0" in args and "count:=3" in args
    assert "text:='true'" in args  # stays a string, not a bool
    assert "quote:='it''s'" in args and args[-2:] == ["-r", "a:=b"]


def test_launch_arguments_map_to_options():
    values = {name: "" for name, _ in LAUNCH_ARGUMENTS}
    values.update(control_mode="teleop", checkpoint="/c")
    options = options_from_launch_arguments(values)
    assert options.control_mode == "teleop" and options.checkpoint == "/c" and options.server_uri is None
    with pytest.raises(ValueError, match="unknown launch arguments"):
        options_from_launch_arguments({"chekpoint": "/c"})


class _FakeLaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _fake_launch_modules(created):
    """Minimal stand-ins with the signatures the launch files use; Node records its kwargs."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = lambda name, default_value, description: ("arg", name, default_value)
    actions.OpaqueFunction = lambda function: ("opaque", function)
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = _FakeLaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = lambda **kwargs: created.append(kwargs) or kwargs
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


@pytest.mark.parametrize("launch_file, graph, with_policy_arg", [
    ("sim.launch.py", sim_graph, True),
    ("robot.launch.py", robot_graph, False),
])
def test_launch_files_start_the_graph_description(monkeypatch, launch_file, graph, with_policy_arg):
    created = []
    for name, module in _fake_launch_modules(created).items():
        monkeypatch.setitem(sys.modules, name, module)
    description = runpy.run_path(str(LAUNCH_DIR / launch_file))["generate_launch_description"]()
    declared = {e[1]: e[2] for e in description if e[0] == "arg"}
    context = dict(declared, checkpoint="/ckpt", instruction="stack the cubes")
    (opaque,) = [e for e in description if e[0] == "opaque"]
    opaque[1](context)

    values = {k: v for k, v in context.items() if k != "with_policy"}
    expected = graph(options_from_launch_arguments(values))
    assert [c["name"] for c in created] == [s.name for s in expected]
    for kwargs, spec in zip(created, expected, strict=True):
        assert kwargs["package"] == "pi0_ros" and kwargs["executable"] == spec.executable
        assert kwargs["parameters"] == [*map(str, spec.parameter_files), spec.parameters]
    assert ("with_policy" in declared) == with_policy_arg
    # The robot starts holding; the simulator starts under policy control.
    assert declared["control_mode"] == ("policy" if with_policy_arg else "hold")


@pytest.mark.parametrize("arguments", [{}, {"control_mode": ""}, {"control_mode": "", "policy_backend": "remote"}])
def test_the_robot_never_starts_in_policy_mode_unless_asked(arguments):
    # `control_mode:=` (empty: "not set") must not fall back to a policy-mode default on the robot.
    (node,) = robot_graph(options_from_launch_arguments(arguments))
    assert "control_mode" not in node.parameters  # config/policy_node.yaml: hold
    (sim_policy,) = [n for n in sim_graph(options_from_launch_arguments(arguments)) if n.name == "policy_node"]
    assert sim_policy.parameters["control_mode"] == "policy"


def test_only_the_simulation_gets_a_policy_by_default():
    (sim_policy,) = [n for n in sim_graph() if n.name == "policy_node"]
    assert sim_policy.parameters["policy_backend"] == "scripted"
    (robot_policy,) = robot_graph()
    assert "policy_backend" not in robot_policy.parameters  # the parameter file's default: no policy
