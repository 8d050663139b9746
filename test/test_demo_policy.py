"""make demo's first-use pipeline: collect until enough demonstrations, train, reuse the cache, resume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pi0_ros import demo_policy
from pi0_ros.demo_policy import DemoRecipe, ensure_demo_policy


class FakePipeline:
    """Stands in for the pi0-collect / pi0-train child processes: records the commands, fakes their results.

    Collection keeps all but ``misses_first`` episodes of the first call; training writes ``last`` at
    ``stop_at`` (None: the recipe's steps)."""

    def __init__(self, recipe, misses_first=0, stop_at=None):
        self.recipe, self.misses_first, self.stop_at = recipe, misses_first, stop_at
        self.calls, self.episodes = [], 0

    def run(self, cmd, check):
        assert check
        self.calls.append(cmd)
        module = cmd[2]
        if module == "pi0_ros.tools.collect":
            n = int(cmd[cmd.index("--episodes") + 1])
            self.episodes += n - (self.misses_first if len(self.calls) == 1 else 0)
        elif module == "pi0_ros.training.cli":
            run = cmd[cmd.index("--out") + 1] if "--out" in cmd else cmd[cmd.index("--resume") + 1]
            last = Path(run) / "last"
            last.mkdir(parents=True, exist_ok=True)
            step = self.recipe.steps if self.stop_at is None else self.stop_at
            (last / "training.json").write_text(json.dumps({"step": step}))
        return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture
def pipeline(monkeypatch):
    def make(recipe, **kwargs):
        fake = FakePipeline(recipe, **kwargs)
        monkeypatch.setattr(demo_policy.subprocess, "run", fake.run)
        monkeypatch.setattr(demo_policy, "committed_episodes", lambda dataset: fake.episodes)
        return fake
    return make


def test_first_use_collects_then_trains_and_later_uses_the_cache(tmp_path, pipeline):
    recipe = DemoRecipe(episodes=6, steps=40)
    fake = pipeline(recipe, misses_first=2)
    ckpt = ensure_demo_policy(tmp_path, recipe)
    assert ckpt == tmp_path / f"skill_{recipe.key()}" / "run" / "last"
    modules = [c[2] for c in fake.calls]
    # two seeds missed: a second collection asks for two more, from the seeds after the first batch
    assert modules == ["pi0_ros.tools.collect", "pi0_ros.tools.collect", "pi0_ros.training.cli"]
    first, second, train = fake.calls
    assert first[first.index("--seed") + 1] == "0" and first[first.index("--episodes") + 1] == "6"
    assert second[second.index("--seed") + 1] == "6" and second[second.index("--episodes") + 1] == "2"
    assert train[train.index("--steps") + 1] == "40" and train[train.index("--device") + 1] == "cpu"
    assert train[train.index("--config") + 1] == recipe.config and "--cache-images" in train
    fake.calls.clear()
    assert ensure_demo_policy(tmp_path, recipe) == ckpt and fake.calls == []  # cached: nothing runs


def test_an_interrupted_training_resumes_and_a_new_recipe_gets_its_own_folder(tmp_path, pipeline):
    recipe = DemoRecipe(episodes=3, steps=40)
    fake = pipeline(recipe, stop_at=20)
    with pytest.raises(RuntimeError, match="before step 40"):
        ensure_demo_policy(tmp_path, recipe)
    fake.stop_at = None
    fake.calls.clear()
    ensure_demo_policy(tmp_path, recipe)
    assert [c[2] for c in fake.calls] == ["pi0_ros.training.cli"] and "--resume" in fake.calls[0]
    assert DemoRecipe(episodes=3, steps=41).key() != recipe.key()


def test_too_few_demonstrations_is_an_error(tmp_path, pipeline):
    recipe = DemoRecipe(episodes=4, steps=10)
    fake = pipeline(recipe)
    fake.run = lambda cmd, check: subprocess.CompletedProcess(cmd, 0)  # the expert never succeeds
    demo_policy.subprocess.run = fake.run
    with pytest.raises(RuntimeError, match="only 0 of 4"):
        ensure_demo_policy(tmp_path, recipe)
