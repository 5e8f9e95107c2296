"""The main job: supervised halt head vs RL halting vs simple rules vs the oracle, on sp500 and regime-chain.

    python experiments/run.py                      # quick config -> runs/quick/  (what `make run` does)
    python experiments/run.py --config full        # more seeds and longer RL training -> runs/full/
    python experiments/run.py --config my.json --out runs/mine --retrain

Stages (each writes its artifacts atomically; rerunning skips the finished ones, ``--force`` redoes all):
1. per task, the TRM: the shipped checkpoint, or with ``--retrain`` a fresh one in ``trm/<task>/``;
2. per task, step cost and seed, an RL halting policy trained on the validation split: ``rl/<task>/*.zip``;
3. per task, every policy family evaluated on every test sample: ``episodes/<task>.csv``;
4. ``curves.csv``, ``episodes.csv``, ``summary.csv``, the plots and ``report.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.evaluation import (
    curve_from_episodes,
    default_points,
    evaluate_policies,
    paired_difference,
    rule_policies,
    summarize,
)
from agents.plots import plot_curves, plot_difficulty, plot_halting_steps
from agents.policies import RLHaltingPolicy
from agents.rl import train_rl_policy
from trm_env.env import CHECKPOINT_DIR, DEFAULT_STEP_COST
from trm_env.io import atomic_path, write_json_atomic
from trm_env.training import TrainConfig, train

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIGS: dict[str, dict[str, Any]] = {
    "quick": dict(tasks=["sp500", "regime-chain"], algo="ppo", step_costs=[0.001, 0.01, 0.03, 0.1], seeds=[0],
                  total_timesteps=100_000, n_envs=16, rl_split="val", eval_split="test",
                  eval_step_cost=DEFAULT_STEP_COST, retrain=False, random_seeds=[0]),
    "full": dict(tasks=["sp500", "regime-chain"], algo="ppo", step_costs=[0.001, 0.003, 0.01, 0.03, 0.1],
                 seeds=[0, 1, 2], total_timesteps=300_000, n_envs=16, rl_split="val", eval_split="test",
                 eval_step_cost=DEFAULT_STEP_COST, retrain=False, random_seeds=[0, 1, 2]),
}  # fmt: skip


def load_config(name_or_path: str, retrain: bool) -> dict[str, Any]:
    """A named config (``quick``/``full``) or a JSON file overriding the quick one."""
    if name_or_path in CONFIGS:
        config = dict(CONFIGS[name_or_path], name=name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--config must be one of {sorted(CONFIGS)} or a JSON file; got {name_or_path!r}")
        overrides = json.loads(path.read_text())
        unknown = set(overrides) - set(CONFIGS["quick"])
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        config = {**CONFIGS["quick"], **overrides, "name": path.stem}
    config["retrain"] = bool(config["retrain"] or retrain)
    needed = {t: CONFIG_DIR / f"{t}.json" if config["retrain"] else CHECKPOINT_DIR / t / "model.pt"
              for t in config["tasks"]}  # fmt: skip
    missing = [t for t, path in needed.items() if not path.is_file()]
    if not config["tasks"] or missing:
        what = "a training config in experiments/configs" if config["retrain"] else "a shipped checkpoint"
        raise ValueError(f"tasks must be a non-empty list of tasks with {what}; {missing or 'none'} lack one")
    if not config["retrain"]:  # a changed shipped checkpoint makes finished stages stale: record its content
        config["checkpoint_sha256"] = {t: _sha256(CHECKPOINT_DIR / t / "model.pt") for t in config["tasks"]}
    costs = config["step_costs"]
    if not costs or any(not (isinstance(c, int | float) and c >= 0) for c in costs):
        raise ValueError(f"step_costs must be a non-empty list of numbers >= 0, got {costs!r}")
    if config["algo"] not in ("ppo", "dqn"):
        raise ValueError(f"algo must be 'ppo' or 'dqn', got {config['algo']!r}")
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Run:
    """A run directory: stage bookkeeping, atomic artifacts, and the log of what ran."""

    def __init__(self, out: Path, config: dict[str, Any], force: bool) -> None:
        self.out, self.config, self.force = out, config, force
        self.ran: list[str] = []
        recorded = out / "config.json"
        if recorded.is_file() and not force:
            previous = json.loads(recorded.read_text())
            if previous != json.loads(json.dumps(config)):
                raise ValueError(f"{out} holds a run with a different config; use another --out or pass --force")
        write_json_atomic(recorded, config)

    def done(self, artifact: Path) -> bool:
        return artifact.is_file() and not self.force

    def checkpoint(self, task: str) -> Path:
        """Stage 1: the TRM for ``task``."""
        if not self.config["retrain"]:
            return CHECKPOINT_DIR / task
        folder = self.out / "trm" / task
        if not self.done(folder / "metrics.json"):
            train(TrainConfig.from_json(CONFIG_DIR / f"{task}.json"), out_dir=folder)
            self.ran.append(f"trm/{task}")
        return folder

    def rl_policies(self, task: str, checkpoint: Path) -> list[RLHaltingPolicy]:
        """Stage 2: one RL policy per step cost and seed."""
        c = self.config
        policies = []
        for cost in c["step_costs"]:
            for seed in c["seeds"]:
                path = self.out / "rl" / task / f"{c['algo']}_cost{cost:g}_seed{seed}.zip"
                if not self.done(path.with_suffix(".json")):
                    train_rl_policy(task=task, algo=c["algo"], step_cost=cost, total_timesteps=c["total_timesteps"],
                                    seed=seed, n_envs=c["n_envs"], split=c["rl_split"], out=path,
                                    checkpoint=str(checkpoint), tensorboard_log=self.out / "tensorboard")  # fmt: skip
                    self.ran.append(f"rl/{task}/{path.stem}")
                policies.append(RLHaltingPolicy.load(path))
        return policies

    def episodes(self, task: str, checkpoint: Path, rl: list[RLHaltingPolicy]) -> pd.DataFrame:
        """Stage 3: every policy point on every sample of the evaluation split."""
        path = self.out / "episodes" / f"{task}.csv"
        if self.done(path) and not any(r.startswith(("trm/", "rl/")) for r in self.ran):
            return pd.read_csv(path)
        rules = rule_policies(self.config["random_seeds"])
        frame = evaluate_policies([*rules, *rl], task, self.config["eval_split"], progress=True,
                                  checkpoint=str(checkpoint), step_cost=self.config["eval_step_cost"])  # fmt: skip
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        self.ran.append(f"episodes/{task}")
        return frame


def _paired_line(task: str, episodes: pd.DataFrame, shares: pd.DataFrame, rl: str) -> str:
    """Best RL point minus best halt-head point in mean return, with a paired bootstrap CI."""
    best = shares.set_index("policy")["best_param"]
    frame = episodes[episodes["task"] == task]
    diff, lo, hi = paired_difference(frame, (rl, best[rl]), ("halt_head", best["halt_head"]))
    verdict = "RL better" if lo > 0 else "halt head better" if hi < 0 else "no significant difference"
    return (f"[{task}] {rl} (cost {best[rl]:g}) minus halt_head (threshold {best['halt_head']:g}) in mean return: "
            f"{diff:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]: {verdict} (best points picked on test)")


def _spearman_line(policy: str, group: pd.DataFrame) -> str:
    """Spearman correlation of difficulty and halting step (undefined when a policy always halts alike)."""
    if group["halt_step"].nunique() < 2:
        return f"Spearman(difficulty, halting step) for {policy}: undefined, it always halts at the same step (FAIL)"
    rho = stats.spearmanr(group["difficulty"], group["halt_step"]).statistic
    verdict = "PASS" if rho >= 0.5 else "FAIL"
    return f"Spearman(difficulty, halting step) for {policy}: {rho:.3f} (bar >= 0.5: {verdict})"


def bars(curves: pd.DataFrame, episodes: pd.DataFrame, summary: pd.DataFrame, rl_seconds: list[float],
         eval_cost: float) -> list[str]:  # fmt: skip
    """The quick-config bars of the issue, as printable lines (PASS/FAIL where a bar exists)."""
    lines = []
    max_steps = int(episodes["halt_step"].max())
    defaults = default_points(episodes, eval_cost, max_steps)
    for task, frame in curves.groupby("task", sort=False):
        oracle = frame.loc[frame["policy"] == "oracle", "mean_return"].max()
        others = frame.loc[frame["policy"] != "oracle", "mean_return"].max()
        lines.append(f"[{task}] oracle mean return {oracle:+.4f} >= best other {others:+.4f}: "
                     f"{'PASS' if oracle >= others - 1e-12 else 'FAIL'}")  # fmt: skip
        shares = summary[(summary["task"] == task) & summary["policy"].isin(["halt_head", "rl_ppo", "rl_dqn"])]
        for _, row in shares.iterrows():
            lines.append(f"[{task}] {row['policy']}: best mean return {row['best_mean_return']:+.4f}, "
                         f"captures {row['oracle_gain_share']:.1%} of the oracle's gain over the best fixed depth")
        if len(shares) > 1:
            winner = shares.loc[shares["best_mean_return"].idxmax(), "policy"]
            lines.append(f"[{task}] the learned policy capturing more of the oracle's gain: {winner}")
            lines += [_paired_line(task, episodes, shares, rl) for rl in shares["policy"] if rl.startswith("rl_")]
        points = defaults[defaults["task"] == task]
        if "difficulty" in points and points["difficulty"].notna().any():
            for policy in ("halt_head", "rl_ppo", "rl_dqn"):
                group = points[points["policy"] == policy]
                if len(group):
                    lines.append(f"[{task}] {_spearman_line(policy, group)}")
    if rl_seconds:
        lines.append(f"RL training per step cost and seed: max {max(rl_seconds):.1f} s "
                     f"(bar < 60 s: {'PASS' if max(rl_seconds) < 60 else 'FAIL'})")  # fmt: skip
    return lines


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (no extra dependency)."""
    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(run: Run, curves: pd.DataFrame, episodes: pd.DataFrame, summary: pd.DataFrame,
                 lines: list[str], max_steps: int) -> None:  # fmt: skip
    """Stage 4: plots and report.md (tables + links)."""
    out = run.out
    sections = [f"# Halting study: run `{run.config['name']}`\n",
                "Evaluation: every test sample once, step cost "
                f"{run.config['eval_step_cost']} for every policy; 95% bootstrap CIs over samples (and RL seeds).\n",
                "## Bars\n", *[f"- {line}" for line in lines], ""]  # fmt: skip
    defaults = default_points(episodes, run.config["eval_step_cost"], max_steps)
    for task in curves["task"].unique():
        tag = task.replace("/", "_")
        frame = curves[curves["task"] == task]
        figures = {f"{tag}_{m}.png": plot_curves(frame, m, f"{task}: {m} vs mean steps")
                   for m in ("accuracy", "mean_pnl", "profit_weighted_ce")}  # fmt: skip
        points = defaults[defaults["task"] == task]
        figures[f"{tag}_halting_steps.png"] = plot_halting_steps(points, max_steps, f"{task}: halting steps")
        if points["difficulty"].notna().any() if "difficulty" in points else False:
            figures[f"{tag}_difficulty.png"] = plot_difficulty(points, f"{task}: mean halting step by difficulty")
        for name, fig in figures.items():
            save_figure(fig, out / name)
        table = summary[summary["task"] == task].drop(columns="task")
        sections += [f"## {task}\n", markdown_table(table), "", *[f"![{n}]({n})" for n in figures], ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(sections) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quick", help="quick (default), full, or a JSON file of overrides")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    parser.add_argument("--retrain", action="store_true", help="train the TRMs instead of using shipped checkpoints")
    parser.add_argument("--force", action="store_true", help="redo every stage (and accept a changed config)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.retrain)
    run = Run(args.out or Path("runs") / config["name"], config, args.force)
    start = time.perf_counter()
    frames, rl_seconds = [], []
    for task in config["tasks"]:
        checkpoint = run.checkpoint(task)
        policies = run.rl_policies(task, checkpoint)
        rl_seconds += [json.loads(p.with_suffix(".json").read_text()).get("train_seconds", np.nan)
                       for p in sorted((run.out / "rl" / task).glob("*.zip"))]  # fmt: skip
        frames.append(run.episodes(task, checkpoint, policies))
    episodes = pd.concat(frames, ignore_index=True)
    curves = curve_from_episodes(episodes)
    max_steps = int(episodes["halt_step"].max())
    summary = summarize(curves, max_steps=max_steps)
    lines = bars(curves, episodes, summary, rl_seconds, config["eval_step_cost"])
    for name, frame in (("episodes.csv", episodes), ("curves.csv", curves), ("summary.csv", summary)):
        with atomic_path(run.out / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_report(run, curves, episodes, summary, lines, max_steps)
    print(f"\nrun directory: {run.out}  (stages run now: {len(run.ran)}; {time.perf_counter() - start:.1f} s)")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
