"""launch_testing version of the simulation test, for machines with a ROS 2 install (the robot, a desktop).

Run with `launch_test test/launch/test_sim_launch.py` (or colcon test). It launches the real
`sim.launch.py` and checks that the simulated robot publishes feedback and the policy node commands
every arm. The launch packages cannot be installed from PyPI, so on the development machine this file
is not collected (see test/conftest.py); the same graph is started as real processes and checked in
more depth by test/test_sim_graph.py, which runs in `make test`.
"""

import os
import time
import unittest

import launch
import launch_testing
import launch_testing.actions
import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch.launch_description_sources import PythonLaunchDescriptionSource
from sensor_msgs.msg import JointState

from pi0_ros.embodiment import load_embodiment


@pytest.mark.launch_test
def generate_test_description():
    """Include sim.launch.py with the scripted policy, holding."""
    launch_file = os.path.join(get_package_share_directory("pi0_ros"), "launch", "sim.launch.py")
    sim = launch.actions.IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                                  launch_arguments={"policy_backend": "scripted",
                                                                    "control_mode": "hold"}.items())
    return launch.LaunchDescription([sim, launch_testing.actions.ReadyToTest()])


class TestSimGraph(unittest.TestCase):
    """Feedback and commands flow through the launched graph."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("sim_launch_test")
        cls.embodiment = load_embodiment()

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def _count(self, topic: str, seconds: float) -> int:
        received = []
        sub = self.node.create_subscription(JointState, topic, received.append, 10)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.node.destroy_subscription(sub)
        return len(received)

    def test_feedback_and_commands_flow(self):
        for group in self.embodiment.groups_of_kind("arm"):
            self.assertGreater(self._count(group.feedback_topic, 20.0), 10, group.feedback_topic)
            self.assertGreater(self._count(group.command_topic, 20.0), 10, group.command_topic)
