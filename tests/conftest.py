"""Test-session settings: rollout tables are cached on disk in a fresh folder of this session only, and
every load checks all their digests (``TRM_ENV_VERIFY``)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

os.environ["TRM_ENV_CACHE_DIR"] = tempfile.mkdtemp(prefix="trm_env_test_cache_")
os.environ["TRM_ENV_VERIFY"] = "1"  # every table loaded in the suite is checked against its digests

import numpy as np
import pytest

from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import REWARDS, Rollouts, observation_layout
from trm_env.task import Task, split_by_fractions
from trm_env.training import TrainConfig, train


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module (scripts are not a package), this checkout's copy."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ten_class_task(n: int = 600, seed: int = 0) -> Task:
    """A small hand-made task with 10 classes: features carry a noisy one-hot of the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    features = (np.eye(10)[labels] + 0.8 * rng.standard_normal((n, 10))).astype(np.float32)
    size = 0.02 * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = (-size[:, None] * rng.uniform(0.2, 1.0, size=(n, 10))).astype(np.float32)
    pnl_matrix[np.arange(n), labels] = size
    return Task(name="ten-class", features=features, labels=labels.astype(np.int64),
                pnl=pnl_matrix[np.arange(n), labels], pnl_matrix=pnl_matrix, dates=np.arange(n),
                splits=split_by_fractions(n, (0.5, 0.2, 0.1, 0.2)),
                strategy_names=tuple(f"c{i}" for i in range(10)), feature_names=tuple(f"f{i}" for i in range(10)),
                difficulty=rng.integers(1, 4, size=n))  # fmt: skip


@pytest.fixture(scope="session")
def ten_class() -> tuple[Task, TinyRecursiveModel]:
    """The 10-class task and a TRM trained on it for a few seconds (K = 6, pnl_scale 0.03)."""
    task = ten_class_task()
    config = TrainConfig(task="ten-class", hidden_dim=16, max_steps=6, epochs=3, pnl_scale=0.03, class_weights=False)
    model, _ = train(config, task=task, progress=False, tensorboard=False)
    return task, model


def hand_rollouts(rewards: np.ndarray, features: np.ndarray | None = None, name: str = "hand") -> Rollouts:
    """A hand-made table: (N, K) terminal rewards; ``features`` (N, K, H) fill the latent columns.

    Two classes; the step fraction column is filled, the probabilities are uniform; the rewards of every
    mode are ``rewards``.
    """
    n, k = rewards.shape
    features = np.zeros((n, k, 1)) if features is None else features
    layout = observation_layout(2, features.shape[-1])
    observations = np.zeros((n, k, layout["latent"].stop), dtype=np.float32)
    observations[..., layout["probs"]] = 0.5
    observations[..., layout["max_prob"]] = 0.5
    observations[..., layout["step_fraction"]] = (np.arange(1, k + 1) / k)[None, :, None]
    observations[..., layout["latent"]] = features
    zeros, summary = np.zeros((n, k)), layout["latent"].start
    return Rollouts(key=name, task_name=name, split="halt",
                    observations={"summary": observations[..., :summary].copy(), "latent": observations},
                    halt_reward=dict.fromkeys(REWARDS, rewards.astype(float)), prediction=zeros.astype(np.int64),
                    correct=zeros.astype(bool), pnl=zeros, profit_weighted_ce=-rewards, halt_prob=zeros,
                    index=np.arange(n), label=np.zeros(n, dtype=np.int64), difficulty=None, date=None,
                    reference_steps={}, layout=layout, num_classes=2, max_steps=k, pnl_scale=0.05, horizon=1,
                    strategy_names=("a", "b"))  # fmt: skip
