"""Bootstraps on synthetic data with a known mean: hierarchical and block coverage, improvement, IQM; the
calibrated intervals' values on hand-made inputs (their coverage: tests/test_intervals.py)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.intervals import fieller_interval, seed_t_interval, shared_variance
from agents.stats import Draws, block_length, interquartile_mean, percentile_interval, sample_weights

T_975_DF4, T_95_DF4 = 2.7764451051977987, 2.1318467863266495  # Student t quantiles, 4 degrees of freedom


def _hierarchical_data(rng: np.random.Generator, t: int, r: int, n: int, phi: float) -> np.ndarray:
    """values[t, r, n] = 1.0 + TRM effect + learner effect + AR(1) sample noise shared by every seed."""
    noise = np.zeros(n)
    shocks = rng.standard_normal(n)
    for i in range(n):
        noise[i] = phi * noise[i - 1] + shocks[i] if i else shocks[i]
    noise *= np.sqrt(1 - phi**2)
    trm = 0.3 * rng.standard_normal((t, 1, 1))
    learner = 0.2 * rng.standard_normal((t, r, 1))
    return 1.0 + trm + learner + noise[None, None, :] + 0.5 * rng.standard_normal((t, r, n))


def _coverage(trials: int, block: int | None, phi: float, t: int = 6, r: int = 3, n: int = 200) -> float:
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(trials):
        values = _hierarchical_data(rng, t, r, n, phi)
        length = block if block is not None else block_length(values.mean(axis=(0, 1)), horizon=5)
        draws = Draws.make(t, n, n_resamples=300, seed=trial, block=length)
        low, high = percentile_interval(draws.replicates(values, "x"))
        covered += low <= 1.0 <= high
    return covered / trials


def test_hierarchical_block_bootstrap_covers_the_known_mean() -> None:
    coverage = _coverage(150, block=None, phi=0.8)
    assert 0.87 <= coverage <= 0.995, coverage


def test_iid_resampling_of_dependent_samples_under_covers() -> None:
    """The reason for blocks: with strongly autocorrelated samples, i.i.d. resampling under-covers."""
    assert _coverage(150, block=1, phi=0.95, t=40, r=1) < _coverage(150, block=None, phi=0.95, t=40, r=1) - 0.05


def test_seed_levels_widen_the_interval() -> None:
    """Resampling TRM seeds adds their spread: a large TRM effect gives a wider interval than none."""
    rng = np.random.default_rng(1)
    flat = np.broadcast_to(rng.standard_normal(100), (4, 2, 100)).copy()
    spread = flat + np.array([-1.0, 0.0, 1.0, 2.0])[:, None, None]
    draws = Draws.make(4, 100, n_resamples=500, seed=0)
    width = [np.subtract(*percentile_interval(draws.replicates(v, "x"))[::-1]) for v in (flat, spread)]
    assert width[1] > 3 * width[0]


def test_sample_weights() -> None:
    weights = sample_weights(50, 400, seed=3)
    assert weights.shape == (400, 50) and (weights.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(weights, sample_weights(50, 400, seed=3))
    blocks = sample_weights(50, 400, seed=3, block_length=10)
    assert (blocks.sum(axis=1) == 50).all()
    with pytest.raises(ValueError, match="block_length"):
        sample_weights(50, 10, block_length=0)


def test_block_length_follows_the_horizon_and_the_data() -> None:
    rng = np.random.default_rng(0)
    assert block_length(rng.standard_normal(300), horizon=1) == 1
    assert block_length(rng.standard_normal(300), horizon=5) == 5  # white noise: the horizon is the floor
    walk = np.cumsum(rng.standard_normal(500)) * 0.1 + rng.standard_normal(500)
    assert block_length(walk, horizon=5) > 5


def test_probability_of_improvement_by_hand() -> None:
    # TRM seed 0: a's runs (1, 3) vs b's runs (2, 2): pairs 1>2 no, 1>2 no, 3>2 yes, 3>2 yes -> 0.5
    # TRM seed 1: a's runs (5, 5) vs b's (5, 1): ties count half -> (0.5 + 1 + 0.5 + 1) / 4 = 0.75
    a = np.array([[[1.0], [3.0]], [[5.0], [5.0]]])
    b = np.array([[[2.0], [2.0]], [[5.0], [1.0]]])
    draws = Draws.make(2, 1, n_resamples=200, seed=0)
    point, replicates = draws.improvement(a, b, ("a", "b"))
    assert point == pytest.approx((0.5 + 0.75) / 2)
    assert replicates.min() >= 0.0 and replicates.max() <= 1.0 and replicates.std() > 0
    flipped, _ = draws.improvement(b, a, ("b", "a"))
    assert flipped == pytest.approx(1 - point)


def test_interquartile_mean() -> None:
    assert interquartile_mean(np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0])) == pytest.approx(3.5)


def test_percentile_interval_levels() -> None:
    replicates = np.arange(1001.0)  # percentile p sits at the value 10 p
    assert percentile_interval(replicates) == pytest.approx((25.0, 975.0))
    assert percentile_interval(replicates, 0.9) == pytest.approx((50.0, 950.0))
    with pytest.raises(ValueError, match="level"):
        percentile_interval(replicates, 95)


def test_t_interval_by_hand() -> None:
    """Seed means 1..5, nothing shared: 3 +- t(0.975, 4) sqrt(2.5 / 5); at 90%, t(0.95, 4)."""
    found = seed_t_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.0)
    half = T_975_DF4 * np.sqrt(0.5)
    assert (found.estimate, found.se, found.df) == pytest.approx((3.0, np.sqrt(0.5), 4.0))
    assert (found.low, found.high) == pytest.approx((3.0 - half, 3.0 + half))
    narrow = seed_t_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.0, level=0.9)
    assert (narrow.low, narrow.high) == pytest.approx((3.0 - T_95_DF4 * np.sqrt(0.5), 3.0 + T_95_DF4 * np.sqrt(0.5)))
    with pytest.raises(ValueError, match="level"):
        seed_t_interval(np.array([1.0, 2.0]), 0.0, level=1.5)


def test_t_interval_adds_the_shared_variance_with_satterthwaite_df() -> None:
    """Between 2.5 / 5 = 0.5 (df 4) plus shared 0.5 (df 20): se 1, df 1 / (0.5^2 / 4 + 0.5^2 / 20) = 13.33."""
    found = seed_t_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.5, shared_df=20)
    assert (found.se, found.df) == pytest.approx((1.0, 40 / 3))
    assert (found.low, found.high) == pytest.approx((3.0 - 2.1548912755535428, 3.0 + 2.1548912755535428))
    only_shared = seed_t_interval(np.array([2.0, 2.0, 2.0]), 0.04)  # seeds agree: the shared part alone, df inf
    assert (only_shared.low, only_shared.high, only_shared.df) == pytest.approx((2 - 1.959964 * 0.2,
                                                                                 2 + 1.959964 * 0.2, np.inf))
    one_seed = seed_t_interval(np.array([2.0]), 0.04, shared_df=np.inf)
    assert (one_seed.low, one_seed.high) == pytest.approx((only_shared.low, only_shared.high))
    many = seed_t_interval(np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0]]), np.array([0.0, 0.04]))
    assert many.low == pytest.approx([3.0 - T_975_DF4 * np.sqrt(0.5), 2 - 1.959964 * 0.2])


def test_shared_variance_is_the_covariance_of_different_seeds() -> None:
    up, down = np.array([0.0, 1.0, 2.0]), np.array([2.0, 1.0, 0.0])
    assert shared_variance(np.stack([up, up], axis=1)) == pytest.approx(1.0)  # same samples, same moves
    assert shared_variance(np.stack([up, down], axis=1)) == pytest.approx(-1.0)
    assert shared_variance(np.stack([up, up, 3 * up], axis=1)) == pytest.approx((1 + 3 + 3) * 2 / 6)
    assert shared_variance(up[:, None]) == pytest.approx(1.0)  # one seed: its own variance


def test_draws_interval_by_hand() -> None:
    """Two samples drawn either way; seed means 1 and 2; replicates (0, 1) and (2, 3): shared 2, between 0.25,
    df 2.25^2 / (0.25^2 / 1 + 2^2 / 1) on 1 + 1 degrees of freedom."""
    draws = Draws(trm=np.ones((2, 2)), samples=np.array([[2.0, 0.0], [0.0, 2.0]]), seed=0)
    values = np.array([[[0.0, 2.0]], [[1.0, 3.0]]])
    found = draws.interval(values)
    assert (found.estimate, found.se, found.df) == pytest.approx((1.5, 1.5, 2.25**2 / 4.0625))
    assert found.high - found.estimate == pytest.approx(8.072124882126506 * 1.5)
    assert found == draws.interval(values[:, 0])  # (T, N) and (T, 1, N) alike
    with pytest.raises(ValueError, match="values must be"):
        draws.interval(values[0, 0])
    blocks = Draws(trm=np.ones((2, 2)), samples=np.array([[2.0, 0.0], [0.0, 2.0]]), seed=0, block=2)
    assert blocks.shared_df == 1 and Draws.make(2, 100, n_resamples=10).shared_df == 99
    assert Draws.make(2, 100, n_resamples=10, block=7).shared_df == 14  # 15 blocks, the last one short


def test_shared_df_follows_the_blocks() -> None:
    """Shared noise only (seeds agree): df = blocks - 1, so the interval of 100 samples in blocks of 10 uses t(9)."""
    rng = np.random.default_rng(0)
    values = np.broadcast_to(rng.standard_normal(100), (3, 1, 100))
    found = Draws.make(3, 100, n_resamples=300, seed=0, block=10).interval(values)
    assert found.df == pytest.approx(9.0)
    assert found.high - found.estimate == pytest.approx(2.2621571627982053 * found.se)  # t(0.975, 9)


def test_difference_is_paired() -> None:
    """Two families with the same large per-sample effect: their difference is tight, their own intervals are not."""
    rng = np.random.default_rng(0)
    samples = 5 * rng.standard_normal(200)
    first = samples + 0.1 + 0.05 * rng.standard_normal((5, 2, 200))
    second = samples + 0.05 * rng.standard_normal((5, 1, 200))
    draws = Draws.make(5, 200, n_resamples=500, seed=0)
    found = draws.difference(first, second)
    assert found.estimate == pytest.approx(first.mean() - second.mean())
    assert 0 < found.low < 0.1 < found.high < 0.2
    assert draws.interval(first).low < draws.interval(second).high  # unpaired, they overlap
    assert found == draws.interval(first.mean(axis=1) - second.mean(axis=1))


def test_fieller_interval_by_hand() -> None:
    num, den = np.array([0.5, 0.9, 0.7, 0.4, 0.8]), np.array([1.0, 1.3, 0.9, 1.1, 1.2])
    assert fieller_interval(2 * den, den, np.zeros((2, 2))) == pytest.approx((2.0, 2.0))  # exact multiple: no spread
    assert fieller_interval(0 * den, den, np.zeros((2, 2))) == pytest.approx((0.0, 0.0))
    low, high = fieller_interval(num, den, np.zeros((2, 2)))
    assert low < num.mean() / den.mean() < high
    wide = fieller_interval(num, den, np.diag([0.0, 0.01]))  # a noisy reference widens it
    assert wide[1] - wide[0] > high - low
    narrow = fieller_interval(num, den, np.zeros((2, 2)), level=0.9)
    assert low < narrow[0] < narrow[1] < high
    assert np.isnan(fieller_interval(num, den - 1.0, np.zeros((2, 2)))).all()  # reference gain 0.1 +- 0.07: unbounded


def test_ratio_interval_from_draws() -> None:
    rng = np.random.default_rng(1)
    den = 1.0 + rng.standard_normal((5, 300))
    draws = Draws.make(5, 300, n_resamples=500, seed=0)
    assert draws.ratio_interval(den, den) == pytest.approx((1.0, 1.0))  # the oracle's share of its own gain
    low, high = draws.ratio_interval(0.5 * den + 0.2 * rng.standard_normal((5, 300)), den)
    assert 0.35 < low < 0.5 < high < 0.65


def test_ratio_interval_sees_the_shared_sample_noise() -> None:
    """Five identical seeds: all uncertainty comes from the samples they share, exactly as with one seed.
    num - 0.5 den = 0.3 u (u standard normal): a half-width near 1.97 * 0.3 / sqrt(300) / mean(den)."""
    rng = np.random.default_rng(2)
    den = 1.0 + rng.standard_normal(300)
    num = 0.5 * den + 0.3 * rng.standard_normal(300)
    five, one = (Draws.make(t, 300, n_resamples=2000, seed=0) for t in (5, 1))
    low, high = five.ratio_interval(np.tile(num, (5, 1)), np.tile(den, (5, 1)))
    assert (low, high) == pytest.approx(one.ratio_interval(num[None], den[None]))
    assert (high - low) / 2 == pytest.approx(1.97 * 0.3 / np.sqrt(300) / den.mean(), rel=0.15)
    assert low < num.mean() / den.mean() < high
