"""Bootstrap draws that follow the structure of the data, and the calibrated intervals computed from them.

A result is an array ``values[t, r, n]``: TRM seed t, learner seed r (RL or random seeds; 1 for
deterministic rules), sample n. The same samples appear under every seed (the design is crossed). A task's
``Draws`` hold, once for all its policies,

- sample weights (``Draws.samples``, (B, N)): i.i.d. counts, or ``arch``'s circular blocks of consecutive
  samples for market days whose labels overlap;
- TRM-seed counts with replacement (``Draws.trm``, (B, T)); per family, learner seeds with replacement within
  each drawn TRM seed, from a stream of their own.

**Intervals** (``Draws.interval``, ``difference``, ``intervals``, ``ratio_interval``) are the calibrated ones
of ``agents.intervals``: a t over TRM seeds whose variance adds what the seeds share through their samples,
estimated from the sample weights; Fieller's interval for shares. **The hierarchical percentile bootstrap**
(``Draws.replicates``: all three levels drawn) barely sees the seeds' spread at T = 3..5, so it serves only
descriptive statistics: the share of draws where one family is above another, and rliable's run-level
probability of improvement (``Draws.improvement``). ``cluster_means`` and ``sample_weights`` serve the
one-level bootstrap of single-run curves.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from agents.intervals import Interval, check_level, fieller_interval, seed_t_interval, shared_variance

__all__ = [
    "Draws",
    "block_length",
    "cluster_means",
    "interquartile_mean",
    "percentile_interval",
    "sample_weights",
    "weighted_means",
]

N_RESAMPLES = 2000


def sample_weights(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0, block_length: int = 1) -> np.ndarray:
    """(n_resamples, n) draw counts of a bootstrap over n samples; blocks of ``block_length`` wrap around."""
    if n < 1 or block_length < 1:
        raise ValueError(f"need n >= 1 and block_length >= 1, got n={n}, block_length={block_length}")
    rng = np.random.default_rng(seed)
    if block_length == 1:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    from arch.bootstrap import CircularBlockBootstrap  # arch (2 s to import) only for market days

    sampler = CircularBlockBootstrap(block_length, np.arange(n), seed=rng)
    return np.stack([np.bincount(sampler.update_indices(), minlength=n) for _ in range(n_resamples)]).astype(float)


def block_length(series: np.ndarray, horizon: int) -> int:
    """The block length for a series of consecutive samples: 1 for i.i.d. data (``horizon`` 1), else the
    larger of the label horizon and ``arch``'s optimal circular block length (Politis-White)."""
    if horizon <= 1:
        return 1
    from arch.bootstrap import optimal_block_length

    optimal = float(optimal_block_length(np.asarray(series, dtype=float))["circular"].iloc[0])
    return max(int(horizon), math.ceil(optimal))


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replicate means of ``values`` (n,) or (n, m) under the (B, n) weights."""
    return weights @ values / weights.sum(axis=1).reshape(-1, *([1] * (values.ndim - 1)))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates."""
    check_level(level)
    tail = 50 * (1 - level)
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return float(low), float(high)


def cluster_means(frame: pd.DataFrame, column: str, cluster: str = "index") -> pd.Series:
    """Mean of ``column`` per ``cluster`` (seeds averaged within a sample), sorted by cluster."""
    return frame.groupby(cluster, sort=True)[column].mean()


def interquartile_mean(values: np.ndarray) -> float:
    """rliable's IQM: the mean of the middle 50% of the values (25% trimmed from each end)."""
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    cut = int(np.floor(0.25 * len(ordered)))
    return float(ordered[cut : len(ordered) - cut].mean())


def _per_seed(values: np.ndarray) -> np.ndarray:
    """(T, N) from (T, R, N) (learner seeds averaged) or (T, N)."""
    values = np.asarray(values, dtype=float)
    if values.ndim not in (2, 3):
        raise ValueError(f"values must be (TRM seeds, learner seeds, samples) or (TRM seeds, samples), got shape "
                         f"{values.shape}")  # fmt: skip
    return values.mean(axis=1) if values.ndim == 3 else values


@dataclass(frozen=True, eq=False)
class Draws:
    """One task's bootstrap draws: TRM-seed counts (B, T) and sample weights (B, N) in circular blocks of
    ``block`` samples, from ``seed``."""

    trm: np.ndarray
    samples: np.ndarray
    seed: int
    block: int = 1

    @classmethod
    def make(cls, n_trm: int, n_samples: int, n_resamples: int = N_RESAMPLES, seed: int = 0,
             block: int = 1) -> Draws:  # fmt: skip
        rng = np.random.default_rng(seed)
        trm = rng.multinomial(n_trm, np.full(n_trm, 1.0 / n_trm), size=n_resamples).astype(float)
        return cls(trm, sample_weights(n_samples, n_resamples, seed + 1, block), seed, block)

    def learners(self, n_learner: int, family: str) -> np.ndarray:
        """(B, T, R) learner-seed counts within each TRM seed, drawn from a stream of their own per family."""
        rng = np.random.default_rng([self.seed, zlib.crc32(family.encode())])
        b, t = self.trm.shape
        counts = rng.multinomial(n_learner, np.full(n_learner, 1.0 / n_learner), size=(b, t))
        return counts.astype(float)

    @cached_property
    def _normalised(self) -> np.ndarray:
        return self.samples / self.samples.sum(axis=1, keepdims=True)

    def run_means(self, values: np.ndarray) -> np.ndarray:
        """(B, T, R): every run's (TRM seed, learner seed) mean under each replicate's sample weights."""
        t, r, n = values.shape
        return (self._normalised @ values.reshape(t * r, n).T).reshape(-1, t, r)

    def combine(self, run_means: np.ndarray, family: str) -> np.ndarray:
        """(B,) grand means from (B, T, R) run means: TRM seeds drawn, then learner seeds within each."""
        t, r = run_means.shape[1:]
        per_trm = (self.learners(r, family) * run_means).sum(axis=2) / r
        return (self.trm * per_trm).sum(axis=1) / t

    def replicates(self, values: np.ndarray, family: str) -> np.ndarray:
        """(B,) hierarchical bootstrap replicates of the grand mean of ``values`` (T, R, N)."""
        return self.combine(self.run_means(values), family)

    @property
    def shared_df(self) -> float:
        """Degrees of freedom of the shared sample variance: the number of blocks - 1."""
        return max(math.ceil(self.samples.shape[1] / self.block) - 1, 1)

    def seed_replicates(self, per_seed: np.ndarray) -> np.ndarray:
        """(B, ...) replicate means over the samples (last axis) of ``per_seed`` (..., N)."""
        flat = per_seed.reshape(-1, per_seed.shape[-1])
        return (self._normalised @ flat.T).reshape(-1, *per_seed.shape[:-1])

    def interval(self, values: np.ndarray, level: float = 0.95) -> Interval:
        """The calibrated interval (``seed_t_interval``) of the grand mean of ``values`` (T, R, N) or (T, N)."""
        return self.intervals([values], level)[0]

    def difference(self, first: np.ndarray, second: np.ndarray, level: float = 0.95) -> Interval:
        """The calibrated interval of mean(first) - mean(second): paired per (TRM seed, sample)."""
        return self.interval(_per_seed(first) - _per_seed(second), level)

    def intervals(self, values: list[np.ndarray], level: float = 0.95) -> list[Interval]:
        """``interval`` of many arrays with one matrix product (what a curve of many points needs)."""
        per_seed = np.stack([_per_seed(v) for v in values])
        found = seed_t_interval(per_seed.mean(axis=-1), shared_variance(self.seed_replicates(per_seed)), level,
                                self.shared_df)  # fmt: skip
        fields = ("estimate", "low", "high", "se", "df")
        return [Interval(*(float(getattr(found, f)[i]) for f in fields)) for i in range(len(values))]

    def ratio_interval(self, numerator: np.ndarray, denominator: np.ndarray, level: float = 0.95
                       ) -> tuple[float, float]:  # fmt: skip
        """Fieller's interval (``fieller_interval``) of mean(numerator) / mean(denominator), both (T, N)."""
        num, den = _per_seed(numerator), _per_seed(denominator)
        reps = self.seed_replicates(np.stack([num, den, num + den]))
        var_num, var_den, var_sum = shared_variance(reps)
        cross = (var_sum - var_num - var_den) / 2
        shared = np.array([[var_num, cross], [cross, var_den]])
        return fieller_interval(num.mean(axis=1), den.mean(axis=1), shared, level, self.shared_df)

    def improvement(self, first: np.ndarray, second: np.ndarray, names: tuple[str, str]
                    ) -> tuple[float, np.ndarray]:  # fmt: skip
        """Probability of improvement of ``first`` over ``second`` (rliable's, per TRM seed then averaged):
        the share of run pairs within a TRM seed where ``first``'s mean is higher (ties count half).
        Returns the point estimate and (B,) hierarchical replicates."""
        point = _pair_share(first.mean(axis=2)[None], second.mean(axis=2)[None], None, None)[0].mean()
        la, lb = self.learners(first.shape[1], names[0]), self.learners(second.shape[1], names[1])
        per_trm = _pair_share(self.run_means(first), self.run_means(second), la, lb)
        return float(point), (self.trm * per_trm).sum(axis=1) / first.shape[0]


def _pair_share(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None, wb: np.ndarray | None) -> np.ndarray:
    """(B, T): weighted share of (r_a, r_b) pairs with a > b (ties half) for run means a (B, T, Ra), b (B, T, Rb)."""
    wins = (a[..., :, None] > b[..., None, :]) + 0.5 * (a[..., :, None] == b[..., None, :])
    wa = np.ones(a.shape) if wa is None else wa
    wb = np.ones(b.shape) if wb is None else wb
    weights = wa[..., :, None] * wb[..., None, :]
    return (weights * wins).sum(axis=(2, 3)) / weights.sum(axis=(2, 3))
