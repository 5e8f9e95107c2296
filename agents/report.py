"""The study's outputs: analyse the stage artifacts of a run, then write the CSVs, the plots and report.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.curves import summarize as curve_summary
from agents.measure import COMPUTE_COLUMNS
from agents.plots import plot_curves, plot_difficulty, plot_halting_steps, plot_wall_time, save_figure
from agents.policies import LEARNED_FAMILIES
from agents.sources import split_table
from agents.stages import EVAL_SPLITS, halting_frame, load_points
from agents.stats import Draws, block_length
from agents.study import Results, choose, curves, oracle_split, summarize, verdict
from trm_env.io import atomic_path

__all__ = ["PROTOCOL", "Analysis", "analyse", "markdown_table", "write_outputs"]

PROTOCOL = (
    "Protocol: the TRM trains on `train`; every halting learner (RL, fitted-Q) trains on `halt`, which the "
    "TRM never saw; every choice (each family's knob, the RL training cost, the fixed-depth reference) is made "
    "on `val`; `test` is used once, to report. CIs are 95%: a t interval over the TRM seeds' means (learner "
    "seeds averaged) whose variance adds the samples' shared variance from a bootstrap of samples (in circular "
    "blocks of consecutive days on market tasks), with Satterthwaite's degrees of freedom; shares get Fieller's "
    "interval."
)
VERDICTS = (("rl_ppo", "halt_head"), ("rl_ppo", "fitted_q"), ("halt_head", "fitted_q"))
LEARNED = ("halt_head", *LEARNED_FAMILIES)


@dataclass
class TaskAnalysis:
    task: str
    curves: pd.DataFrame
    chosen: pd.DataFrame
    summary: pd.DataFrame
    episodes: pd.DataFrame
    verdicts: list[dict[str, Any]]
    oracle: dict[str, float]
    blocks: dict[str, int]
    halt_target_rate: np.ndarray | None  # None: the model came as saved tables (agents.sources)
    lines: list[str] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)


@dataclass
class Analysis:
    tasks: list[TaskAnalysis]
    rl_seconds: list[float]

    def frame(self, name: str) -> pd.DataFrame:
        return pd.concat([getattr(t, name) for t in self.tasks], ignore_index=True)

    def text(self) -> str:
        columns = ["task", "policy", "param", "mean_return", "gain", "gain_lo", "gain_hi", "oracle_gain_share",
                   "attainable_gain_share", "accuracy", "mean_steps"]  # fmt: skip
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            table = self.frame("summary")[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        return "\n".join([table, "", *[line for t in self.tasks for line in t.lines]])


def _results(task: str, task_kwargs: dict[str, Any], seeds: dict[int, dict[str, Any]], step_cost: float) -> Results:
    results = Results(task, sorted(seeds), step_cost)
    for seed, paths in seeds.items():
        for split in EVAL_SPLITS:
            results.tables[(seed, split)] = split_table(task, task_kwargs, paths["checkpoint"], split)
        for group, path in paths.items():
            if group == "checkpoint":
                continue
            points, steps = load_points(path)
            for split in EVAL_SPLITS:
                for point, row in zip(points, steps[split], strict=True):
                    results.add(seed, split, point, row)
    return results


def _draws(results: Results, n_resamples: int) -> tuple[dict[str, Draws], dict[str, int]]:
    """One set of draws per split; the block length from the always-think (fixed depth K) returns."""
    draws, blocks = {}, {}
    for split in EVAL_SPLITS:
        table = results.tables[(results.trm_seeds[0], split)]
        always = results.arrays((split, "fixed_depth", float(table.max_steps)))["episode_return"]
        blocks[split] = block_length(always.mean(axis=(0, 1)), table.horizon)
        draws[split] = Draws.make(len(results.trm_seeds), table.num_samples, n_resamples, seed=0, block=blocks[split])
    return draws, blocks


def _episodes(results: Results, chosen: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for seed in results.trm_seeds:
        table = results.tables[(seed, "test")]
        for _, pick in chosen.iterrows():
            key = results.point("test", pick["policy"], pick["param"])
            for learner in results.learner_seeds(key):
                steps = results.steps(key, seed, learner)[None]
                point = {"policy": pick["policy"], "param": pick["param"], "seed": learner}
                frame = halting_frame(table, [point], steps, results.step_cost)
                frame.insert(0, "trm_seed", seed)
                frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "task", results.task)
    return out


def _share(row: pd.Series, name: str) -> str:
    """A share and its CI in percent; "[unbounded]" where Fieller's interval is (its reference not significant)."""
    bounds = [row[f"{name}_lo"], row[f"{name}_hi"]]
    return f"{row[name]:.1%} " + (f"[{bounds[0]:.1%}, {bounds[1]:.1%}]" if np.isfinite(bounds).all() else "[unbounded]")


def _lines(t: TaskAnalysis) -> list[str]:
    s = t.summary.set_index("policy")
    rate = t.halt_target_rate
    lines = [f"[{t.task}] block length of the bootstrap: {t.blocks} samples per split",
             f"[{t.task}] the models came as saved tables (one per TRM seed): no halt-head training target to report "
             f"and no live stage (no model to run)" if rate is None else
             f"[{t.task}] the halt head's training target (TRMLoss: confident and correct) is positive for "
             f"{rate.mean():.1%} of train samples over all steps (step 1: {rate[0]:.1%}, step K: {rate[-1]:.1%}; "
             f"mean over TRM seeds)"]  # fmt: skip
    o = t.oracle
    lines.append(f"[{t.task}] oracle gain on test over depth 1: {o['oracle'] - o['depth_1']:+.4f} = systematic "
                 f"{o['systematic']:+.4f} (best fixed depth k={o['best_k']:g}) + per-sample {o['per_sample']:+.4f}")
    for family, row in s.iterrows():
        if row["on_edge"]:
            limit = row["halt_at_1"] == 1 or row["halt_at_k"] == 1
            why = " (it halts every test episode at step 1 or at K there: nothing beyond differs)" if limit else ""
            lines.append(f"[{t.task}] {family}: the val-chosen point {row['param']:g} is on the edge of its grid{why}")
        if family in LEARNED and row["collapsed_runs"] > 0:
            where = "step 1" if row["halt_at_1"] >= row["halt_at_k"] else "K"
            lines.append(f"[{t.task}] {family}: {row['collapsed_runs']:.0%} of its (TRM seed, learner seed) runs "
                         f"collapse (>= 95% of test episodes halt at {where})")
    for v in t.verdicts:
        sign = "higher" if v["low"] > 0 else "lower" if v["high"] < 0 else "no significant difference"
        a, b = v["first"], v["second"]
        lines.append(f"[{t.task}] {a} minus {b} (val-chosen points) in test mean return: {v['difference']:+.4f}, "
                     f"95% CI [{v['low']:+.4f}, {v['high']:+.4f}] (t, df {v['df']:.1f}) ({sign}); descriptive: "
                     f"{v['share_draws_a_above_b']:.0%} of bootstrap draws have {a} above {b}, and rliable's run-level "
                     f"P({a} > {b}) over pairs of runs within a TRM seed is {v['poi_runs']:.2f} "
                     f"[{v['poi_runs_lo']:.2f}, {v['poi_runs_hi']:.2f}]")  # fmt: skip
    for family in (f for f in LEARNED if f in s.index and f != "fitted_q"):
        shares = [f"{_share(s.loc[family], name)} of {whose}" for name, whose in
                  (("oracle_gain_share", "the oracle's gain"), ("attainable_gain_share", "fitted_q's"))
                  if np.isfinite(s.loc[family, name])]  # fmt: skip
        if shares:
            lines.append(f"[{t.task}] {family} captures {' and '.join(shares)} (95% CIs, Fieller)")
    if "difficulty" in t.episodes and t.episodes["difficulty"].notna().any():
        for family in (f for f in ("oracle", *LEARNED) if f in s.index):
            group = t.episodes[t.episodes["policy"] == family]
            varies = group["halt_step"].nunique() > 1
            rho = stats.spearmanr(group["difficulty"], group["halt_step"]).statistic if varies else float("nan")
            lines.append(f"[{t.task}] Spearman(difficulty, halting step) of {family}'s val-chosen point: {rho:.3f}")
    return lines


def analyse(artifacts: dict[str, dict[int, dict[str, Path]]], agents: dict[str, dict[int, list[Path]]],
            config: dict[str, Any]) -> Analysis:  # fmt: skip
    tasks = []
    for task, seeds in artifacts.items():
        results = _results(task, config["task_kwargs"].get(task, {}), seeds, config["eval_step_cost"])
        draws, blocks = _draws(results, config["n_resamples"])
        curve = curves(results, draws)
        chosen = choose(curve)
        summary = summarize(results, chosen, draws["test"])
        test = curve[curve["split"] == "test"]
        extra = curve_summary(test, max_steps=results.tables[(results.trm_seeds[0], "test")].max_steps)
        summary = summary.merge(extra[["policy", "auc_accuracy", "vs_halt_head"]], on="policy", how="left")
        present = set(chosen["policy"])
        verdicts = [verdict(results, chosen, draws["test"], a, b) for a, b in VERDICTS if {a, b} <= present]
        rates = [json.loads((paths["checkpoint"] / "metrics.json").read_text())["train"]["halt_target_rate"]
                 for paths in seeds.values() if not isinstance(paths["checkpoint"], dict)]  # fmt: skip
        analysis = TaskAnalysis(task, curve, chosen, summary, _episodes(results, chosen), verdicts,
                                oracle_split(curve), blocks, np.mean(rates, axis=0) if rates else None)  # fmt: skip
        analysis.lines = _lines(analysis)
        tasks.append(analysis)
    seconds = [json.loads(p.with_suffix(".json").read_text())["train_seconds"]
               for per_task in agents.values() for paths in per_task.values() for p in paths]  # fmt: skip
    return Analysis(tasks, seconds)


def add_compute(analysis: Analysis, live: dict[str, Path]) -> None:
    """Merge each task's live measurements (``agents.measure.live_stage``) into its summary and report lines
    (tasks of saved tables have none)."""
    for t in (t for t in analysis.tasks if t.task in live):
        t.compute = json.loads(live[t.task].read_text())
        timing, mismatches = t.compute["timing"], t.compute["mismatches"]
        for column in COMPUTE_COLUMNS:
            t.summary[column] = [
                sum(m.get(family, 0) for m in mismatches.values()) if column == "live_mismatches" and family in timing
                else timing.get(family, {}).get(column, np.nan) for family in t.summary["policy"]]  # fmt: skip
        t.lines += _compute_lines(t)


def _compute_lines(t: TaskAnalysis) -> list[str]:
    c, timing = t.compute, t.compute["timing"]
    count = sum(sum(m.values()) for m in c["mismatches"].values())
    lines = [f"[{t.task}] live halting equals the table: {count} samples differ in halting step or prediction, "
             f"over every deployable val-chosen point and TRM seeds {c['trm_seeds']}",
             f"[{t.task}] full depth, run live: {timing['full_depth']['wall_ms_per_1k']:.1f} ms per 1000 samples "
             f"(batch {c['batch_size']}, one CPU thread, {c['samples']} test samples of TRM seed "
             f"{c['trm_seeds'][0]}, median of {c['rounds']} rounds)"]  # fmt: skip
    latency = c["latency"]
    for family, values in latency.items():
        lines.append(f"[{t.task}] latency at batch 1, {family}: p50 {values['p50_ms']:.2f} ms, p99 "
                     f"{values['p99_ms']:.2f} ms per sample")  # fmt: skip
    return lines


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (no extra dependency)."""
    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_outputs(out: Path, analysis: Analysis, config: dict[str, Any]) -> None:
    """``curves.csv``, ``summary.csv``, ``episodes.csv``, the plots and ``report.md``, all atomically."""
    for name in ("curves", "summary", "episodes"):
        _csv(analysis.frame(name), out / f"{name}.csv")
    sections = [f"# Halting study: run `{config['name']}`\n", PROTOCOL + "\n",
                f"Evaluation step cost {config['eval_step_cost']}; TRM seeds {config['trm_seeds']}; RL seeds "
                f"{config['rl_seeds']} at training costs {config['step_costs']}.\n"]  # fmt: skip
    if analysis.rl_seconds:
        seconds = analysis.rl_seconds
        sections.append(f"RL training: {len(seconds)} agents, at most {max(seconds):.1f} s each.\n")
    for t in analysis.tasks:
        test = t.curves[t.curves["split"] == "test"]
        figures = {f"{t.task}_{m}.png": plot_curves(test, m, f"{t.task} (test): {m} vs mean steps")
                   for m in ("mean_return", "accuracy")}  # fmt: skip
        if t.compute:
            figures[f"{t.task}_wall_time.png"] = plot_wall_time(t.summary, t.compute["timing"]["full_depth"],
                                                                f"{t.task} (test): mean return vs measured wall time")
        figures[f"{t.task}_halting_steps.png"] = plot_halting_steps(t.episodes, int(t.episodes["halt_step"].max()),
                                                                    f"{t.task}: halting steps (val-chosen points)")
        if "difficulty" in t.episodes and t.episodes["difficulty"].notna().any():
            title = f"{t.task}: mean halting step by difficulty"
            figures[f"{t.task}_difficulty.png"] = plot_difficulty(t.episodes, title)
        for name, fig in figures.items():
            save_figure(fig, out / name)
        sections += [f"## {t.task}\n", markdown_table(t.summary.drop(columns="task")), "",
                     *[f"- {line}" for line in t.lines], "", *[f"![{n}]({n})" for n in figures], ""]  # fmt: skip
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(sections) + "\n")
