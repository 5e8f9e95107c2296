"""Which split each learner is fitted on: halt for every learner (fitted-Q, the heads, RL), val for every choice,
in the evaluation stage, the RL stage and the live stage's refits. Hand-made halt and val tables that teach
opposite rules show which one a learner saw."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import hand_rollouts

import agents.learners as learners_module
import agents.measure as measure_module
import agents.sources as sources_module
import agents.stages as stages_module
from agents import evaluate_policies, train_rl_policy
from agents.learners import LEARNERS, fit_learners
from agents.measure import chosen_policy, live_stage
from agents.policies import FixedDepthPolicy
from agents.stages import evaluate_stage, train_rl_stage
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import Rollouts, shipped_checkpoint, simulate
from trm_env.task import Task

K, COST = 4, 0.01
SETTINGS = {"step_cost": COST, "random_seeds": [0], "learner_seeds": [0], "ponder_variants": [[0.2, 0.01]],
            "act_taus": [0.001]}  # fmt: skip
KNOBS = {"fitted_q": 0.0, "fitted_q_ridge": 0.0, "correct_head": 0.5, "continuation_head": 0.5, "ponder": 0.5,
         "act": 0.001}  # fmt: skip


def _taught(split: str, best: int) -> Rollouts:
    """A table named ``split`` where halting at step ``best`` earns 1 and is the only correct step, else 0."""
    rewards = np.zeros((120, K))
    rewards[:, best - 1] = 1.0
    table = replace(hand_rollouts(rewards), split=split)
    table.correct[:, best - 1] = True
    return table


@pytest.fixture(scope="module")
def tables() -> tuple[Rollouts, Rollouts]:
    """halt teaches "halt at once", val teaches "think to K"."""
    return _taught("halt", 1), _taught("val", K)


def _mean_steps(points: list, table: Rollouts) -> float:
    return float(evaluate_policies(points, table, step_cost=COST)["halt_step"].mean())


@pytest.mark.parametrize("family", LEARNERS)
def test_learners_fit_on_halt_and_choose_on_val(family: str, tables: tuple[Rollouts, Rollouts],
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    halt, val = tables
    seen: list[str] = []
    real = learners_module.evaluate_policies

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((args[1] if len(args) > 1 else kwargs["task"]).split)
        return real(*args, **kwargs)

    monkeypatch.setattr(learners_module, "evaluate_policies", spy)
    points = fit_learners(family, halt, val, COST, [0], [(0.2, 0.01)], [0.001])
    assert set(seen) <= {"val"}, seen  # every choice inside (variants, hyperparameters) is made on val
    monkeypatch.undo()
    swapped = fit_learners(family, replace(val, split="halt"), replace(halt, split="val"), COST, [0], [(0.2, 0.01)],
                           [0.001])  # fmt: skip
    assert _mean_steps(points, val) < _mean_steps(swapped, val) - 1  # what halt taught: halting early


@pytest.mark.parametrize("family", LEARNERS)
def test_the_live_stage_rebuilds_a_learner_fitted_on_halt(family: str, tables: tuple[Rollouts, Rollouts]) -> None:
    halt, val = tables
    policy = chosen_policy(family, KNOBS[family], halt, val, SETTINGS, [])
    assert policy.name == family and policy.param == pytest.approx(KNOBS[family])
    flipped = chosen_policy(family, KNOBS[family], replace(val, split="halt"), replace(halt, split="val"), SETTINGS, [])
    assert _mean_steps([policy], val) < _mean_steps([flipped], val) - 1


class _Stop(Exception):
    pass


def test_stages_hand_learners_the_halt_table(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The evaluation stage and the live stage give the learners the checkpoint's halt table to fit on and its val
    table to choose on (the ten-class task stands in for the named one)."""
    task, model = ten_class
    for module in (sources_module, measure_module):
        monkeypatch.setattr(module, "load_task", lambda name, **kwargs: task)
    expected = {split: simulate(task, model, split=split).key for split in ("halt", "val")}
    seen: list[tuple[str, str]] = []

    def fake_fit(family: str, halt: Rollouts, val: Rollouts, *args: Any) -> list:
        seen.append((halt.key, val.key))
        return [FixedDepthPolicy(1)]

    monkeypatch.setattr(stages_module, "fit_learners", fake_fit)
    evaluate_stage("ten-class", {}, model, "fitted_q", SETTINGS, tmp_path / "fitted_q.npz")
    assert seen == [(expected["halt"], expected["val"])]

    def fake_choice(family: str, param: float, halt: Rollouts, val: Rollouts, *args: Any) -> None:
        seen.append((halt.key, val.key))
        raise _Stop

    monkeypatch.setattr(measure_module, "chosen_policy", fake_choice)
    settings = {**SETTINGS, "timing_samples": 10, "timing_rounds": 1, "latency_samples": 2}
    with pytest.raises(_Stop):
        live_stage("ten-class", {}, {0: model}, {"fitted_q": 0.0}, settings, {0: []}, tmp_path / "live.json")
    assert seen[1] == (expected["halt"], expected["val"])


def test_rl_trains_on_halt(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``train_rl_policy`` trains on the halt split unless told otherwise; the RL stage hands it the halt table."""
    task, model = ten_class
    policy = train_rl_policy(task=task, checkpoint=model, total_timesteps=32, n_envs=2, progress=False)
    assert policy.model.get_env().get_attr("table_spec")[0].split == "halt"
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(stages_module, "train_rl_policy", lambda **kwargs: calls.append(kwargs))
    settings = {"algo": "ppo", "total_timesteps": 32, "n_envs": 2, "hyperparameters": {}}
    train_rl_stage("regime-chain", {}, shipped_checkpoint("regime-chain", 0), COST, 0, settings, tmp_path / "a.pt")
    assert calls[0]["split"] == "halt" and calls[0]["rollouts"].split == "halt"
