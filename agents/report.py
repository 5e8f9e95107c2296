"""The study's outputs: analyse the stage artifacts of a run, then write the CSVs, the plots and report.md.

``report.md`` (sections from ``agents.report_text``; figures from ``FIGURES``, each a function of a task's
analysis and the family styles):

1. a title, one paragraph on what is compared;
2. per task: a headline (3-6 sentences), the compact table, the forest plot, the calibrated exits;
3. the re-split check of the calibrated exits' guarantee (where any task has one), with its figure;
4. "Figures": per task, the curves and the rest of ``FIGURES``;
5. "Details": the protocol and the run's settings, then per task the ``DETAILS`` sections (verdicts, shares,
   oracle and bootstrap, grid edges and collapse, difficulty, live halting).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from agents.calibrate import exchangeability
from agents.curves import summarize as curve_summary
from agents.joint import JOINT_FAMILIES
from agents.joint_study import (
    JOINT_CHECKPOINTS,
    JOINT_COMPARED,
    JOINT_GROUPS,
    JOINT_INPUTS,
    JOINT_VERDICTS,
    add_joint_tables,
    plot_steps,
    step_lines,
    step_profiles,
)
from agents.ltt_study import BASES, add_calibrated, chosen_risk, coverage, live_choices, mark_selected
from agents.measure import COMPUTE_COLUMNS
from agents.plots import (
    family_styles,
    plot_coverage,
    plot_curves,
    plot_difficulty,
    plot_forest,
    plot_halting_steps,
    plot_wall_time,
    save_figure,
)
from agents.report_text import (
    DETAILS,
    PROTOCOL,
    calibration_lines,
    compact_table,
    coverage_lines,
    detail_lines,
    headline,
    markdown_table,
)
from agents.sources import split_table
from agents.stages import EVAL_SPLITS, halting_frame, load_points
from agents.stats import Draws, block_length
from agents.study import Results, choose, curves, oracle_split, summarize, verdict
from trm_env.io import atomic_path

__all__ = ["FIGURES", "PROTOCOL", "Analysis", "TaskAnalysis", "analyse", "analyse_task", "load_results",
           "markdown_table", "write_outputs"]  # fmt: skip

VERDICTS = (("rl_ppo", "halt_head"), ("rl_ppo", "fitted_q"), ("halt_head", "fitted_q"))


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
    compute: dict[str, Any] = field(default_factory=dict)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)  # agents.ltt_study.CALIBRATION_COLUMNS
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame)  # agents.ltt_study.COVERAGE_COLUMNS
    base_risk: dict[str, float] = field(default_factory=dict)  # base family -> test risk of its val-chosen point
    exchangeability: str | None = None  # why val and test are not exchangeable (None: they are)
    step_profiles: pd.DataFrame | None = None  # per-step test quality of the BCE and joint TRMs (agents.joint_study)
    step_lines: list[str] = field(default_factory=list)  # the joint TRMs minus the BCE TRMs at steps 1 and K

    @property
    def lines(self) -> list[str]:
        """Every detail line (``agents.report_text.DETAILS``), as the console prints them."""
        return detail_lines(self)


@dataclass
class Analysis:
    tasks: list[TaskAnalysis]
    rl_seconds: list[float]

    def frame(self, name: str) -> pd.DataFrame:
        frames = [getattr(t, name) for t in self.tasks]
        return pd.concat([f for f in frames if not f.empty] or frames, ignore_index=True)

    def text(self) -> str:
        columns = ["task", "policy", "param", "mean_return", "gain", "gain_lo", "gain_hi", "oracle_gain_share",
                   "attainable_gain_share", "accuracy", "mean_steps"]  # fmt: skip
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            table = self.frame("summary")[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        return "\n".join([table, "", *[line for t in self.tasks for line in t.lines]])


def load_results(task: str, task_kwargs: dict[str, Any], seeds: dict[int, dict[str, Any]], step_cost: float,
                 families: tuple[str, ...] | None = None) -> Results:  # fmt: skip
    """A task's ``Results`` from its stage artifacts: per TRM seed, ``{"checkpoint": folder, group: .npz}`` (only
    the points of ``families``, if given)."""
    results = Results(task, sorted(seeds), step_cost)
    for seed, paths in seeds.items():
        for split in EVAL_SPLITS:
            results.tables[(seed, split)] = split_table(task, task_kwargs, paths["checkpoint"], split)
        add_joint_tables(results, task, task_kwargs, seed, paths.get(JOINT_CHECKPOINTS, {}), EVAL_SPLITS)
        for group, path in paths.items():
            if group in ("checkpoint", JOINT_CHECKPOINTS):
                continue
            points, steps = load_points(path)
            for split in EVAL_SPLITS:
                for point, row in zip(points, steps[split], strict=True):
                    if families is None or point["policy"] in families:
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
        for _, pick in chosen.iterrows():
            table = results.table(pick["policy"], seed, "test")
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


def analyse_task(results: Results, n_resamples: int, halt_target_rate: np.ndarray | None) -> TaskAnalysis:
    """One task's analysis from its ``Results`` (the calibrated families are added to them first)."""
    calibration = add_calibrated(results)  # before the curves: the calibrated families are points too
    draws, blocks = _draws(results, n_resamples)
    curve = curves(results, draws)
    max_steps = results.tables[(results.trm_seeds[0], "test")].max_steps
    chosen = choose(curve)
    chosen["per_trm_seed"] = chosen["policy"].map(live_choices(calibration, max_steps))
    summary = mark_selected(summarize(results, chosen, draws["test"]))
    extra = curve_summary(curve[curve["split"] == "test"], max_steps=max_steps)
    summary = summary.merge(extra[["policy", "auc_accuracy", "vs_halt_head"]], on="policy", how="left")
    present = set(chosen["policy"])
    verdicts = [verdict(results, chosen, draws["test"], a, b) for a, b in VERDICTS if {a, b} <= present]
    picks = chosen.set_index("policy")["param"]
    return TaskAnalysis(results.task, curve, chosen, summary, _episodes(results, chosen), verdicts,
                        oracle_split(curve), blocks, halt_target_rate, calibration=calibration,
                        coverage=coverage(results),
                        base_risk={b: chosen_risk(results, b, picks[b]) for b in BASES if b in picks},
                        exchangeability=exchangeability(results.tables[(results.trm_seeds[0], "val")]))  # fmt: skip


def analyse(artifacts: dict[str, dict[int, dict[str, Path]]], agents: dict[str, dict[int, list[Path]]],
            config: dict[str, Any]) -> Analysis:  # fmt: skip
    tasks = []
    for task, seeds in artifacts.items():
        kwargs, cost = config["task_kwargs"].get(task, {}), config["eval_step_cost"]
        own = {seed: {g: p for g, p in paths.items() if g not in JOINT_GROUPS} for seed, paths in seeds.items()}
        results = load_results(task, kwargs, own, cost)
        rates = [json.loads((paths["checkpoint"] / "metrics.json").read_text())["train"]["halt_target_rate"]
                 for paths in seeds.values() if not isinstance(paths["checkpoint"], dict)]  # fmt: skip
        analysis = analyse_task(results, config["n_resamples"], np.mean(rates, axis=0) if rates else None)
        joint = {seed: {g: p for g, p in paths.items() if g in JOINT_INPUTS} for seed, paths in seeds.items()
                 if paths.get(JOINT_CHECKPOINTS)}  # fmt: skip
        if joint:
            add_joint(analysis, load_results(task, kwargs, joint, cost, JOINT_COMPARED), config["n_resamples"])
        tasks.append(analysis)
    seconds = [json.loads(p.with_suffix(".json").read_text())["train_seconds"]
               for per_task in agents.values() for paths in per_task.values() for p in paths]  # fmt: skip
    return Analysis(tasks, seconds)


def add_joint(analysis: TaskAnalysis, results: Results, n_resamples: int) -> None:
    """Analyse the joint families on the TRM seeds that have them (``results``: theirs and the families they are
    compared with, ``JOINT_COMPARED``) and add their rows, verdicts and per-step comparison to ``analysis``."""
    draws, _ = _draws(results, n_resamples)
    curve = curves(results, draws)
    chosen = choose(curve)
    summary = summarize(results, chosen, draws["test"])
    extra = curve_summary(curve[curve["split"] == "test"], max_steps=results.tables[(results.trm_seeds[0], "test")]
                          .max_steps)  # fmt: skip
    summary = summary.merge(extra[["policy", "auc_accuracy", "vs_halt_head"]], on="policy", how="left")
    mine = chosen[chosen["policy"].isin(JOINT_FAMILIES)]
    frames = {"curves": curve, "chosen": mine, "summary": summary, "episodes": _episodes(results, mine)}
    for name, frame in frames.items():
        setattr(analysis, name, pd.concat([getattr(analysis, name), frame[frame["policy"].isin(JOINT_FAMILIES)]],
                                          ignore_index=True))  # fmt: skip
    present = set(chosen["policy"])
    analysis.verdicts += [verdict(results, chosen, draws["test"], a, b) for a, b in JOINT_VERDICTS if {a, b} <= present]
    analysis.step_profiles, analysis.step_lines = step_profiles(results), step_lines(results, draws["test"])


def add_compute(analysis: Analysis, live: dict[str, Path]) -> None:
    """Merge each task's live measurements (``agents.measure.live_stage``) into its summary (tasks of saved
    tables have none)."""
    for t in (t for t in analysis.tasks if t.task in live):
        t.compute = json.loads(live[t.task].read_text())
        timing, mismatches = t.compute["timing"], t.compute["mismatches"]
        for column in COMPUTE_COLUMNS:
            t.summary[column] = [
                sum(m.get(family, 0) for m in mismatches.values()) if column == "live_mismatches" and family in timing
                else timing.get(family, {}).get(column, np.nan) for family in t.summary["policy"]]  # fmt: skip


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


Figures = Callable[[TaskAnalysis, dict[str, dict[str, Any]]], dict[str, Figure]]


def _curve_figures(t: TaskAnalysis, styles: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    test = t.curves[t.curves["split"] == "test"]
    return {f"{t.task}_{m}.png": plot_curves(test, m, f"{t.task} (test): {m} vs mean steps", styles)
            for m in ("mean_return", "accuracy")}  # fmt: skip


def _wall_time_figure(t: TaskAnalysis, styles: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    if not t.compute:
        return {}
    title = f"{t.task} (test): mean return vs measured wall time"
    return {f"{t.task}_wall_time.png": plot_wall_time(t.summary, t.compute["timing"]["full_depth"], title, styles)}


def _episode_figures(t: TaskAnalysis, styles: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    steps = int(t.episodes["halt_step"].max())
    title = f"{t.task} (test): halting steps of the val-chosen points"
    out = {f"{t.task}_halting_steps.png": plot_halting_steps(t.episodes, steps, title)}
    if "difficulty" in t.episodes and t.episodes["difficulty"].notna().any():
        out[f"{t.task}_difficulty.png"] = plot_difficulty(t.episodes, f"{t.task}: mean halting step by difficulty",
                                                          styles)  # fmt: skip
    return out


def _joint_figure(t: TaskAnalysis, styles: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    if t.step_profiles is None:
        return {}
    title = f"{t.task} (test): per-step quality of the TRMs by training objective"
    return {f"{t.task}_joint_steps.png": plot_steps(t.step_profiles, title)}


FIGURES: list[Figures] = [_curve_figures, _wall_time_figure, _episode_figures, _joint_figure]  # per task


def _images(names: list[str]) -> list[str]:
    return [f"![{name}]({name})" for name in names]


def _save(out: Path, figures: dict[str, Figure]) -> list[str]:
    for name, fig in figures.items():
        save_figure(fig, out / name)
    return list(figures)


def write_outputs(out: Path, analysis: Analysis, config: dict[str, Any]) -> None:
    """``curves.csv``, ``summary.csv``, ``episodes.csv``, ``calibration.csv``, ``ltt_coverage.csv``, the plots and
    ``report.md`` (structure: the module docstring), all atomically."""
    for name in ("curves", "summary", "episodes", "calibration"):
        _csv(analysis.frame(name), out / f"{name}.csv")
    title = [f"# Halting study: run `{config['name']}`\n",
             "Every halting family on every task: each family's knob chosen on `val`, its point reported on `test` "
             "against the val-chosen fixed depth. Each task opens with the verdict in words and a compact table; "
             "figures, the protocol and every detail follow. `summary.csv` holds every column.\n"]  # fmt: skip
    tasks, figures, details = [], ["## Figures\n"], ["## Details\n", "### Protocol\n", *_settings(analysis, config)]
    for t in analysis.tasks:
        styles = family_styles(t.curves["policy"].unique())
        caption = f"{t.task} (test): gain over the val-chosen fixed depth, 95% CI"
        forest = _save(out, {f"{t.task}_forest.png": plot_forest(t.summary, caption, styles)})
        calibrated = calibration_lines(t)
        tasks += [f"## {t.task}\n", *headline(t), "", *compact_table(t), "", *_images(forest), "",
                  *(["### Calibrated exits (Learn-then-Test)\n", *calibrated, ""] if calibrated else [])]  # fmt: skip
        names = [name for make in FIGURES for name in _save(out, make(t, styles))]
        figures += [f"### {t.task}\n", *_images(names), ""]
        details.append(f"### {t.task}\n")
        for heading, section in DETAILS:
            lines = section(t)
            details += [f"#### {heading}\n", *[f"- {line}" for line in lines], ""] if lines else []
    checked = analysis.frame("coverage")
    _csv(checked, out / "ltt_coverage.csv")
    check = []
    if not checked.empty:
        image = _save(out, {"ltt_coverage.png": plot_coverage(checked)})
        check = ["## Does the guarantee hold?\n", *coverage_lines(checked), "", *_images(image), ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join([*title, *tasks, *check, *figures, *details]) + "\n")


def _settings(analysis: Analysis, config: dict[str, Any]) -> list[str]:
    lines = [PROTOCOL + "\n", f"Evaluation step cost {config['eval_step_cost']}; TRM seeds {config['trm_seeds']}; RL "
             f"seeds {config['rl_seeds']} at training costs {config['step_costs']}.\n"]  # fmt: skip
    if any(t.step_profiles is not None for t in analysis.tasks):
        lines.append(f"Joint families ({', '.join(config['joint'])}) halt TRMs trained with their own halting "
                     f"objective on `train`, TRM seeds {config['joint_seeds']} (their seed k paired with the BCE TRM's "
                     "seed k on the same samples; `agents/joint_study.py`).\n")  # fmt: skip
    if analysis.rl_seconds:
        seconds = analysis.rl_seconds
        lines.append(f"RL training: {len(seconds)} agents, at most {max(seconds):.1f} s each.\n")
    return lines
