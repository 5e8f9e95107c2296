"""How the reward mode reaches episode returns, on tables whose three modes differ: every path (the table
evaluation, the envs, the live engine and envs, the study's arrays) pays halt_reward[mode] at the halting step t
minus step_cost * (t - 1)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from conftest import hand_rollouts

from agents import evaluate, evaluate_by_stepping, evaluate_live, evaluate_policies
from agents.policies import FixedDepthPolicy, HaltingPolicy, Info
from agents.stages import halting_frame
from agents.study import Results
from trm_env.env import HaltingEnv, HaltingVectorEnv
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import REWARDS, Rollouts, simulate
from trm_env.sb3 import make_sb3_vec_env
from trm_env.task import Task

N, K = 6, 4
TARGETS = np.array([1, 2, 5, 3, 4, 2])  # the step each sample asks to halt at (5: never; K = 4 forces it)
STEPS = np.minimum(TARGETS, K)


class _Scripted(HaltingPolicy):
    """Halts sample i at ``TARGETS[i]`` (reads the sample's position from the info)."""

    name = "scripted"

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return (np.asarray(info["step"]) >= TARGETS[np.asarray(info["index"])]).astype(np.int64)


def _table() -> Rollouts:
    """Three reward modes that disagree everywhere: pwCE-reward r, pnl 10 r + 1, correct (r > 0)."""
    rewards = np.random.default_rng(0).normal(0.0, 0.2, size=(N, K))
    modes = {"profit_weighted_ce": rewards, "pnl": 10 * rewards + 1.0, "correct": (rewards > 0).astype(float)}
    return replace(hand_rollouts(rewards), halt_reward=modes)


def _expected(table: Rollouts, mode: str, cost: float, steps: np.ndarray) -> np.ndarray:
    return table.halt_reward[mode][np.arange(len(steps)), steps - 1] - cost * (steps - 1)


def _single_returns(env: HaltingEnv, targets: np.ndarray) -> list[float]:
    """Sample i's episode, asking to halt at ``targets[i]``: its summed rewards."""
    totals = []
    for i, target in enumerate(targets):
        env.reset(options={"index": i})
        total, step, ended = 0.0, 0, False
        while not ended:
            step += 1
            _, reward, ended, _, _ = env.step(int(step >= target))
            total += reward
        totals.append(total)
    return totals


def _vector_returns(env: Any, targets: np.ndarray, sb3: bool = False) -> np.ndarray:
    """Each sub-env i runs sample i once, asking to halt at ``targets[i]``: the summed rewards of that episode."""
    n = len(targets)
    if sb3:
        env.set_options([{"index": i} for i in range(n)])
        env.reset()
    else:
        env.reset(options={"index": np.arange(n)})
    total, done, step = np.zeros(n), np.zeros(n, dtype=bool), 0
    while not done.all():
        step += 1
        assert step <= targets.max(), "an episode ran past its halt"
        actions = (step >= targets).astype(np.int64)
        if sb3:
            _, rewards, ended, _ = env.step(actions)
        else:
            _, rewards, ended, _, _ = env.step(actions)
        total += np.where(done, 0.0, rewards)
        done |= ended
    return total


@pytest.mark.parametrize("mode", REWARDS)
@pytest.mark.parametrize("cost", [0.0, 0.03])
def test_table_paths_pay_the_chosen_mode(mode: str, cost: float) -> None:
    table = _table()
    expected = _expected(table, mode, cost, STEPS)
    frame = evaluate(_Scripted(), table, step_cost=cost, reward=mode)
    assert frame["halt_step"].tolist() == STEPS.tolist()
    np.testing.assert_allclose(frame["episode_return"], expected, rtol=0, atol=1e-12)
    both = evaluate_policies([_Scripted(), FixedDepthPolicy(3)], table, step_cost=cost, reward=mode)
    np.testing.assert_allclose(both["episode_return"][:N], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(both["episode_return"][N:], _expected(table, mode, cost, np.full(N, 3)), atol=1e-12)
    stepped = evaluate_by_stepping(_Scripted(), table, split="halt", step_cost=cost, reward=mode)
    np.testing.assert_allclose(stepped["episode_return"], expected, rtol=0, atol=1e-12)
    single = _single_returns(HaltingEnv(rollouts=table, step_cost=cost, reward=mode), TARGETS)
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    vector = HaltingVectorEnv(N, rollouts=table, step_cost=cost, reward=mode)
    np.testing.assert_allclose(_vector_returns(vector, TARGETS), expected, rtol=0, atol=1e-12)
    sb3 = make_sb3_vec_env(N, rollouts=table, step_cost=cost, reward=mode, monitor=False)
    np.testing.assert_allclose(_vector_returns(sb3, TARGETS, sb3=True), expected, rtol=1e-6, atol=1e-6)


def test_returns_and_the_oracle_follow_the_mode() -> None:
    """``Rollouts.returns``: halting at step t costs t - 1 steps; the oracle's steps maximise the chosen mode."""
    table = _table()
    for mode in REWARDS:
        np.testing.assert_allclose(table.returns(mode, 0.1), table.halt_reward[mode] - 0.1 * np.arange(K))
        best = table.best_steps(mode, 0.1)
        assert (table.returns(mode, 0.1)[np.arange(N), best - 1] == table.returns(mode, 0.1).max(axis=1)).all()


def test_the_study_scores_the_profit_weighted_return() -> None:
    """The study's arrays and episodes read the profit-weighted-CE reward, whatever the other modes hold."""
    table = _table()
    results = Results("hand", [0], 0.02)
    results.tables[(0, "test")] = table
    results.add(0, "test", {"policy": "scripted", "param": 0.0, "seed": 0}, STEPS)
    arrays = results.arrays(results.point("test", "scripted", 0.0))
    np.testing.assert_allclose(arrays["episode_return"][0, 0], _expected(table, "profit_weighted_ce", 0.02, STEPS))
    np.testing.assert_array_equal(arrays["halt_step"][0, 0], STEPS)
    points = [{"policy": "scripted", "param": 0.0, "seed": 0}]
    frame = halting_frame(table, points, STEPS[None], 0.02)
    np.testing.assert_allclose(frame["episode_return"], _expected(table, "profit_weighted_ce", 0.02, STEPS))


@pytest.mark.parametrize("mode", REWARDS)
def test_live_paths_pay_the_chosen_mode(mode: str, ten_class: tuple[Task, TinyRecursiveModel]) -> None:
    """The live engine and the live envs pay the table's reward of the chosen mode (ten-class, K = 6)."""
    task, model = ten_class
    table = simulate(task, model, split="test")
    n, cost = table.num_samples, 0.02
    targets = np.arange(n) % (table.max_steps + 1) + 1  # K + 1: never asks, the halt at K is forced
    expected = _expected(table, mode, cost, np.minimum(targets, table.max_steps))
    for depth in (2, 6):
        frame = evaluate_live(FixedDepthPolicy(depth), task, "test", cost, checkpoint=model, reward=mode)
        np.testing.assert_allclose(frame["episode_return"], _expected(table, mode, cost, np.full(n, depth)),
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
    kwargs = dict(task=task, checkpoint=model, split="test", step_cost=cost, reward=mode, live=True)
    vector = HaltingVectorEnv(n, **kwargs)
    np.testing.assert_allclose(_vector_returns(vector, targets), expected, rtol=1e-6, atol=1e-6)
    sb3 = make_sb3_vec_env(n, monitor=False, **kwargs)
    np.testing.assert_allclose(_vector_returns(sb3, targets, sb3=True), expected, rtol=1e-5, atol=1e-5)
    single = _single_returns(HaltingEnv(**kwargs), targets[:8])
    np.testing.assert_allclose(single, expected[:8], rtol=1e-6, atol=1e-6)
