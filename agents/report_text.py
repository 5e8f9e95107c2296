"""The words of ``report.md``: per task a plain headline, a compact table, the calibrated exits, and details.

Each piece is a small function of one task's analysis (``agents.report.TaskAnalysis``) that returns markdown
lines; ``agents.report.write_outputs`` assembles them. Detail sections are listed in ``DETAILS`` as
(heading, function): add an entry to add a section. Every number is formatted here: blanks, never ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.joint import JOINT_FAMILIES
from agents.ltt_study import parse_family
from agents.policies import LEARNED_FAMILIES

if TYPE_CHECKING:  # the analysis imports this module to write its report
    from agents.report import TaskAnalysis

__all__ = ["DETAILS", "PROTOCOL", "calibration_lines", "compact_table", "coverage_lines", "detail_lines", "headline",
           "markdown_table"]  # fmt: skip

PROTOCOL = (
    "Protocol: the TRM trains on `train`; every halting learner (RL, fitted-Q) trains on `halt`, which the "
    "TRM never saw; every choice (each family's knob, the RL training cost, the fixed-depth reference) is made "
    "on `val`; `test` is used once, to report. CIs are 95%: a t interval over the TRM seeds' means (learner "
    "seeds averaged) whose variance adds the samples' shared variance from a bootstrap of samples (in circular "
    "blocks of consecutive days on market tasks), with Satterthwaite's degrees of freedom; shares get Fieller's "
    "interval."
)
LEARNED = ("halt_head", *LEARNED_FAMILIES, *JOINT_FAMILIES)
REFERENCES = "oracle"  # with privileged_*: they read the label or the task's structure


def is_reference(family: str) -> bool:
    return family == REFERENCES or family.startswith("privileged_")


def _num(value: Any, spec: str = ".4f") -> str:
    return "" if value is None or not np.isfinite(value) else format(value, spec)


def _times(value: float) -> str:
    """A measured speed-up, "2.31×"; blank where not measured."""
    return _num(value, ".2f") + ("×" if np.isfinite(value) else "")


def _ci(row: pd.Series, name: str, spec: str = ".4f") -> str:
    """``value [lo, hi]``; the value alone where the bounds are missing; blank where the value is."""
    value, low, high = (row.get(f"{name}{s}", np.nan) for s in ("", "_lo", "_hi"))
    if not np.isfinite(value):
        return ""
    bounds = f" [{format(low, spec)}, {format(high, spec)}]" if np.isfinite([low, high]).all() else ""
    return format(value, spec) + bounds


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (no extra dependency); NaN cells are blank."""
    def cell(v: Any) -> str:
        return _num(v, f".{digits}f") if isinstance(v, float) else str(v)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _thresholds(t: TaskAnalysis, family: str) -> str:
    rows = t.calibration[t.calibration["family"] == family]
    return ", ".join(_num(v, "g") or "none" for v in rows["threshold"])


def knob(t: TaskAnalysis, family: str, param: float) -> str:
    """A family's knob as the table shows it; a calibrated family's α and its LTT threshold per TRM seed."""
    parsed = parse_family(family)
    return f"α {parsed[1]:g} → {_thresholds(t, family)}" if parsed is not None else _num(param, "g")


def _ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """Deployable families by test return (best first), then the references."""
    reference = summary["policy"].map(is_reference)
    return pd.concat([summary[~reference].sort_values("mean_return", ascending=False), summary[reference]])


def compact_table(t: TaskAnalysis) -> list[str]:
    """Family, knob, return, gain over fixed depth, share of fitted-Q's gain, steps, accuracy, speed-up."""
    s = _ordered(t.summary)
    speedup = s["speedup"] if "speedup" in s else pd.Series(np.nan, index=s.index)
    frame = pd.DataFrame({
        "family": s["policy"], "knob": [knob(t, f, p) for f, p in zip(s["policy"], s["param"], strict=True)],
        "return [95% CI]": [_ci(row, "mean_return") for _, row in s.iterrows()],
        "gain over fixed depth [95% CI]": [_ci(row, "gain", "+.4f") for _, row in s.iterrows()],
        "share of fitted-Q's gain [95% CI]": [_ci(row, "attainable_gain_share", ".0%") for _, row in s.iterrows()],
        "mean steps": [_num(v, ".2f") for v in s["mean_steps"]], "accuracy": [_num(v, ".1%") for v in s["accuracy"]],
        "speed-up (live)": [_times(v) for v in speedup],
    })  # fmt: skip
    note = ("oracle and privileged_* read the label or the task's structure: bounds, not deployable. A share is "
            "blank where fitted-Q's own gain is not significant; its bounds are blank where Fieller's interval is "
            "unbounded. Every column, and more, is in `summary.csv`.")  # fmt: skip
    return [markdown_table(frame), "", note]


def _significant(row: pd.Series) -> str:
    if row["gain_lo"] > 0:
        return "significant: the interval excludes zero"
    if row["gain_hi"] < 0:
        return "significantly below it: the interval excludes zero"
    return "not significant: the interval includes zero"


def headline(t: TaskAnalysis) -> list[str]:
    """Three to six plain sentences: who wins, by how much, with what certainty, and what that means."""
    s = t.summary.set_index("policy")
    fixed = s.loc["fixed_depth"]
    halting = s[[not is_reference(f) and f not in ("fixed_depth", "random") for f in s.index]]
    best_name = halting["mean_return"].idxmax()
    best = s.loc[best_name]
    wins = int((halting["gain_lo"] > 0).sum())
    out = [f"On {t.task}, {best_name} (knob {knob(t, best_name, best['param'])}) has the highest test return of the "
           f"{len(halting)} deployable halting families: {best['mean_return']:.4f}, {best['gain']:+.4f} over always "
           f"thinking {fixed['param']:g} steps (the val-chosen fixed depth), 95% CI "
           f"[{best['gain_lo']:+.4f}, {best['gain_hi']:+.4f}]; {_significant(best)}.",
           f"{wins} of {len(halting)} halting families gain significantly over the fixed depth."]  # fmt: skip
    if best_name in LEARNED_FAMILIES and best["n_rl_seeds"] == 1:
        out.append(f"{best_name} was trained once per TRM seed (one learner seed): this ranking is fragile.")
    if "fitted_q" in s.index:
        q = s.loc["fitted_q"]
        share = _ci(best, "attainable_gain_share", ".0%")
        tail = (f"; {best_name} captures {share} of it" if share and best_name != "fitted_q"
                else "" if q["gain_lo"] > 0 else ", not significant, so no share of it is given")  # fmt: skip
        out.append(f"Fitted-Q, the reference for what the observation allows, gains {q['gain']:+.4f} "
                   f"[{q['gain_lo']:+.4f}, {q['gain_hi']:+.4f}]{tail}.")  # fmt: skip
    if "oracle" in s.index:
        out.append(f"The oracle, which reads the label, gains {s.loc['oracle', 'gain']:+.4f}: the most any halting "
                   "rule could add here.")  # fmt: skip
    speed = best.get("speedup", np.nan)
    cost = f"; run live it is {speed:.2f}× as fast as full depth" if np.isfinite(speed) else ""
    meaning = ("halting pays on this task" if best["gain_lo"] > 0
               else f"a fixed depth of {fixed['param']:g} steps does as well here, and is simpler")  # fmt: skip
    out.append(f"In practice {meaning}: {best_name} thinks {best['mean_steps']:.1f} steps on average{cost}.")
    return [" ".join(out)]


def calibration_lines(t: TaskAnalysis) -> list[str]:
    """The calibrated exits next to the uncalibrated val-chosen point of their base (or why there are none)."""
    c = t.calibration
    if c.empty:
        return []
    first = c.iloc[0]
    head = (f"Learn-then-Test on `{first['calibrated_on']}`, per TRM seed (MAPIE: Hoeffding–Bentkus p-values, "
            f"fixed-sequence testing from the latest-halting knob): risk = {first['risk']} (1 where the full-depth "
            f"answer is right and the exit's is wrong), δ = {first['delta']:g}. ")  # fmt: skip
    if first["guarantee"]:
        head += ("With probability ≥ 1 − δ over the val draw, the exit's risk is ≤ α; of the knobs that pass, the "
                 "one with the fewest mean steps; where none passes, full depth.")  # fmt: skip
    else:
        head = (f"**No guarantee on {t.task}.** Here {t.exchangeability}: val and test are not exchangeable, so "
                "Learn-then-Test's guarantee does not apply and no calibrated family is in the summary. Descriptive "
                "only: " + head + "Thinning removes the labels' overlap inside val, not the serial dependence of "
                "returns nor the shift from val's years to test's.")  # fmt: skip
    s = t.summary.set_index("policy")
    rows = []
    for (family, base, alpha), group in c.groupby(["family", "base", "alpha"], sort=False):
        mine = s.loc[family] if family in s.index else pd.Series(dtype=float)
        theirs = s.loc[base]
        rows.append({"exit": family, "α": f"{alpha:g}", "LTT knob per TRM seed": _thresholds(t, family),
                     "test risk: mean (max over seeds)": f"{group['test_risk'].mean():.2%} "
                                                         f"({group['test_risk'].max():.2%})",
                     "mean steps": f"{group['test_mean_steps'].mean():.2f}",
                     "speed-up": _times(mine.get("speedup", np.nan)),
                     "uncalibrated: val-chosen by return": f"{base} {theirs['param']:g}",
                     "its test risk": f"{t.base_risk.get(base, np.nan):.2%}",
                     "its mean steps": f"{theirs['mean_steps']:.2f}",
                     "its speed-up": _times(theirs.get("speedup", np.nan))})  # fmt: skip
    return [head, "", markdown_table(pd.DataFrame(rows))]


def coverage_lines(coverage: pd.DataFrame) -> list[str]:
    """The re-split check: per (task, base, α), the share of splits whose held-out risk is <= α."""
    if coverage.empty:
        return []
    rows = []
    for (task, base, alpha, delta), g in coverage.groupby(["task", "base", "alpha", "delta"], sort=False):
        covered = (g["holdout_risk"] <= alpha).mean()
        rows.append({"task": task, "base": base, "α": f"{alpha:g}",
                     "TRM seeds × splits": f"{g['trm_seed'].nunique()} × {g.groupby('trm_seed').size().max()}",
                     "share with risk ≤ α": f"{covered:.1%}", "needed (1 − δ)": f"{1 - delta:.0%}",
                     "holds": "yes" if covered >= 1 - delta else "**no**",
                     "a knob passed in": f"{g['found'].mean():.0%}",
                     "mean held-out risk": f"{g['holdout_risk'].mean():.2%}",
                     "mean held-out steps": f"{g['holdout_mean_steps'].mean():.2f}"})  # fmt: skip
    head = ("Per TRM seed, random halves of val ∪ test: Learn-then-Test on one half, the risk measured on the other "
            "(a full-depth exit counts as risk 0). Where the guarantee holds, the share of splits whose measured risk "
            "is ≤ α is ≥ 1 − δ (up to the noise of the measuring half). `experiments/ltt_coverage.py` reruns the "
            "check at other settings.")  # fmt: skip
    return [head, "", markdown_table(pd.DataFrame(rows))]


# ---- details: the bullet lines, grouped -------------------------------------------------------------


def _share(row: pd.Series, name: str) -> str:
    """A share and its CI in percent; "[unbounded]" where Fieller's interval is (its reference not significant)."""
    bounds = [row[f"{name}_lo"], row[f"{name}_hi"]]
    return f"{row[name]:.1%} " + (f"[{bounds[0]:.1%}, {bounds[1]:.1%}]" if np.isfinite(bounds).all() else "[unbounded]")


def _fragile(families: list[str]) -> str:
    """The warning for a verdict that rests on one learner run per TRM seed of ``families`` (empty: none)."""
    if not families:
        return ""
    return (f"; **fragile**: {' and '.join(families)} had one learner run per TRM seed, and a retrain with another "
            "seed (or thread count) can move the verdict")


def verdict_lines(t: TaskAnalysis) -> list[str]:
    lines = []
    for v in t.verdicts:
        sign = "higher" if v["low"] > 0 else "lower" if v["high"] < 0 else "no significant difference"
        a, b = v["first"], v["second"]
        lines.append(f"[{t.task}] {a} minus {b} (val-chosen points) in test mean return: {v['difference']:+.4f}, "
                     f"95% CI [{v['low']:+.4f}, {v['high']:+.4f}] (t, df {v['df']:.1f}) ({sign}); descriptive: "
                     f"{v['share_draws_a_above_b']:.0%} of bootstrap draws have {a} above {b}, and rliable's run-level "
                     f"P({a} > {b}) over pairs of runs within a TRM seed is {v['poi_runs']:.2f} "
                     f"[{v['poi_runs_lo']:.2f}, {v['poi_runs_hi']:.2f}]{_fragile(v['fragile'])}")  # fmt: skip
    return lines


def share_lines(t: TaskAnalysis) -> list[str]:
    s, lines = t.summary.set_index("policy"), []
    for family in (f for f in LEARNED if f in s.index and f != "fitted_q"):
        shares = [f"{_share(s.loc[family], name)} of {whose}" for name, whose in
                  (("oracle_gain_share", "the oracle's gain"), ("attainable_gain_share", "fitted_q's"))
                  if np.isfinite(s.loc[family, name])]  # fmt: skip
        if shares:
            lines.append(f"[{t.task}] {family} captures {' and '.join(shares)} (95% CIs, Fieller)")
    return lines


def oracle_lines(t: TaskAnalysis) -> list[str]:
    o, rate = t.oracle, t.halt_target_rate
    return [f"[{t.task}] oracle gain on test over depth 1: {o['oracle'] - o['depth_1']:+.4f} = systematic "
            f"{o['systematic']:+.4f} (best fixed depth k={o['best_k']:g}) + per-sample {o['per_sample']:+.4f}",
            f"[{t.task}] block length of the bootstrap: {t.blocks} samples per split",
            f"[{t.task}] the models came as saved tables (one per TRM seed): no halt-head training target to report "
            f"and no live stage (no model to run)" if rate is None else
            f"[{t.task}] the halt head's training target (TRMLoss: confident and correct) is positive for "
            f"{rate.mean():.1%} of train samples over all steps (step 1: {rate[0]:.1%}, step K: {rate[-1]:.1%}; "
            f"mean over TRM seeds)"]  # fmt: skip


def collapse_lines(t: TaskAnalysis) -> list[str]:
    lines = []
    for family, row in t.summary.set_index("policy").iterrows():
        if row["on_edge"]:
            limit = row["halt_at_1"] == 1 or row["halt_at_k"] == 1
            why = " (it halts every test episode at step 1 or at K there: nothing beyond differs)" if limit else ""
            lines.append(f"[{t.task}] {family}: the val-chosen point {row['param']:g} is on the edge of its grid{why}")
        if family in LEARNED and row["collapsed_runs"] > 0:
            where = "step 1" if row["halt_at_1"] >= row["halt_at_k"] else "K"
            lines.append(f"[{t.task}] {family}: {row['collapsed_runs']:.0%} of its (TRM seed, learner seed) runs "
                         f"collapse (>= 95% of test episodes halt at {where})")
    return lines


def difficulty_lines(t: TaskAnalysis) -> list[str]:
    if "difficulty" not in t.episodes or not t.episodes["difficulty"].notna().any():
        return []
    lines, families = [], set(t.summary["policy"])
    for family in (f for f in ("oracle", *LEARNED) if f in families):
        group = t.episodes[t.episodes["policy"] == family]
        varies = group["halt_step"].nunique() > 1
        rho = stats.spearmanr(group["difficulty"], group["halt_step"]).statistic if varies else float("nan")
        lines.append(f"[{t.task}] Spearman(difficulty, halting step) of {family}'s val-chosen point: {rho:.3f}")
    return lines


def live_lines(t: TaskAnalysis) -> list[str]:
    if not t.compute:
        return []
    c, timing = t.compute, t.compute["timing"]
    count = sum(sum(m.values()) for m in c["mismatches"].values())
    lines = [f"[{t.task}] live halting equals the table: {count} samples differ in halting step or prediction, "
             f"over every deployable val-chosen point and TRM seeds {c['trm_seeds']}",
             f"[{t.task}] full depth, run live: {timing['full_depth']['wall_ms_per_1k']:.1f} ms per 1000 samples "
             f"(batch {c['batch_size']}, one CPU thread, {c['samples']} test samples of TRM seed "
             f"{c['trm_seeds'][0]}, median of {c['rounds']} rounds)"]  # fmt: skip
    for family, values in c["latency"].items():
        lines.append(f"[{t.task}] latency at batch 1, {family}: p50 {values['p50_ms']:.2f} ms, p99 "
                     f"{values['p99_ms']:.2f} ms per sample")  # fmt: skip
    return lines


def joint_step_lines(t: TaskAnalysis) -> list[str]:
    """Each joint objective's TRMs minus the BCE TRMs at steps 1 and K (``agents.joint_study``)."""
    return list(t.step_lines)


DETAILS: list[tuple[str, Callable[[TaskAnalysis], list[str]]]] = [
    ("Verdicts", verdict_lines), ("Shares of the gain", share_lines),
    ("Oracle, bootstrap and training target", oracle_lines), ("Grid edges and collapse", collapse_lines),
    ("Difficulty", difficulty_lines), ("Live halting", live_lines),
    ("Halting trained with the model: per-step quality", joint_step_lines),
]  # fmt: skip


def detail_lines(t: TaskAnalysis) -> list[str]:
    """Every detail line of a task, in ``DETAILS`` order (what the console prints)."""
    return [line for _, section in DETAILS for line in section(t)]
