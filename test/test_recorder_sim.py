"""The recorder against the simulator: sim_robot + policy_node (teleop) + recorder as real processes,
driven by the scripted expert through the policy node's teleop input (bounded waits throughout)."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from pi0_ros.data.features import STATE_KEY, image_key, layout_names  # noqa: E402
from pi0_ros.data.lerobot_dataset import DatasetReader  # noqa: E402
from pi0_ros.embodiment import load_embodiment  # noqa: E402

pytestmark = pytest.mark.ros
EMB = load_embodiment()


def test_one_expert_episode_is_recorded_and_services_refuse_misuse(tmp_path):
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import load_sim_config
    from pi0_ros.sim.expert import ExpertConfig
    from pi0_ros.testing.graph_process import GraphProcesses
    from pi0_ros.tools.collect import build_graph, expert_session, run_episode

    root = tmp_path / "demos"
    grasp = load_sim_config(config_path("sim.yaml")).task.grasp_point
    with GraphProcesses(build_graph(root, fps=10, action_space="joint_delta", camera_rate_hz=10.0),
                        log_dir=tmp_path / "logs") as graph:
        with expert_session(EMB, graph, startup_timeout_s=90) as driver:
            assert not driver.call("stop_episode").success  # nothing to stop yet
            # A perturbed start: the hand is first moved off the nominal path, unrecorded.
            result = run_episode(driver, 0, grasp, keep_failed=True, settle_s=1.0, config=ExpertConfig(),
                                 perturbed_share=1.0)
            assert result.kept, result.message
            reply = driver.call("start_episode")
            assert reply.success and not driver.call("start_episode").success  # one episode at a time
            discarded = driver.call("discard_episode")
            assert discarded.success, discarded.message
        logs = {n.spec.name: n.log() for n in graph.nodes}
    reader = DatasetReader(root)
    assert len(reader.episodes) == 1, logs["recorder"][-2000:]
    ep = reader.episode(0)
    assert ep["task"] == result.task and "cube with the" in ep["task"]
    assert len(ep[STATE_KEY]) >= 20
    assert reader.info["features"][STATE_KEY]["names"] == layout_names(EMB, EMB.state_layout)
    assert ep[image_key("head")][0].shape == (224, 224, 3)
    # The expert moved one arm: its recorded state changed, and the joint deltas were non-zero on the way.
    arm = slice(0, 7) if "left hand" in ep["task"] else slice(8, 15)
    home = EMB.groups["left_arm" if "left hand" in ep["task"] else "right_arm"].home
    assert np.abs(ep[STATE_KEY][0, arm] - home).max() > 0.02  # the recording starts off home, after the detour
    assert np.ptp(ep[STATE_KEY][:, arm], axis=0).max() > 0.1
    assert np.abs(ep["action"][:, arm]).max() > 0.01
    assert json.loads((root / "meta" / "info.json").read_text())["pi0_ros"]["action_space"] == "joint_delta"
