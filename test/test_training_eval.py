"""pi0-eval's ROS-free parts: seeds, success criteria, the episode loop (with a stand-in driver), summary,
jerk, the language-following case and the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pi0_ros.training.eval_metrics import episode_jerk, is_language_case, nearest_object, rms_jerk
from pi0_ros.training.evaluate import (
    EpisodeTask,
    build_parser,
    expert_plan,
    fixed_plan,
    format_text,
    parse_seeds,
    policy_param,
    run_episodes,
    success_check,
    summarize,
)


def test_seed_ranges():
    assert parse_seeds("1000-1002,7") == [1000, 1001, 1002, 7]
    assert parse_seeds("5,1-3,2,5") == [5, 1, 2, 3]  # a seed named twice runs once
    with pytest.raises(ValueError, match="reversed"):
        parse_seeds("1019-1000")
    with pytest.raises(ValueError, match="no seeds"):
        parse_seeds(" , ")


def test_bad_seeds_are_an_option_error(capsys):
    from pi0_ros.training import evaluate

    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--seeds", "1019-1000"])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_success_criteria():
    state = {"touched": {"left_arm": [], "right_arm": ["red_cube"]},
             "distances": {"left_arm": {"red_cube": 0.30}, "right_arm": {"red_cube": 0.01}}}
    assert success_check("touched")(state)
    assert success_check("touched:red_cube")(state)
    assert not success_check("touched:blue_cube")(state)
    assert success_check("distance:red_cube:0.02")(state)
    assert not success_check("distance:red_cube:0.005")(state)
    assert not success_check("touched")({"touched": {"left_arm": [], "right_arm": []}})
    with pytest.raises(ValueError):
        success_check("lifted")


class FakeDriver:
    """The episode protocol of pi0_ros.testing.sim_driver.EpisodeDriver, scripted per seed.

    Seeds below 3 succeed on the third task state; seed 2 also reports a safety fault; seed 9 cannot be
    reset; seed 7's policy switch is refused. Commands move the left arm along a cubic (constant jerk)."""

    def __init__(self, state0=None):
        self.seed = None
        self.calls = []
        self.state0 = state0 or {}

    def reset(self, seed):
        self.seed = seed
        self.calls.append("reset")
        return seed != 9

    def current_state(self):
        return self.state0

    def start(self, instruction):
        self.calls.append(f"start {instruction}")
        return (False, "no policy") if self.seed == 7 else (True, "")

    def stop(self):
        self.calls.append("stop")

    def states_since_start(self):
        touched = self.seed < 3
        return [(0.1 * k, {"touched": {"left_arm": ["cube"] if touched and k >= 2 else []},
                           "distances": {"left_arm": {"cube": 0.3 - 0.1 * k}}}) for k in range(3)]

    def wait_for(self, predicate, timeout):
        return next((s for _, s in self.states_since_start() if predicate(s)), None)

    def commands_since_start(self):
        t = np.arange(20) * 0.1
        return {"left_arm": [(ti, np.full(7, 2.0 * ti ** 3)) for ti in t]}

    def faults_since_start(self):
        return ["joint_step_limited"] if self.seed == 2 else []


def test_episode_loop_and_summary():
    driver = FakeDriver()
    plan = fixed_plan("touch the cube", success_check("touched"))
    episodes = run_episodes(driver, [0, 2, 5, 9, 7], plan, timeout=0.01, log=lambda m: None)
    # every started episode is parked again; the refused and the unreset ones fail
    assert driver.calls[:3] == ["reset", "start touch the cube", "stop"]
    assert driver.calls.count("stop") == 4
    assert [e["success"] for e in episodes] == [True, True, False, False, False]
    assert episodes[0]["time_to_success_s"] == pytest.approx(0.2)
    assert any(f.startswith("policy_refused") for f in episodes[4]["faults"])
    summary = summarize(episodes)
    assert summary["success_rate"] == 0.4 and summary["safety_events"] == 2
    assert summary["reset_failures"] == 1 and summary["time_to_success_s_median"] == pytest.approx(0.2)
    assert summary["by_instruction"]["touch the cube"] == {"episodes": 4, "successes": 2, "success_rate": 0.5}
    # 2 t^3 has a third derivative of 12 everywhere: the RMS jerk of the fake commands
    assert summary["command_jerk_rms_median"] == pytest.approx(12.0, rel=1e-6)
    assert "2/5 successes (40 %)" in format_text(summary, "ckpt")


def test_episode_loop_stops_when_the_check_raises_before_an_episode():
    # pi0-eval passes the graph's liveness check: once the simulator is dead, no further seed is run.
    driver, checked = FakeDriver(), []

    def check():
        checked.append(len(driver.calls))
        if len(checked) == 3:
            raise RuntimeError("node sim_robot exited with -11")

    with pytest.raises(RuntimeError, match="sim_robot exited"):
        run_episodes(driver, [0, 2, 5, 9], fixed_plan("touch the cube", success_check("touched")), timeout=0.01,
                     log=lambda m: None, check=check)
    assert driver.calls.count("reset") == 2 and len(checked) == 3


class HoldDriver(FakeDriver):
    """Touches on the third state; during the hold, seed 0 stays on the cube and seed 1 sweeps on past it."""

    def __init__(self):
        super().__init__()
        self.held_for = None

    def start(self, instruction):
        self.held_for = None
        return super().start(instruction)

    def states_since_start(self):
        path = [0.3, 0.2, 0.02]
        if self.held_for is not None:
            path += [0.02, 0.01] if self.seed == 0 else [0.05, 0.12]
        return [(0.1 * k, {"touched": {"left_arm": ["cube"] if k >= 2 else []},
                           "distances": {"left_arm": {"cube": d}}}) for k, d in enumerate(path)]

    def wait_for(self, predicate, timeout):
        found = super().wait_for(predicate, timeout)
        if found is None:  # the hold: the policy kept acting for `timeout` seconds
            self.held_for = timeout
        return found


def test_a_hold_after_the_touch_tells_a_reach_from_a_sweep():
    def plan(seed, state):
        return EpisodeTask("touch the cube", success_check("touched"),
                           lambda st: st["distances"]["left_arm"]["cube"])
    driver = HoldDriver()
    episodes = run_episodes(driver, [0, 1], plan, timeout=0.01, log=lambda m: None, hold_s=1.0, hold_distance=0.035)
    assert [e["success"] for e in episodes] == [True, True]  # both touched first
    assert [e["held"] for e in episodes] == [True, False]  # only the reach stayed
    assert episodes[1]["min_distance_m"] == pytest.approx(0.02)
    summary = summarize(episodes)
    assert summary["touched_and_held"] == {"episodes": 2, "successes": 1, "success_rate": 0.5}
    assert "touched and still there after the hold: 1/2" in format_text(summary, "ckpt")
    # Without a hold nothing is claimed about it.
    plain = run_episodes(HoldDriver(), [1], plan, timeout=0.01, log=lambda m: None)
    assert plain[0]["held"] is None and summarize(plain)["touched_and_held"] is None


class SweepDriver(HoldDriver):
    """Seed 0 reaches with the left hand alone; seed 1 also brings the right hand onto another cube during the
    hold; seed 2 touches a second cube with the named hand on the way; seed 3 touches only the wrong cube."""

    def states_since_start(self):
        states = []
        for t, state in super().states_since_start():
            touched = {"left_arm": list(state["touched"]["left_arm"]), "right_arm": []}
            if self.seed == 1 and t > 0.25:
                touched["right_arm"] = ["blue"]
            if self.seed == 2 and t == pytest.approx(0.1):
                touched["left_arm"] = ["red"]
            if self.seed == 3:
                touched["left_arm"] = ["red"] if touched["left_arm"] else []
            states.append((t, {**state, "touched": touched}))
        return states


def test_clean_success_needs_nothing_but_the_named_cube_touched():
    def plan(seed, state):
        return EpisodeTask("touch the cube with the left hand",
                           lambda st: "cube" in st["touched"]["left_arm"],
                           lambda st: st["distances"]["left_arm"]["cube"], arm="left_arm", object="cube")
    episodes = run_episodes(SweepDriver(), [0, 1, 2, 3], plan, timeout=0.01, log=lambda m: None, hold_s=1.0,
                            hold_distance=0.035)
    assert [e["success"] for e in episodes] == [True, True, True, False]
    assert [e["other_touches"] for e in episodes] == [[], ["right_arm:blue"], ["left_arm:red"], ["left_arm:red"]]
    assert [e["clean"] for e in episodes] == [True, False, False, False]
    summary = summarize(episodes)
    assert summary["clean_success"] == {"episodes": 4, "successes": 1, "success_rate": 0.25}
    assert "clean (no other cube touched by either hand): 1/4" in format_text(summary, "ckpt")
    # Tasks that do not name an arm and an object claim nothing about it.
    fixed = run_episodes(SweepDriver(), [0], fixed_plan("touch", success_check("touched")), timeout=0.01,
                         log=lambda m: None)
    assert fixed[0]["clean"] is None and summarize(fixed)["clean_success"] is None


def test_expert_plan_gives_the_task_the_closest_approach_and_the_language_case():
    # red is named, but green is nearer to the left hand at the start: a language-following case
    state0 = {"objects": {"red": {"position": [0.45, 0.15, 1.07]}, "green": {"position": [0.47, 0.0, 1.07]}},
              "distances": {"left_arm": {"red": 0.30, "green": 0.20}}}

    class Driver(FakeDriver):
        def states_since_start(self):
            return [(0.1 * k, {"touched": {"left_arm": ["red"] if d < 0.02 else []},
                               "distances": {"left_arm": {"red": d, "green": 0.25}}})
                    for k, d in enumerate((0.3, 0.1, 0.01))]

    driver = Driver(state0)
    (episode,) = run_episodes(driver, [3], lambda seed, state: expert_plan(seed, state, tasks=None),
                              timeout=0.01, log=lambda m: None)
    assert driver.calls[1] == "start touch the red cube with the left hand"
    assert episode["success"] and episode["start_distance_m"] == 0.3 and episode["min_distance_m"] == 0.01
    assert episode["language_case"] is True
    assert [d for _, d in episode["distance_trace"]] == [0.3, 0.1, 0.01]
    summary = summarize([episode])
    assert summary["min_distance_m_median"] == 0.01
    assert summary["language_following"] == {"episodes": 1, "successes": 1, "success_rate": 1.0}
    assert "language following" in format_text(summary, "x")


def test_jerk_of_smooth_and_jumpy_command_streams():
    t = np.arange(50) * 0.1
    linear = np.stack([0.1 * t] * 7, axis=1)
    assert rms_jerk(linear, 0.1) == pytest.approx(0.0, abs=1e-9)
    jumpy = linear.copy()
    jumpy[25:] += 0.05  # a chunk switch that jumps 0.05 rad
    assert rms_jerk(jumpy, 0.1) > 10.0
    assert rms_jerk(linear[:3], 0.1) is None  # too short for a third difference
    # arrival jitter does not count: the node's nominal period (median spacing) is used
    jittered = [(ti + (0.02 if k % 2 else 0.0), q) for k, (ti, q) in enumerate(zip(t, linear, strict=True))]
    assert episode_jerk({"left_arm": jittered}) == pytest.approx(0.0, abs=1e-9)
    assert episode_jerk({"left_arm": jittered[:2]}) is None


def test_language_case_is_the_named_object_not_being_the_nearest():
    state = {"distances": {"left_arm": {"red": 0.2, "green": 0.25, "blue": float("nan")},
                           "right_arm": {"red": 0.4, "green": 0.22}}}
    assert nearest_object(state, "left_arm") == "red"
    assert is_language_case(state, "left_arm", "red") is False
    assert is_language_case(state, "left_arm", "green") is True
    assert is_language_case(state, "right_arm", "green") is False
    assert is_language_case({}, "left_arm", "red") is None


def test_plots_are_written(tmp_path):
    from PIL import Image

    from pi0_ros.training.eval_plots import write_plots

    driver = FakeDriver()
    episodes = run_episodes(driver, [0, 5], fixed_plan("touch the cube", success_check("touched")), timeout=0.01,
                            log=lambda m: None)
    for e in episodes:
        e["distance_trace"] = [(0.0, 0.3), (1.0, 0.1)]
    report = {"label": "test", "episodes": episodes, "summary": summarize(episodes)}
    paths = write_plots(report, tmp_path / "eval", touch_distance_m=0.035)
    assert [p.name for p in paths] == ["eval_distance.png", "eval_summary.png"]
    for p in paths:
        with Image.open(p) as image:
            assert image.size[0] > 400 and image.size[1] > 200


def test_policy_params_are_typed_like_the_node_expects_and_malformed_ones_are_refused():
    parser = build_parser()
    args = parser.parse_args(["--policy-param", "chunk_strategy=temporal_ensemble", "--policy-param",
                              "inference_margin_steps=1", "--policy-param", "speed_scale=0.4",
                              "--policy-param", "paused=false"])
    assert dict(args.policy_param) == {"chunk_strategy": "temporal_ensemble", "inference_margin_steps": 1,
                                       "speed_scale": 0.4, "paused": False}
    assert isinstance(dict(args.policy_param)["inference_margin_steps"], int)
    assert policy_param("instruction=[a, b]") == ("instruction", "[a, b]")  # not a scalar: kept as text
    for bad in ("no_equals_sign", "=3"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--policy-param", bad])


def _setup(**changes):
    setup = {"label": "ckpt", "backend": "pi0_fast", "checkpoint": "runs/x/best", "policy_parameters": {},
             "instruction": "touch the cube", "layout": "random", "tasks": None, "success": "touched",
             "touch_distance_m": 0.035, "episode_timeout_s": 15.0, "hold_s": 0.0, "feedback_hz": 50.0,
             "sim_params": None, "logs": "/tmp/logs"}
    return {**setup, **changes}


def test_the_report_is_rewritten_after_every_episode_so_a_stop_keeps_the_finished_ones(tmp_path):
    from pi0_ros.training.eval_report import build_report, finished_episodes, write_report

    out, seeds, done = tmp_path / "eval.json", [0, 5, 2, 9], []

    def save(result):
        done.append(result)
        write_report(out, build_report(_setup(), seeds, done))
        assert json.loads(out.read_text())["episodes"][-1]["seed"] == result["seed"]

    def check():  # the simulator dies before the third episode
        if len(done) == 2:
            raise RuntimeError("node sim_robot exited with -11")

    with pytest.raises(RuntimeError):
        run_episodes(FakeDriver(), seeds, fixed_plan("touch the cube", success_check("touched")), timeout=0.01,
                     log=lambda m: None, check=check, on_result=save)
    report = json.loads(out.read_text())
    assert report["complete"] is False and [e["seed"] for e in report["episodes"]] == [0, 5]
    assert report["summary"]["successes"] == 1 and report["summary"]["episodes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no temporary file left behind
    # --resume: the finished seeds of the same setup (the label and the logs may differ) and the earlier logs ...
    resumed, logs = finished_episodes(out, _setup(label="again", logs="/tmp/other"), seeds)
    assert [e["seed"] for e in resumed] == [0, 5] and logs == ["/tmp/logs"]
    assert finished_episodes(tmp_path / "none.json", _setup(), seeds) == ([], [])
    # ... and never episodes run with another setup, nor a rewrite that would drop finished seeds ...
    with pytest.raises(ValueError, match="episode_timeout_s"):
        finished_episodes(out, _setup(episode_timeout_s=30.0), seeds)
    with pytest.raises(ValueError, match="feedback_hz"):
        finished_episodes(out, _setup(feedback_hz=100.0), seeds)
    with pytest.raises(ValueError, match="leaves out"):
        finished_episodes(out, _setup(), [5, 7])
    write_report(out, build_report(_setup(policy_parameters={"paused": True}), [0], done[:1]))
    with pytest.raises(ValueError, match="policy_parameters"):  # True and 1 are different parameter values
        finished_episodes(out, _setup(policy_parameters={"paused": 1}), [0])
    # ... nor a file that is not a report.
    for text in ('{"episodes": ', '{"episodes": null}', '{"episodes": [{"seed": 1}]}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="not a pi0-eval report"):
            finished_episodes(tmp_path / "bad.json", _setup(), seeds)
    complete = build_report(_setup(), [0, 5], resumed, resumed_episodes=2)
    assert complete["complete"] is True and complete["resumed_episodes"] == 2
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_pi0_eval_resume_runs_only_the_missing_seeds(tmp_path, monkeypatch):
    from pi0_ros.paths import config_path
    from pi0_ros.sim.config import load_sim_config
    from pi0_ros.sim.expert import SKILL_TASKS
    from pi0_ros.training import evaluate
    from pi0_ros.training.eval_report import build_report, write_report

    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    ran, crash_after = [], [1]

    def fake_graph(options, seeds, plan, args, touch_distance, log_dir, on_result):
        ran.append(list(seeds))

        def check():  # the simulator dies after `crash_after` episodes of this run
            if crash_after and len(ran_here) == crash_after[0]:
                raise RuntimeError("node sim_robot exited with -11")

        ran_here = []
        run_episodes(FakeDriver(), seeds, plan, 0.01, log=lambda m: None, check=check,
                     on_result=lambda r: (ran_here.append(r), on_result(r)))

    monkeypatch.setattr(evaluate, "run_in_graph", fake_graph)
    setup = _setup(backend="scripted", checkpoint=None, instruction="touch the cube", layout="fixed",
                   tasks=[t.instruction for t in SKILL_TASKS],
                   touch_distance_m=load_sim_config(config_path("sim.yaml")).task.touch_distance)
    out = tmp_path / "eval.json"
    earlier = run_episodes(FakeDriver(), [0, 5], fixed_plan("touch the cube", success_check("touched")), 0.01,
                           log=lambda m: None)
    write_report(out, build_report(setup, [0, 5, 2, 9], earlier))
    argv = ["--backend", "scripted", "--instruction", "touch the cube", "--layout", "fixed", "--seeds", "0,5,2,9",
            "--episode-timeout", "15", "--out", str(out), "--resume"]
    with pytest.raises(RuntimeError):  # stopped after one of the two missing seeds: that one is kept
        evaluate.main(argv)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and [e["seed"] for e in partial["episodes"]] == [0, 5, 2]
    crash_after.clear()
    assert evaluate.main(argv) == 0
    assert ran == [[2, 9], [9]]
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["resumed_episodes"] == 3 and len(report["earlier_logs"]) == 2
    assert [e["seed"] for e in report["episodes"]] == [0, 5, 2, 9] and report["summary"]["successes"] == 2
    # another setup is refused before anything runs; --resume needs the report's path
    assert evaluate.main(argv[:-4] + ["30", "--out", str(out), "--resume"]) == 2 and len(ran) == 2
    with pytest.raises(SystemExit):
        evaluate.main(["--resume"])
