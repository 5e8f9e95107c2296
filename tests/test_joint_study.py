"""The joint families in the study on hand-made tables: their own TRMs' tables, gains paired with the BCE TRM's
fixed depth, verdicts, and the per-step comparison with the BCE TRMs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import hand_rollouts

from agents.joint_study import step_lines, step_profiles
from agents.report import TaskAnalysis, _episodes, add_joint
from agents.report_text import joint_step_lines
from agents.stats import Draws
from agents.study import Results, choose, curves, summarize, verdict

K, N, COST = 3, 40, 0.01


def _results() -> Results:
    """Two TRM seeds. The BCE TRMs' rewards rise with the step (val chooses fixed depth K); the ponder-trained TRMs'
    tables are their own: better at step 1 by 0.2 + 0.01 * seed, right at step 1 on the first 30 samples."""
    results = Results("hand", [0, 1], COST)
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for split in ("val", "test"):
            rewards = np.arange(K)[None, :] * 0.1 + 0.01 * rng.standard_normal((N, K))
            results.tables[(seed, split)] = bce = hand_rollouts(rewards)
            bce.correct[:, -1] = True
            own = rewards.copy()
            own[:, 0] += 0.2 + 0.01 * seed
            results.family_tables[("ponder_joint", seed, split)] = joint = hand_rollouts(own)
            joint.correct[:30, 0] = True
            for k in range(1, K + 1):
                results.add(seed, split, {"policy": "fixed_depth", "param": k, "seed": 0}, np.full(N, k))
            results.add(seed, split, {"policy": "halt_head", "param": 0.5, "seed": 0}, np.full(N, 2))
            results.add(seed, split, {"policy": "ponder_joint", "param": 0.5, "seed": 0}, np.full(N, 1))
            results.add(seed, split, {"policy": "oracle", "param": np.nan, "seed": 0}, bce.best_steps("pnl", COST))
    return results


@pytest.fixture(scope="module")
def study() -> tuple[Results, Draws, object]:
    results = _results()
    draws = {split: Draws.make(2, N, n_resamples=300, seed=0) for split in ("val", "test")}
    return results, draws["test"], choose(curves(results, draws))


def _returns(results: Results, family_tables: bool, step: int) -> np.ndarray:
    """(T, N) test returns at ``step`` read straight from the tables."""
    tables = [results.family_tables[("ponder_joint", s, "test")] if family_tables else results.tables[(s, "test")]
              for s in results.trm_seeds]  # fmt: skip
    return np.stack([t.halt_reward["profit_weighted_ce"][:, step - 1] - COST * (step - 1) for t in tables])


def test_a_joint_family_reads_its_own_tables_and_gains_over_the_bce_fixed_depth(study) -> None:
    results, draws, chosen = study
    summary = summarize(results, chosen, draws).set_index("policy")
    own, fixed = _returns(results, True, 1), _returns(results, False, K)  # val chose fixed depth K
    row = summary.loc["ponder_joint"]
    assert row["mean_return"] == pytest.approx(own.mean())
    assert row["mean_return"] != pytest.approx(_returns(results, False, 1).mean())  # not the BCE TRM's step 1
    assert row["gain"] == pytest.approx((own - fixed).mean())  # paired by (seed index, sample)
    found = draws.difference(own, fixed)
    assert (row["gain_lo"], row["gain_hi"]) == pytest.approx((found.low, found.high))
    v = verdict(results, chosen, draws, "ponder_joint", "halt_head")
    assert v["difference"] == pytest.approx((own - _returns(results, False, 2)).mean())
    episodes = _episodes(results, chosen)
    joint = episodes[episodes["policy"] == "ponder_joint"]
    assert joint["episode_return"].to_numpy() == pytest.approx(own.ravel())


def test_per_step_profiles_and_lines_against_the_tables(study) -> None:
    results, draws, _ = study
    profiles = step_profiles(results).set_index(["model", "step"])
    assert profiles.loc[("bce", K), "accuracy"] == 1.0 and profiles.loc[("bce", 1), "accuracy"] == 0.0
    assert profiles.loc[("ponder", 1), "accuracy"] == pytest.approx(30 / N)
    bce_ce = np.mean([results.tables[(s, "test")].profit_weighted_ce[:, 0] for s in (0, 1)])
    assert profiles.loc[("bce", 1), "profit_weighted_ce"] == pytest.approx(bce_ce)
    own_ce = np.mean([results.family_tables[("ponder_joint", s, "test")].profit_weighted_ce[:, 0] for s in (0, 1)])
    (line,) = step_lines(results, draws)
    difference = draws.difference(np.stack([results.family_tables[("ponder_joint", s, "test")].profit_weighted_ce[:, 0]
                                            for s in (0, 1)]), np.stack([results.tables[(s, "test")]
                                            .profit_weighted_ce[:, 0] for s in (0, 1)]))  # fmt: skip
    assert line.startswith("[hand] ponder-trained TRMs minus the BCE TRMs on test: accuracy at step 1 0.7500 vs 0.0000")
    assert (f"profit-weighted CE at step 1 {own_ce:.4f} vs {bce_ce:.4f}, difference {difference.estimate:+.4f} "
            f"[{difference.low:+.4f}, {difference.high:+.4f}] (lower)") in line
    assert "accuracy at step 3 0.0000 vs 1.0000, difference -1.0000" in line


def test_the_joint_rows_join_a_task_analysed_on_more_seeds() -> None:
    """The joint families' seeds (here 0 and 1) are analysed apart: only their rows join the task's (whose BCE
    families ran on five seeds), with their own seed count, gains and verdicts on those seeds."""
    results = _results()
    bce_row = {"policy": "fixed_depth", "param": 3.0, "n_trm_seeds": 5}
    analysis = TaskAnalysis("hand", pd.DataFrame([{**bce_row, "split": "test"}]), pd.DataFrame([bce_row]),
                            pd.DataFrame([bce_row]), pd.DataFrame([{"policy": "fixed_depth", "trm_seed": 4}]),
                            [{"first": "rl_ppo", "second": "halt_head"}], {}, {}, None)  # fmt: skip
    add_joint(analysis, results, n_resamples=300)
    summary = analysis.summary.set_index("policy")
    assert list(summary.index) == ["fixed_depth", "ponder_joint"] and summary["n_trm_seeds"].tolist() == [5, 2]
    own, fixed = _returns(results, True, 1), _returns(results, False, K)
    assert summary.loc["ponder_joint", "gain"] == pytest.approx((own - fixed).mean())
    assert list(analysis.chosen["policy"]) == ["fixed_depth", "ponder_joint"]
    assert set(analysis.curves["policy"]) == {"fixed_depth", "ponder_joint"}
    assert (analysis.curves.loc[analysis.curves["policy"] == "ponder_joint", "n_trm_seeds"] == 2).all()
    joint = analysis.episodes[analysis.episodes["policy"] == "ponder_joint"]
    assert sorted(set(joint["trm_seed"])) == [0, 1] and len(joint) == 2 * N
    assert [(v["first"], v["second"]) for v in analysis.verdicts] == [("rl_ppo", "halt_head"),
                                                                    ("ponder_joint", "halt_head")]  # fmt: skip
    assert analysis.verdicts[1]["difference"] == pytest.approx((own - _returns(results, False, 2)).mean())
    (line,) = analysis.step_lines
    assert line.startswith("[hand] ponder-trained TRMs minus the BCE TRMs on test")
    assert joint_step_lines(analysis) == [line]  # the report's detail section
    assert set(analysis.step_profiles["model"]) == {"bce", "ponder"}
