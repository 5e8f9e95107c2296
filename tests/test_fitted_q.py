"""Fitted-Q halting against a brute-force optimal-stopping solution on tiny hand-made tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import hand_rollouts
from sklearn.linear_model import LinearRegression

from agents import evaluate
from agents.fitted_q import FittedQPolicy
from trm_env.rollouts import simulate

S, K, COST = 3, 4, 0.1


def _enumerated_table(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every path of S states over K steps once (steps independent, equally likely); reward g(t, s_t)."""
    paths = np.array(list(itertools.product(range(S), repeat=K)))
    g = np.random.default_rng(seed).normal(size=(K, S)) + np.linspace(0, 1.0, K)[:, None]
    rewards = g[np.arange(K)[None, :], paths]
    return paths, rewards, np.eye(S)[paths]


def _brute_force(paths: np.ndarray, rewards: np.ndarray) -> float:
    """The best mean return over every rule halt(t, s_t) in {0, 1} for t < K (2^((K-1) S) rules)."""
    best = -np.inf
    for bits in itertools.product((0, 1), repeat=(K - 1) * S):
        rule = np.array(bits).reshape(K - 1, S)
        halts = np.c_[rule[np.arange(K - 1)[None, :], paths[:, :-1]], np.ones(len(paths), dtype=int)]
        step = halts.argmax(axis=1)
        best = max(best, float((rewards[np.arange(len(paths)), step] - COST * step).mean()))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitted_q_equals_brute_force_optimal_stopping(seed: int) -> None:
    paths, rewards, features = _enumerated_table(seed)
    table = hand_rollouts(rewards, features)
    policy = FittedQPolicy(regressor=lambda: LinearRegression(fit_intercept=False), observation="latent")
    policy.fit(table, step_cost=COST)
    frame = evaluate(policy, table, step_cost=COST, observation="latent")
    assert frame["episode_return"].mean() == pytest.approx(_brute_force(paths, rewards), abs=1e-9)
    assert frame["halt_step"].nunique() > 1  # the optimum is not a fixed depth here


def test_margin_trades_steps_and_needs_a_fit() -> None:
    _, rewards, features = _enumerated_table(0)
    table = hand_rollouts(rewards, features)
    with pytest.raises(RuntimeError, match="fit"):
        evaluate(FittedQPolicy(), table)
    fitted = FittedQPolicy(regressor=LinearRegression, observation="latent").fit(table, step_cost=COST)
    steps = [evaluate(fitted.with_margin(m), table, step_cost=COST, observation="latent")["halt_step"].mean()
             for m in (-10.0, 0.0, 10.0)]  # fmt: skip
    assert steps[0] == K and steps[2] == 1 and 1 < steps[1] < K
    with pytest.raises(ValueError, match="margin"):
        FittedQPolicy(float("nan"))
    with pytest.raises(ValueError, match="layout"):
        evaluate(fitted, simulate("regime-chain"))


def test_fitted_on_halt_beats_fixed_depth_on_val() -> None:
    """On regime-chain the reference fitted on the halt split generalises to val."""
    halt, val = simulate("regime-chain", split="halt"), simulate("regime-chain", split="val")
    policy = FittedQPolicy().fit(halt)
    fitted = evaluate(policy, val)["episode_return"].mean()
    fixed = max(val.returns("profit_weighted_ce", 0.01).mean(axis=0))
    assert fitted > fixed + 0.005
