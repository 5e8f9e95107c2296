"""The percentile levels behind every printed interval and latency: curves' and paired differences' bootstrap
CIs at their level, the verdict's run-level range at 95%, and latency p50/p99 (live and in the study's stage)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import hand_rollouts

import agents.live as live_module
import agents.measure as measure_module
from agents import evaluate_live
from agents.curves import curve_from_episodes, paired_difference
from agents.measure import LATENCY_FAMILIES
from agents.policies import FixedDepthPolicy, make_policy
from agents.stats import Draws
from agents.study import Results, verdict
from trm_env.model import TinyRecursiveModel
from trm_env.task import Task

Z_975 = 1.959963984540054


def _episodes(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """One point's episodes: n samples, correct with probability 0.6, returns N(shift, 1)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n) + shift
    return pd.DataFrame({"task": "hand", "policy": f"p{shift:g}", "param": 1.0, "seed": 0, "index": np.arange(n),
                         "halt_step": 1, "correct": (rng.uniform(size=n) < 0.6).astype(float), "pnl": 0.0,
                         "profit_weighted_ce": values, "episode_return": values})  # fmt: skip


def _normal_half_width(values: np.ndarray) -> float:
    return Z_975 * values.std(ddof=1) / np.sqrt(len(values))


def test_curve_intervals_are_at_their_level() -> None:
    """With 400 samples the 95% bootstrap CI is the normal one (within sampling noise); 50% is much narrower."""
    episodes = _episodes(400)
    wide = curve_from_episodes(episodes).iloc[0]
    narrow = curve_from_episodes(episodes, confidence_level=0.5).iloc[0]
    for column in ("profit_weighted_ce", "accuracy"):
        source = episodes["profit_weighted_ce" if column == "profit_weighted_ce" else "correct"].to_numpy()
        half = (wide[f"{column}_hi"] - wide[f"{column}_lo"]) / 2
        assert half == pytest.approx(_normal_half_width(source), rel=0.08), column
        assert wide[f"{column}_lo"] < narrow[f"{column}_lo"] < narrow[f"{column}_hi"] < wide[f"{column}_hi"]
        ratio = (narrow[f"{column}_hi"] - narrow[f"{column}_lo"]) / (2 * half)
        assert ratio == pytest.approx(0.6744897501960817 / Z_975, rel=0.15), column  # the 75th percentile's z


def test_paired_difference_is_a_95_percent_interval() -> None:
    first, second = _episodes(400, 0.0, seed=1), _episodes(400, 0.3, seed=2)
    estimate, low, high = paired_difference(pd.concat([first, second]), ("p0", 1.0), ("p0.3", 1.0))
    differences = first["episode_return"].to_numpy() - second["episode_return"].to_numpy()
    assert estimate == pytest.approx(differences.mean())
    assert (high - low) / 2 == pytest.approx(_normal_half_width(differences), rel=0.08)


def test_verdict_run_level_range_is_the_95_percent_range_of_its_replicates() -> None:
    """Three TRM seeds, three learner seeds of ``a`` against one run of ``b``."""
    rng = np.random.default_rng(0)
    n, k = 30, 3
    results = Results("hand", [0, 1, 2], 0.01)
    for trm in range(3):
        results.tables[(trm, "test")] = hand_rollouts(rng.normal(size=(n, k)))
        for seed in range(3):
            results.add(trm, "test", {"policy": "a", "param": 0.0, "seed": seed}, rng.integers(1, k + 1, n))
        results.add(trm, "test", {"policy": "b", "param": 0.0, "seed": 0}, rng.integers(1, k + 1, n))
    chosen = pd.DataFrame({"policy": ["a", "b"], "param": [0.0, 0.0]})
    draws = Draws.make(3, n, n_resamples=400, seed=0)
    line = verdict(results, chosen, draws, "a", "b")
    a, b = (results.arrays(results.point("test", f, 0.0))["episode_return"] for f in ("a", "b"))
    point, replicates = draws.improvement(a, b, ("a", "b"))
    assert line["poi_runs"] == point and replicates.std() > 0
    assert (line["poi_runs_lo"], line["poi_runs_hi"]) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))


def test_live_latency_is_reported_at_p50_and_p99(ten_class: tuple[Task, TinyRecursiveModel],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Per-sample latencies of 0, 1, ..., 119 ms: p50 59.5 ms, p99 117.81 ms."""
    task, model = ten_class
    real = live_module.halt_live

    def known_latencies(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real(*args, **kwargs)
        return replace(run, latency_s=np.arange(len(run.halt_step)) / 1000)

    monkeypatch.setattr(live_module, "halt_live", known_latencies)
    frame = evaluate_live(FixedDepthPolicy(2), task, "test", checkpoint=model)
    assert len(frame) == 120
    compute = frame.attrs["compute"]
    assert (compute["latency_p50_ms"], compute["latency_p99_ms"]) == pytest.approx((59.5, 117.81))


def test_the_live_stage_reports_latency_at_p50_and_p99(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latencies of 0..100 ms: p50 50 ms and p99 99 ms, for full depth and each timed family."""
    seconds = np.arange(101) / 1000
    monkeypatch.setattr(measure_module, "full_depth", lambda *args, **kwargs: seconds)
    monkeypatch.setattr(measure_module, "halt_live", lambda *args, **kwargs: SimpleNamespace(latency_s=2 * seconds))
    table = hand_rollouts(np.zeros((4, 3)))
    family = LATENCY_FAMILIES[0]
    policies = {family: make_policy(family, 0.5) if family == "halt_head" else FixedDepthPolicy(1)}
    found = measure_module._latency(None, None, policies, table, 0.01)
    assert found["full_depth"] == pytest.approx({"p50_ms": 50.0, "p99_ms": 99.0})
    assert found[family] == pytest.approx({"p50_ms": 100.0, "p99_ms": 198.0})
