"""The checkpoints shipped inside the package reproduce their recorded metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm_env import TinyRecursiveModel
from trm_env.tasks import load_task
from trm_env.training import TrainConfig, evaluate_steps, train

SHIPPED = Path(__file__).resolve().parents[1] / "trm_env" / "checkpoints"
TASKS = ("sp500", "regime-chain")


def _recorded(name: str) -> tuple[dict, dict]:
    folder = SHIPPED / name
    return json.loads((folder / "config.json").read_text()), json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("name", TASKS)
def test_shipped_checkpoint_is_small_and_reproduces_its_metrics(name: str):
    assert (SHIPPED / name / "model.pt").stat().st_size < 1_000_000
    config, metrics = _recorded(name)
    task = load_task(config["task"], **config["train"]["task_kwargs"])
    assert task.fingerprint() == config["task_fingerprint"], "the task data changed since the checkpoint"
    model = TinyRecursiveModel.load(SHIPPED / name, input_dim=task.num_features)
    for split in ("val", "test"):
        now = evaluate_steps(model, task, split, config["train"]["pnl_scale"])
        for key in ("accuracy", "mean_pnl", "profit_weighted_ce"):
            np.testing.assert_allclose(now[key], metrics[split][key], rtol=0, atol=1e-6, err_msg=f"{split} {key}")
        assert now["halt_head"]["histogram"] == metrics[split]["halt_head"]["histogram"]


def test_regime_chain_checkpoint_meets_the_depth_bar():
    _, metrics = _recorded("regime-chain")
    accuracy = metrics["test"]["accuracy"]
    assert accuracy[-1] >= accuracy[0] + 0.15


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_retraining_from_the_stored_config_lands_within_tolerance(name: str):
    config, metrics = _recorded(name)
    _, fresh = train(TrainConfig(**config["train"]), progress=False)
    for key, tol in (("accuracy", 0.02), ("profit_weighted_ce", 0.02)):
        assert abs(fresh["test"][key][-1] - metrics["test"][key][-1]) <= tol, key
