"""Explore halting policies on one task and split: every rule family's sweep, fitted-Q, any trained RL agents.

    python experiments/compare_halting.py --task regime-chain --rl runs/quick/rl/regime-chain/trm0/*.pt
    python experiments/compare_halting.py --task sp500 --split val --out runs/compare-sp500
    python experiments/compare_halting.py --task csv --path prices.csv --checkpoint runs/my-trm

Fitted-Q is fitted on the halt split of the same TRM. Writes ``curves.csv``, ``episodes.csv`` and
``summary.csv`` into ``--out`` and prints the summary: area under accuracy-vs-mean-steps, best mean return
and the share of the oracle's gain over the best fixed depth, all on ``--split``. The best points are picked
on that same split, so this is for exploring; the study's verdicts (choices on val, reported on test, several
TRM seeds) come from ``experiments/run.py``. Any other ``--name value`` flag is a ``load_task`` override.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from agents import PrivilegedPolicy, RLHaltingPolicy, curve_from_episodes, evaluate_policies, summarize
from agents.curves import rule_policies
from agents.fitted_q import MARGINS, FittedQPolicy
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_path
from trm_env.rollouts import simulate
from trm_env.tasks import SPLITS, TASK_NAMES, load_task, overrides_from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sp500", choices=TASK_NAMES)
    parser.add_argument("--rl", nargs="*", type=Path, default=[],
                        help="agents saved by train_agent.py / run.py: <name>.pt, with <name>.json beside it "
                        "(SB3 zips are refused: loading one can run code stored in it)")  # fmt: skip
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--step-cost", type=float, default=DEFAULT_STEP_COST, help="evaluation step cost")
    parser.add_argument("--checkpoint", help="TRM checkpoint (default: the shipped one for the task)")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, help="output folder (default runs/compare-<task>)")
    args, extra = parser.parse_known_args(argv)
    task = load_task(args.task, **overrides_from_args(extra))
    if args.step_cost < 0:
        parser.error(f"--step-cost must be >= 0, got {args.step_cost}")
    table = simulate(task, args.checkpoint, split=args.split)
    fitted = FittedQPolicy().fit(simulate(task, args.checkpoint, split="halt"), args.step_cost)
    privileged = [PrivilegedPolicy(rule) for rule in sorted(table.reference_steps)]
    policies = [*rule_policies(args.random_seeds, table.max_steps), *privileged,
                *(fitted.with_margin(m) for m in MARGINS), *(RLHaltingPolicy.load(p) for p in args.rl)]  # fmt: skip
    episodes = evaluate_policies(policies, table, progress=True, step_cost=args.step_cost)
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
