"""Test-session settings: rollout tables are cached on disk in a fresh folder of this session only."""

from __future__ import annotations

import os
import tempfile

os.environ["TRM_ENV_CACHE_DIR"] = tempfile.mkdtemp(prefix="trm_env_test_cache_")

import numpy as np
import pytest

from trm_env.model import TinyRecursiveModel
from trm_env.task import Task
from trm_env.training import TrainConfig, train


def ten_class_task(n: int = 600, seed: int = 0) -> Task:
    """A small hand-made task with 10 classes: features carry a noisy one-hot of the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    features = (np.eye(10)[labels] + 0.8 * rng.standard_normal((n, 10))).astype(np.float32)
    size = 0.02 * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = (-size[:, None] * rng.uniform(0.2, 1.0, size=(n, 10))).astype(np.float32)
    pnl_matrix[np.arange(n), labels] = size
    cut = np.cumsum([int(0.6 * n), int(0.2 * n)])
    splits = {name: np.arange(lo, hi, dtype=np.int64) for name, lo, hi in zip(("train", "val", "test"),
                                                                           (0, *cut), (*cut, n), strict=True)}
    return Task(name="ten-class", features=features, labels=labels.astype(np.int64),
                pnl=pnl_matrix[np.arange(n), labels], pnl_matrix=pnl_matrix, dates=np.arange(n), splits=splits,
                strategy_names=tuple(f"c{i}" for i in range(10)), feature_names=tuple(f"f{i}" for i in range(10)),
                difficulty=rng.integers(1, 4, size=n))  # fmt: skip


@pytest.fixture(scope="session")
def ten_class() -> tuple[Task, TinyRecursiveModel]:
    """The 10-class task and a TRM trained on it for a few seconds (K = 6, pnl_scale 0.03)."""
    task = ten_class_task()
    config = TrainConfig(task="ten-class", hidden_dim=16, max_steps=6, epochs=3, pnl_scale=0.03, class_weights=False)
    model, _ = train(config, task=task, progress=False, tensorboard=False)
    return task, model
