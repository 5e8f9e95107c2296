"""``report.md`` on a hand-made study: its structure (headline, compact table, forest plot, calibrated exits, the
re-split check, figures, details), its numbers, and no ``nan`` where a person reads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ltt_study import EARLY, N, hand_results

from agents.plots import plot_forest
from agents.report import Analysis, analyse_task, write_outputs
from agents.report_text import compact_table, headline

CONFIG = {"name": "hand", "eval_step_cost": 0.01, "trm_seeds": [0, 1], "rl_seeds": [0], "step_costs": [0.01]}
HEADINGS = ["# Halting study: run `hand`", "## hand", "### Calibrated exits (Learn-then-Test)",
            "## Does the guarantee hold?", "## Figures", "### hand", "## Details", "### Protocol", "### hand",
            "#### Verdicts", "#### Shares of the gain", "#### Oracle, bootstrap and training target",
            "#### Grid edges and collapse"]  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Analysis]:
    analysis = Analysis([analyse_task(hand_results(), 200, np.array([0.2, 0.5, 0.9]))], [])
    out = tmp_path_factory.mktemp("report")
    write_outputs(out, analysis, CONFIG)
    return out, analysis


def test_report_opens_with_the_verdict_and_keeps_the_details_below(written: tuple[Path, Analysis]) -> None:
    out, _ = written
    text = (out / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == HEADINGS
    lines = text.splitlines()
    task = lines.index("## hand")
    assert lines[task + 2].startswith("On hand, ") and lines[task + 4].startswith("| family | knob | return [95% CI] |")
    assert text.index("![hand_forest.png](hand_forest.png)") < text.index("### Calibrated exits")
    assert text.index("## Figures") < text.index("![hand_mean_return.png]") < text.index("## Details")
    assert text.index("## Details") < text.index("Protocol: the TRM trains on `train`") < text.index("- [hand] ")
    assert "nan" not in text.lower()
    for name in ("hand_forest.png", "hand_mean_return.png", "hand_accuracy.png", "hand_halting_steps.png",
                 "ltt_coverage.png"):  # fmt: skip
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in text
    for name in ("summary", "curves", "episodes", "calibration", "ltt_coverage"):
        assert not pd.read_csv(out / f"{name}.csv").empty, name


def test_headline_says_who_wins_by_how_much_and_how_sure(written: tuple[Path, Analysis]) -> None:
    _, analysis = written
    t = analysis.tasks[0]
    (paragraph,) = headline(t)
    s = t.summary.set_index("policy")
    halting = s.drop(index=["fixed_depth", "oracle"])
    best = halting["mean_return"].idxmax()
    row = s.loc[best]
    assert paragraph.startswith(f"On hand, {best} (knob ")
    assert f"{row['gain']:+.4f} over always thinking {s.loc['fixed_depth', 'param']:g} steps" in paragraph
    assert f"95% CI [{row['gain_lo']:+.4f}, {row['gain_hi']:+.4f}]" in paragraph
    wins = int((halting["gain_lo"] > 0).sum())
    assert f"{wins} of {len(halting)} halting families gain significantly" in paragraph
    assert f"The oracle, which reads the label, gains {s.loc['oracle', 'gain']:+.4f}" in paragraph
    assert 3 <= len(re.split(r"(?<=\.) (?=[A-Z0-9])", paragraph)) <= 6
    fragile = f"{best} was trained once per TRM seed (one learner seed): this ranking is fragile."
    assert (fragile in paragraph) == (best in ("fitted_q", "rl_ppo", "continuation_head"))  # one learner seed each


def test_compact_table_values(written: tuple[Path, Analysis]) -> None:
    _, analysis = written
    t = analysis.tasks[0]
    table = compact_table(t)[0].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in table[2:]}
    s = t.summary.set_index("policy")
    fixed = rows["fixed_depth"]
    assert fixed[2] == "{:.4f} [{:.4f}, {:.4f}]".format(*s.loc["fixed_depth", ["mean_return", "mean_return_lo",
                                                                               "mean_return_hi"]])  # fmt: skip
    assert fixed[3] == "+0.0000 [+0.0000, +0.0000]" and fixed[7].strip() == ""  # not measured live: blank
    assert rows["calibrated_halt_head_a0.05"][1] == "α 0.05 → 0.5, 0.9"
    assert rows["calibrated_halt_head_a0.01"][1] == "α 0.01 → 0.9, none"
    assert rows["oracle"][1] == "" and list(rows)[-1] == "oracle"  # the reference last, its NaN knob blank
    assert rows["halt_head"][6] == f"{s.loc['halt_head', 'accuracy']:.1%}"
    order = [f for f in rows if f != "oracle"]
    assert order == list(s.drop(index="oracle").sort_values("mean_return", ascending=False).index)


def test_calibrated_exits_next_to_the_uncalibrated_point(written: tuple[Path, Analysis]) -> None:
    """halt_head at α 0.05: thresholds 0.5 (seed 0) and 0.9 (seed 1); test risks 12/400 and 10/400; mean steps 2 and
    (10 * 2 + 390 * 3) / 400. The halt head chosen on val by return is 0.9: test risk (0 + 10/400) / 2."""
    out, analysis = written
    text = (out / "report.md").read_text()
    steps = (2 + (EARLY * 2 + (N - EARLY) * 3) / N) / 2
    row = (f"| calibrated_halt_head_a0.05 | 0.05 | 0.5, 0.9 | {(12 + EARLY) / 2 / N:.2%} ({12 / N:.2%}) | {steps:.2f} "
           f"|  | halt_head 0.9 | {EARLY / 2 / N:.2%} |")  # fmt: skip
    assert row in text
    summary = pd.read_csv(out / "summary.csv").set_index("policy")
    assert summary.loc["calibrated_halt_head_a0.05", "selected_on"] == "val (LTT)"
    assert summary.loc["calibrated_halt_head_a0.05", "param"] == 0.05
    assert summary.loc["halt_head", "selected_on"] == "val"
    assert summary.loc["calibrated_halt_head_a0.05", "detail"] == "TRM seed 0: 0.5; TRM seed 1: 0.9"
    assert analysis.tasks[0].base_risk["halt_head"] == pytest.approx(EARLY / 2 / N)
    assert "| hand | halt_head | 0.05 | 2 × 200 |" in text


def test_the_forest_axis_follows_the_ordinary_intervals_and_names_what_is_off_it() -> None:
    """One family with a huge CI and a far estimate does not squash the others: it is drawn at the edge, its numbers
    written; the axis spans the other estimates, their CIs and zero."""
    summary = pd.DataFrame({"policy": ["fixed_depth", "a", "b", "wild"], "gain": [0.0, 0.01, 0.02, -0.7],
                            "gain_lo": [0.0, 0.005, 0.015, -2.3], "gain_hi": [0.0, 0.015, 0.025, 0.9]})  # fmt: skip
    ax = plot_forest(summary).axes[0]
    low, high = ax.get_xlim()
    assert -0.01 < low < 0.0 < 0.025 < high < 0.03
    notes = [text.get_text() for text in ax.texts]
    assert notes == ["gain -0.7, CI [-2.3, +0.9], off the axis"]
