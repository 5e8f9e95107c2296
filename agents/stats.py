"""Bootstrap confidence intervals that follow the structure of the data.

A bootstrap replicate is a vector of non-negative sample weights (how often each sample was drawn);
a statistic's replicates are weighted means, so one (B, N) weight matrix serves every column and
every policy point of a task at the cost of one matrix product.

- ``sample_weights``: i.i.d. resampling of samples, or ``arch``'s circular blocks of consecutive samples
  (for market days whose labels overlap), from a seeded Generator.
- ``cluster_means``: one value per sample, seeds averaged within the sample first (a cluster bootstrap:
  several seeds of the same sample are not independent observations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from arch.bootstrap import CircularBlockBootstrap

__all__ = ["cluster_means", "percentile_interval", "sample_weights", "weighted_means"]

N_RESAMPLES = 2000


def sample_weights(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0, block_length: int = 1) -> np.ndarray:
    """(n_resamples, n) draw counts of a bootstrap over n samples; blocks of ``block_length`` wrap around."""
    if n < 1 or block_length < 1:
        raise ValueError(f"need n >= 1 and block_length >= 1, got n={n}, block_length={block_length}")
    rng = np.random.default_rng(seed)
    if block_length == 1:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    sampler = CircularBlockBootstrap(block_length, np.arange(n), seed=rng)
    return np.stack([np.bincount(sampler.update_indices(), minlength=n) for _ in range(n_resamples)]).astype(float)


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
