"""Bootstrap confidence intervals that follow the structure of the data.

A result is an array ``values[t, r, n]``: TRM seed t, learner seed r (RL or random seeds; 1 for
deterministic rules), sample n. The same samples appear under every seed (the design is crossed), so
a bootstrap replicate draws, once for all policies of a task,

- TRM seeds with replacement (``Draws.trm``, counts (B, T)),
- sample weights: i.i.d. counts, or ``arch``'s circular blocks of consecutive samples for market days
  whose labels overlap (``Draws.samples``, (B, N)),

and, per policy family, learner seeds with replacement within each drawn TRM seed. A replicate's
statistic is then a weighted mean, so one matrix product serves every point. Paired comparisons of two
families use the same TRM and sample draws on both sides. ``cluster_means`` and ``sample_weights``
serve the one-level (seeds averaged within a sample) bootstrap of single-run curves.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

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


@dataclass(frozen=True, eq=False)
class Draws:
    """One task's bootstrap draws: TRM-seed counts (B, T) and sample weights (B, N), from ``seed``."""

    trm: np.ndarray
    samples: np.ndarray
    seed: int

    @classmethod
    def make(cls, n_trm: int, n_samples: int, n_resamples: int = N_RESAMPLES, seed: int = 0,
             block: int = 1) -> Draws:  # fmt: skip
        rng = np.random.default_rng(seed)
        trm = rng.multinomial(n_trm, np.full(n_trm, 1.0 / n_trm), size=n_resamples).astype(float)
        return cls(trm, sample_weights(n_samples, n_resamples, seed + 1, block), seed)

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

    def replicates_many(self, values: list[np.ndarray], families: list[str]) -> list[np.ndarray]:
        """``replicates`` of many (T, R_i, N) arrays with one matrix product (what a curve of many points needs)."""
        flat = np.concatenate([v.reshape(-1, v.shape[-1]) for v in values]).T
        means, out, start = self._normalised @ flat, [], 0
        for v, family in zip(values, families, strict=True):
            width = v.shape[0] * v.shape[1]
            out.append(self.combine(means[:, start : start + width].reshape(-1, *v.shape[:2]), family))
            start += width
        return out

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
