"""Halting policies, evaluation, halting curves and summaries (agents/); RL agents are in test_rl.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import agents
from agents import (
    ConfidencePolicy,
    FixedDepthPolicy,
    HaltHeadPolicy,
    OraclePolicy,
    RandomPolicy,
    RLHaltingPolicy,
    curve_from_episodes,
    evaluate,
    evaluate_by_stepping,
    evaluate_policies,
    halting_curve,
    make_policy,
    summarize,
    train_rl_policy,
)
from agents.curves import CURVE_COLUMNS, default_points, paired_difference, rule_policies, versus_band
from agents.curves import _area as area
from agents.evaluation import EPISODE_COLUMNS
from trm_env.core import DEFAULT_STEP_COST
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.task import Task
from trm_env.tasks import load_task

TASKS = ("regime-chain", "sp500")
DIM = 16  # summary layout of 8 classes: probs 0..7, then max prob 8, entropy 9, halt prob 10, step fraction 11, ...
MAX_PROB, HALT_PROB, STEP_FRACTION = 8, 10, 11


def _obs(column: int, values: list[float] | np.ndarray) -> np.ndarray:
    """A batch of summary rows, all zeros but ``column``."""
    obs = np.zeros((len(values), DIM), dtype=np.float32)
    obs[:, column] = values
    return obs


def _bound(policy: agents.HaltingPolicy, task: str = "regime-chain") -> agents.HaltingPolicy:
    policy.bind(simulate(task))
    return policy


def _hand_oracle_steps(terminal: np.ndarray, cost: float) -> np.ndarray:
    """Per sample, the first t in 1..K with the largest terminal(t) - cost * (t - 1), by a plain loop."""
    best = []
    for row in terminal:
        values = [float(row[t - 1]) - cost * (t - 1) for t in range(1, len(row) + 1)]
        best.append(values.index(max(values)) + 1)
    return np.array(best)


# ---- each policy's action rule on crafted observations ---------------------------------------------


@pytest.mark.parametrize(("policy_cls", "column"), [(HaltHeadPolicy, HALT_PROB), (ConfidencePolicy, MAX_PROB)])
def test_threshold_rules_halt_strictly_above(policy_cls: type, column: int) -> None:
    policy = _bound(policy_cls(0.5))
    actions = policy.act(_obs(column, [0.0, 0.3, 0.49, 0.5, 0.5001, 0.9, 1.0]))
    assert actions.dtype == np.int64
    assert actions.tolist() == [0, 0, 0, 0, 1, 1, 1]
    other = HALT_PROB if column == MAX_PROB else MAX_PROB
    assert policy.act(_obs(other, [1.0, 1.0])).tolist() == [0, 0]  # reads only its own column
    assert _bound(policy_cls(1.0)).act(_obs(column, [1.0])).tolist() == [0]
    assert _bound(policy_cls(0.0)).act(_obs(column, [0.0, 1e-6])).tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="bind"):
        policy_cls(0.5).act(_obs(column, [1.0]))


def test_policies_read_their_column_from_the_table(ten_class: tuple[Task, TinyRecursiveModel]) -> None:
    """Defect 3: on a 10-class table the halt probability sits in column 12, not 10."""
    task, model = ten_class
    table = simulate(task, model, split="test")
    head = HaltHeadPolicy(0.5)
    head.bind(table)
    obs = np.zeros((2, 18), dtype=np.float32)
    obs[0, 10] = 1.0  # where an 8-class layout would put the halt probability: here a class probability
    obs[1, 12] = 1.0
    assert head.act(obs).tolist() == [0, 1]


def test_every_family_runs_on_ten_classes(ten_class: tuple[Task, TinyRecursiveModel]) -> None:
    task, model = ten_class
    table = simulate(task, model, split="test")
    rl = train_rl_policy(task=task, checkpoint=model, total_timesteps=256, n_envs=4, split="val", progress=False)
    episodes = evaluate_policies([*rule_policies(max_steps=6), rl], table)
    assert set(episodes["policy"]) == {"halt_head", "confidence", "kl_exit", "entropy_exit", "patience", "fixed_depth",
                                       "random", "oracle", "rl_ppo"}  # fmt: skip
    assert episodes["halt_step"].between(1, 6).all() and episodes["prediction"].between(0, 9).all()
    head = evaluate(HaltHeadPolicy(0.01), table)
    fires = table.halt_prob > 0.01
    np.testing.assert_array_equal(head["halt_step"], np.where(fires[:, :-1].any(1), fires.argmax(1) + 1, 6))


def test_policy_names_and_params() -> None:
    assert (HaltHeadPolicy(0.3).name, HaltHeadPolicy(0.3).param) == ("halt_head", 0.3)
    assert (ConfidencePolicy(0.7).name, ConfidencePolicy(0.7).param) == ("confidence", 0.7)
    assert (FixedDepthPolicy(4).name, FixedDepthPolicy(4).param) == ("fixed_depth", 4)
    assert (RandomPolicy(0.2).name, RandomPolicy(0.2).param) == ("random", 0.2)
    assert OraclePolicy().name == "oracle" and math.isnan(OraclePolicy().param)
    assert set(agents.POLICY_NAMES) == {"halt_head", "confidence", "kl_exit", "entropy_exit", "patience", "fixed_depth",
                                        "random", "oracle", "fitted_q", "fitted_q_ridge", "correct_head",
                                        "continuation_head", "ponder", "act", "rl_ppo", "rl_dqn"}  # fmt: skip


@pytest.mark.parametrize("k", [1, 3, 8, 16, 40])
def test_fixed_depth_halts_from_step_k(k: int) -> None:
    table = simulate("regime-chain")
    big_k = table.max_steps
    policy = FixedDepthPolicy(k)
    policy.bind(table)
    steps = np.arange(1, big_k + 1)
    crafted = policy.act(_obs(STEP_FRACTION, steps.astype(np.float32) / big_k))
    assert crafted.tolist() == (steps >= k).astype(int).tolist()
    real = policy.act(table.observations["summary"][0])  # sample 0's rows, steps 1..K
    assert real.tolist() == crafted.tolist()


def test_fixed_depth_unbound_raises() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        FixedDepthPolicy(3).act(_obs(STEP_FRACTION, [0.5]))


def test_random_policy_draws_one_number_per_sample_and_step() -> None:
    """The draw of (sample, step) is fixed by the seed: any batching or order of rows halts the same samples."""
    table = simulate("regime-chain")
    n, k = table.num_samples, table.max_steps
    index, step = np.tile(np.arange(n), k), np.repeat(np.arange(1, k + 1), n)
    obs = np.zeros((n * k, DIM), dtype=np.float32)
    a, b = RandomPolicy(0.3, seed=5), RandomPolicy(0.3, seed=5)
    for policy in (a, b):
        policy.bind(table)
    first = a.act(obs, {"index": index, "step": step})
    assert np.array_equal(first, b.act(obs, {"index": index, "step": step}))
    other = RandomPolicy(0.3, seed=6)
    other.bind(table)
    assert not np.array_equal(first, other.act(obs, {"index": index, "step": step}))
    assert abs(first.mean() - 0.3) < 0.02
    order = np.random.default_rng(0).permutation(n * k)[:500]  # any subset, in any order: the same draws
    assert np.array_equal(a.act(obs[order], {"index": index[order], "step": step[order]}), first[order])
    expected = np.random.default_rng(5).random((n, k)) < 0.3
    assert np.array_equal(first.reshape(k, n).T, expected.astype(int))
    with pytest.raises(ValueError, match="index"):
        a.act(obs[:3])
    with pytest.raises(RuntimeError, match="bind"):
        RandomPolicy(0.5).act(obs[:3], {"index": index[:3], "step": step[:3]})


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cost", [DEFAULT_STEP_COST, 0.0, 0.05])
def test_oracle_halts_at_best_step(task: str, cost: float) -> None:
    terminal = simulate(task).halt_reward["profit_weighted_ce"]
    best = _hand_oracle_steps(terminal, cost)
    frame = evaluate(OraclePolicy(), task=task, step_cost=cost)
    assert np.array_equal(frame["halt_step"].to_numpy(), best)
    rows = np.arange(len(best))
    expected = terminal[rows, best - 1] - cost * (best - 1)
    np.testing.assert_allclose(frame["episode_return"].to_numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("reward", ["pnl", "correct"])
def test_oracle_follows_the_reward_mode(reward: str) -> None:
    table = simulate("regime-chain")
    frame = evaluate(OraclePolicy(), table, reward=reward)
    best = _hand_oracle_steps(table.halt_reward[reward], DEFAULT_STEP_COST)
    assert np.array_equal(frame["halt_step"].to_numpy(), best)
    assert not np.array_equal(best, _hand_oracle_steps(table.halt_reward["profit_weighted_ce"], DEFAULT_STEP_COST))


def test_oracle_reads_the_table_and_the_info() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        OraclePolicy().act(_obs(STEP_FRACTION, [0.5]), {"index": np.array([0]), "step": np.array([1])})
    table = simulate("regime-chain")
    best = _hand_oracle_steps(table.halt_reward["profit_weighted_ce"][:8], DEFAULT_STEP_COST)
    policy = OraclePolicy()
    policy.bind(table)
    with pytest.raises(ValueError, match="info"):
        policy.act(_obs(STEP_FRACTION, [0.5]))
    for t in range(1, table.max_steps + 1):
        info = {"index": np.arange(8), "step": np.full(8, t)}
        assert policy.act(table.observations["summary"][:8, t - 1], info).tolist() == (best <= t).astype(int).tolist()


def test_make_policy() -> None:
    assert isinstance(make_policy("fixed_depth", 4.0), FixedDepthPolicy)
    assert make_policy("fixed_depth", 4.0).param == 4
    assert make_policy("halt_head", 0.3).param == 0.3
    assert isinstance(make_policy("oracle", 0.7), OraclePolicy)
    assert make_policy("confidence").param == ConfidencePolicy().param
    for name in ("nope", "rl_ppo", "rl_dqn", "HaltHead", ""):
        with pytest.raises(ValueError, match="unknown policy"):
            make_policy(name, 0.5)


@pytest.mark.parametrize(
    "build",
    [
        lambda: HaltHeadPolicy(1.5),
        lambda: HaltHeadPolicy(-0.1),
        lambda: HaltHeadPolicy(float("nan")),
        lambda: ConfidencePolicy(2.0),
        lambda: ConfidencePolicy(-1e-9),
        lambda: RandomPolicy(1.01),
        lambda: RandomPolicy(-0.5),
        lambda: FixedDepthPolicy(0),
        lambda: FixedDepthPolicy(-2),
        lambda: FixedDepthPolicy(2.5),
        lambda: FixedDepthPolicy(True),
        lambda: make_policy("halt_head", 3.0),
        lambda: make_policy("fixed_depth", 4.7),  # defect 4: no silent truncation to k=4
        lambda: make_policy("fixed_depth", float("nan")),
    ],
)
def test_bad_knobs_raise(build) -> None:
    with pytest.raises(ValueError):
        build()


# ---- evaluate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_visits_every_sample_once(task: str) -> None:
    n = len(load_task(task).split("test"))
    policy = HaltHeadPolicy(0.5)
    frame = evaluate(policy, task=task)
    extra = ["difficulty"] if task == "regime-chain" else []
    assert list(frame.columns) == [*EPISODE_COLUMNS, *extra]
    assert len(frame) == n
    assert np.array_equal(frame["index"].to_numpy(), np.arange(n))
    pd.testing.assert_frame_equal(frame, evaluate(policy, task=task))
    random = RandomPolicy(0.3, seed=1)
    pd.testing.assert_frame_equal(evaluate(random, task=task), evaluate(random, task=task))


@pytest.mark.parametrize("task", TASKS)
def test_halt_head_matches_first_crossing(task: str) -> None:
    table = simulate(task)
    k = table.max_steps
    halt = table.observations["summary"][..., HALT_PROB] > 0.5
    expected = np.where(halt[:, :-1].any(axis=1), halt.argmax(axis=1) + 1, k)
    assert np.array_equal(evaluate(HaltHeadPolicy(0.5), task=task)["halt_step"].to_numpy(), expected)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("k", [1, 5, 16])
def test_fixed_depth_episodes_hand_checked(task: str, k: int) -> None:
    table = simulate(task)
    frame = evaluate(FixedDepthPolicy(k), task=task)
    assert (frame["halt_step"] == k).all()
    expected = -DEFAULT_STEP_COST * (k - 1) + table.halt_reward["profit_weighted_ce"][:, k - 1]
    np.testing.assert_allclose(frame["episode_return"].to_numpy(), expected, rtol=0, atol=1e-9)
    for column in ("prediction", "correct", "pnl", "profit_weighted_ce"):
        np.testing.assert_array_equal(frame[column].to_numpy(), getattr(table, column)[:, k - 1])
    np.testing.assert_array_equal(frame["label"].to_numpy(), table.label)
    assert frame["correct"].equals(frame["prediction"] == frame["label"])


def test_evaluate_takes_a_table_a_folder_or_env_kwargs(tmp_path: Path) -> None:
    table = simulate("regime-chain", split="val")
    frame = evaluate(HaltHeadPolicy(0.5), table)
    table.save(tmp_path / "val")
    pd.testing.assert_frame_equal(evaluate(HaltHeadPolicy(0.5), tmp_path / "val"), frame)
    checkpoint = shipped_checkpoint("regime-chain")
    pd.testing.assert_frame_equal(evaluate(HaltHeadPolicy(0.5), "regime-chain", "val", checkpoint=checkpoint), frame)
    with pytest.raises(ValueError, match="split='test' disagrees"):
        evaluate(HaltHeadPolicy(0.5), table, split="test")
    with pytest.raises(TypeError, match="unknown keyword"):
        evaluate(HaltHeadPolicy(0.5), table, seed=3)
    with pytest.raises(ValueError, match="unknown reward"):
        evaluate(HaltHeadPolicy(0.5), table, reward="sharpe")


# ---- the oracle bounds every policy; table and env agree ---------------------------------------------


@pytest.fixture(scope="module")
def rl_policies() -> dict[str, RLHaltingPolicy]:
    """A tiny PPO agent per task, trained on the test split itself (and even an agent tuned on the very
    samples it is scored on cannot beat the oracle)."""
    return {task: train_rl_policy(task=task, total_timesteps=2048, n_envs=8, split="test", progress=False)
            for task in TASKS}  # fmt: skip


@pytest.fixture(scope="module")
def all_episodes(rl_policies: dict[str, RLHaltingPolicy]) -> dict[str, pd.DataFrame]:
    """Every rule family's default sweep plus the tiny RL policy, per task."""
    return {task: evaluate_policies([*rule_policies(), rl_policies[task]], task) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_table_and_env_give_identical_episodes(task: str, rl_policies: dict[str, RLHaltingPolicy],
                                               all_episodes: dict[str, pd.DataFrame]) -> None:  # fmt: skip
    """Every family (rules, random with two seeds, oracle, RL): evaluation on the table equals stepping the env."""
    policies = [*rule_policies(random_seeds=(0, 1)), rl_policies[task]]
    table = evaluate_policies(policies, task)
    stepped = pd.concat([evaluate_by_stepping(p, task) for p in policies], ignore_index=True)
    exact = [c for c in stepped.columns if c != "episode_return"]
    pd.testing.assert_frame_equal(table[exact].reset_index(drop=True), stepped[exact], check_dtype=True)
    np.testing.assert_allclose(table["episode_return"], stepped["episode_return"], rtol=0, atol=1e-12)
    assert table["halt_step"].nunique() > 5  # the check covers many halting steps, not one


@pytest.mark.parametrize("task", TASKS)
def test_oracle_never_worse_on_mean_return(task: str, all_episodes: dict[str, pd.DataFrame]) -> None:
    episodes = all_episodes[task]
    assert {"halt_head", "confidence", "fixed_depth", "random", "oracle", "rl_ppo"} <= set(episodes["policy"])
    means = episodes.groupby(["policy", "param", "seed"], dropna=False, observed=True)["episode_return"].mean()
    oracle = means.loc["oracle"].max()
    assert (means.drop(index="oracle") <= oracle + 1e-12).all(), means.sort_values().tail()
    assert (means.drop(index="oracle") < oracle).any()


@pytest.mark.parametrize("task", TASKS)
def test_oracle_beats_every_fixed_depth_per_sample(task: str, all_episodes: dict[str, pd.DataFrame]) -> None:
    episodes = all_episodes[task]
    oracle = episodes.loc[episodes["policy"] == "oracle", "episode_return"].to_numpy()
    fixed = episodes[episodes["policy"] == "fixed_depth"]
    assert fixed["param"].nunique() == 16
    for _, group in fixed.groupby("param"):
        assert (oracle >= group["episode_return"].to_numpy() - 1e-12).all()


# ---- halting curves and summaries --------------------------------------------------------------------


@pytest.fixture(scope="module")
def curves(rl_policies: dict[str, RLHaltingPolicy]) -> pd.DataFrame:
    task = "regime-chain"
    frames = [
        halting_curve("halt_head", task, params=(0.1, 0.5, 0.9)),
        halting_curve("confidence", task, params=(0.5, 0.95)),
        halting_curve("fixed_depth", task, params=(1, 4, 8, 16)),
        halting_curve("random", task, params=(0.2,), seeds=(0, 1)),
        halting_curve("oracle", task),
        halting_curve("rl_ppo", task, policies=[rl_policies[task]]),
    ]
    return pd.concat(frames, ignore_index=True)


def test_curve_columns_and_cis(curves: pd.DataFrame) -> None:
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert set(curves["policy"]) == {"halt_head", "confidence", "fixed_depth", "random", "oracle", "rl_ppo"}
    assert (curves["task"] == "regime-chain").all()
    for metric in ("accuracy", "profit_weighted_ce"):
        lo, hi = curves[f"{metric}_lo"], curves[f"{metric}_hi"]
        assert (lo <= curves[metric] + 1e-12).all() and (curves[metric] <= hi + 1e-12).all()
        assert (lo < hi).any()
    n = len(load_task("regime-chain").split("test"))
    random = curves[curves["policy"] == "random"].iloc[0]
    assert random["seed"] == "0,1" and random["n"] == 2 * n  # seeds pooled into one point
    assert (curves.loc[curves["policy"] != "random", "n"] == n).all()
    fixed = curves[curves["policy"] == "fixed_depth"]
    assert fixed["mean_steps"].tolist() == [1.0, 4.0, 8.0, 16.0]
    assert curves["mean_steps"].between(1, 16).all() and curves["accuracy"].between(0, 1).all()


def test_identical_seeds_do_not_shrink_the_ci() -> None:
    """Defect 6: the bootstrap resamples samples (seeds averaged within one), so copies of a seed add nothing."""
    one = evaluate_policies([HaltHeadPolicy(0.5)], "regime-chain")
    copies = pd.concat([one.assign(seed=s) for s in range(3)], ignore_index=True)
    a, b = curve_from_episodes(one).iloc[0], curve_from_episodes(copies).iloc[0]
    for column in ("accuracy_lo", "accuracy_hi", "profit_weighted_ce_lo", "profit_weighted_ce_hi"):
        assert a[column] == pytest.approx(b[column], abs=1e-12), column


def test_curve_point_matches_evaluate() -> None:
    row = halting_curve("halt_head", "sp500", params=(0.5,)).iloc[0]
    frame = evaluate(HaltHeadPolicy(0.5), task="sp500")
    assert row["mean_steps"] == pytest.approx(frame["halt_step"].mean())
    assert row["accuracy"] == pytest.approx(frame["correct"].mean())
    assert row["mean_pnl"] == pytest.approx(frame["pnl"].mean())
    assert row["mean_return"] == pytest.approx(frame["episode_return"].mean())


def test_curve_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        halting_curve("halt_head", "regime-chain", params=())
    with pytest.raises(ValueError, match="unknown family"):
        halting_curve("nope", "regime-chain")
    with pytest.raises(ValueError, match="unknown family"):
        halting_curve("rl_ppo", "regime-chain")  # RL needs trained policies


def test_summarize_oracle_gain_share(curves: pd.DataFrame) -> None:
    summary = summarize(curves).set_index("policy")
    assert summary.loc["oracle", "oracle_gain_share"] == pytest.approx(1.0)
    assert summary.loc["fixed_depth", "oracle_gain_share"] == pytest.approx(0.0)
    assert summary["oracle_gain_share"].drop(["oracle", "fixed_depth"]).le(1.0 + 1e-12).all()
    assert summary["auc_accuracy"].between(0, 1).all()
    assert summary.loc["rl_ppo", "vs_halt_head"].split(":")[1] in {"above", "below", "within", "n/a"}
    assert summary.loc["halt_head", "vs_halt_head"] == ""


def _episodes(policy: str, param: float, values: list[float], seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"task": "t", "policy": policy, "param": param, "seed": seed,
                         "index": range(len(values)), "episode_return": values})  # fmt: skip


def test_paired_difference_value_and_sign() -> None:
    a = _episodes("rl_ppo", 0.01, [1.0, 2.0, 3.0, 4.0])
    b = _episodes("halt_head", 0.5, [0.5, 1.5, 3.5, 2.0])
    episodes = pd.concat([a, b, _episodes("rl_ppo", 0.01, [3.0, 2.0, 3.0, 4.0], seed=1)], ignore_index=True)
    diff, lo, hi = paired_difference(episodes, ("rl_ppo", 0.01), ("halt_head", 0.5))
    assert diff == pytest.approx(np.mean([2.0 - 0.5, 2.0 - 1.5, 3.0 - 3.5, 4.0 - 2.0]))  # seeds averaged first
    assert lo <= diff <= hi and lo < hi
    back = paired_difference(episodes, ("halt_head", 0.5), ("rl_ppo", 0.01))
    assert back[0] == pytest.approx(-diff) and back[1] == pytest.approx(-hi) and back[2] == pytest.approx(-lo)
    constant = pd.concat([_episodes("x", 1.0, [2.0] * 50), _episodes("y", 1.0, [1.0] * 50)], ignore_index=True)
    assert paired_difference(constant, ("x", 1.0), ("y", 1.0)) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no common samples"):
        paired_difference(constant, ("x", 1.0), ("z", 1.0))


def test_versus_band_verdicts() -> None:
    """Defect 5: the band is interpolated, never extrapolated; outside its range of steps the verdict is n/a."""
    band = pd.DataFrame({"mean_steps": [2.0, 4.0, 6.0], "accuracy_lo": [0.5, 0.6, 0.7], "accuracy_hi": [0.6, 0.7, 0.8]})
    points = pd.DataFrame({"param": [0.001, 0.01, 0.03, 0.1, 0.3],
                           "mean_steps": [3.0, 3.0, 5.0, 1.0, 6.5], "accuracy": [0.9, 0.6, 0.6, 0.99, 0.75]})
    assert versus_band(points, band) == "0.001:above 0.01:within 0.03:below 0.1:n/a 0.3:n/a"


def test_default_points() -> None:
    rows = [("halt_head", 0.5, 0), ("halt_head", 0.9, 0), ("fixed_depth", 16, 0), ("fixed_depth", 4, 0),
            ("random", 0.2, 1), ("random", 0.2, 0), ("oracle", np.nan, 0), ("rl_ppo", 0.001, 0),
            ("rl_ppo", 0.03, 0), ("rl_ppo", 0.03, 1), ("confidence", 0.9, 0), ("confidence", 0.5, 0)]  # fmt: skip
    episodes = pd.DataFrame([{"task": "t", "policy": p, "param": v, "seed": s, "index": 0} for p, v, s in rows])
    picked = default_points(episodes, eval_cost=0.02, max_steps=16)
    got = sorted((p, v if not np.isnan(v) else -1.0, s) for p, v, s in picked[["policy", "param", "seed"]].to_numpy())
    assert got == sorted([("halt_head", 0.5, 0), ("fixed_depth", 16, 0), ("random", 0.2, 0), ("oracle", -1.0, 0),
                          ("rl_ppo", 0.03, 0), ("confidence", 0.9, 0)])  # fmt: skip


def test_area_under_the_accuracy_curve() -> None:
    anchors = pd.DataFrame({"mean_steps": [1.0, 5.0], "accuracy": [0.2, 0.6]})
    assert area(anchors.iloc[:0], anchors) == pytest.approx(0.4)  # the straight line from (1, .2) to (5, .6)
    peak = pd.DataFrame({"mean_steps": [3.0], "accuracy": [1.0]})
    assert area(peak, anchors) == pytest.approx(((0.2 + 1.0) / 2 * 2 + (1.0 + 0.6) / 2 * 2) / 4, abs=1e-3)
    assert math.isnan(area(peak, anchors.iloc[:1]))


class _Gives(agents.HaltingPolicy):
    """A policy whose every action is ``make(n)`` for a call on n rows."""

    name = "gives"

    def __init__(self, make: Any) -> None:
        self.make = make

    def act(self, observations: np.ndarray, info: Any = None) -> Any:
        return self.make(len(observations))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda n: np.full(n, np.nan), r"action nan at step 1 \(row 0\)"),
        (lambda n: np.full(n, 0.9), r"action 0\.9 at step 1 \(row 0\)"),
        (lambda n: np.full(n, 1.0), r"action 1\.0 at step 1 \(row 0\)"),
        (lambda n: np.r_[2, np.zeros(n - 1, int)], r"action 2 at step 1 \(row 0\)"),
        (lambda n: np.full(n, -1), r"action -1 at step 1 \(row 0\)"),
        (lambda n: np.full(n, "1"), r"action '1' at step 1 \(row 0\)"),
        (lambda n: np.ones(n, dtype=bool), r"action True at step 1 \(row 0\)"),
        (lambda n: np.zeros((n, 1), dtype=int), r"actions of shape \(\d+, 1\); expected \(\d+,\)"),
    ],
)
def test_table_env_and_live_refuse_the_same_bad_actions(make: Any, match: str) -> None:
    """One action check: evaluate (the table), evaluate_by_stepping (the env) and evaluate_live refuse each bad action
    with the policy's name, the step and the value (never "continue")."""
    for path in (agents.evaluate, agents.evaluate_by_stepping, agents.evaluate_live):
        with pytest.raises(ValueError, match=r"gives.*" + match if "shape" not in match else match):
            path(_Gives(make), "regime-chain", "val")
