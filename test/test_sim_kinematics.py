"""Forward kinematics: the package URDF agrees with the R1 Pro reference URDF, and MuJoCo agrees with both.

The reference is third-party test data (../shared/r1pro/robot.urdf, never copied into the repo); its
meshes are absent, so it is parsed for kinematics only (relaxed_ik_bindings' URDF chain parser).
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from pi0_ros.embodiment import load_embodiment
from pi0_ros.sim.config import load_sim_config
from pi0_ros.sim.robot import SimRobot
from relaxed_ik_bindings.urdf_chain import load_chain

REFERENCE_URDF = Path(__file__).resolve().parents[2] / "shared" / "r1pro" / "robot.urdf"
SAMPLES = 300


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment()


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a.T @ b) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def random_configs(chain, rng, n=SAMPLES):
    return rng.uniform(chain.lower, chain.upper, size=(n, chain.dof))


@pytest.mark.skipif(not REFERENCE_URDF.is_file(), reason=f"reference URDF {REFERENCE_URDF} not present")
@pytest.mark.parametrize("tip", ["left_gripper_link", "right_gripper_link", "left_realsense_link",
                                 "right_realsense_link"])
def test_package_urdf_matches_reference_from_torso_link4(embodiment, tip):
    ours = load_chain(embodiment.robot_description, embodiment.base_frame, tip)
    reference = load_chain(REFERENCE_URDF, embodiment.base_frame, tip)
    assert ours.joint_names == reference.joint_names
    assert np.allclose(ours.lower, reference.lower, atol=1e-3) and np.allclose(ours.upper, reference.upper, atol=1e-3)
    rng = np.random.default_rng(0)
    worst_position = worst_angle = 0.0
    for q in random_configs(reference, rng):
        p_ours, r_ours = ours.forward(q)
        p_ref, r_ref = reference.forward(q)
        worst_position = max(worst_position, float(np.linalg.norm(p_ours - p_ref)))
        worst_angle = max(worst_angle, rotation_angle(r_ours, r_ref))
    assert worst_position < 1e-6, worst_position
    assert worst_angle < 1e-6, worst_angle


@pytest.mark.skipif(not REFERENCE_URDF.is_file(), reason=f"reference URDF {REFERENCE_URDF} not present")
def test_head_camera_frame_matches_reference_through_the_torso(embodiment):
    """torso_link1 -> zed_link covers the torso joints and the head camera mount."""
    ours = load_chain(embodiment.robot_description, "torso_link1", "zed_link")
    reference = load_chain(REFERENCE_URDF, "torso_link1", "zed_link")
    assert ours.joint_names == reference.joint_names
    rng = np.random.default_rng(1)
    for q in random_configs(reference, rng, 100):
        p_ours, r_ours = ours.forward(q)
        p_ref, r_ref = reference.forward(q)
        assert np.linalg.norm(p_ours - p_ref) < 1e-6
        assert rotation_angle(r_ours, r_ref) < 1e-6


def test_mujoco_model_agrees_with_the_urdf_chain(embodiment):
    """MuJoCo's URDF import (the simulator) puts gripper links where the URDF says, in torso_link4."""
    sim = SimRobot(embodiment, load_sim_config())
    model, data = sim.model, sim.data
    base = model.body(embodiment.base_frame).id
    rng = np.random.default_rng(2)
    for arm in embodiment.groups_of_kind("arm"):
        chain = load_chain(embodiment.robot_description, embodiment.base_frame, arm.ee_link)
        assert chain.joint_names == list(arm.joints)
        adrs = [model.joint(j).qposadr[0] for j in arm.joints]
        torso = embodiment.groups["torso"]
        torso_adrs = [model.joint(j).qposadr[0] for j in torso.joints]
        tip = model.body(arm.ee_link).id
        for q in random_configs(chain, rng, 100):
            data.qpos[adrs] = q
            # Torso motion must not matter: poses are relative to torso_link4.
            data.qpos[torso_adrs] = rng.uniform(torso.position_limits[:, 0], torso.position_limits[:, 1])
            mujoco.mj_kinematics(model, data)
            base_rot = data.xmat[base].reshape(3, 3)
            p_mj = base_rot.T @ (data.xpos[tip] - data.xpos[base])
            r_mj = base_rot.T @ data.xmat[tip].reshape(3, 3)
            p_chain, r_chain = chain.forward(q)
            assert np.linalg.norm(p_mj - p_chain) < 1e-6
            assert rotation_angle(r_mj, r_chain) < 1e-6
