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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.curves import (
    DEFAULT_PARAMS,
    curve_from_episodes,
    default_points,
    paired_difference,
    rule_policies,
    summarize,
)
from agents.evaluation import evaluate_policies
from agents.plots import plot_curves, plot_difficulty, plot_halting_steps
from agents.rl import HYPERPARAMETERS, RLHaltingPolicy, train_rl_policy
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_path, write_json_atomic
from trm_env.rollouts import CHECKPOINT_DIR
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
    costs = config["step_costs"]
    if not costs or any(not (isinstance(c, int | float) and c >= 0) for c in costs):
        raise ValueError(f"step_costs must be a non-empty list of numbers >= 0, got {costs!r}")
    if config["algo"] not in ("ppo", "dqn"):
        raise ValueError(f"algo must be 'ppo' or 'dqn', got {config['algo']!r}")
    return config


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Run:
    """A run directory: stage bookkeeping, atomic artifacts, and the log of what ran.

    Every stage records the key it was made under (the config entries it depends on and the digests
    of its inputs) in ``<artifact>.key.json``, written after the artifact; a stage is redone when its
    key changed or the key file is missing. ``config.json`` is written last, when every stage is done.
    """

    def __init__(self, out: Path, config: dict[str, Any], force: bool) -> None:
        self.out, self.config, self.force = out, config, force
        self.ran: list[str] = []
        recorded = out / "config.json"
        if recorded.is_file() and not force:
            previous = json.loads(recorded.read_text())
            if previous != json.loads(json.dumps(config)):
                raise ValueError(f"{out} holds a run with a different config; use another --out or pass --force")

    @staticmethod
    def _key_file(artifact: Path) -> Path:
        return artifact.with_name(f"{artifact.name}.key.json")

    def fresh(self, artifact: Path, key: dict[str, Any]) -> bool:
        """Whether ``artifact`` exists and was made under ``key`` (never with ``--force``)."""
        key_file = self._key_file(artifact)
        if self.force or not artifact.exists() or not key_file.is_file():
            return False
        return json.loads(key_file.read_text()) == json.loads(json.dumps(key))

    def record(self, artifact: Path, key: dict[str, Any], name: str) -> None:
        write_json_atomic(self._key_file(artifact), key)
        self.ran.append(name)

    def finish(self) -> None:
        write_json_atomic(self.out / "config.json", self.config)

    def checkpoint(self, task: str) -> Path:
        """Stage 1: the TRM for ``task`` (its folder); the shipped one unless ``retrain``."""
        if not self.config["retrain"]:
            return CHECKPOINT_DIR / task
        folder = self.out / "trm" / task
        train_config = TrainConfig.from_json(CONFIG_DIR / f"{task}.json")
        key = {"stage": "trm", "train": asdict(train_config)}
        if not self.fresh(folder / "metrics.json", key):
            train(train_config, out_dir=folder)
            self.record(folder / "metrics.json", key, f"trm/{task}")
        return folder

    def rl_policies(self, task: str, checkpoint: Path) -> list[RLHaltingPolicy]:
        """Stage 2: one RL policy per step cost and seed, keyed on the TRM's content and the RL settings."""
        c = self.config
        policies = []
        for cost in c["step_costs"]:
            for seed in c["seeds"]:
                path = self.out / "rl" / task / f"{c['algo']}_cost{cost:g}_seed{seed}.zip"
                key = {"stage": "rl", "task": task, "algo": c["algo"], "step_cost": cost, "seed": seed,
                       "total_timesteps": c["total_timesteps"], "n_envs": c["n_envs"], "split": c["rl_split"],
                       "hyperparameters": HYPERPARAMETERS[c["algo"]],
                       "checkpoint": sha256_file(checkpoint / "model.pt")}  # fmt: skip
                if not self.fresh(path, key):
                    train_rl_policy(task=task, algo=c["algo"], step_cost=cost, total_timesteps=c["total_timesteps"],
                                    seed=seed, n_envs=c["n_envs"], split=c["rl_split"], out=path,
                                    checkpoint=str(checkpoint), tensorboard_log=self.out / "tensorboard")  # fmt: skip
                    self.record(path, key, f"rl/{task}/{path.stem}")
                policies.append(RLHaltingPolicy.load(path))
        return policies

    def episodes(self, task: str, checkpoint: Path, rl: list[RLHaltingPolicy], rl_paths: list[Path]) -> pd.DataFrame:
        """Stage 3: every policy point on every sample of the evaluation split."""
        path = self.out / "episodes" / f"{task}.csv"
        c = self.config
        key = {"stage": "episodes", "split": c["eval_split"], "step_cost": c["eval_step_cost"],
               "random_seeds": c["random_seeds"], "rules": DEFAULT_PARAMS,
               "checkpoint": sha256_file(checkpoint / "model.pt"),
               "rl": [sha256_file(p) for p in rl_paths]}  # fmt: skip
        if self.fresh(path, key):
            return pd.read_csv(path)
        rules = rule_policies(c["random_seeds"])
        frame = evaluate_policies([*rules, *rl], task, c["eval_split"], progress=True, checkpoint=str(checkpoint),
                                  step_cost=c["eval_step_cost"])  # fmt: skip
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        self.record(path, key, f"episodes/{task}")
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
        paths = [run.out / "rl" / task / f"{config['algo']}_cost{cost:g}_seed{seed}.zip"
                 for cost in config["step_costs"] for seed in config["seeds"]]  # fmt: skip
        rl_seconds += [json.loads(p.with_suffix(".json").read_text()).get("train_seconds", np.nan) for p in paths]
        frames.append(run.episodes(task, checkpoint, policies, paths))
    episodes = pd.concat(frames, ignore_index=True)
    curves = curve_from_episodes(episodes)
    max_steps = int(episodes["halt_step"].max())
    summary = summarize(curves, max_steps=max_steps)
    lines = bars(curves, episodes, summary, rl_seconds, config["eval_step_cost"])
    for name, frame in (("episodes.csv", episodes), ("curves.csv", curves), ("summary.csv", summary)):
        with atomic_path(run.out / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_report(run, curves, episodes, summary, lines, max_steps)
    run.finish()
    print(f"\nrun directory: {run.out}  (stages run now: {len(run.ran)}; {time.perf_counter() - start:.1f} s)")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
