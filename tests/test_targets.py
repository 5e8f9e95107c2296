"""The learners' targets on hand-made inputs: fitted-Q's backup (advantage -c + V_{t+1} - r_t, V the realized value
of the fitted policy), ACT's halting step, remainder and its gradient, and that the heads' halting rules at
evaluation follow the distributions they were trained with."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import hand_rollouts
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from agents import evaluate
from agents.fitted_q import FittedQPolicy
from agents.heads import ACT_EPSILON, ACTPolicy, HeadPolicy, PonderPolicy, act_distribution, ponder_distribution
from trm_env.rollouts import REWARDS, Rollouts

# ---- fitted-Q ------------------------------------------------------------------------------------------------


def _exact(rewards: np.ndarray) -> Rollouts:
    """A table whose latent features one-hot each (sample, step): a least-squares fit on them is exact, so
    fitted-Q sees every realized advantage."""
    n, k = rewards.shape
    features = np.eye(n * k).reshape(n, k, n * k)
    return hand_rollouts(rewards, features)


def _perfect_advantage(rewards: np.ndarray, cost: float) -> np.ndarray:
    """(N, K-1): max over s > t of (r_s - cost (s - t)), minus r_t, by brute force."""
    k = rewards.shape[1]
    return np.array([[max(row[s] - cost * (s - t) for s in range(t + 1, k)) - row[t] for t in range(k - 1)]
                     for row in rewards])  # fmt: skip


@pytest.mark.parametrize("cost", [0.0, 0.05, 0.2])
def test_fitted_q_backs_up_the_realized_advantage(cost: float) -> None:
    """With an exact regressor the backup is optimal stopping with foresight: the advantage at t is the best later
    return minus r_t, and the policy halts at the oracle's step."""
    rewards = np.random.default_rng(3).normal(0.0, 0.1, size=(8, 5))
    table = _exact(rewards)
    policy = FittedQPolicy(regressor=lambda: LinearRegression(fit_intercept=False), observation="latent")
    policy.fit(table, step_cost=cost)
    policy.bind(table)
    observations = table.observations["latent"]
    found = np.stack([policy.predicted_advantage(observations[:, t]) for t in range(4)], axis=1)
    np.testing.assert_allclose(found, _perfect_advantage(rewards, cost), atol=1e-6)  # float32 observations
    assert (policy.predicted_advantage(observations[:, 4]) == -np.inf).all()  # the forced halt at K
    frame = evaluate(policy, table, step_cost=cost, observation="latent")
    np.testing.assert_array_equal(frame["halt_step"], table.best_steps("pnl", cost))
    np.testing.assert_allclose(frame["episode_return"], table.returns("pnl", cost).max(axis=1), atol=1e-12)


def test_fitted_q_backs_up_the_value_of_the_fitted_policy() -> None:
    """A regressor that predicts the mean advantage of its step, by hand (K = 3, cost 0.1):

    V_3 = r_3 = (0.5, 0.3); A_2 = -0.1 + V_3 - r_2 = (-0.6, 0.1), mean -0.25 <= 0: both halt, V_2 = r_2 = (1, 0.1);
    A_1 = -0.1 + V_2 - r_1 = (0.9, -0.5), mean 0.2 > 0: both continue. The policy halts at step 2: returns
    (1 - 0.1, 0.1 - 0.1). (V_2 = max(r_2, -c + V_3) would give A_1 mean 0.25; V_3 - c, or r_{t+1}, other values.)
    """
    rewards = np.array([[0.0, 1.0, 0.5], [0.5, 0.1, 0.3]])
    table = hand_rollouts(rewards)
    policy = FittedQPolicy(regressor=lambda: DummyRegressor(strategy="mean")).fit(table, step_cost=0.1)
    policy.bind(table)
    observations = table.observations["summary"]
    assert policy.predicted_advantage(observations[:, 0]) == pytest.approx([0.2, 0.2])
    assert policy.predicted_advantage(observations[:, 1]) == pytest.approx([-0.25, -0.25])
    frame = evaluate(policy, table, step_cost=0.1)
    assert frame["halt_step"].tolist() == [2, 2] and frame["episode_return"].tolist() == pytest.approx([0.9, 0.0])
    raised = FittedQPolicy(regressor=lambda: DummyRegressor(strategy="mean")).fit(table, step_cost=0.3)
    raised.bind(table)
    # cost 0.3: A_2 = (-0.8, -0.1), both halt; A_1 = (0.7, -0.7), mean 0.0 <= 0: halt at step 1
    assert raised.predicted_advantage(observations[:, 0]) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert evaluate(raised, table, step_cost=0.3)["halt_step"].tolist() == [1, 1]


def test_fitted_q_fits_each_step_on_its_own_rewards_and_reward_mode() -> None:
    """Each mode's rewards give that mode's backup: the pnl table halts where pnl says, whatever the others say."""
    rewards = np.random.default_rng(4).normal(0.0, 0.1, size=(6, 4))
    table = _exact(rewards)
    modes = {"profit_weighted_ce": -rewards, "pnl": rewards, "correct": rewards[:, ::-1].copy()}
    table = replace(table, halt_reward=modes)
    for mode in REWARDS:
        policy = FittedQPolicy(regressor=lambda: LinearRegression(fit_intercept=False), observation="latent")
        policy.fit(table, step_cost=0.01, reward=mode)
        steps = evaluate(policy, table, step_cost=0.01, reward=mode, observation="latent")["halt_step"]
        np.testing.assert_array_equal(steps, table.best_steps(mode, 0.01), err_msg=mode)


class _Zero:
    """A regressor that always predicts an advantage of exactly 0."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Zero:
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x))


def test_fitted_q_halts_where_the_prediction_is_at_most_the_margin() -> None:
    table = hand_rollouts(np.random.default_rng(0).normal(size=(5, 4)))
    fitted = FittedQPolicy(regressor=_Zero).fit(table)
    assert evaluate(fitted, table)["halt_step"].tolist() == [1] * 5  # 0 <= 0: halt
    assert evaluate(fitted.with_margin(-1e-9), table)["halt_step"].tolist() == [4] * 5  # 0 > -1e-9: continue


# ---- ACT -----------------------------------------------------------------------------------------------------


def test_act_halts_where_the_sum_reaches_one_minus_epsilon() -> None:
    """The sum reaching exactly 1 - eps halts (>=); 0.995 halts though it is below 1; 0.98 does not."""
    units = torch.tensor([[0.5, 0.49, 0.3, 0.1], [0.3, 0.695, 0.3, 0.1], [0.5, 0.48, 0.01, 0.1]])
    p, halt, remainder = act_distribution(units)
    assert halt.tolist() == [2, 2, 3] and ACT_EPSILON == 0.01
    torch.testing.assert_close(remainder, torch.tensor([0.5, 0.7, 0.02]))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))


def test_act_remainder_carries_the_gradient() -> None:
    """R = 1 - sum_{j<N} h_j: dR/dh_j = -1 before N, 0 from N on; the expected loss sum_t p_t L_t has
    d/dh_j = L_j - L_N before N (p_N = R), 0 after."""
    units = torch.tensor([[0.3, 0.5, 0.4, 0.1], [0.1, 0.1, 0.1, 0.1]], requires_grad=True)
    _, halt, remainder = act_distribution(units)
    assert halt.tolist() == [3, 4]
    remainder.sum().backward()
    torch.testing.assert_close(units.grad, torch.tensor([[-1.0, -1.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 0.0]]))
    losses = torch.tensor([[1.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0, 8.0]])
    units.grad = None
    p, _, _ = act_distribution(units)
    (p * losses).sum().backward()
    torch.testing.assert_close(units.grad, torch.tensor([[-3.0, -2.0, 0.0, 0.0], [-7.0, -6.0, -4.0, 0.0]]))


def _captured_loss(policy: HeadPolicy, table: Rollouts, monkeypatch: pytest.MonkeyPatch, **fit_kwargs: float):
    """The loss function ``policy.fit`` trains its head with (the training itself is skipped)."""
    captured = []
    monkeypatch.setattr(HeadPolicy, "_fit", lambda self, table, loss_fn, *a, **k: captured.append(loss_fn))
    policy.fit(table, **fit_kwargs)
    assert len(captured) == 1
    return captured[0]


def test_act_loss_is_the_expected_loss_plus_tau_times_n_plus_r(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two samples, K = 3, L = -reward. Units (0.5, 0.6, .) halt at 2 with R = 0.5; (0.2, 0.2, .) run to K with
    R = 0.6: loss = mean(0.5 L_1 + 0.5 L_2 + tau (2 + 0.5), 0.2 L_1 + 0.2 L_2 + 0.6 L_3 + tau (3 + 0.6)); its
    gradient flows through R into the logits (dh/dlogit = h (1 - h))."""
    rewards = np.array([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])  # L = -r
    tau = 0.1
    loss_fn = _captured_loss(ACTPolicy(tau), hand_rollouts(rewards), monkeypatch, step_cost=0.01)
    h = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.2, 0.2]], dtype=torch.float64)
    logits = torch.log(h / (1 - h)).float().requires_grad_()
    loss = loss_fn(logits, np.arange(2))
    first = 0.5 * 1 + 0.5 * 2 + tau * 2.5
    second = 0.2 * 4 + 0.2 * 5 + 0.6 * 6 + tau * 3.6
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-5)
    loss.backward()
    # d/dh_j: row 0 (N = 2): L_j - L_2 - tau for j < 2; row 1 (N = 3): L_j - L_3 - tau for j < 3
    dh = torch.tensor([[1 - 2 - tau, 0.0, 0.0], [4 - 6 - tau, 5 - 6 - tau, 0.0]], dtype=torch.float64)
    expected = dh * h * (1 - h) / 2
    torch.testing.assert_close(logits.grad.double(), expected, rtol=1e-4, atol=1e-6)


def test_the_ponder_cost_alone_teaches_act_to_halt_earlier() -> None:
    """Every step equally good: only tau (N + R) shapes the head. Through R's gradient it raises the units
    before N, so a positive tau halts earlier than tau = 0 (which keeps the initial head: never halting)."""
    table = hand_rollouts(np.zeros((64, 6)))
    free = evaluate(ACTPolicy(0.0).fit(table, step_cost=0.0), table, step_cost=0.0)["halt_step"].mean()
    costly = evaluate(ACTPolicy(1.0).fit(table, step_cost=0.0), table, step_cost=0.0)["halt_step"].mean()
    assert free == 6 and costly < free, (free, costly)


# ---- the heads' halting rules at evaluation ----------------------------------------------------------------------


def _with_units(policy: HeadPolicy, units: np.ndarray) -> tuple[HeadPolicy, Rollouts]:
    """A head whose output at (sample, step) is ``units`` there (the latent column carries it), and its table."""
    table = hand_rollouts(np.zeros(units.shape), units[..., None])
    column = table.layout["latent"].start
    policy.net = torch.nn.Identity()  # fitted, as far as bind is concerned
    policy.halt_logits = lambda observations: np.log(observations[:, column] / (1 - observations[:, column]))
    return policy, table


K_SMALL = 4
UNITS = np.array([[0.3, 0.695, 0.3, 0.1], [0.2, 0.2, 0.2, 0.2], [0.995, 0.1, 0.1, 0.1], [0.6, 0.1, 0.35, 0.1],
                  [0.05, 0.05, 0.9, 0.5]])  # fmt: skip


def test_act_policy_halts_at_the_step_its_training_distribution_halts() -> None:
    policy, table = _with_units(ACTPolicy(0.01), UNITS)
    steps = evaluate(policy, table, observation="latent")["halt_step"].to_numpy()
    expected = act_distribution(torch.from_numpy(UNITS))[1].numpy()
    np.testing.assert_array_equal(steps, expected)
    assert steps.tolist() == [2, 4, 1, 3, 3]


@pytest.mark.parametrize("q", [0.3, 0.5, 0.9])
def test_ponder_policy_halts_where_its_distribution_reaches_q(q: float) -> None:
    """PonderNet halts at the first t where sum_{s<=t} p_s reaches q (lambda_K = 1 forces the last step)."""
    policy, table = _with_units(PonderPolicy(q), UNITS)
    steps = evaluate(policy, table, observation="latent")["halt_step"].to_numpy()
    cumulative = torch.cumsum(ponder_distribution(torch.from_numpy(UNITS)), dim=1).numpy()
    expected = np.argmax(cumulative >= q - 1e-12, axis=1) + 1
    np.testing.assert_array_equal(steps, expected)
    assert len(set(steps)) > 1


@pytest.mark.parametrize(("head", "unit"), [(lambda: ACTPolicy(0.01), 0.5), (lambda: PonderPolicy(0.5), 0.4)])
def test_cumulative_heads_restart_a_row_at_step_one(head, unit: float) -> None:  # type: ignore[no-untyped-def]
    """Row i of a call continues row i of the last one, unless its step is 1 (a vector env restarted it): ACT's sum
    of 0.5 + 0.5 reaches 1 - eps at step 2; PonderNet's 1 - 0.6^2 = 0.64 reaches q = 0.5 at step 2."""
    policy, table = _with_units(head(), np.full((2, K_SMALL), unit))
    policy.bind(table)
    rows = table.observations["latent"][:, 0]
    actions = [policy.act(rows, {"step": np.array(step), "index": np.arange(2)}).tolist()
               for step in ([1, 1], [2, 2], [1, 1], [1, 2], [2, 1])]  # fmt: skip
    assert actions == [[0, 0], [1, 1], [0, 0], [0, 1], [1, 0]]
