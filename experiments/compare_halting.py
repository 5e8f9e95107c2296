"""Compare halting policies on one task: every rule family's sweep, any trained RL agents, the oracle.

    python experiments/compare_halting.py --task regime-chain --rl runs/quick/rl/regime-chain/*.zip
    python experiments/compare_halting.py --task sp500 --out runs/compare-sp500

Writes ``curves.csv``, ``episodes.csv`` and ``summary.csv`` into ``--out`` and prints the summary:
area under accuracy-vs-mean-steps, best mean return, and the share of the oracle's gain over the best
fixed depth that each family captures (all under one evaluation step cost).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from agents import RLHaltingPolicy, curve_from_episodes, evaluate_policies, summarize
from agents.curves import rule_policies
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_path
from trm_env.tasks import TASK_NAMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sp500", choices=[t for t in TASK_NAMES if t != "csv"])
    parser.add_argument("--rl", nargs="*", type=Path, default=[], help="SB3 zips saved by train_agent.py / run.py")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--step-cost", type=float, default=DEFAULT_STEP_COST, help="evaluation step cost")
    parser.add_argument("--checkpoint", help="TRM checkpoint (default: the shipped one for the task)")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, help="output folder (default runs/compare-<task>)")
    args = parser.parse_args(argv)
    if args.step_cost < 0:
        parser.error(f"--step-cost must be >= 0, got {args.step_cost}")
    env_kwargs = {"step_cost": args.step_cost}
    if args.checkpoint is not None:
        env_kwargs["checkpoint"] = args.checkpoint
    policies = [*rule_policies(args.random_seeds), *(RLHaltingPolicy.load(p) for p in args.rl)]
    episodes = evaluate_policies(policies, args.task, args.split, progress=True, **env_kwargs)
    curves = curve_from_episodes(episodes)
    summary = summarize(curves, max_steps=int(episodes["halt_step"].max()))
    out = args.out or Path("runs") / f"compare-{args.task}"
    for name, frame in (("episodes.csv", episodes), ("curves.csv", curves), ("summary.csv", summary)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nwrote {out}/curves.csv, episodes.csv, summary.csv")


if __name__ == "__main__":
    main()
