"""Fitted-Q halting against a brute-force optimal-stopping solution on tiny hand-made tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import threadpoolctl
from conftest import hand_rollouts
from sklearn.linear_model import LinearRegression

from agents import evaluate, evaluate_policies
from agents.fitted_q import MARGINS, FittedQPolicy
from agents.learners import GRIDS, fit_learners
from agents.study import Results
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


def _band_table(good: tuple[float, ...], n: int = 1500, seed: int = 0) -> object:
    """K = 3. The halt-head column u at step 1 takes nine values; continuing from step 1 earns +1 where u is in
    ``good`` and -1 elsewhere (halting there earns 0); step 3 adds nothing, so step 2 halts."""
    u = np.random.default_rng(seed).choice(np.linspace(0.1, 0.9, 9).round(1), size=n)
    later = np.where(np.isin(u, good), 1.0, -1.0)
    table = hand_rollouts(np.stack([np.zeros(n), later, later], axis=1))
    table.observations["summary"][:, :, table.layout["halt_prob"]] = u[:, None, None]
    return table


BAND = (0.4, 0.5, 0.6)  # a band: no linear rule in u finds it; trees do


def test_the_regressor_is_chosen_on_val() -> None:
    """Trees win where the rule is a band; every regressor finds a threshold rule and the tie keeps ridge; and
    the choice is made on val: where val reverses the band, the trees that win on halt lose."""
    points = fit_learners("fitted_q", _band_table(BAND), _band_table(BAND, seed=1), COST, [0])
    assert [p.param for p in points] == list(MARGINS) and {p.name for p in points} == {"fitted_q"}
    assert {p.details["regressor"] for p in points} == {"hgb_sorted"}
    returns = evaluate_policies(points, _band_table(BAND, seed=2), step_cost=COST).groupby("param")["episode_return"]
    assert returns.mean().max() == pytest.approx(3 / 9 * (1 - COST), abs=0.03)  # the band's share, minus the cost
    threshold = (0.6, 0.7, 0.8, 0.9)
    chosen = fit_learners("fitted_q", _band_table(threshold), _band_table(threshold, seed=1), COST, [0])
    assert chosen[0].details == {"regressor": "ridge"}
    reversed_val = _band_table((0.1, 0.2, 0.3, 0.7, 0.8, 0.9), seed=1)
    assert fit_learners("fitted_q", _band_table(BAND), reversed_val, COST, [0])[0].details["regressor"] != "hgb_sorted"


def test_the_ridge_reference_is_its_own_family() -> None:
    points = fit_learners("fitted_q_ridge", _band_table(BAND), _band_table(BAND, seed=1), COST, [0])
    assert {(p.name, p.details["regressor"]) for p in points} == {("fitted_q_ridge", "ridge")}
    assert [p.param for p in points] == list(GRIDS["fitted_q_ridge"])
    results = Results("hand", [0], COST)
    results.add(0, "val", {"policy": "fitted_q", "param": 0.0, "seed": 0, **points[0].details, "beta": 0.5}, np.ones(3))
    assert results.details["fitted_q"] == {"beta=0.5, regressor=ridge"}


def test_fit_runs_single_threaded_and_acts_as_sklearn_predicts() -> None:
    seen: list[int] = []

    class Recording(LinearRegression):
        def fit(self, x, y):  # type: ignore[no-untyped-def]
            seen.extend(pool["num_threads"] for pool in threadpoolctl.threadpool_info())
            return super().fit(x, y)

    table = _band_table(BAND)
    with threadpoolctl.threadpool_limits(limits=2):
        FittedQPolicy(regressor=Recording).fit(table, step_cost=COST)
    assert seen and set(seen) == {1}
    val = _band_table(BAND, seed=1)
    for name in ("ridge_sorted", "hgb_sorted"):
        policy = FittedQPolicy(regressor=name).fit(table, step_cost=COST)
        policy.bind(val)
        rows = val.observations["summary"][:300].reshape(-1, val.observations["summary"].shape[-1])[::-1]  # steps mixed
        steps = np.tile(np.arange(1, 4), 300)[::-1]
        expected = np.full(len(rows), -np.inf)
        for step, model in enumerate(policy.models, start=1):
            expected[steps == step] = model.predict(policy.features(rows[steps == step]))
        np.testing.assert_allclose(policy.predicted_advantage(rows), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="regressor must be one of"):
        FittedQPolicy(regressor="lasso")
