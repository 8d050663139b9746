"""The pi0 policy node on the real R1 Pro-style robot (its drivers and controllers already run).

    ros2 launch pi0_ros robot.launch.py policy_backend:=remote server_uri:=ws://gpu-box:8000 \
        control_mode:=hold instruction:="fold the towel"

Start in `hold`, check the diagnostics, then `ros2 param set /policy_node control_mode policy`.
The node list comes from pi0_ros.launch_graph.robot_graph.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pi0_ros.launch_graph import LAUNCH_ARGUMENTS, options_from_launch_arguments, robot_graph


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _ in LAUNCH_ARGUMENTS
              if name != "sim_params"}
    return [
        Node(package="pi0_ros", executable=spec.executable, name=spec.name, output="screen",
             parameters=[*map(str, spec.parameter_files), spec.parameters], remappings=list(spec.remappings))
        for spec in robot_graph(options_from_launch_arguments(values))
    ]


def generate_launch_description():
    """Declare the arguments and start the policy node; the robot starts in `hold` by default."""
    arguments = [DeclareLaunchArgument(name, default_value="hold" if name == "control_mode" else "",
                                       description=text) for name, text in LAUNCH_ARGUMENTS if name != "sim_params"]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
