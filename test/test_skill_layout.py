"""The fixed cube layout (config/sim.yaml `objects.layout: fixed`) and the language-conditioned skill tasks
that pi0-collect / pi0-eval draw with `--layout fixed`."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pi0_ros.embodiment import load_embodiment
from pi0_ros.sim.config import SimConfigError, load_sim_config, write_layout_variant
from pi0_ros.sim.expert import SKILL_TASKS, TouchTask, choose_task, parse_tasks
from pi0_ros.sim.robot import SimRobot
from pi0_ros.sim.scene import object_free_qpos


def test_default_layout_is_random_and_names_fixed_positions_for_every_cube():
    config = load_sim_config()
    assert config.objects.layout == "random"
    assert set(config.objects.fixed) == set(config.objects.items)


def test_layout_variant_is_fixed_and_placements_stay_within_the_jitter(tmp_path):
    config = load_sim_config(write_layout_variant("fixed", tmp_path / "fixed.yaml"))
    objects = config.objects
    assert objects.layout == "fixed"
    a = objects.fixed_placements(np.random.default_rng(3))
    assert a == objects.fixed_placements(np.random.default_rng(3))
    assert a != objects.fixed_placements(np.random.default_rng(4))
    for name, (x, y, yaw) in zip(objects.items, a, strict=True):
        fx, fy = objects.fixed[name]
        assert abs(x - fx) <= objects.fixed_jitter_m + 1e-12 and abs(y - fy) <= objects.fixed_jitter_m + 1e-12
        assert abs(yaw) <= objects.fixed_yaw_jitter + 1e-12


def test_bad_layout_and_missing_fixed_position_are_rejected(tmp_path):
    raw = {"scene": {"objects": {"layout": "grid"}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SimConfigError, match="layout"):
        load_sim_config(tmp_path / "bad.yaml")
    raw = {"scene": {"objects": {"layout": "fixed", "fixed": {"red": [0.45, 0.1]}}}}
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SimConfigError, match="missing"):
        load_sim_config(tmp_path / "missing.yaml")


def test_simulator_puts_the_cubes_at_the_fixed_positions(tmp_path):
    config = load_sim_config(write_layout_variant("fixed", tmp_path / "fixed.yaml"))
    sim = SimRobot(load_embodiment(), config)
    for seed in (0, 1000):
        sim.reset(seed)
        for name, (fx, fy) in config.objects.fixed.items():  # world frame (task state reports the base frame)
            adr = object_free_qpos(sim.model, name)
            x, y = sim.data.qpos[adr:adr + 2]
            assert abs(x - fx) <= config.objects.fixed_jitter_m + 1e-9
            assert abs(y - fy) <= config.objects.fixed_jitter_m + 1e-9


def test_tasks_parse_and_are_drawn_from_the_list():
    assert parse_tasks("red:left, green:left,green:right , blue:right") == SKILL_TASKS
    assert parse_tasks("green:right_arm") == (TouchTask("green", "right_arm"),)
    with pytest.raises(ValueError):
        parse_tasks("red:middle")
    state = {"objects": {"red": {"position": [0.45, 0.15, 1.07]}, "blue": {"position": [0.45, -0.15, 1.07]}}}
    drawn = {choose_task(state, np.random.default_rng(seed), tasks=SKILL_TASKS) for seed in range(40)}
    assert drawn == set(SKILL_TASKS)
    assert {t.instruction for t in SKILL_TASKS} == {"touch the red cube with the left hand",
                                                    "touch the green cube with the left hand",
                                                    "touch the green cube with the right hand",
                                                    "touch the blue cube with the right hand"}


def test_collect_and_eval_take_the_layout_flag():
    from pi0_ros.tools.collect import parse_args, skill_tasks
    from pi0_ros.training.evaluate import build_parser

    args = parse_args(["--root", "/tmp/x", "--layout", "fixed"])
    assert args.layout == "fixed" and skill_tasks(args.layout, args.tasks) == SKILL_TASKS
    assert skill_tasks("random", None) is None
    assert build_parser().parse_args(["--layout", "fixed", "--tasks", "red:left"]).layout == "fixed"


def test_detours_leave_the_nominal_start_but_never_head_for_the_named_cube():
    from pi0_ros.sim.expert import DetourConfig, ExpertConfig, detour_point, ee_target_for_grasp_point, plan_move

    start = np.array([0.36, 0.37, 0.17, 0.316, -0.662, 0.350, 0.582])  # the left arm's home ee pose
    objects = {"red": {"position": [0.45, 0.15, -0.07]}, "green": {"position": [0.47, 0.0, -0.07]},
               "blue": {"position": [0.45, -0.15, -0.07]}}
    task, grasp, expert = TouchTask("green", "left_arm"), (0.0, 0.0, 0.1), ExpertConfig()
    above = {name: ee_target_for_grasp_point(np.add(o["position"], expert.touch_offset_m), start[3:], grasp)
             + [0.0, 0.0, expert.approach_height_m] for name, o in objects.items()}

    def on_segment_to(point, name, fraction):
        direction = above[name] - start[:3]
        along = np.dot(point - start[:3], direction) / np.dot(direction, direction)
        close = np.allclose(start[:3] + along * direction, point, atol=1e-9)
        return close and fraction[0] <= along <= fraction[1]

    toward = DetourConfig(toward_other_cube=1.0, jitter_m=0.0)
    heads = [next(n for n in objects if on_segment_to(
        detour_point(start, objects, task, grasp, np.random.default_rng(s), toward, expert), n, toward.fraction))
        for s in range(40)]
    assert set(heads) == {"red", "blue"}  # both other cubes, never the named green one
    box = DetourConfig(toward_other_cube=0.0)
    offsets = np.array([detour_point(start, objects, task, grasp, np.random.default_rng(s), box, expert) - start[:3]
                        for s in range(200)])
    assert np.all(offsets >= box.offset_low_m) and np.all(offsets <= box.offset_high_m)
    assert np.all(np.ptp(offsets, axis=0) > 0.5 * np.subtract(box.offset_high_m, box.offset_low_m))
    # The default mixes both, and a seed always gives the same point.
    points = [detour_point(start, objects, task, grasp, np.random.default_rng(s)) for s in range(200)]
    in_box = sum(bool(np.all(p - start[:3] >= box.offset_low_m) and np.all(p - start[:3] <= box.offset_high_m))
                 for p in points)
    assert 60 < in_box < 160
    np.testing.assert_array_equal(points[7], detour_point(start, objects, task, grasp, np.random.default_rng(7)))
    move = plan_move(start, points[0], expert)
    np.testing.assert_allclose(move.pose(0.0), start)
    np.testing.assert_allclose(move.pose(move.duration), np.concatenate([points[0], start[3:]]))
    assert move.duration >= np.linalg.norm(points[0] - start[:3]) / expert.move_speed_m_s - 1e-9


LEFT_HOME = np.array([0.36, 0.37, 0.17, 0.316, -0.662, 0.350, 0.582])  # the left arm's home ee pose
GRASP = (0.0, 0.0, 0.1)


def test_near_cube_detours_end_over_the_named_cube_and_arrive_from_above():
    from pi0_ros.sim.expert import DetourConfig, ExpertConfig, detour_point, over_object, plan_move, touch_target

    objects = {"red": {"position": [0.45, 0.15, -0.07]}, "green": {"position": [0.47, 0.0, -0.07]}}
    task, expert = TouchTask("green", "left_arm"), ExpertConfig()
    touch = touch_target(objects["green"]["position"], LEFT_HOME[3:], GRASP, expert)
    near = DetourConfig(near_named_cube=1.0)
    points = np.array([detour_point(LEFT_HOME, objects, task, GRASP, np.random.default_rng(s), near, expert)
                       for s in range(200)])
    offsets = points - touch
    horizontal = np.linalg.norm(offsets[:, :2], axis=1)
    assert horizontal.max() <= near.near_radius_m + 1e-12 and horizontal.max() > 0.8 * near.near_radius_m
    assert offsets[:, 2].min() >= near.near_height_m[0] and offsets[:, 2].max() <= near.near_height_m[1]
    assert all(over_object(p, touch, expert) for p in points)
    # The default has none: its detours stay away from the named cube.
    assert not any(over_object(detour_point(LEFT_HOME, objects, task, GRASP, np.random.default_rng(s)), touch, expert)
                   for s in range(200))
    # The unrecorded move comes down onto such a point from the approach height, not through the cube's side.
    via = touch[2] + expert.approach_height_m
    move = plan_move(LEFT_HOME, points[0], expert, via_height=via)
    np.testing.assert_allclose(move.pose(move.times[1])[:3], [points[0][0], points[0][1], via])
    np.testing.assert_allclose(move.pose(move.duration)[:3], points[0])
    assert len(plan_move(LEFT_HOME, points[0], expert).waypoints) == 2


def test_a_start_over_the_cube_is_finished_from_there_without_climbing():
    from pi0_ros.sim.expert import ACROSS_TOLERANCE_M, ExpertConfig, plan_touch, touch_target

    expert, cube = ExpertConfig(), [0.47, 0.0, -0.07]
    touch = touch_target(cube, LEFT_HOME[3:], GRASP, expert)
    nominal = plan_touch(LEFT_HOME, cube, GRASP, expert)  # from home: via the approach height, as always
    np.testing.assert_allclose(nominal.positions[1], touch + [0.0, 0.0, expert.approach_height_m])
    for offset in ([0.02, -0.01, 0.04], [0.0, 0.002, 0.03]):
        start = np.concatenate([touch + offset, LEFT_HOME[3:]])
        path = plan_touch(start, cube, GRASP, expert)
        reach = path.phases["touch"]
        heights = [path.pose(t)[2] for t in np.linspace(0.0, reach, 50)]
        assert np.all(np.diff(heights) <= 1e-12) and heights[0] == pytest.approx(start[2])
        np.testing.assert_allclose(path.pose(reach)[:3], touch)
        speeds = np.linalg.norm(np.diff(path.positions[: list(path.times).index(reach) + 1], axis=0), axis=1)
        assert np.all(speeds > 1e-3)  # no waypoint repeats the start: no pause over the cube
        # The descent's last part is over the touch point, as in the nominal demonstrations (within the few mm a
        # start closer than ACROSS_TOLERANCE_M to the vertical is allowed to slant).
        np.testing.assert_allclose(path.pose(reach - 0.1)[:2], touch[:2], atol=ACROSS_TOLERANCE_M)


def test_collect_refuses_a_perturbed_share_outside_zero_to_one():
    from pi0_ros.tools.collect import parse_args

    assert parse_args(["--root", "/tmp/x", "--perturbed-starts", "0.5"]).perturbed_starts == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--root", "/tmp/x", "--perturbed-starts", "1.5"])
    assert parse_args(["--root", "/tmp/x", "--near-cube-share", "0.5"]).near_cube_share == 0.5
    assert parse_args(["--root", "/tmp/x"]).near_cube_share == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--root", "/tmp/x", "--near-cube-share", "-0.1"])


def test_collect_detour_fraction_defaults_to_the_detour_config_and_refuses_a_reversed_range():
    from pi0_ros.sim.expert import DetourConfig
    from pi0_ros.tools.collect import parse_args

    assert tuple(parse_args(["--root", "/tmp/x"]).detour_fraction) == DetourConfig.fraction
    assert parse_args(["--root", "/tmp/x", "--detour-fraction", "0.1", "0.4"]).detour_fraction == [0.1, 0.4]
    for bad in (["0.4", "0.1"], ["-0.1", "0.4"], ["0.1", "1.5"]):
        with pytest.raises(SystemExit):
            parse_args(["--root", "/tmp/x", "--detour-fraction", *bad])


def test_collect_stops_before_the_graph_when_the_ik_library_is_missing(tmp_path, monkeypatch, capsys):
    # Without IK the policy node ignores the expert's pose goals and every episode would be discarded.
    from pi0_ros.tools import collect

    monkeypatch.setenv("RELAXED_IK_LIB", str(tmp_path / "absent.so"))
    monkeypatch.setattr(collect, "GraphProcesses", lambda *a, **k: pytest.fail("the graph was started"))
    assert collect.main(["--root", str(tmp_path / "data"), "--episodes", "1"]) == 2
    assert "absent.so" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
