"""The ROS-free simulator core: scene, seeded resets, tracking in MuJoCo, grippers, task state, cameras."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pi0_ros.embodiment import load_embodiment
from pi0_ros.sim.cameras import CameraRenderer, CameraSpec
from pi0_ros.sim.config import SimConfigError, load_sim_config
from pi0_ros.sim.robot import SimRobot
from pi0_ros.sim.targets import TargetRejected


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment()


@pytest.fixture(scope="module")
def sim(embodiment):
    return SimRobot(embodiment, load_sim_config())


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(0)


def object_positions(sim):
    return {name: obj["position"] for name, obj in sim.task_state().objects.items()}


def test_model_has_the_robot_joints_cameras_and_a_fixed_base(sim, embodiment):
    model = sim.model
    for group in embodiment.groups.values():
        for joint in group.finger_joints or group.joints:
            assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint) >= 0, joint
    for camera in embodiment.cameras.values():
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name)
        assert model.body(model.cam_bodyid[cam_id]).name == camera.frame
    # Fixed base: the only free joints belong to the objects.
    free = [model.joint(i).name for i in range(model.njnt) if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE]
    assert sorted(free) == sorted(f"{name}_free" for name in sim.scene.object_names)


def test_reset_goes_home_and_is_deterministic_per_seed(sim, embodiment):
    sim.command("left_arm", [], [0.0] * 7)
    sim.step(200)
    sim.reset(7)
    for group in embodiment.groups.values():
        fb = sim.joint_state(group.name)
        assert np.allclose(fb.position, group.home) and np.all(fb.velocity == 0)
        assert fb.names == group.joints
    first = object_positions(sim)
    sim.reset(8)
    other = object_positions(sim)
    sim.reset(7)
    assert object_positions(sim) == first
    assert other != first


def test_objects_land_in_the_region_apart_and_rest_on_the_table(sim):
    config = sim.config
    for seed in range(5):
        sim.reset(seed)
        sim.step(250)  # half a second of physics: cubes must stay put
        xy = []
        for name, body in sim._object_bodies.items():
            x, y, z = sim.data.xpos[body]
            assert config.objects.region_x[0] - 1e-3 <= x <= config.objects.region_x[1] + 1e-3
            assert config.objects.region_y[0] - 1e-3 <= y <= config.objects.region_y[1] + 1e-3
            assert z == pytest.approx(config.table.height + config.objects.size / 2, abs=2e-3), name
            xy.append((x, y))
        dists = [np.hypot(a[0] - b[0], a[1] - b[1]) for i, a in enumerate(xy) for b in xy[i + 1:]]
        assert min(dists) >= config.objects.min_separation - 2e-3


def test_arm_tracks_a_target_within_speed_limits_in_mujoco(sim, embodiment):
    arm = embodiment.groups["right_arm"]
    goal = arm.home + np.array([0.8, -0.6, 0.7, 0.9, -0.7, 0.6, 0.7])
    speed = np.full(7, 0.8)
    sim.command("right_arm", list(reversed(arm.joints)), goal[::-1], speed)
    peak = 0.0
    for _ in range(1500):
        sim.step()
        peak = max(peak, float(np.abs(sim.joint_state("right_arm").velocity).max()))
    fb = sim.joint_state("right_arm")
    assert np.allclose(fb.position, goal, atol=1e-9)
    assert peak <= 0.8 + 1e-9 and peak > 0.7
    # MuJoCo's joints are where feedback says they are.
    qpos = [sim.data.qpos[sim.model.joint(j).qposadr[0]] for j in arm.joints]
    assert np.allclose(qpos, goal, atol=1e-9)
    # Effort is the gravity load of the posture: non-zero on the shoulder.
    assert abs(fb.effort[0]) > 0.1


def test_rejected_target_keeps_the_previous_one(sim):
    sim.command("torso", [], [0.1, 0.0, 0.0, 0.0])
    with pytest.raises(TargetRejected):
        sim.command("torso", [], [0.1, 0.0, float("nan"), 0.0])
    with pytest.raises(TargetRejected):
        sim.command("torso", ["torso_joint1"], [5.0])
    assert sim.target("torso").tolist() == [0.1, 0.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="unknown group"):
        sim.command("tail", [], [0.0])


def test_gripper_stroke_maps_linearly_onto_both_fingers(sim, embodiment):
    gripper = embodiment.groups["left_gripper"]
    fingers = [sim.model.joint(name) for name in gripper.finger_joints]
    for stroke, metres in ((0.0, 0.0), (40.0, 0.02), (100.0, 0.05)):
        sim.command("left_gripper", [], [stroke])
        sim.step(1000)
        assert sim.joint_state("left_gripper").position[0] == pytest.approx(stroke)
        for finger in fingers:
            assert sim.data.qpos[finger.qposadr[0]] == pytest.approx(metres, abs=1e-9)


def test_task_state_reports_touch_when_the_grasp_point_reaches_an_object(sim):
    state = sim.task_state()
    assert state.frame == "torso_link4"
    assert set(state.grippers) == {"left_arm", "right_arm"}
    assert all(not touched for touched in state.touched.values())
    # Move the red cube onto the left grasp point: the task state must report the touch.
    grasp_world = sim.data.xpos[sim._arm_ee["left_arm"]] + sim.data.xmat[sim._arm_ee["left_arm"]].reshape(3, 3) @ \
        np.asarray(sim.config.task.grasp_point)
    adr = sim._object_qpos["red"]
    sim.data.qpos[adr:adr + 3] = grasp_world + np.array([0.0, 0.0, 0.01])
    state = sim.task_state()
    assert state.touched["left_arm"] == ["red"]
    assert state.distances["left_arm"]["red"] == pytest.approx(0.01, abs=1e-4)
    # Positions are in torso_link4: the torso frame sits 1.14 m above the floor at home.
    base_z = sim.data.xpos[sim._base_body][2]
    assert state.objects["red"]["position"][2] == pytest.approx(grasp_world[2] + 0.01 - base_z, abs=1e-4)
    as_dict = state.as_dict()
    assert as_dict["seed"] == 0 and "distances" in as_dict


def test_table_region_is_within_reach_of_a_gripper(sim, embodiment):
    """Every corner of the object region can be reached by at least one grasp point (position IK)."""
    config = sim.config
    z = config.table.height + config.objects.size / 2
    model, data = sim.model, sim.data
    offset = np.asarray(config.task.grasp_point)

    def reach_error(arm_name, goal):
        sim.reset(0)
        arm = embodiment.groups[arm_name]
        body = model.body(arm.ee_link).id
        dofs = [model.joint(j).dofadr[0] for j in arm.joints]
        adrs = [model.joint(j).qposadr[0] for j in arm.joints]
        for _ in range(200):  # damped least squares on the grasp point position
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            point = data.xpos[body] + data.xmat[body].reshape(3, 3) @ offset
            jac = np.zeros((3, model.nv))
            mujoco.mj_jac(model, data, jac, None, point, body)
            j = jac[:, dofs]
            step = j.T @ np.linalg.solve(j @ j.T + 1e-3 * np.eye(3), goal - point)
            data.qpos[adrs] = np.clip(data.qpos[adrs] + step, arm.position_limits[:, 0], arm.position_limits[:, 1])
        mujoco.mj_kinematics(model, data)
        return float(np.linalg.norm(goal - (data.xpos[body] + data.xmat[body].reshape(3, 3) @ offset)))

    for x in config.objects.region_x:
        for y in config.objects.region_y:
            goal = np.array([x, y, z])
            assert min(reach_error("left_arm", goal), reach_error("right_arm", goal)) < 0.01, (x, y)
    # The middle of the region is reachable by both arms.
    middle = np.array([np.mean(config.objects.region_x), 0.0, z])
    assert reach_error("left_arm", middle) < 0.01 and reach_error("right_arm", middle) < 0.01


def test_cameras_render_configured_sizes_and_see_the_scene(sim, embodiment):
    specs = [CameraSpec("head", 96, 64), CameraSpec("left_wrist", 80, 80), CameraSpec("right_wrist", 80, 80)]
    with CameraRenderer(sim.model, specs) as renderer:
        images = renderer.render_all(sim.qpos())
        assert images["head"].shape == (64, 96, 3) and images["left_wrist"].shape == (80, 80, 3)
        for name, image in images.items():
            assert image.dtype == np.uint8
            assert image.std() > 10, f"{name} image is blank"
        # The head camera looks at the table: its lower half is mostly the table's colour.
        table_rgb = np.array(sim.config.table.rgba[:3]) * 255
        lower = images["head"][40:, :, :].reshape(-1, 3).astype(float)
        near_table = np.linalg.norm(lower - table_rgb, axis=1) < 60
        assert near_table.mean() > 0.3
        # Moving the arm changes what its wrist camera sees.
        sim.command("left_arm", ["left_arm_joint1"], [-1.2])
        sim.step(1000)
        moved = renderer.render_all(sim.qpos(), ["left_wrist"])["left_wrist"]
        assert np.abs(moved.astype(int) - images["left_wrist"].astype(int)).mean() > 5
        with pytest.raises(KeyError):
            renderer.render("nose")


def test_renderer_refuses_sizes_beyond_the_offscreen_buffer(sim):
    with pytest.raises(ValueError, match="offscreen"):
        CameraRenderer(sim.model, [CameraSpec("head", 4000, 3000)])


def test_sim_config_errors_are_clear(tmp_path):
    bad = tmp_path / "sim.yaml"
    bad.write_text("scene:\n  physics:\n    timestep: 0.5\n")
    with pytest.raises(SimConfigError, match="timestep"):
        load_sim_config(bad)
    bad.write_text("scene:\n  table:\n    colour: [1.0]\n")
    with pytest.raises(SimConfigError, match="colour"):
        load_sim_config(bad)
    bad.write_text("/**:\n  ros__parameters:\n    feedback_hz: 100.0\n")
    with pytest.raises(SimConfigError, match="scene"):
        load_sim_config(bad)
    with pytest.raises(SimConfigError, match="not found"):
        load_sim_config(tmp_path / "missing.yaml")
