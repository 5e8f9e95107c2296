"""Bootstraps on synthetic data with a known mean: hierarchical and block coverage, improvement, IQM."""

from __future__ import annotations

import numpy as np
import pytest

from agents.stats import Draws, block_length, interquartile_mean, percentile_interval, sample_weights


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
