"""The node graphs the package runs, described once without the ROS launch packages.

`launch/sim.launch.py` and `launch/robot.launch.py` turn these specs into `launch_ros.actions.Node`s;
the tests and `make demo` start exactly the same specs as real processes (see
`pi0_ros.testing.graph_process`), because `launch`/`launch_ros` cannot be installed on every machine.
The simulated and the real graph differ only in which nodes they start (design principle 3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pi0_ros.paths import config_path

POLICY_NODE_PARAMS = "policy_node.yaml"
SIM_PARAMS = "sim.yaml"


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph: what `ros2 run pi0_ros <executable>` starts, with its parameters."""

    executable: str  # console script installed under lib/pi0_ros
    module: str  # the Python module whose main() the executable runs
    name: str
    parameter_files: Tuple[Path, ...] = ()
    parameters: Dict[str, Any] = field(default_factory=dict)
    remappings: Tuple[Tuple[str, str], ...] = ()

    def ros_args(self) -> List[str]:
        """The `--ros-args ...` a process needs to behave as the launch file would configure it."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for path in self.parameter_files:
            args += ["--params-file", str(path)]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={_param_literal(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


@dataclass
class GraphOptions:
    """What a user chooses when launching; every field is also a launch argument."""

    embodiment: Optional[str] = None  # path to the embodiment YAML (default: the package's r1pro.yaml)
    policy_params: Optional[str] = None  # policy node ROS parameter file (default: config/policy_node.yaml)
    # policy | teleop | hold; None: the simulation starts in policy, the robot in the parameter file's mode (hold)
    control_mode: Optional[str] = None
    policy_backend: Optional[str] = None  # pi0 | pi0_fast | remote | scripted (default: the params file's)
    checkpoint: Optional[str] = None  # checkpoint directory for local backends
    server_uri: Optional[str] = None  # ws://host:port for the remote backend
    instruction: Optional[str] = None
    sim_params: Optional[str] = None  # simulator parameter file (default: config/sim.yaml when present)
    extra_policy_parameters: Dict[str, Any] = field(default_factory=dict)
    extra_sim_parameters: Dict[str, Any] = field(default_factory=dict)  # tools' overrides (not launch arguments)

    def embodiment_path(self) -> str:
        """The embodiment file every node reads."""
        return str(self.embodiment or config_path("r1pro.yaml"))


def policy_node_spec(options: GraphOptions) -> NodeSpec:
    """The policy node, identical on the robot and in simulation."""
    params: Dict[str, Any] = {"embodiment": options.embodiment_path()}
    for key in ("control_mode", "policy_backend", "checkpoint", "server_uri", "instruction"):
        value = getattr(options, key)
        if value is not None:
            params[key] = value
    params.update(options.extra_policy_parameters)
    files = _existing(options.policy_params or config_path(POLICY_NODE_PARAMS))
    return NodeSpec("policy_node", "pi0_ros.nodes.policy_node", "policy_node", files, params)


def sim_robot_spec(options: GraphOptions) -> NodeSpec:
    """The MuJoCo robot that speaks the R1 Pro controller and camera topics."""
    files = _existing(options.sim_params or config_path(SIM_PARAMS))
    return NodeSpec("sim_robot", "pi0_ros.nodes.sim_robot", "sim_robot", files,
                    {"embodiment": options.embodiment_path(), **options.extra_sim_parameters})


def recorder_spec(options: GraphOptions, root: str, parameters: Optional[Dict[str, Any]] = None) -> NodeSpec:
    """The demonstration recorder, reading the same embodiment file as the policy node."""
    params: Dict[str, Any] = {"embodiment": options.embodiment_path(), "root": root}
    params.update(parameters or {})
    return NodeSpec("recorder", "pi0_ros.nodes.recorder", "recorder", (), params)


def sim_graph(options: Optional[GraphOptions] = None, with_policy: bool = True) -> List[NodeSpec]:
    """Simulated robot plus (optionally) the policy node: what `sim.launch.py` starts.

    Without a chosen backend the simulation uses the `scripted` bring-up policy, so the graph moves out of
    the box; on the robot (`robot_graph`) no policy runs unless one is chosen.
    """
    options = dataclasses.replace(options or GraphOptions())
    if options.policy_backend is None:
        options.policy_backend = "scripted"
    if options.control_mode is None:
        options.control_mode = "policy"
    nodes = [sim_robot_spec(options)]
    if with_policy:
        nodes.append(policy_node_spec(options))
    return nodes


def robot_graph(options: Optional[GraphOptions] = None) -> List[NodeSpec]:
    """On the robot the drivers and controllers already run: only the policy node is ours. An unset
    ``control_mode`` (also ``control_mode:=``) leaves the parameter file's, which starts in hold."""
    return [policy_node_spec(options or GraphOptions())]


def options_from_launch_arguments(values: Dict[str, str]) -> GraphOptions:
    """Build options from launch-argument strings; an empty string means "not set"."""
    known = {f for f in GraphOptions.__dataclass_fields__ if not f.startswith("extra_")}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown launch arguments {sorted(unknown)}; known: {sorted(known)}")
    return GraphOptions(**{k: v for k, v in values.items() if v != ""})


LAUNCH_ARGUMENTS: Sequence[Tuple[str, str]] = (
    ("embodiment", "embodiment YAML (default: the package's config/r1pro.yaml)"),
    ("policy_params", "policy node parameter file (default: config/policy_node.yaml)"),
    ("control_mode", "initial mode: policy, teleop or hold"),
    ("policy_backend", "pi0, pi0_fast, remote or scripted (default: from the parameter file)"),
    ("checkpoint", "checkpoint directory for the pi0 / pi0_fast backends"),
    ("server_uri", "ws://host:port of an openpi-protocol policy server (remote backend)"),
    ("instruction", "language instruction at start-up"),
    ("sim_params", "simulator parameter file (sim.launch.py only)"),
)


def _existing(path: Path | str) -> Tuple[Path, ...]:
    path = Path(path)
    return (path,) if path.is_file() else ()


def _param_literal(value: Any) -> str:
    """A `-p name:=value` literal that ROS parses back to the same type (YAML rules)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"  # YAML single-quoted: keeps "true", "1.0" as strings
    return str(value)
