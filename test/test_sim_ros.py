"""Contract test of the sim_robot node as a real process (the launch graph's spec, loopback-only DDS).

Checks the R1 Pro interface the policy node relies on: feedback topics and names, camera topics with
encodings, sizes, stamps and frames, tracking a commanded target, rejection of bad targets (the node
survives and counts them), and the reset service / seed topic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Int32, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from pi0_ros.embodiment import load_embodiment  # noqa: E402
from pi0_ros.launch_graph import GraphOptions, sim_robot_spec  # noqa: E402
from pi0_ros.nodes.ros_image import msg_to_rgb  # noqa: E402
from pi0_ros.nodes.sim_robot import camera_topics  # noqa: E402
from pi0_ros.testing.graph_process import GraphProcesses  # noqa: E402

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 96, 72  # smaller than the embodiment's, to prove the parameters apply
STARTUP_S = 60.0
SENSOR_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


class Observer:
    """Test-side node: keeps the newest message of every sim topic."""

    def __init__(self, embodiment):
        self.node = rclpy.create_node("sim_contract_observer")
        self.latest = {}
        self.counts = {}
        for group in embodiment.groups.values():
            self._listen(JointState, group.feedback_topic)
        for camera in embodiment.cameras.values():
            compressed, raw = camera_topics(camera)
            self._listen(CompressedImage, compressed)
            self._listen(Image, raw)
        self._listen(String, "/sim_robot/task_state")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.target_pubs = {g.name: self.node.create_publisher(JointState, g.command_topic, reliable)
                            for g in embodiment.groups.values()}
        self.seed_pub = self.node.create_publisher(Int32, "/sim_robot/reset_seed", 10)
        self.reset_client = self.node.create_client(Trigger, "/sim_robot/reset")

    def _listen(self, msg_type, topic):
        def store(msg, topic=topic):
            self.latest[topic] = msg
            self.counts[topic] = self.counts.get(topic, 0) + 1
        # Best effort sees reliable publishers too, and the sim's images are reliable.
        self.node.create_subscription(msg_type, topic, store, SENSOR_QOS)

    def spin_until(self, predicate, timeout, what, graph=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if graph is not None:
                graph.check_alive()
            value = predicate()
            if value:
                return value
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def task_state(self):
        msg = self.latest.get("/sim_robot/task_state")
        return json.loads(msg.data) if msg is not None else None

    def position(self, topic):
        msg = self.latest.get(topic)
        return np.array(msg.position) if msg is not None else None


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment()


@pytest.fixture(scope="module")
def sim(embodiment):
    spec = sim_robot_spec(GraphOptions())
    spec = dataclasses.replace(spec, parameters={**spec.parameters, "camera_transport": "both",
                                                 "camera_width": WIDTH, "camera_height": HEIGHT,
                                                 "camera_rate_hz": 5.0, "task_state_hz": 10.0, "seed": 3})
    rclpy.init()
    observer = Observer(embodiment)
    try:
        with GraphProcesses([spec]) as graph:
            observer.spin_until(lambda: all(observer.position(g.feedback_topic) is not None
                                            for g in embodiment.groups.values())
                                and observer.task_state() is not None, STARTUP_S, "first feedback", graph)
            yield graph, observer
            # A clean SIGINT shutdown: exit code 0 and no traceback in the node's log.
            codes = graph.stop()
            log = graph.node("sim_robot").log()
            assert codes["sim_robot"] == 0 and "Traceback" not in log, log[-4000:]
    finally:
        observer.node.destroy_node()
        rclpy.shutdown()


def publish_until(observer, graph, group, msg, predicate, what, timeout=20.0):
    """Publish a target (again every 0.5 s: subscriptions are best effort) until predicate holds."""
    pub = observer.target_pubs[group]
    observer.spin_until(lambda: pub.get_subscription_count() > 0, 10.0, f"{group} target subscriber", graph)
    deadline = time.monotonic() + timeout
    while True:
        pub.publish(msg)
        try:
            return observer.spin_until(predicate, min(0.5, max(0.05, deadline - time.monotonic())), what, graph)
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


def test_feedback_topics_carry_names_and_start_at_home(sim, embodiment):
    graph, observer = sim
    for group in embodiment.groups.values():
        msg = observer.latest[group.feedback_topic]
        assert list(msg.name) == list(group.joints)
        assert len(msg.position) == len(msg.velocity) == len(msg.effort) == group.size
        assert msg.header.stamp.sec > 0
    observer.spin_until(lambda: np.allclose(observer.position("/hdas/feedback_arm_left"),
                                            embodiment.groups["left_arm"].home, atol=1e-6), 5.0, "home")
    # Feedback keeps coming at a steady clip (rate is benchmarked, not asserted).
    before = observer.counts["/hdas/feedback_torso"]
    observer.spin_until(lambda: observer.counts["/hdas/feedback_torso"] >= before + 20, 10.0, "20 more feedbacks")


def test_cameras_publish_both_transports_at_the_configured_size(sim, embodiment):
    graph, observer = sim
    for camera in embodiment.cameras.values():
        compressed, raw = camera_topics(camera)
        observer.spin_until(lambda c=compressed, r=raw: c in observer.latest and r in observer.latest, 30.0,
                            f"{camera.name} images", graph)
        jpeg = observer.latest[compressed]
        assert "jpeg" in jpeg.format and jpeg.header.frame_id == camera.frame and jpeg.header.stamp.sec > 0
        image = msg_to_rgb(jpeg)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.std() > 5
        raw_msg = observer.latest[raw]
        assert (raw_msg.encoding, raw_msg.width, raw_msg.height, raw_msg.step) == ("rgb8", WIDTH, HEIGHT, WIDTH * 3)
        assert raw_msg.header.frame_id == camera.frame
        assert msg_to_rgb(raw_msg).shape == (HEIGHT, WIDTH, 3)
    assert camera_topics(embodiment.cameras["head"])[0] == embodiment.cameras["head"].topic


def test_arm_and_gripper_converge_to_commanded_targets(sim, embodiment):
    graph, observer = sim
    arm = embodiment.groups["left_arm"]
    goal = arm.home + np.array([0.2, -0.15, 0.1, 0.2, -0.1, 0.1, 0.2])
    order = [6, 0, 3, 1, 5, 2, 4]  # names in a shuffled order: matched by name
    msg = JointState(name=[arm.joints[i] for i in order], position=[float(goal[i]) for i in order],
                     velocity=[2.0] * 7)
    publish_until(observer, graph, "left_arm", msg,
                  lambda: np.allclose(observer.position(arm.feedback_topic), goal, atol=1e-4), "arm at goal")
    gripper = embodiment.groups["right_gripper"]
    publish_until(observer, graph, "right_gripper", JointState(position=[25.0]),
                  lambda: abs(observer.position(gripper.feedback_topic)[0] - 25.0) < 1e-3, "gripper at 25")


@pytest.mark.parametrize("bad", [
    JointState(name=["left_arm_joint1", "elbow"], position=[0.0, 0.0]),
    JointState(position=[0.0, 0.1]),
    JointState(name=["left_arm_joint1"], position=[math.nan]),
    JointState(name=["left_arm_joint2"], position=[-1.0]),
    JointState(name=["left_arm_joint1"], position=[0.0], velocity=[math.inf]),
], ids=["unknown-name", "length", "nan", "out-of-limits", "inf-velocity"])
def test_bad_targets_are_rejected_counted_and_survived(sim, embodiment, bad):
    graph, observer = sim
    arm = embodiment.groups["left_arm"]
    held = observer.position(arm.feedback_topic).copy()
    before = observer.task_state()["targets"]["rejected"]["left_arm"]
    publish_until(observer, graph, "left_arm", bad,
                  lambda: observer.task_state()["targets"]["rejected"]["left_arm"] > before, "rejection counted")
    assert observer.task_state()["targets"]["last_rejection"].startswith("left_arm")
    # Still alive, still publishing, still holding the last valid target.
    count = observer.counts[arm.feedback_topic]
    observer.spin_until(lambda: observer.counts[arm.feedback_topic] > count + 5, 5.0, "feedback after rejection", graph)
    assert np.allclose(observer.position(arm.feedback_topic), held, atol=1e-4)


def test_reset_service_and_seed_topic(sim, embodiment):
    graph, observer = sim
    observer.spin_until(lambda: observer.reset_client.service_is_ready(), 10.0, "reset service", graph)

    def call_reset():
        future = observer.reset_client.call_async(Trigger.Request())
        return observer.spin_until(lambda: future.result() if future.done() else None, 10.0, "reset reply", graph)

    reply = call_reset()
    assert reply.success and "seed 3" in reply.message
    observer.spin_until(lambda: observer.task_state()["seed"] == 3, 5.0, "task state after reset")
    home = embodiment.groups["left_arm"].home
    observer.spin_until(lambda: np.allclose(observer.position("/hdas/feedback_arm_left"), home, atol=1e-6), 5.0,
                        "arm back home")
    objects_seed3 = observer.task_state()["objects"]
    reply = call_reset()  # the seed parameter incremented
    assert "seed 4" in reply.message
    observer.spin_until(lambda: observer.task_state()["seed"] == 4, 5.0, "seed 4")
    assert observer.task_state()["objects"] != objects_seed3

    observer.seed_pub.publish(Int32(data=3))
    state = observer.spin_until(lambda: (s := observer.task_state())["seed"] == 3 and s, 10.0, "seed topic reset")
    positions = {k: v["position"] for k, v in state["objects"].items()}
    expected = {k: v["position"] for k, v in objects_seed3.items()}
    for name in expected:  # objects may have settled by micrometres since the reset
        assert np.allclose(positions[name], expected[name], atol=1e-3)
