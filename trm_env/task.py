"""``Task``: one strategy-selection data set as plain numpy arrays plus its chronological splits.

Every loader (``market``, ``synthetic``) builds one; ``trm_env.tasks.load_task`` is the entry point.
A ``Task`` hands torch tensors and DataLoaders to training code so nobody rebuilds them, and its
``key()`` is the content digest that every cache of derived tables (rollouts, stages) is keyed on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["SPLITS", "SYNTHETIC_FRACTIONS", "Task", "split_by_fractions", "standardise"]

# train: the TRM fits here. halt: every halting learner (RL, fitted-Q, post-hoc heads) fits here, on data
# the TRM never saw. val: every choice (knobs, costs, hyperparameters; the TRM's early stopping). test: reports.
SPLITS = ("train", "halt", "val", "test")
SYNTHETIC_FRACTIONS = (0.55, 0.2, 0.1, 0.15)  # of SPLITS, for the i.i.d. synthetic tasks


@dataclass(frozen=True, eq=False)
class Task:
    """One strategy-selection data set.

    Arrays (N samples, F features, C strategies): ``features`` (N, F) float32 standardised with
    train-split statistics; ``labels`` (N,) int64 = argmax of ``pnl_matrix``; ``pnl`` (N,) float32 =
    pnl of the labelled strategy; ``pnl_matrix`` (N, C) float32; ``dates`` (N,) (a sample index for
    synthetic data); ``difficulty`` (N,) int64 or None; ``reference_steps``: per-sample halting steps
    (N,) of privileged rules the task defines (rules that read what no halting policy sees, such as
    the step at which the answer arrives), shown beside the learned policies as references.

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
    reference_steps: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.features.shape[0] != n or self.pnl.shape != (n,) or self.pnl_matrix.shape[0] != n:
            raise ValueError(
                f"Task {self.name!r}: features {self.features.shape}, labels ({n},), pnl {self.pnl.shape} "
                f"and pnl_matrix {self.pnl_matrix.shape} disagree on the sample count"
            )
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"Task {self.name!r}: splits must be exactly {SPLITS}, got {sorted(self.splits)}")
        for name, steps in self.reference_steps.items():
            if steps.shape != (n,):
                raise ValueError(f"Task {self.name!r}: reference_steps[{name!r}] has shape {steps.shape}, need ({n},)")
        for array in (self.features, self.labels, self.pnl, self.pnl_matrix, self.dates, self.difficulty,
                      *self.reference_steps.values()):  # fmt: skip
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

    @property
    def horizon(self) -> int:
        """How many consecutive samples one label spans (market: the pnl horizon in days; i.i.d. data: 1)."""
        return int(self.params.get("horizon", 1))

    def split(self, name: str) -> np.ndarray:
        """Sorted int64 sample indices of split ``name`` ("train", "halt", "val" or "test")."""
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

    @cached_property
    def _key(self) -> str:
        digest = hashlib.sha256(json.dumps([self.name, self.n_chunks, self.chunk_dim]).encode())
        arrays = (self.features, self.labels, self.pnl, self.pnl_matrix, self.dates, self.difficulty,
                  *(self.splits[s] for s in SPLITS), *(self.reference_steps[k] for k in sorted(self.reference_steps)))
        digest.update(json.dumps(sorted(self.reference_steps)).encode())
        for array in arrays:
            digest.update(b"none" if array is None else f"{array.dtype}{array.shape}".encode())
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def key(self) -> str:
        """sha256 of everything that shapes a table derived from the task: name, every array, chunking, splits."""
        return self._key

    def fingerprint(self) -> str:
        """The first 16 hex digits of ``key()`` (recorded in run directories)."""
        return self._key[:16]

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


def split_by_fractions(n: int, fractions: tuple[float, ...] = SYNTHETIC_FRACTIONS) -> dict[str, np.ndarray]:
    """Consecutive index ranges of ``SPLITS`` with the given fractions of ``n`` samples (i.i.d. data)."""
    if len(fractions) != len(SPLITS) or any(not f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be {len(SPLITS)} positive numbers summing to 1 ({SPLITS}), got {fractions}")
    edges = np.round(np.cumsum((0.0, *fractions)) * n).astype(int)
    return {name: np.arange(lo, hi, dtype=np.int64) for name, lo, hi in zip(SPLITS, edges[:-1], edges[1:], strict=True)}


def standardise(features: np.ndarray, train_index: np.ndarray) -> np.ndarray:
    """Z-score every column with mean and std of the train rows only (constant columns keep std 1)."""
    train = features[train_index].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return ((features - mean) / std).astype(np.float32)
