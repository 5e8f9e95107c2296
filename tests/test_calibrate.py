"""Learn-then-Test exits (``agents.calibrate``): p-values and choices by hand, the risks on a hand table, the
guarantee on synthetic tables with a known risk curve, and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import hand_rollouts
from scipy import stats

from agents.calibrate import (
    calibrate,
    calibrate_steps,
    conservative_first,
    exchangeability,
    ltt,
    resplit_coverage,
    risk_losses,
)
from agents.policies import make_policy


def test_p_value_of_a_clean_calibration_by_hand() -> None:
    """Zero losses on n samples: Hoeffding's and binary Bentkus's p-value are both (1 - α)^n; it passes at δ
    exactly when (1 - α)^n <= δ: n = 300 passes at α = 0.01, δ = 0.1 (0.049), n = 200 does not (0.134)."""
    passed = ltt(np.zeros((1, 300)), [3.0], alpha=0.01, delta=0.1, params=[0.7], binary=True)
    assert passed.p_values[0] == pytest.approx(0.99**300) and passed.found and passed.param == 0.7
    failed = ltt(np.zeros((1, 200)), [3.0], alpha=0.01, delta=0.1, params=[0.7], binary=True)
    assert failed.p_values[0] == pytest.approx(0.99**200)
    assert not failed.found and np.isnan(failed.param) and len(failed.valid) == 0
    assert "no threshold passes; halt at full depth" in failed.describe()


def test_binary_bentkus_p_value_by_hand() -> None:
    """5 errors in 400 at α = 0.05: Bentkus's binary p-value is the binomial cdf P(Bin(400, 0.05) <= 5), far
    below Hoeffding's exp(-n h(0.0125, 0.05)); the general (non-binary) one is e times the cdf."""
    losses = np.zeros((1, 400))
    losses[0, :5] = 1.0
    binary = ltt(losses, [2.0], 0.05, 0.1, binary=True)
    assert binary.p_values[0] == pytest.approx(stats.binom.cdf(5, 400, 0.05))
    assert ltt(losses, [2.0], 0.05, 0.1).p_values[0] == pytest.approx(np.e * stats.binom.cdf(5, 400, 0.05))
    assert binary.empirical_risk[0] == pytest.approx(5 / 400)


def test_fixed_sequence_stops_at_the_first_failure_and_the_cheapest_valid_wins() -> None:
    """Candidates in testing order: clean, bad, clean. Fixed-sequence stops at the bad one; Holm passes both clean
    ones and the choice is the one with the fewer mean steps."""
    losses = np.zeros((3, 500))
    losses[1, :100] = 1.0  # risk 0.2
    steps = [10.0, 6.0, 4.0]
    fixed = ltt(losses, steps, 0.05, 0.1, params=[0.9, 0.5, 0.1], binary=True)
    assert fixed.valid.tolist() == [0] and fixed.param == 0.9
    holm = ltt(losses, steps, 0.05, 0.1, params=[0.9, 0.5, 0.1], binary=True, fwer="bonferroni_holm")
    assert holm.valid.tolist() == [0, 2] and holm.index == 2 and holm.param == 0.1
    cheaper_first = ltt(losses, [3.0, 6.0, 4.0], 0.05, 0.1, binary=True, fwer="bonferroni_holm")
    assert cheaper_first.index == 0


def _table(correct: np.ndarray, prediction: np.ndarray, loss: np.ndarray):
    table = hand_rollouts(-loss)
    return dataclasses.replace(table, correct=correct.astype(bool), prediction=prediction.astype(np.int64))


def test_risk_losses_by_hand() -> None:
    """Three samples, K = 3: accuracy drop, disagreement and clipped excess loss of halting at given steps."""
    correct = np.array([[0, 1, 1], [1, 1, 1], [1, 0, 0]])
    prediction = np.array([[0, 1, 1], [2, 2, 2], [1, 0, 0]])
    loss = np.array([[3.0, 1.0, 0.5], [0.2, 0.2, 0.2], [0.1, 0.4, 0.3]])
    table = _table(correct, prediction, loss)
    steps = np.array([[1, 1, 1], [3, 2, 2]])  # sample 2 is wrong at step 2 and at K: no accuracy drop
    np.testing.assert_array_equal(risk_losses(table, steps, "accuracy_drop"), [[1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(risk_losses(table, steps, "disagreement"), [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(risk_losses(table, steps, "excess_loss", bound=2.0), [[1.0, 0, 0], [0, 0, 0.05]])
    np.testing.assert_allclose(risk_losses(table, steps[:1], "excess_loss", bound=4.0), [[2.5 / 4, 0.0, 0.0]])
    np.testing.assert_array_equal(risk_losses(table, np.array([1, 1, 1])), [[1, 0, 0]])  # (N,) steps: one candidate


def test_calibrate_over_policies_on_a_hand_table() -> None:
    """Fixed depths as the threshold family (latest first): the earliest depth whose accuracy drop passes wins.

    300 samples, K = 4: the answer at K is right everywhere; depth 3 is right everywhere, depth 2 wrong on 6
    samples (2%), depth 1 wrong on half. At α = 0.05, δ = 0.1 depth 2 passes (p = P(Bin(300, 0.05) <= 6) < 0.1),
    depth 1 does not. At α = 0.01 depth 2 fails, so fixed-sequence stops there: depth 3."""
    n = 300
    correct = np.ones((n, 4), dtype=bool)
    correct[:6, 1] = False
    correct[: n // 2, 0] = False
    table = _table(correct, np.zeros((n, 4)), np.zeros((n, 4)))
    exits = [make_policy("fixed_depth", k) for k in (4, 3, 2, 1)]
    found = calibrate(exits, table, "accuracy_drop", alpha=0.05, delta=0.1)
    assert found.param == 2 and found.valid.tolist() == [0, 1, 2]
    np.testing.assert_allclose(found.empirical_risk, [0, 0, 0.02, 0.5])
    np.testing.assert_allclose(found.mean_steps, [4, 3, 2, 1])
    assert calibrate(exits, table, "accuracy_drop", alpha=0.01, delta=0.1).param == 3
    thinned = calibrate_steps(np.stack([np.full(n, k) for k in (4, 3, 2)]), table, [4, 3, 2], alpha=0.05, thin=3)
    assert thinned.n == 100 and thinned.empirical_risk[2] == pytest.approx(2 / 100)  # rows 0 and 3 of the six


def _known_curve(rng: np.random.Generator, n: int, risks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, n) Bernoulli losses with the given true risks (testing order) and their (P, n) halting steps."""
    losses = (rng.random((len(risks), n)) < risks[:, None]).astype(float)
    return losses, np.repeat(np.arange(len(risks), 0, -1)[:, None], n, axis=1)


TRUE_RISK = np.linspace(0.0, 0.15, 16)  # a monotone risk curve: candidate j halts earlier and errs more
FINE_RISK = np.linspace(0.0, 0.1, 41)  # steps of 0.0025: candidates just above α exist


def test_the_guarantee_holds_on_a_known_risk_curve() -> None:
    """Over 400 fresh calibration draws the chosen candidate's true risk is below α in at least 1 - δ of them, and
    the procedure is not vacuous: it finds a candidate nearly always, never far below α."""
    rng, alpha, delta = np.random.default_rng(0), 0.05, 0.1
    chosen = []
    for _ in range(400):
        losses, steps = _known_curve(rng, 1000, FINE_RISK)
        found = ltt(losses, steps.mean(axis=1), alpha, delta, binary=True)
        chosen.append(FINE_RISK[found.index] if found.found else 0.0)
    chosen = np.array(chosen)
    # Hoeffding-Bentkus p-values are valid under "risk >= α", so a candidate at exactly α passes at most δ too
    assert (chosen < alpha).mean() >= 1 - delta
    assert (chosen >= 0.025).mean() > 0.99  # not vacuous: a procedure that never passes would fail here


def test_resplit_coverage_on_a_synthetic_table() -> None:
    """The study's check on a pool with a known risk curve: the held-out risk is <= α in >= 1 - δ of 200 splits,
    and so is the chosen candidate's risk over the whole pool (the population the halves are drawn from); every
    split found a candidate and its held-out steps are those of the candidate."""
    losses, steps = _known_curve(np.random.default_rng(1), 4000, TRUE_RISK)
    found = resplit_coverage(losses, steps, 16, 0.05, 0.1, n_splits=200, seed=0, binary=True)
    assert found["found"].all() and (found["holdout_risk"] <= 0.05).mean() >= 0.9
    assert (losses.mean(axis=1)[found["index"]] <= 0.05).mean() >= 0.9
    assert found["index"].min() >= 2  # not vacuous: candidates of pool risk 0.019 to 0.054
    first = np.random.default_rng(0).permutation(4000)  # split 0: calibrate on the first half, measure the second
    alone = ltt(losses[:, first[:2000]], steps[:, first[:2000]].mean(axis=1), 0.05, 0.1, binary=True)
    assert found["index"][0] == alone.index
    assert found["holdout_risk"][0] == pytest.approx(losses[alone.index, first[2000:]].mean())
    np.testing.assert_array_equal(found["holdout_steps"], 16 - found["index"])
    never = resplit_coverage(np.ones((2, 100)), np.ones((2, 100), dtype=int), 16, 0.05, 0.1, n_splits=3)
    assert not never["found"].any() and (never["holdout_risk"] == 0).all() and (never["holdout_steps"] == 16).all()


def test_conservative_first_and_exchangeability() -> None:
    assert conservative_first("halt_head", [0.5, 0.9, 0.1]).tolist() == [1, 0, 2]  # a higher threshold halts later
    assert conservative_first("fitted_q", [0.0, -0.04, 0.08]).tolist() == [1, 0, 2]  # a higher margin halts earlier
    table = hand_rollouts(np.zeros((4, 3)))
    assert exchangeability(table) is None
    market = dataclasses.replace(table, date=np.arange(4), horizon=5)
    assert "val precedes test" in exchangeability(market) and "overlap" in exchangeability(market)
    assert "overlap" not in exchangeability(dataclasses.replace(market, horizon=1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: ltt(np.zeros((1, 5)), [1.0], 0.0, 0.1), "alpha"),
        (lambda t: ltt(np.zeros((1, 5)), [1.0], 0.1, 1.0), "delta"),
        (lambda t: ltt(np.full((1, 5), 1.5), [1.0], 0.1, 0.1), "losses"),
        (lambda t: ltt(np.full((1, 5), 0.5), [1.0], 0.1, 0.1, binary=True), "0/1 losses"),
        (lambda t: ltt(np.zeros((2, 5)), [1.0], 0.1, 0.1), "one value per candidate"),
        (lambda t: ltt(np.zeros((1, 5)), [1.0], 0.1, 0.1, fwer="holm"), "fwer"),
        (lambda t: risk_losses(t, np.ones((1, 4), dtype=int), "loss"), "risk must be one of"),
        (lambda t: risk_losses(t, np.full((1, 4), 5), "accuracy_drop"), "steps must lie in 1..3"),
        (lambda t: risk_losses(t, np.ones((1, 3), dtype=int)), "steps must be integer"),
        (lambda t: risk_losses(t, np.ones((1, 4), dtype=int), "excess_loss", bound=0), "bound"),
        (lambda t: calibrate_steps(np.ones((1, 4), dtype=int), t, [1.0], thin=0), "thin"),
        (lambda t: calibrate([], t), "at least one policy"),
        (lambda t: conservative_first("random", [0.1]), "threshold family"),
        (lambda t: resplit_coverage(np.zeros((1, 4)), np.ones((1, 4)), 3, 0.1, 0.1, n_splits=0), "n_splits"),
    ],
)
def test_bad_input_is_refused(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(hand_rollouts(np.zeros((4, 3))))
