"""The joint halting objectives (trm_env.halting_loss) against direct computations on tiny hand-made batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trm_env.halting_loss import (
    JointObjective,
    act_loss,
    exploration_min_steps,
    geometric_prior,
    ponder_distribution,
    ponder_kl,
    ponder_loss,
    q_halt_loss,
    q_targets,
    training_halts,
)
from trm_env.loss import TRMLoss


def _logit(p: list[list[float]]) -> torch.Tensor:
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def test_ponder_loss_by_hand_with_the_forced_halt_at_k() -> None:
    lambdas = [[0.5, 0.5, 0.5, 0.3], [0.2, 0.9, 0.1, 0.6]]
    losses = torch.tensor([[2.0, 1.0, 0.5, 0.1], [1.5, 1.0, 3.0, 4.0]], dtype=torch.float64)
    p = ponder_distribution(torch.sigmoid(_logit(lambdas)))
    # lambda_K = 1 whatever the head says: row 0's last 0.3 and row 1's 0.6 are ignored
    expected = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.2, 0.8 * 0.9, 0.8 * 0.1 * 0.1, 0.8 * 0.1 * 0.9]],
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, dtype=torch.float64))
    prior = np.array([0.3 * 0.7**n for n in range(4)])
    prior /= prior.sum()
    e = expected.numpy()
    kl = (e * np.log(e / prior)).sum(axis=1)
    direct = ((e * losses.numpy()).sum(axis=1) + 0.05 * kl).mean()
    assert float(ponder_loss(losses, _logit(lambdas), lambda_p=0.3, beta=0.05)) == pytest.approx(direct, rel=1e-7)


def test_ponder_kl_has_the_papers_direction() -> None:
    """KL(p || prior), p first: here it is far from KL(prior || p), the reimplementations' direction."""
    p = torch.tensor([[0.97, 0.01, 0.01, 0.01]], dtype=torch.float64)
    prior = geometric_prior(4, 0.2).double().numpy()
    np.testing.assert_allclose(prior, np.array([0.2, 0.16, 0.128, 0.1024]) / 0.5904, rtol=1e-6)
    forward = float((p[0].numpy() * np.log(p[0].numpy() / prior)).sum())
    reverse = float((prior * np.log(prior / p[0].numpy())).sum())
    assert abs(forward - reverse) > 0.5
    assert float(ponder_kl(p, 0.2)[0]) == pytest.approx(forward, rel=1e-6)
    zero = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # 0 log 0 = 0
    assert float(ponder_kl(zero, 0.2)[0]) == pytest.approx(-math.log(prior[0]), rel=1e-6)
    with pytest.raises(ValueError, match="lambda_p"):
        geometric_prior(4, 1.0)


def test_act_loss_remainder_and_its_gradient_by_hand() -> None:
    """h = 0.3, 0.5, 0.4, 0.2: the sum reaches 1 - eps at N = 3, R = 1 - 0.8; the gradient flows through R."""
    units, tau = [[0.3, 0.5, 0.4, 0.2], [0.1, 0.1, 0.1, 0.1]], 0.05
    losses = torch.tensor([[2.0, 1.0, 0.5, 0.1], [1.5, 1.0, 3.0, 4.0]], dtype=torch.float64)
    logits = _logit(units).requires_grad_(True)
    loss = act_loss(losses, logits, tau)
    # row 0: p = (0.3, 0.5, 0.2, 0), N + R = 3.2; row 1 forced at K: p = (0.1, 0.1, 0.1, 0.7), N + R = 4.7
    row0 = 0.3 * 2.0 + 0.5 * 1.0 + 0.2 * 0.5 + tau * 3.2
    row1 = 0.1 * 1.5 + 0.1 * 1.0 + 0.1 * 3.0 + 0.7 * 4.0 + tau * 4.7
    assert float(loss.detach()) == pytest.approx((row0 + row1) / 2, rel=1e-9)
    loss.backward()
    # d/dh_n (n < N) = L_n - L_N - tau (R = 1 - sum_{n<N} h_n); h_N and later steps get none; chain rule h (1 - h)
    h = torch.tensor(units, dtype=torch.float64)
    by_hand = torch.tensor([[2.0 - 0.5 - tau, 1.0 - 0.5 - tau, 0.0, 0.0],
                            [1.5 - 4.0 - tau, 1.0 - 4.0 - tau, 3.0 - 4.0 - tau, 0.0]], dtype=torch.float64)
    by_hand /= 2  # the mean over the two rows
    torch.testing.assert_close(logits.grad, by_hand * h * (1 - h))


def test_q_targets_by_hand_including_the_last_step() -> None:
    q = torch.tensor([[[-1.0, 0.5], [0.3, 1.2], [-0.4, 2.0]]])  # (B=1, K=3, (Q_halt, Q_continue))
    halt_target, continue_target = q_targets(q, torch.tensor([[True, False, True]]))
    torch.testing.assert_close(halt_target, torch.tensor([[1.0, 0.0, 1.0]]))
    # step 1 continues into step 2: max(0.3, 1.2); step 2 into the last step, which can only halt: Q_halt = -0.4
    # (not max(-0.4, 2.0))
    torch.testing.assert_close(continue_target, torch.sigmoid(torch.tensor([[1.2, -0.4]])))


def _bce(logit: float, target: float) -> float:
    return -(target * math.log(1 / (1 + math.exp(-logit))) + (1 - target) * math.log(1 - 1 / (1 + math.exp(-logit))))


def test_q_halt_loss_supervises_each_sample_up_to_its_training_halt() -> None:
    # Q_halt - Q_continue: row 0 -1.5, +0.9 (halts at 2 unless its minimum step is 3), -2.4
    q = torch.tensor([[[-1.0, 0.5], [1.2, 0.3], [-0.4, 2.0]]])
    correct, losses = torch.tensor([[False, True, True]]), torch.tensor([[3.0, 2.0, 1.0]])
    torch.testing.assert_close(training_halts(q[..., 0] - q[..., 1], torch.tensor([1])), torch.tensor([2]))
    torch.testing.assert_close(training_halts(q[..., 0] - q[..., 1], torch.tensor([3])), torch.tensor([3]))
    cont = [1 / (1 + math.exp(-1.2)), 1 / (1 + math.exp(0.4))]  # sigmoid(max(1.2, 0.3)), sigmoid(Q_halt of K)
    step = [3.0 + 0.5 * (_bce(-1.0, 0) + _bce(0.5, cont[0])), 2.0 + 0.5 * (_bce(1.2, 1) + _bce(0.3, cont[1])),
            1.0 + 0.5 * _bce(-0.4, 1)]  # step K: no Q_continue target  # fmt: skip
    assert float(q_halt_loss(losses, q, correct, torch.tensor([1]), 0.5)) == pytest.approx(sum(step[:2]) / 2, 1e-6)
    assert float(q_halt_loss(losses, q, correct, torch.tensor([3]), 0.5)) == pytest.approx(sum(step) / 3, 1e-6)


def test_training_halts_are_forced_at_k() -> None:
    never = torch.full((2, 4), -1.0)
    torch.testing.assert_close(training_halts(never, torch.tensor([1, 2])), torch.tensor([4, 4]))
    always = torch.full((2, 4), 1.0)
    torch.testing.assert_close(training_halts(always, torch.tensor([1, 3])), torch.tensor([1, 3]))


def test_exploration_draws_are_seeded() -> None:
    def draws(seed: int) -> torch.Tensor:
        return exploration_min_steps(4000, 16, torch.Generator().manual_seed(seed), 0.1)

    first = draws(0)
    torch.testing.assert_close(first, draws(0))
    assert not torch.equal(first, draws(1))
    explored = first[first > 1]
    assert 0.08 < (first > 1).float().mean() < 0.12 and explored.min() >= 2 and explored.max() == 16
    assert set(draws(0).tolist()) >= set(range(2, 17)) and int((first == 1).sum()) + len(explored) == 4000
    objective = JointObjective("q_halt", seed=3)  # its generator is seeded by the training seed
    expected = exploration_min_steps(50, 8, torch.Generator().manual_seed(3))
    assert torch.equal(exploration_min_steps(50, 8, objective.generator), expected)


def test_task_losses_are_trmloss_per_sample_task_term() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 3, 8, generator=gen), torch.randint(0, 8, (5,), generator=gen)
    pnl = torch.randn(5, generator=gen) * 0.03
    criterion = TRMLoss(lambda_profit=0.7, class_weights=torch.linspace(0.5, 1.5, 8))
    per_sample = criterion.task_losses(logits, labels, pnl)
    assert per_sample.shape == (5, 3)
    for step in range(3):
        parts = criterion(logits[:, step], torch.zeros(5), labels, pnl, return_components=True)
        assert float(per_sample[:, step].mean()) == pytest.approx(0.7 * float(parts["profit_weighted_task_loss"]))
    with pytest.raises(ValueError, match="share B"):
        criterion.task_losses(logits, labels[:4], pnl)


def test_joint_objective_checks_its_settings() -> None:
    for bad, match in ((dict(halting="bce"), "TRMLoss"), (dict(halting="pondr"), "one of"),
                       (dict(halting="act", tau=-1.0), "tau"), (dict(halting="ponder", lambda_p=0.0), "lambda_p"),
                       (dict(halting="q_halt", exploration=1.5), "exploration")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            JointObjective(**bad)
