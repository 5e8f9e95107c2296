"""Bring your own model, end to end: early-exit MLPs on scikit-learn's digits exported as .npz per seed and split,
the whole study run on those tables (quick here, the full one in ``make test-slow``), the network as a stepper
(simulated and live), and a run config's ``tables`` checked before any work."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_script

from agents import HaltHeadPolicy, evaluate_live
from agents.evaluation import halting_steps
from agents.sources import read_table, source_digest
from trm_env.rollouts import simulate

SPLITS = ("train", "halt", "val", "test")
RULES = {"halt_head", "confidence", "kl_exit", "entropy_exit", "patience", "fixed_depth", "random", "oracle"}
CALIBRATED = {f"calibrated_{base}_a{alpha}" for base in ("halt_head", "fitted_q") for alpha in (0.01, 0.05)}


@pytest.fixture(scope="module")
def digits() -> ModuleType:
    return load_script("early_exit_digits")


@pytest.fixture(scope="module")
def quick_run(digits: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    assert digits.main(["--quick", "--seeds", "0", "1", "--out", str(out)]) == 0
    return out


def test_quick_digits_study_runs_end_to_end(quick_run: Path) -> None:
    for seed in (0, 1):
        for split in SPLITS:
            with np.load(quick_run / "tables" / f"seed{seed}" / f"{split}.npz") as data:
                assert sorted(data.files) == ["halt_logits", "labels", "logits"]
                n = {"train": 719, "val": 360}.get(split, 359)
                assert data["logits"].shape == (n, 6, 10) and data["halt_logits"].shape == (n, 6)
    summary = pd.read_csv(quick_run / "study" / "summary.csv")
    assert set(summary["policy"]) == RULES | {"rl_ppo", "fitted_q"} | CALIBRATED and (summary["n_trm_seeds"] == 2).all()
    assert "wall_ms_per_1k" not in summary and not (quick_run / "study" / "live").exists()  # no model: no live stage
    rows = summary.set_index("policy")
    assert rows.loc["fixed_depth", "gain"] == 0.0 and rows.loc["oracle", "gain"] > 0
    assert (rows["mean_return"] <= rows.loc["oracle", "mean_return"] + 1e-12).all()
    report = (quick_run / "study" / "report.md").read_text()
    assert "[digits] the models came as saved tables" in report and "![digits_mean_return.png]" in report
    curves = pd.read_csv(quick_run / "study" / "curves.csv")
    assert set(curves["split"]) == {"val", "test"} and set(curves.loc[curves["policy"] == "fixed_depth", "param"]) == {
        1, 2, 3, 4, 5, 6}
    results = (quick_run / "results.md").read_text()
    assert "Does halting pay on digits?" in results and "| fitted_q |" in results
    assert set(json.loads((quick_run / "timing.json").read_text())) == {"train_s", "export_s", "study_s"}
    config = json.loads((quick_run / "study.json").read_text())
    assert config["tables"]["digits"][1]["test"] == str(quick_run / "tables" / "seed1" / "test.npz")


def test_splits_are_stratified_random_and_disjoint(digits: ModuleType) -> None:
    task = digits.digits_task()
    sizes = {split: len(task.split(split)) for split in SPLITS}
    assert sizes == {"train": 719, "halt": 359, "val": 360, "test": 359}
    assert len(np.unique(np.concatenate([task.split(s) for s in SPLITS]))) == 1797
    for split, fraction in zip(SPLITS, digits.FRACTIONS, strict=True):
        counts = np.bincount(task.labels[task.split(split)], minlength=10)
        np.testing.assert_allclose(counts, fraction * np.bincount(task.labels), atol=1)
    assert not np.array_equal(task.split("test"), np.arange(1437, 1797))  # random, not the last images


def test_the_network_trains_reproducibly_and_is_a_stepper(digits: ModuleType, tmp_path: Path) -> None:
    """Same seed, same weights; the exported .npz, simulate on the network and live halting agree."""
    task = digits.digits_task()
    net, again = (digits.train_network(task, 0, 6, 2) for _ in range(2))
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(tensor, again.state_dict()[name], rtol=0, atol=0)
    paths = digits.export_tables(net, task, tmp_path)
    exported = read_table(Path(paths["test"]), "test", "digits")
    table = simulate(task, net, split="test", cache_dir=False)
    for mode in ("summary", "latent"):
        np.testing.assert_array_equal(exported.observations[mode], table.observations[mode])
    for name in ("prediction", "correct", "profit_weighted_ce", "halt_prob"):
        np.testing.assert_array_equal(getattr(exported, name), getattr(table, name))
    np.testing.assert_array_equal(exported.halt_reward["correct"], table.halt_reward["correct"])
    assert exported.has_halt_head and "pnl" in table.halt_reward and "pnl" not in exported.halt_reward
    policy = HaltHeadPolicy(0.7)
    live = evaluate_live(policy, task, "test", checkpoint=net, batch_size=50)  # rows of a batch at different blocks
    steps = halting_steps(policy, table)
    assert 1 < len(np.unique(steps))
    np.testing.assert_array_equal(live["halt_step"].to_numpy(), steps)
    np.testing.assert_array_equal(live["prediction"].to_numpy(), table.prediction[np.arange(359), steps - 1])


def _tables(folder: Path, seeds: int = 2) -> list[dict[str, str]]:
    rng, out = np.random.default_rng(0), []
    for seed in range(seeds):
        entry = {}
        for split in ("halt", "val", "test"):
            path = folder / f"s{seed}_{split}.npz"
            np.savez(path, logits=rng.normal(size=(20, 4, 3)), labels=rng.integers(0, 3, 20))
            entry[split] = str(path)
        out.append(entry)
    return out


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: {"tables": {"mine": t[:1]}}, r"tables\['mine'\] must list one \{split: path\} per TRM seed"),
    (lambda t: {"tables": {"mine": [{"halt": t[0]["halt"], "test": t[0]["test"]}, t[1]]}},
     r"must map each of \['halt', 'val', 'test'\]"),
    (lambda t: {"tables": {"mine": [{**t[0], "extra": t[0]["val"]}, t[1]]}}, r"must map each of"),
    (lambda t: {"tables": {"mine": [t[0], {**t[1], "val": "missing.npz"}]}}, r"no \.npz file or saved table folder"),
    (lambda t: {"tables": {"other": t}}, "tables must map tasks of the config"),
    (lambda t: {"tables": {"mine": t}, "checkpoints": {"mine": ["a", "b"]}}, "not both"),
])  # fmt: skip
def test_a_config_names_saved_tables_per_split_and_seed(tmp_path: Path, change, message: str) -> None:
    run = load_script("run")
    tables = _tables(tmp_path)
    good = {"tasks": ["mine"], "trm_seeds": [0, 1], "tables": {"mine": tables}}
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(good))
    assert run.load_config(str(path), retrain=False)["tables"] == {"mine": tables}
    path.write_text(json.dumps({**good, **change(tables)}))
    with pytest.raises(ValueError, match=message):
        run.load_config(str(path), retrain=False)


def test_saved_tables_are_read_checked_and_keyed(tmp_path: Path) -> None:
    (entry,) = _tables(tmp_path, seeds=1)
    table = read_table(Path(entry["val"]), "val", "mine")
    assert (table.split, table.task_name, table.max_steps) == ("val", "mine", 4)
    folder = table.save(tmp_path / "val_table")
    assert read_table(folder, "val", "mine").key == table.key
    with pytest.raises(ValueError, match="holds split 'val' of task 'mine', not split 'test'"):
        read_table(folder, "test", "mine")
    np.savez(tmp_path / "bad.npz", logits=np.zeros((3, 4, 2)), labels=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"bad\.npz.*labels must lie in \[0, 1\]"):
        read_table(tmp_path / "bad.npz", "val", "mine")
    paths = {split: Path(p) for split, p in entry.items()}
    digest = source_digest(paths)
    assert source_digest({**paths, "val": folder}) != digest
    np.savez(paths["test"], logits=np.zeros((20, 4, 3)), labels=np.zeros(20, int))
    assert source_digest(paths) != digest


@pytest.mark.slow  # three models, every family, 100k PPO steps per model: about a minute on 2 cores
def test_full_digits_study(digits: ModuleType, tmp_path: Path) -> None:
    assert digits.main(["--out", str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "study" / "summary.csv")
    learned = {"rl_ppo", "fitted_q", "correct_head", "continuation_head", "ponder", "act"}
    assert set(summary["policy"]) == RULES | learned and (summary["n_trm_seeds"] == 3).all()
    assert summary.set_index("policy").loc["fixed_depth", "param"] <= 8
    with np.load(tmp_path / "tables" / "seed2" / "test.npz") as data:
        assert data["logits"].shape == (359, 8, 10)
    assert "Does halting pay on digits?" in (tmp_path / "results.md").read_text()


def test_a_table_without_halt_logits_has_no_halt_head_family(tmp_path: Path) -> None:
    """The study skips the halt head where no halt logits were given (its column would be a constant 0.5)."""
    from agents.stages import evaluate_stage, load_points

    (entry,) = _tables(tmp_path, seeds=1)
    source = {split: Path(p) for split, p in entry.items()}
    settings = {"step_cost": 0.01, "random_seeds": [0], "learner_seeds": [0], "ponder_variants": [[0.2, 0.01]],
                "act_taus": [0.01]}  # fmt: skip
    evaluate_stage("mine", {}, source, "rules", settings, tmp_path / "rules.npz")
    points, steps = load_points(tmp_path / "rules.npz")
    families = {p["policy"] for p in points}
    assert "halt_head" not in families and {"confidence", "fixed_depth", "oracle"} <= families
    assert steps["test"].shape == (len(points), 20)
    for path in source.values():
        arrays = dict(np.load(path))
        np.savez(path, **arrays, halt_logits=np.ones((20, 4)))
    evaluate_stage("mine", {}, source, "rules", settings, tmp_path / "with_head.npz")
    assert "halt_head" in {p["policy"] for p in load_points(tmp_path / "with_head.npz")[0]}
