"""The study's analysis on hand-made tables: choices on val only, the summary's gains and shares, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import hand_rollouts

from agents.report import TaskAnalysis
from agents.report_text import detail_lines
from agents.stats import Draws
from agents.study import Results, choose, curves, oracle_split, summarize, verdict

K, N, COST = 3, 40, 0.01


def _results() -> Results:
    """Two TRM seeds. Rewards rise with the step on val but fall on test, so a test-picked knob would differ.

    Points: fixed depth 1..3, oracle, halt_head at 0.2 (halts at step 1) and 0.8 (halts at step 3).
    """
    results = Results("hand", [0, 1], COST)
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for split, slope in (("val", 1.0), ("test", -1.0)):
            rewards = slope * np.arange(K)[None, :] * 0.1 + 0.01 * rng.standard_normal((N, K))
            table = hand_rollouts(rewards)
            results.tables[(seed, split)] = table
            for k in range(1, K + 1):
                results.add(seed, split, {"policy": "fixed_depth", "param": k, "seed": 0}, np.full(N, k))
            results.add(seed, split, {"policy": "oracle", "param": np.nan, "seed": 0}, table.best_steps("pnl", COST))
            results.add(seed, split, {"policy": "halt_head", "param": 0.2, "seed": 0}, np.full(N, 1))
            results.add(seed, split, {"policy": "halt_head", "param": 0.8, "seed": 0}, np.full(N, K))
            half = np.where(np.arange(N) < N // 2, 1, K)  # fitted_q: halts at 1 on half the samples, at K on the rest
            results.add(seed, split, {"policy": "fitted_q", "param": 0.0, "seed": 0}, half)
    return results


@pytest.fixture(scope="module")
def study() -> tuple[Results, dict[str, Draws]]:
    results = _results()
    return results, {split: Draws.make(2, N, n_resamples=300, seed=0) for split in ("val", "test")}


def test_choices_are_made_on_val_only(study: tuple[Results, dict[str, Draws]]) -> None:
    """The test split favours halting early; the choice follows val, which favours thinking to K."""
    results, draws = study
    curve = curves(results, draws)
    assert set(curve["split"]) == {"val", "test"} and len(curve) == 2 * 7
    chosen = choose(curve).set_index("policy")
    assert chosen.loc["halt_head", "param"] == 0.8 and chosen.loc["fixed_depth", "param"] == K
    test = curve[(curve["split"] == "test") & (curve["policy"] == "halt_head")].set_index("param")["mean_return"]
    assert test.loc[0.2] > test.loc[0.8]  # test would have picked the other point
    assert not chosen.loc["halt_head", "on_edge"]  # a two-point grid has no interior
    summary = summarize(results, chosen.reset_index(), draws["test"]).set_index("policy")
    assert summary.loc["halt_head", "param"] == 0.8 and (summary["selected_on"] == "val").all()
    assert summary.loc["halt_head", "mean_return"] == pytest.approx(test.loc[0.8])


def test_gains_and_shares_by_hand(study: tuple[Results, dict[str, Draws]]) -> None:
    results, draws = study
    curve = curves(results, draws)
    summary = summarize(results, choose(curve), draws["test"]).set_index("policy")
    test = curve[curve["split"] == "test"].set_index(["policy", "param"])["mean_return"]
    fixed = test.loc[("fixed_depth", float(K))]  # val chose K, so K is the reference on test
    oracle = test.loc[("oracle", np.nan)] if ("oracle", np.nan) in test.index else test.xs("oracle").iloc[0]
    fitted = test.loc[("fitted_q", 0.0)]
    row = summary.loc["fitted_q"]
    assert row["gain"] == pytest.approx(fitted - fixed)
    assert row["oracle_gain_share"] == pytest.approx((fitted - fixed) / (oracle - fixed))
    assert row["gain_lo"] <= row["gain"] <= row["gain_hi"] and row["gain_lo"] > 0
    assert row["attainable_gain_share"] == pytest.approx(1.0)
    assert (row["attainable_gain_share_lo"], row["attainable_gain_share_hi"]) == pytest.approx((1.0, 1.0))
    assert row["oracle_gain_share_lo"] < row["oracle_gain_share"] < row["oracle_gain_share_hi"]
    oracle_row = summary.loc["oracle"]
    assert (oracle_row["oracle_gain_share_lo"], oracle_row["oracle_gain_share_hi"]) == pytest.approx((1.0, 1.0))
    assert summary.loc["fixed_depth", "gain"] == 0.0 and summary.loc["halt_head", "attainable_gain_share"] == 0.0
    for family in ("fixed_depth", "halt_head"):  # both think to K on test: no gain, a share of exactly 0
        cells = summary.loc[family, ["gain_lo", "gain_hi", "oracle_gain_share_lo", "oracle_gain_share_hi"]]
        assert cells.tolist() == pytest.approx([0.0] * 4)
    assert summary.loc["halt_head", "halt_at_k"] == 1.0 and summary.loc["fitted_q", "halt_at_1"] == 0.5
    assert (summary["n_trm_seeds"] == 2).all() and (summary["n_rl_seeds"] == 1).all()


def test_verdict_and_oracle_split(study: tuple[Results, dict[str, Draws]]) -> None:
    results, draws = study
    curve = curves(results, draws)
    chosen = choose(curve)
    line = verdict(results, chosen, draws["test"], "fitted_q", "halt_head")
    assert line["difference"] > 0 and line["low"] > 0 and line["poi_runs"] == 1.0
    assert line["share_draws_a_above_b"] == 1.0 and line["df"] >= 1
    back = verdict(results, chosen, draws["test"], "halt_head", "fitted_q")
    assert back["difference"] == pytest.approx(-line["difference"]) and back["poi_runs"] == 0.0
    assert (back["low"], back["high"]) == pytest.approx((-line["high"], -line["low"]))
    assert back["share_draws_a_above_b"] == 0.0
    same = verdict(results, chosen, draws["test"], "halt_head", "fixed_depth")  # both think to K on test
    assert same["share_draws_a_above_b"] == 0.5 and same["low"] == same["high"] == 0.0
    assert line["fragile"] == back["fragile"] == ["fitted_q"] and same["fragile"] == []  # one fitted_q run per seed
    split = oracle_split(curve)
    assert split["best_k"] == 1.0 and split["systematic"] == pytest.approx(0.0)
    assert split["oracle"] - split["depth_1"] == pytest.approx(split["systematic"] + split["per_sample"])


def test_a_verdict_on_two_learner_runs_is_not_fragile() -> None:
    """A second learner seed of fitted_q on every TRM seed and split: the verdict no longer rests on one run."""
    results = _results()
    half = np.where(np.arange(N) < N // 2, 1, K)
    for seed in (0, 1):
        for split in ("val", "test"):
            results.add(seed, split, {"policy": "fitted_q", "param": 0.0, "seed": 1}, half)
    draws = Draws.make(2, N, n_resamples=50, seed=0)
    chosen = choose(curves(results, {"val": draws, "test": draws}))
    assert verdict(results, chosen, draws, "fitted_q", "halt_head")["fragile"] == []


def test_no_attainable_share_without_a_significant_fitted_q_gain() -> None:
    """fitted_q thinking to K like the reference but on one sample: its gain is not significant, a share of it
    means nothing (NaN)."""
    results = _results()
    steps = np.where(np.arange(N) == 0, 1, K)
    for seed in (0, 1):
        for split in ("val", "test"):
            results.add(seed, split, {"policy": "fitted_q", "param": 0.0, "seed": 0}, steps)
    draws = {split: Draws.make(2, N, n_resamples=300, seed=0) for split in ("val", "test")}
    summary = summarize(results, choose(curves(results, draws)), draws["test"])
    columns = ["attainable_gain_share", "attainable_gain_share_lo", "attainable_gain_share_hi"]
    fitted = summary.set_index("policy").loc["fitted_q"]
    assert fitted["gain"] > 0 and fitted["gain_lo"] < 0 < fitted["gain_hi"]
    assert summary[columns].isna().all().all() and summary["oracle_gain_share"].notna().all()


def test_missing_seeds_are_refused() -> None:
    results = _results()
    results.add(0, "val", {"policy": "rl_ppo", "param": 0.01, "seed": 0}, np.ones(N, dtype=int))
    with pytest.raises(ValueError, match="no episodes"):
        results.arrays(("val", "rl_ppo", 0.01))


def test_every_printed_interval_is_the_calibrated_one(study: tuple[Results, dict[str, Draws]]) -> None:
    """Curves, summary and verdicts all carry the t-over-seeds interval (not the percentile bootstrap)."""
    results, draws = study
    curve = curves(results, draws)
    chosen = choose(curve)
    summary = summarize(results, chosen, draws["test"]).set_index("policy")
    pick = chosen.set_index("policy")["param"]
    fitted, head, fixed = (results.arrays(results.point("test", f, pick[f]))["episode_return"]
                           for f in ("fitted_q", "halt_head", "fixed_depth"))  # fmt: skip
    expected = draws["test"].interval(fitted)
    assert (summary.loc["fitted_q", "mean_return_lo"], summary.loc["fitted_q", "mean_return_hi"]) == pytest.approx(
        (expected.low, expected.high))  # fmt: skip
    row = curve[(curve["split"] == "test") & (curve["policy"] == "fitted_q")].iloc[0]
    assert (row["mean_return_lo"], row["mean_return_hi"]) == pytest.approx((expected.low, expected.high))
    gain = draws["test"].difference(fitted, fixed)
    assert (summary.loc["fitted_q", "gain_lo"], summary.loc["fitted_q", "gain_hi"]) == pytest.approx(
        (gain.low, gain.high))  # fmt: skip
    line, paired = verdict(results, chosen, draws["test"], "fitted_q", "halt_head"), draws["test"].difference(
        fitted, head)  # fmt: skip
    assert (line["low"], line["high"], line["df"]) == pytest.approx((paired.low, paired.high, paired.df))
    oracle = results.arrays(results.point("test", "oracle", pick["oracle"]))["episode_return"]
    gains = [family.mean(axis=1) - fixed.mean(axis=1) for family in (fitted, oracle)]
    share = draws["test"].ratio_interval(*gains)
    assert (summary.loc["fitted_q", "oracle_gain_share_lo"], summary.loc["fitted_q", "oracle_gain_share_hi"]) == (
        pytest.approx(share))  # fmt: skip


def test_report_lines_label_the_statistics(study: tuple[Results, dict[str, Draws]]) -> None:
    """The verdict line gives the CI, then the share of draws and rliable's run-level statistic, each named."""
    results, draws = study
    curve = curves(results, draws)
    chosen = choose(curve)
    summary = summarize(results, chosen, draws["test"])
    verdicts = [verdict(results, chosen, draws["test"], "fitted_q", "halt_head")]
    verdicts.append({**verdicts[0], "share_draws_a_above_b": 0.4, "poi_runs": 0.67, "poi_runs_lo": 0.33,
                     "poi_runs_hi": 1.0, "low": -0.1, "high": 0.2, "df": 3.25, "fragile": []})  # each its own value
    analysis = TaskAnalysis("hand", curve, chosen, summary, pd.DataFrame(), verdicts, oracle_split(curve),
                            {"test": 1}, np.array([0.5, 0.5]))  # fmt: skip
    lines = detail_lines(analysis)
    v = verdicts[0]
    assert (f"[hand] fitted_q minus halt_head (val-chosen points) in test mean return: {v['difference']:+.4f}, 95% CI "
            f"[{v['low']:+.4f}, {v['high']:+.4f}] (t, df {v['df']:.1f}) (higher); descriptive: 100% of bootstrap "
            "draws have fitted_q above halt_head, and rliable's run-level P(fitted_q > halt_head) over pairs of runs "
            "within a TRM seed is 1.00 [1.00, 1.00]; **fragile**: fitted_q had one learner run per TRM seed, and a "
            "retrain with another seed (or thread count) can move the verdict") in lines  # fmt: skip
    assert ("[hand] fitted_q minus halt_head (val-chosen points) in test mean return: "
            f"{v['difference']:+.4f}, 95% CI [-0.1000, +0.2000] (t, df 3.2) (no significant difference); descriptive: "
            "40% of bootstrap draws have fitted_q above halt_head, and rliable's run-level P(fitted_q > halt_head) "
            "over pairs of runs within a TRM seed is 0.67 [0.33, 1.00]") in lines  # fmt: skip
    head = summary.set_index("policy").loc["halt_head"]
    assert ("[hand] halt_head captures 0.0% [0.0%, 0.0%] of the oracle's gain and 0.0% [0.0%, 0.0%] of "
            "fitted_q's (95% CIs, Fieller)") in lines and head["oracle_gain_share"] == 0.0  # fmt: skip
    analysis.summary = summary.assign(attainable_gain_share_hi=np.nan)  # Fieller's set unbounded
    assert "[hand] halt_head captures 0.0% [0.0%, 0.0%] of the oracle's gain and 0.0% [unbounded] of fitted_q's " \
           "(95% CIs, Fieller)" in detail_lines(analysis)  # fmt: skip
