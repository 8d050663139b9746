"""Simulated R1 Pro-style robot (MuJoCo) driven by the pi0 policy node.

    ros2 launch pi0_ros sim.launch.py checkpoint:=/path/to/ckpt instruction:="touch the red cube"

The nodes and their parameters come from pi0_ros.launch_graph.sim_graph, the same description the
simulation tests start without the launch packages.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pi0_ros.launch_graph import LAUNCH_ARGUMENTS, options_from_launch_arguments, sim_graph


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _ in LAUNCH_ARGUMENTS}
    with_policy = LaunchConfiguration("with_policy").perform(context).lower() == "true"
    return [
        Node(package="pi0_ros", executable=spec.executable, name=spec.name, output="screen",
             parameters=[*map(str, spec.parameter_files), spec.parameters], remappings=list(spec.remappings))
        for spec in sim_graph(options_from_launch_arguments(values), with_policy=with_policy)
    ]


def generate_launch_description():
    """Declare the graph's arguments and start the simulated robot graph."""
    arguments = [DeclareLaunchArgument(name, default_value="policy" if name == "control_mode" else "",
                                       description=text) for name, text in LAUNCH_ARGUMENTS]
    arguments.append(DeclareLaunchArgument("with_policy", default_value="true",
                                           description="also start the policy node"))
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
