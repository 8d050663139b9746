"""pi0-collect: scripted demonstrations in the simulator, recorded into a LeRobot dataset.

Starts the simulation graph (sim_robot, policy_node in teleop mode, recorder) as real processes with
the graph harness, then for each episode: resets the simulator with a new seed, picks a touch task
("touch the red cube with the left hand"), publishes it as the instruction, starts an episode on the
recorder, streams the expert's end-effector path as teleop pose goals (IK, safety and controller topics
are the policy node's own), watches ``~/task_state`` for the touch, and stops (or discards) the episode.
Both arms always receive a pose goal (the idle one its start pose), so the policy node never falls back
to an old hold target after a reset.

    pi0-collect --root ~/pi0_ros_data/touch --episodes 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from pi0_ros.testing.graph_process import LOOPBACK_ENV

# Discovery must never leave this machine: set before rclpy is imported anywhere.
for _key, _value in LOOPBACK_ENV.items():
    os.environ.setdefault(_key, _value)

import rclpy  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Int32, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from pi0_ros.control.kinematics import arm_fk  # noqa: E402
from pi0_ros.embodiment import Embodiment, load_embodiment  # noqa: E402
from pi0_ros.launch_graph import GraphOptions, recorder_spec, sim_graph  # noqa: E402
from pi0_ros.paths import config_path  # noqa: E402
from pi0_ros.sim.config import load_sim_config  # noqa: E402
from pi0_ros.sim.expert import ExpertConfig, PosePath, TouchTask, choose_task, plan_touch, touched  # noqa: E402
from pi0_ros.testing.graph_process import GraphProcesses  # noqa: E402

LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
GOAL_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclasses.dataclass
class EpisodeResult:
    """What one episode did."""

    seed: int
    task: str
    success: bool
    kept: bool
    message: str


class ExpertDriver(Node):
    """Streams pose goals, talks to the recorder and the simulator (node name ``expert_driver``)."""

    def __init__(self, embodiment: Embodiment, goal_hz: float = 20.0, teleop_prefix: str = "/teleop"):
        super().__init__("expert_driver")
        self.embodiment = embodiment
        self.arms = [g.name for g in embodiment.groups_of_kind("arm")]
        self.home_pose = {arm: arm_fk(embodiment, embodiment.groups[arm]).forward(embodiment.groups[arm].home)
                          for arm in self.arms}
        self._lock = threading.Lock()
        self._paths: Dict[str, Optional[PosePath]] = {arm: None for arm in self.arms}
        self._path_start = 0.0
        self.task_state: Optional[dict] = None
        self.task_state_received = 0.0
        self._touched = False
        self._task: Optional[TouchTask] = None
        self.goal_pubs = {arm: self.create_publisher(PoseStamped, f"{teleop_prefix}/{arm}/target_pose", GOAL_QOS)
                          for arm in self.arms}
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.reset_pub = self.create_publisher(Int32, "/sim_robot/reset_seed", 10)
        self.create_subscription(String, "/sim_robot/task_state", self._on_task_state, 10)
        self.recorder_clients = {name: self.create_client(Trigger, f"/recorder/{name}")
                        for name in ("start_episode", "stop_episode", "discard_episode")}
        self.create_timer(1.0 / goal_hz, self._publish_goals)

    # -- streams ---------------------------------------------------------------------------------

    def _on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        with self._lock:
            self.task_state = state
            self.task_state_received = time.monotonic()
            if self._task is not None and touched(state, self._task):
                self._touched = True

    def _publish_goals(self) -> None:
        now = time.monotonic()
        with self._lock:
            goals = {arm: (path.pose(now - self._path_start) if path is not None else self.home_pose[arm])
                     for arm, path in self._paths.items()}
        stamp = self.get_clock().now().to_msg()
        for arm, pose in goals.items():
            msg = PoseStamped()
            msg.header.stamp = stamp
            msg.header.frame_id = self.embodiment.base_frame
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose[:3])
            (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
             msg.pose.orientation.w) = (float(v) for v in pose[3:])
            self.goal_pubs[arm].publish(msg)

    def follow(self, arm: Optional[str], path: Optional[PosePath], task: Optional[TouchTask]) -> None:
        """Start streaming ``path`` for ``arm`` (None: every arm holds its start pose)."""
        with self._lock:
            self._paths = {a: (path if a == arm else None) for a in self.arms}
            self._path_start = time.monotonic()
            self._task = task
            self._touched = False

    @property
    def touched(self) -> bool:
        """The current task's touch was seen in the task state."""
        with self._lock:
            return self._touched

    # -- requests (the executor spins in another thread) -----------------------------------------

    def call(self, service: str, timeout: float = 10.0) -> Trigger.Response:
        """Call a recorder Trigger service; raises TimeoutError."""
        client = self.recorder_clients[service]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"/recorder/{service} is not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"/recorder/{service} did not answer within {timeout} s")
            time.sleep(0.01)
        return future.result()

    def reset(self, seed: int, timeout: float = 10.0) -> dict:
        """Reset the simulator with ``seed``; returns the first task state of the new scene."""
        sent = time.monotonic()
        self.reset_pub.publish(Int32(data=int(seed)))
        deadline = sent + timeout
        while time.monotonic() < deadline:
            with self._lock:
                state, received = self.task_state, self.task_state_received
            if state is not None and received > sent and state.get("seed") == seed:
                return state
            time.sleep(0.02)
        raise TimeoutError(f"no task state with seed {seed} within {timeout} s")


def wait_until(predicate, timeout: float, what: str, graph: Optional[GraphProcesses] = None) -> None:
    """Poll ``predicate`` until true; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if graph is not None:
            graph.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def run_episode(driver: ExpertDriver, seed: int, grasp_offset: Sequence[float], keep_failed: bool,
                settle_s: float, config: ExpertConfig) -> EpisodeResult:
    """One demonstration: reset, choose, record while the expert moves, keep or discard."""
    driver.follow(None, None, None)
    state = driver.reset(seed)
    task = choose_task(state, np.random.default_rng(seed))
    driver.instruction_pub.publish(String(data=task.instruction))
    time.sleep(settle_s)  # the arms come to rest at their start poses; the instruction reaches the recorder
    path = plan_touch(driver.home_pose[task.arm], state["objects"][task.object]["position"], grasp_offset, config)
    reply = driver.call("start_episode")
    if not reply.success:
        raise RuntimeError(f"recorder refused to start: {reply.message}")
    driver.follow(task.arm, path, task)
    time.sleep(path.duration + 0.3)
    success = driver.touched
    if success or keep_failed:
        reply = driver.call("stop_episode")
        kept = reply.success
    else:
        reply = driver.call("discard_episode")
        kept = False
    driver.follow(None, None, None)
    return EpisodeResult(seed, task.instruction, success, kept, reply.message)


def build_graph(root: Path, fps: int, action_space: str, camera_rate_hz: float) -> List:
    """sim_robot + policy_node (teleop) + recorder, as the launch graph describes them."""
    options = GraphOptions(control_mode="teleop", policy_backend="scripted")
    specs = []
    for spec in sim_graph(options):
        if spec.name == "sim_robot":
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "task_state_hz": 10.0,
                                                         "camera_rate_hz": float(camera_rate_hz)})
        specs.append(spec)
    specs.append(recorder_spec(options, str(root), {"fps": fps, "action_space": action_space}))
    return specs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="pi0-collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset directory (created, or appended to)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to attempt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    parser.add_argument("--fps", type=int, default=10, help="recorder frames per second")
    parser.add_argument("--camera-rate-hz", type=float, default=10.0, help="simulated camera rate")
    parser.add_argument("--action-space", default="joint_position", help="action space recorded")
    parser.add_argument("--keep-failed", action="store_true", help="keep episodes without a touch too")
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause after each reset")
    parser.add_argument("--startup-timeout-s", type=float, default=90.0)
    parser.add_argument("--log-dir", default=None, help="node logs (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def collect(args: argparse.Namespace) -> List[EpisodeResult]:
    """Run the graph and the episodes; returns one result per attempted episode."""
    from tqdm import tqdm

    embodiment = load_embodiment()
    grasp_offset = load_sim_config(config_path("sim.yaml")).task.grasp_point
    specs = build_graph(Path(args.root).expanduser().resolve(), args.fps, args.action_space, args.camera_rate_hz)
    results: List[EpisodeResult] = []
    with GraphProcesses(specs, log_dir=Path(args.log_dir) if args.log_dir else None) as graph:
        rclpy.init()
        driver = ExpertDriver(embodiment)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(driver)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            wait_until(lambda: driver.task_state is not None, args.startup_timeout_s, "the simulator", graph)
            wait_until(lambda: all(c.service_is_ready() for c in driver.recorder_clients.values()),
                       args.startup_timeout_s, "the recorder services", graph)
            bar = tqdm(range(args.episodes), desc="episodes", unit="ep", disable=args.no_progress, file=sys.stderr)
            for i in bar:
                graph.check_alive()
                result = run_episode(driver, args.seed + i, grasp_offset, args.keep_failed, args.settle_s,
                                     ExpertConfig())
                results.append(result)
                bar.set_postfix(kept=sum(r.kept for r in results), success=sum(r.success for r in results))
        finally:
            executor.shutdown()
            driver.destroy_node()
            rclpy.try_shutdown()
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``pi0-collect``."""
    args = parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    started = time.monotonic()
    results = collect(args)
    minutes = (time.monotonic() - started) / 60.0
    kept = sum(r.kept for r in results)
    for r in results:
        print(f"seed {r.seed}: {'touched' if r.success else 'missed '} {'kept' if r.kept else 'dropped'}  "
              f"{r.task}  ({r.message})")
    print(f"{kept} of {len(results)} episodes kept in {args.root}; {len(results) / minutes:.2f} episodes/min "
          f"({minutes:.2f} min)")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
