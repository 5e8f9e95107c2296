"""The rollout table: content keys, the on-disk cache, the layout, any class count, and the pnl scale."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import trm_env.io as io_module
from trm_env.env import HaltingEnv
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import Rollouts, as_rollouts, observation_layout, simulate
from trm_env.task import Task
from trm_env.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regime_chain() -> Task:
    return load_task("regime-chain")


def test_layout_is_contiguous_and_named() -> None:
    layout = observation_layout(10, 4)
    assert list(layout) == ["probs", "max_prob", "entropy", "halt_prob", "step_fraction", "movement", "kl_prev",
                            "entropy_delta", "stable_steps", "latent"]  # fmt: skip
    assert layout["probs"] == slice(0, 10) and layout["halt_prob"] == slice(12, 13)
    assert layout["latent"] == slice(18, 22)
    stops = [s.stop for s in layout.values()]
    assert [s.start for s in layout.values()] == [0, *stops[:-1]]


def test_table_shapes_and_consistency(regime_chain: Task) -> None:
    table = simulate(regime_chain, split="test")
    n, k = len(regime_chain.split("test")), 16
    assert table.observations["summary"].shape == (n, k, 16) and table.observations["latent"].shape == (n, k, 144)
    assert table.observations["summary"].dtype == np.float32
    np.testing.assert_array_equal(table.observations["latent"][..., :16], table.observations["summary"])
    for array in (table.prediction, table.correct, table.pnl, table.profit_weighted_ce, table.halt_prob,
                  *table.halt_reward.values()):  # fmt: skip
        assert array.shape == (n, k)
    np.testing.assert_array_equal(table.index, regime_chain.split("test"))
    np.testing.assert_array_equal(table.label, regime_chain.labels[table.index])
    np.testing.assert_array_equal(table.correct, table.prediction == table.label[:, None])
    np.testing.assert_array_equal(table.halt_reward["profit_weighted_ce"], -table.profit_weighted_ce)
    np.testing.assert_array_equal(table.halt_reward["correct"], table.correct.astype(float))
    np.testing.assert_allclose(table.halt_reward["pnl"], table.pnl / 0.05)
    layout, summary = table.layout, table.observations["summary"]
    np.testing.assert_allclose(summary[..., layout["halt_prob"]][..., 0], table.halt_prob, 1e-6)
    stable = summary[..., layout["stable_steps"]][..., 0]
    assert (stable[:, 0] == 1).all() and (np.diff(stable, axis=1) <= 1).all()
    same = table.prediction[:, 1:] == table.prediction[:, :-1]
    np.testing.assert_array_equal(stable[:, 1:][same], stable[:, :-1][same] + 1)
    assert (stable[:, 1:][~same] == 1).all()
    assert table.date is None and table.difficulty is not None and table.horizon == 1
    assert (table.num_classes, table.max_steps, table.pnl_scale) == (8, 16, 0.05)
    low, high = table.bounds("latent")
    assert (table.observations["latent"] >= low).all() and (table.observations["latent"] <= high).all()


def test_market_table_carries_dates_and_horizon() -> None:
    table = simulate("sp500", split="val")
    assert table.date is not None and np.issubdtype(table.date.dtype, np.datetime64)
    assert table.horizon == 5 and table.difficulty is None


def test_key_tracks_every_input(regime_chain: Task) -> None:
    """Defect 1: changing pnl (or any array, the split or K) gives a new table, never the cached one."""
    base = simulate(regime_chain, split="test")
    flipped = simulate(replace(regime_chain, pnl=-regime_chain.pnl), split="test")
    assert flipped.key != base.key
    assert not np.allclose(flipped.halt_reward["profit_weighted_ce"], base.halt_reward["profit_weighted_ce"])
    changed = {
        "difficulty": replace(regime_chain, difficulty=regime_chain.difficulty + 1),
        "pnl_matrix": replace(regime_chain, pnl_matrix=regime_chain.pnl_matrix * 2),
        "labels": replace(regime_chain, labels=(regime_chain.labels + 1) % 8),
        "splits": replace(regime_chain, splits={**regime_chain.splits, "test": regime_chain.splits["test"][1:]}),
    }
    for name, task in changed.items():
        assert task.key() != regime_chain.key(), name
        assert simulate(task, split="test").key != base.key, name
    assert simulate(regime_chain, split="val").key != base.key
    assert simulate(regime_chain, split="test", max_steps=8).key != base.key
    assert simulate(regime_chain, split="test") is base


def test_save_load_round_trip(regime_chain: Task, tmp_path: Path) -> None:
    table = simulate(regime_chain, split="val")
    table.save(tmp_path / "val")
    loaded = Rollouts.load(tmp_path / "val")
    assert loaded.key == table.key and loaded.layout == table.layout and loaded.strategy_names == table.strategy_names
    for name in ("prediction", "correct", "pnl", "profit_weighted_ce", "halt_prob", "index", "label", "difficulty"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
    for mode in table.observations:
        np.testing.assert_array_equal(loaded.observations[mode], table.observations[mode])
    with pytest.raises(ValueError, match=r"meta\.json"):
        Rollouts.load(tmp_path)
    env = HaltingEnv(rollouts=tmp_path / "val")
    assert (env.task_name, env.split, env.num_samples) == ("regime-chain", "val", table.num_samples)
    with pytest.raises(ValueError, match="split='test' disagrees"):
        HaltingEnv(rollouts=table, split="test")
    with pytest.raises(ValueError, match="task='sp500' disagrees"):
        HaltingEnv(task="sp500", rollouts=table)


def _run(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRM_ENV_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_a_fresh_process_loads_the_saved_table(tmp_path: Path) -> None:
    """The disk cache: a second process finds the table by key and never simulates."""
    first = _run("import trm_env.rollouts as r\nprint(r.simulate('regime-chain', split='test').key)", tmp_path)
    assert first.returncode == 0, first.stderr
    cached = [p.name for p in tmp_path.iterdir() if (p / "meta.json").is_file()]
    assert cached == [first.stdout.strip()]
    forbid = "import trm_env.rollouts as r\nr._simulate = None  # any simulation now fails\n"
    second = _run(forbid + "print(r.simulate('regime-chain', split='test').key)", tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    unseen = _run(forbid + "r.simulate('regime-chain', split='val')", tmp_path)  # not cached: it must simulate
    assert unseen.returncode != 0 and "NoneType" in unseen.stderr


def test_any_class_count_and_the_checkpoint_pnl_scale(ten_class: tuple[Task, TinyRecursiveModel]) -> None:
    """Defects 3 and 7: 10 classes shift the layout; the reward uses the checkpoint's pnl scale (0.03)."""
    task, model = ten_class
    table = simulate(task, model, split="test")
    assert table.num_classes == 10 and table.max_steps == 6 and table.pnl_scale == 0.03
    assert table.layout["halt_prob"] == slice(12, 13) and table.observations["summary"].shape[-1] == 18
    rows = task.split("test")
    with torch.no_grad():
        logits, _ = model.rollout(torch.from_numpy(task.features[rows]))
    ce = -torch.log_softmax(logits.double(), -1).gather(-1, torch.from_numpy(task.labels[rows])[:, None, None]
                                                         .expand(-1, 6, 1))[..., 0]  # fmt: skip
    weight = 1 - np.tanh(task.pnl[rows].astype(np.float64) / 0.03)
    np.testing.assert_allclose(table.halt_reward["profit_weighted_ce"], -(weight[:, None] * ce.numpy()), rtol=1e-5)
    np.testing.assert_allclose(table.halt_reward["pnl"], table.pnl / 0.03)


def test_pnl_scale_survives_save_and_load(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path) -> None:
    _, model = ten_class
    model.save(tmp_path / "model.pt")
    assert TinyRecursiveModel.load(tmp_path).pnl_scale == 0.03
    assert TinyRecursiveModel(input_dim=3).pnl_scale == 0.05


def test_as_rollouts_refuses_conflicts(regime_chain: Task) -> None:
    table = simulate(regime_chain, split="test")
    assert as_rollouts(table) is table and as_rollouts(table, split="test") is table
    with pytest.raises(ValueError, match="max_steps=4 disagrees"):
        as_rollouts(table, max_steps=4)
    with pytest.raises(ValueError, match="not both"):
        as_rollouts(table, checkpoint="x")
    with pytest.raises(TypeError, match="checkpoint must be"):
        simulate(regime_chain, checkpoint=3)
    with pytest.raises(TypeError, match="task must be"):
        simulate(3)


def test_atomic_writes_fsync_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 8: the data reaches the disk before the new name does."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(Path, "replace", lambda self, target: (events.append("rename"), real_replace(self, target))[1])
    io_module.write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert events[:2] == ["fsync", "rename"] and events.count("fsync") == 2  # the file, then its folder
