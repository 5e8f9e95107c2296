"""The study's calibrated exits (``agents.ltt_study``) on hand-made tables whose risks are known by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import hand_rollouts

from agents.ltt_study import (
    add_calibrated,
    chosen_risk,
    coverage,
    family_name,
    live_choices,
    mark_selected,
    parse_family,  # fmt: skip
)
from agents.measure import _at_seed, chosen_policy, deployable_choices
from agents.study import Results

K, N, COST = 3, 400, 0.01
WRONG_AT_2 = {(0, "val"): 8, (0, "test"): 12, (1, "val"): 30, (1, "test"): 20}  # samples wrong at step 2 (first ones)
EARLY = 10  # on TRM seed 1, halt_head 0.9 halts the first EARLY samples at step 2 (where they are wrong)


def _table(seed: int, split: str, market: bool):
    """Right at K everywhere; wrong at step 2 on the first WRONG_AT_2 samples, at step 1 on the first half."""
    correct = np.ones((N, K), dtype=bool)
    correct[: WRONG_AT_2[(seed, split)], 1] = False
    correct[: N // 2, 0] = False
    rewards = np.where(correct, 0.0, -1.0) + 0.001 * np.arange(N)[:, None] / N
    table = dataclasses.replace(hand_rollouts(rewards), correct=correct, prediction=correct.astype(np.int64))
    return dataclasses.replace(table, date=np.arange(N), horizon=5) if market else table


def hand_results(market: bool = False) -> Results:
    """Two TRM seeds: fixed depth 1..3, the oracle, halt_head at 0.9/0.5/0.1, fitted_q at -0.1/0/0.1."""
    results = Results("hand", [0, 1], COST)
    for seed in (0, 1):
        for split in ("val", "test"):
            table = results.tables[(seed, split)] = _table(seed, split, market)
            late = np.full(N, K)
            late[:EARLY] = 2 if seed == 1 else K
            smart = np.where(table.correct[:, 1], 2, K)
            points = {**{("fixed_depth", k): np.full(N, k) for k in range(1, K + 1)},  # knobs in no particular order
                      ("oracle", np.nan): table.best_steps("profit_weighted_ce", COST),
                      ("halt_head", 0.5): np.full(N, 2), ("halt_head", 0.1): np.full(N, 1), ("halt_head", 0.9): late,
                      ("fitted_q", 0.0): smart, ("fitted_q", 0.1): np.full(N, 1),
                      ("fitted_q", -0.1): np.full(N, K)}  # fmt: skip
            for (family, param), steps in points.items():
                results.add(seed, split, {"policy": family, "param": param, "seed": 0}, steps)
    return results


def test_calibrated_families_by_hand() -> None:
    """halt_head, tested 0.9 -> 0.5 -> 0.1 on each seed's val. Seed 0: 0.9 has risk 0 (p = 0.99^400 = 0.018), 0.5
    risk 2% (passes at α 0.05, not 0.01), 0.1 risk 50%. Seed 1: 0.9 has risk 2.5% (fails at 0.01: full depth;
    passes at 0.05), 0.5 risk 7.5% fails. fitted_q's margin 0 (risk 0, fewer steps than -0.1) wins everywhere."""
    results = hand_results()
    rows = add_calibrated(results).set_index(["base", "trm_seed", "alpha"]).sort_index()
    head = rows.loc["halt_head"]
    assert head["threshold"].to_dict() == pytest.approx({(0, 0.01): 0.9, (0, 0.05): 0.5, (1, 0.01): np.nan,
                                                         (1, 0.05): 0.9}, nan_ok=True)  # fmt: skip
    assert head["val_risk"].to_dict() == pytest.approx({(0, 0.01): 0.0, (0, 0.05): 8 / N, (1, 0.01): 0.0,
                                                        (1, 0.05): EARLY / N})  # fmt: skip
    assert head["test_risk"].to_dict() == pytest.approx({(0, 0.01): 0.0, (0, 0.05): 12 / N, (1, 0.01): 0.0,
                                                         (1, 0.05): EARLY / N})  # fmt: skip
    assert head.loc[(1, 0.01), "test_mean_steps"] == K and head.loc[(0, 0.05), "test_mean_steps"] == 2
    assert (rows.loc["fitted_q", "threshold"] == 0.0).all()
    assert rows["guarantee"].all() and (rows["calibrated_on"] == "val").all() and (rows["n_calibration"] == N).all()
    name = family_name("halt_head", 0.05)
    key = results.point("test", name, 0.05)
    np.testing.assert_array_equal(results.steps(key, 0, 0), np.full(N, 2))  # halt_head 0.5 on seed 0
    np.testing.assert_array_equal(results.steps(key, 1, 0), results.steps(("test", "halt_head", 0.9), 1, 0))
    none = results.steps(results.point("val", family_name("halt_head", 0.01), 0.01), 1, 0)
    np.testing.assert_array_equal(none, np.full(N, K))  # none passes: full depth
    assert results.details[family_name("halt_head", 0.01)] == {"TRM seed 0: 0.9", "TRM seed 1: none, full depth"}


def test_no_family_where_the_samples_are_market_days() -> None:
    """Dated samples with 5-day labels: no family is added; every 5th val day is calibrated, marked no guarantee."""
    results = hand_results(market=True)
    rows = add_calibrated(results)
    assert len(rows) == 8 and not rows["guarantee"].any() and (rows["n_calibration"] == N // 5).all()
    assert (rows["calibrated_on"] == "val, every 5th day").all()
    assert not [key for key in results.keys("val") if parse_family(key[1])]
    assert coverage(results, n_splits=5).empty and live_choices(rows, K) == {}


def test_names_live_choices_and_selection() -> None:
    assert family_name("fitted_q", 0.05) == "calibrated_fitted_q_a0.05"
    assert parse_family("calibrated_fitted_q_a0.05") == ("fitted_q", 0.05) and parse_family("fitted_q") is None
    results = hand_results()
    rows = add_calibrated(results)
    live = live_choices(rows, K)
    assert live[family_name("halt_head", 0.01)] == {0: ["halt_head", 0.9], 1: ["fixed_depth", 3.0]}
    assert live[family_name("halt_head", 0.05)] == {0: ["halt_head", 0.5], 1: ["halt_head", 0.9]}
    summary = pd.DataFrame({"policy": ["halt_head", family_name("halt_head", 0.01)], "selected_on": ["val", "val"]})
    assert mark_selected(summary)["selected_on"].tolist() == ["val", "val (LTT)"]
    assert chosen_risk(results, "halt_head", 0.5) == pytest.approx((12 + 20) / 2 / N)


def test_coverage_rows_by_hand() -> None:
    """Per (base, α, TRM seed) n_splits rows; on seed 0 halt_head's pool (800 samples, 20 wrong at step 2 = 2.5%)
    passes 0.5 at α 0.05 in most splits; at α 0.01 it never passes 0.5 (2.5% > 1%)."""
    found = coverage(hand_results(), n_splits=30)
    assert len(found) == 2 * 2 * 2 * 30
    assert set(found.groupby(["base", "alpha", "trm_seed"]).size()) == {30}
    seed0 = found[(found["base"] == "halt_head") & (found["trm_seed"] == 0)].set_index("alpha")
    assert (seed0.loc[0.01, "threshold"] == 0.9).all() and (seed0.loc[0.01, "holdout_risk"] == 0).all()
    assert (seed0.loc[0.05, "threshold"] == 0.5).mean() > 0.8
    assert (found["holdout_risk"] <= found["alpha"]).mean() >= 0.9


def test_live_runs_a_calibrated_family_at_each_seeds_knob() -> None:
    """The live stage gets TRM seed -> [family, knob] for a calibrated family and refits its base once per seed."""
    chosen = pd.DataFrame({"policy": ["fitted_q", "calibrated_fitted_q_a0.05", "oracle"], "param": [0.0, 0.05, np.nan],
                           "per_trm_seed": [np.nan, {0: ["fitted_q", 0.12], 1: ["fixed_depth", 3.0]}, np.nan]})
    choices = deployable_choices(chosen)
    assert choices == {"fitted_q": 0.0, "calibrated_fitted_q_a0.05": {0: ["fitted_q", 0.12], 1: ["fixed_depth", 3.0]}}
    assert _at_seed("calibrated_fitted_q_a0.05", choices["calibrated_fitted_q_a0.05"], 1) == ("fixed_depth", 3.0)
    assert _at_seed("fitted_q", 0.0, 1) == ("fitted_q", 0.0)
    table = hand_rollouts(np.random.default_rng(0).standard_normal((60, K)))
    settings, fitted = {"step_cost": COST, "ponder_variants": [], "act_taus": []}, {}
    base = chosen_policy("fitted_q", 0.0, table, table, settings, [], fitted)
    mine = chosen_policy("fitted_q", 0.12, table, table, settings, [], fitted)
    assert (base.param, mine.param) == (0.0, 0.12) and mine.models is base.models and len(fitted) == 1
    full = chosen_policy("fixed_depth", 3.0, table, table, settings, [], fitted)
    assert full.name == "fixed_depth" and full.param == 3
