"""The generic Task, the synthetic regime-chain task and the quality script's functions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from trm_env.loss import profit_weighted_ce
from trm_env.synthetic import load_regime_chain
from trm_env.tasks import SPLITS, TASK_NAMES, Task, load_task, standardise

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "experiments" / "quality.py"
N = 600


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task("regime-chain", n=N, seed=3)


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raw_chunks(task: Task) -> np.ndarray:
    """Undo the standardisation of a noise-free task: every column holds two levels, 0 and 1 (N, T, 9)."""
    low, high = task.features.min(0), task.features.max(0)
    return (task.features > (low + high) / 2).reshape(len(task.labels), task.n_chunks, task.chunk_dim)


# ---- regime-chain shapes and content -------------------------------------------------------------


def test_shapes_and_dtypes(task: Task) -> None:
    assert task.features.shape == (N, task.n_chunks * task.chunk_dim) and task.features.dtype == np.float32
    assert task.labels.shape == (N,) and task.labels.dtype == np.int64
    assert task.labels.min() >= 0 and task.labels.max() < 8
    assert task.pnl.shape == (N,) and task.pnl.dtype == np.float32
    assert task.pnl_matrix.shape == (N, 8) and task.pnl_matrix.dtype == np.float32
    np.testing.assert_array_equal(task.pnl, task.pnl_matrix[np.arange(N), task.labels])
    assert task.difficulty is not None and task.difficulty.dtype.kind == "i"
    assert task.difficulty.min() >= 1 and task.difficulty.max() <= 8
    np.testing.assert_array_equal(task.dates, np.arange(N))
    assert len(task.strategy_names) == 8 and len(task.feature_names) == task.num_features
    assert (task.num_classes, task.chunk_dim) == (8, 9)


def test_label_is_argmax_of_pnl_matrix(task: Task) -> None:
    np.testing.assert_array_equal(task.labels, task.pnl_matrix.argmax(1))
    assert (task.pnl > 0).all() and (np.sort(task.pnl_matrix, 1)[:, -2] < 0).all()


def test_deterministic_per_seed() -> None:
    a, b, c = load_regime_chain(n=N, seed=5), load_regime_chain(n=N, seed=5), load_regime_chain(n=N, seed=6)
    for name in ("features", "labels", "pnl", "pnl_matrix", "difficulty"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.features, c.features) and not np.array_equal(a.labels, c.labels)


def test_splits_sorted_disjoint_and_covering(task: Task) -> None:
    parts = [task.split(s) for s in SPLITS]
    for part in parts:
        assert part.dtype == np.int64 and len(part) > 0 and (np.diff(part) > 0).all()
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(N))


def test_standardisation_uses_the_train_split_only(task: Task) -> None:
    train = task.features[task.split("train")].astype(np.float64)
    std = train.std(0)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std[std > 1e-6], 1.0, atol=1e-4)
    raw = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4))
    moved = raw.copy()
    moved[40:] *= 100.0  # change the non-train rows only
    np.testing.assert_array_equal(standardise(raw, np.arange(40))[:40], standardise(moved, np.arange(40))[:40])


def test_stream_structure_without_noise() -> None:
    task = load_regime_chain(n=N, seed=2, noise=0.0)
    chunks = _raw_chunks(task)
    votes, final = chunks[..., :8], chunks[..., 8]
    step = np.arange(1, task.n_chunks + 1)[None, :]
    d = task.difficulty[:, None]
    np.testing.assert_array_equal(final, step == d)  # the final flag sits exactly at chunk d
    np.testing.assert_array_equal(votes.sum(-1), step <= d)  # one vote per report up to d, none after
    np.testing.assert_array_equal(votes[np.arange(N), task.difficulty - 1].argmax(-1), task.labels)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n": 5}, "n"),
        ({"n_chunks": 4, "max_difficulty": 5}, "max_difficulty"),
        ({"hint": 1.5}, "hint"),
        ({"hint": -0.1}, "hint"),
        ({"noise": -0.1}, "noise"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        load_regime_chain(**kwargs)


# ---- the generic Task ----------------------------------------------------------------------------


def test_unknown_task_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        load_task("nope")
    assert all(name in str(info.value) for name in TASK_NAMES)


def test_unknown_split_raises(task: Task) -> None:
    with pytest.raises(ValueError, match="nope"):
        task.split("nope")


def test_task_rejects_inconsistent_arrays(task: Task) -> None:
    with pytest.raises(ValueError, match="sample count"):
        replace(task, labels=task.labels[:-1].copy())
    with pytest.raises(ValueError, match="splits"):
        replace(task, splits={"train": task.split("train")})


def test_arrays_are_read_only(task: Task) -> None:
    arrays = (task.features, task.labels, task.pnl, task.pnl_matrix, task.dates, task.difficulty)
    for array in (*arrays, task.split("val")):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 0


def test_tensors_and_loader(task: Task) -> None:
    x, y, pnl = task.tensors("train")
    assert (x.dtype, y.dtype, pnl.dtype) == (torch.float32, torch.int64, torch.float32)
    batches = list(task.loader("train", batch_size=128, shuffle=False))
    assert [len(b[0]) for b in batches] == [128] * (len(y) // 128) + ([len(y) % 128] if len(y) % 128 else [])
    for got, want in zip(map(torch.cat, zip(*batches, strict=True)), (x, y, pnl), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    def order(seed: int) -> torch.Tensor:
        """The first feature of every sample in shuffled order (continuous noise: unique per sample)."""
        return torch.cat([b[0][:, 0] for b in task.loader("train", batch_size=100, shuffle=True, seed=seed)])

    first, again, other = order(0), order(0), order(1)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    torch.testing.assert_close(first.sort().values, x[:, 0].sort().values, rtol=0, atol=0)


def test_class_table_sums_to_the_split(task: Task) -> None:
    for split in SPLITS:
        table = task.class_table(split)
        assert len(table) == 8 and table["count"].sum() == len(task.split(split))
        assert table["share"].sum() == pytest.approx(1.0)


def test_fingerprint_is_stable_and_tracks_the_data(task: Task) -> None:
    assert task.fingerprint() == load_regime_chain(n=N, seed=3).fingerprint()
    assert task.fingerprint() != load_regime_chain(n=N, seed=4).fingerprint()
    features = task.features.copy()
    features[0, 0] += 1.0
    assert replace(task, features=features).fingerprint() != task.fingerprint()


# ---- experiments/quality.py ----------------------------------------------------------------------


def test_depth_bar_on_the_shipped_checkpoint(quality: ModuleType) -> None:
    model, task, _ = quality.load_shipped("regime-chain")
    result = quality.depth_bar(model, task)
    assert result["gain"] >= 0.15 and result["gain_pass"]
    steps = result["per_difficulty"]
    assert steps[max(steps)]["step_to_90pct"] > steps[min(steps)]["step_to_90pct"] and result["ordering_pass"]
    assert sum(row["n"] for row in steps.values()) == len(task.split("test"))


def test_first_step_reaching(quality: ModuleType) -> None:
    assert quality.first_step_reaching(np.array([0.1, 0.5, 0.95, 1.0])) == 3
    assert quality.first_step_reaching(np.array([0.9, 0.8, 0.5])) == 1


def test_score_probs_matches_the_loss_and_pnl(quality: ModuleType, task: Task) -> None:
    index = task.split("test")
    logits = torch.randn(len(index), 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores = quality.score_probs(logits.softmax(-1).numpy(), task, "test")
    _, labels, pnl = task.tensors("test")
    assert scores["profit_weighted_ce"] == pytest.approx(float(profit_weighted_ce(logits, labels, pnl.double()).mean()))
    pred = logits.argmax(-1).numpy()
    assert scores["accuracy"] == pytest.approx((pred == task.labels[index]).mean())
    assert scores["mean_pnl"] == pytest.approx(task.pnl_matrix[index, pred].mean(), rel=1e-5)
    oracle = quality.score_probs(np.eye(8)[task.labels[index]], task, "test")
    assert oracle["accuracy"] == 1.0 and oracle["mean_pnl"] == pytest.approx(task.pnl[index].mean(), rel=1e-5)


def test_prior_baseline_predicts_the_train_majority(quality: ModuleType, task: Task) -> None:
    probs = quality.prior_baseline(task)
    assert probs.shape == (len(task.split("test")), 8)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == np.bincount(task.labels[task.split("train")]).argmax()).all()


def test_quality_script_help() -> None:
    done = subprocess.run([sys.executable, str(QUALITY), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--retrain" in done.stdout and "--out" in done.stdout


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("sp500", {"seed": 1}, r"unknown override\(s\) \['seed'\] for task 'sp500'"),
        ("regime-chain", {"horizon": 3}, r"unknown override\(s\) \['horizon'\].*valid: \['hint'"),
        ("csv", {}, "needs path="),
    ],
)
def test_unknown_overrides_are_named(name: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_task(name, **overrides)
