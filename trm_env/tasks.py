"""Tasks: which of 8 strategies to pick for each sample, and the pnl every choice would realize.

``load_task(name, **overrides) -> Task`` is the one entry point:

- ``"sp500"``, ``"nasdaq"``: real daily prices shipped inside the ``arch`` package (see ``trm_env.market``).
- ``"csv"``: the user's own daily prices, ``load_task("csv", path="prices.csv")`` (CSV or Parquet).
- ``"regime-chain"``: the synthetic task where more recursion steps provably help (``trm_env.synthetic``).

A ``Task`` holds plain numpy arrays plus the chronological train/val/test index arrays; it hands
torch tensors and DataLoaders to training code so nobody rebuilds them.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["SPLITS", "TASK_NAMES", "Task", "load_task", "standardise"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Task:
    """One strategy-selection data set.

    Arrays (N samples, F features, 8 strategies): ``features`` (N, F) float32 standardised with
    train-split statistics; ``labels`` (N,) int64 = argmax of ``pnl_matrix``; ``pnl`` (N,) float32 =
    pnl of the labelled strategy; ``pnl_matrix`` (N, 8) float32; ``dates`` (N,) (a sample index for
    synthetic data); ``difficulty`` (N,) int64 or None.

    ``n_chunks``/``chunk_dim`` describe the stream input mode: when ``n_chunks > 0`` the last
    ``n_chunks * chunk_dim`` feature columns are per-step chunks, and recursion step t sees chunk t.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    pnl: np.ndarray
    pnl_matrix: np.ndarray
    dates: np.ndarray
    splits: dict[str, np.ndarray]
    strategy_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    difficulty: np.ndarray | None = None
    n_chunks: int = 0
    chunk_dim: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.features.shape[0] != n or self.pnl.shape != (n,) or self.pnl_matrix.shape[0] != n:
            raise ValueError(
                f"Task {self.name!r}: features {self.features.shape}, labels ({n},), pnl {self.pnl.shape} "
                f"and pnl_matrix {self.pnl_matrix.shape} disagree on the sample count"
            )
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"Task {self.name!r}: splits must be exactly {SPLITS}, got {sorted(self.splits)}")
        for array in (self.features, self.labels, self.pnl, self.pnl_matrix, self.dates, self.difficulty):
            if array is not None:
                array.setflags(write=False)
        for index in self.splits.values():
            index.setflags(write=False)

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.pnl_matrix.shape[1])

    def split(self, name: str) -> np.ndarray:
        """Sorted int64 sample indices of split ``name`` ("train", "val" or "test")."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; valid splits: {list(SPLITS)}")
        return self.splits[name]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features, labels, pnl)`` of a split as torch tensors (float32, int64, float32)."""
        index = self.split(split)
        return (
            torch.from_numpy(np.ascontiguousarray(self.features[index])),
            torch.from_numpy(np.ascontiguousarray(self.labels[index])),
            torch.from_numpy(np.ascontiguousarray(self.pnl[index])),
        )

    def loader(self, split: str, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        """A DataLoader of ``(features, labels, pnl)`` batches; shuffling is seeded."""
        generator = torch.Generator().manual_seed(seed)
        dataset = TensorDataset(*self.tensors(split))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def fingerprint(self) -> str:
        """A short hash of the task's data: features, labels, pnl matrix and splits."""
        digest = hashlib.sha256()
        for array in (self.features, self.labels, self.pnl_matrix, *(self.splits[s] for s in SPLITS)):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def class_table(self, split: str = "train") -> pd.DataFrame:
        """Per-strategy count, share and mean label pnl on a split."""
        index = self.split(split)
        labels, pnl = self.labels[index], self.pnl[index]
        counts = np.bincount(labels, minlength=self.num_classes)
        sums = np.bincount(labels, weights=pnl, minlength=self.num_classes)
        return pd.DataFrame(
            {
                "strategy": list(self.strategy_names),
                "count": counts,
                "share": counts / max(len(index), 1),
                "mean_pnl": np.divide(sums, counts, out=np.zeros(self.num_classes), where=counts > 0),
            }
        )


def standardise(features: np.ndarray, train_index: np.ndarray) -> np.ndarray:
    """Z-score every column with mean and std of the train rows only (constant columns keep std 1)."""
    train = features[train_index].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return ((features - mean) / std).astype(np.float32)


def _loaders() -> dict[str, Callable[..., Task]]:
    from trm_env import market, synthetic

    return {
        "sp500": market.load_arch_task,
        "nasdaq": market.load_arch_task,
        "csv": market.load_csv_task,
        synthetic.NAME: synthetic.load_regime_chain,
    }


TASK_NAMES = ("sp500", "nasdaq", "csv", "regime-chain")


def _check_overrides(name: str, overrides: dict[str, Any]) -> None:
    """Unknown keyword overrides (or a csv task without ``path``) are a ``ValueError`` naming the valid ones."""
    from trm_env import market, synthetic

    target = synthetic.load_regime_chain if name == synthetic.NAME else market.build_market_task
    valid = set(inspect.signature(target).parameters) - {"prices", "name", "source"}
    valid |= {"path"} if name == "csv" else set()
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for task {name!r}; valid: {sorted(valid)}")
    if name == "csv" and "path" not in overrides:
        raise ValueError("task 'csv' needs path=<your prices .csv or .parquet>")


def _build(name: str, overrides: dict[str, Any]) -> Task:
    _check_overrides(name, overrides)
    loader = _loaders()[name]
    return loader(name, **overrides) if name in ("sp500", "nasdaq") else loader(**overrides)


@lru_cache(maxsize=16)
def _cached(name: str, items: tuple[tuple[str, Any], ...]) -> Task:
    return _build(name, dict(items))


def load_task(name: str, **overrides: Any) -> Task:
    """Load a task by name; keyword overrides (horizon, cost, split dates, n, seed, ...) go to its loader.

    Built-in tasks are cached per process (their arrays are read-only), so repeated calls are free;
    ``"csv"`` is read afresh every time since the file may change.
    """
    if not isinstance(name, str) or name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; valid tasks: {list(TASK_NAMES)}")
    items = tuple(sorted(overrides.items()))
    try:
        hash(items)
    except TypeError:
        return _build(name, overrides)
    return _build(name, overrides) if name == "csv" else _cached(name, items)
