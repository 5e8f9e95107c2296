"""A hyperparameter search for the post-hoc heads on val (docs/heads_tuning.md has the grid, scores and choice).

    python experiments/tune_heads.py --task regime-chain --trm-seeds 0 1 2 --out runs/tune_heads/regime-chain.csv
    python experiments/tune_heads.py --heads ponder --lr 0.02 --hidden 32 --steps 300 --max-samples 1000 3200
    python experiments/tune_heads.py --heads act --trm-seeds 1 --combos 0.02,32,300,1000 0.05,32,600,1000

Each head (``correct_head``, ``continuation_head``, ``ponder``, ``act``) is fitted on the **halt** split for
every combination of the grid (``agents.heads.HeadSettings``: learning rate, width, Adam steps, subset
size) exactly as the study fits it (``agents.learners.fit_learners``: PonderNet's variant and ACT's tau as
given, the quick config's by default), and scored on **val**: its best mean return over its knob, and the
share of the oracle's gain over the best fixed depth (both on val) that this reaches. Test is never read.
Rows go to ``--out`` (CSV, rewritten atomically after each; a rerun skips the rows already there), then a
table per head of the mean share over TRM seeds, best first, the current default marked.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import pandas as pd

from agents.evaluation import evaluate_policies
from agents.heads import HEAD_SETTINGS, HeadSettings
from agents.learners import fit_learners
from agents.report import markdown_table
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_path
from trm_env.model import torch_threads
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.tasks import load_task

HEADS = tuple(HEAD_SETTINGS)
KEYS = ("task", "head", "trm_seed", "learner_seeds", "lr", "hidden", "steps", "max_samples")


def score(head: str, settings: HeadSettings, halt: Any, val: Any, args: argparse.Namespace) -> dict[str, float]:
    """Fit ``head`` on halt as the study does; its best val mean return over the knob and the fit seconds."""
    start = time.perf_counter()
    points = fit_learners(head, halt, val, args.step_cost, args.learner_seeds,
                          [tuple(v) for v in args.ponder_variants], args.act_taus, settings=settings)  # fmt: skip
    seconds = time.perf_counter() - start
    frame = evaluate_policies(points, val, step_cost=args.step_cost)
    return {"val_return": float(frame.groupby("param")["episode_return"].mean().max()), "fit_s": seconds}


def search(args: argparse.Namespace) -> pd.DataFrame:
    done = pd.read_csv(args.out) if args.out and args.out.is_file() else pd.DataFrame(columns=[*KEYS])
    rows = done.to_dict("records")
    seen = {tuple(str(row[k]) for k in KEYS) for row in rows}
    grid = args.combos or list(itertools.product(args.lr, args.hidden, args.steps, args.max_samples))
    loaded = load_task(args.task)
    for trm_seed in args.trm_seeds:
        checkpoint = shipped_checkpoint(args.task, trm_seed)
        halt, val = (simulate(loaded, checkpoint, split=split) for split in ("halt", "val"))
        returns = val.returns("profit_weighted_ce", args.step_cost)
        fixed, oracle = float(returns.mean(axis=0).max()), float(returns.max(axis=1).mean())
        for head, (lr, hidden, steps, max_samples) in itertools.product(args.heads, grid):
            key = {"task": args.task, "head": head, "trm_seed": trm_seed,
                   "learner_seeds": " ".join(map(str, args.learner_seeds)), "lr": lr, "hidden": hidden,
                   "steps": steps, "max_samples": max_samples}  # fmt: skip
            if tuple(str(key[k]) for k in KEYS) in seen:
                continue
            found = score(head, HeadSettings(hidden, steps, lr, max_samples), halt, val, args)
            share = (found["val_return"] - fixed) / (oracle - fixed)
            rows.append({**key, **found, "share_of_oracle_gain": share})
            print(f"{head} seed {trm_seed} lr {lr:g} hidden {hidden} steps {steps} max {max_samples}: "
                  f"share {share:.3f} ({found['fit_s']:.1f} s)", flush=True)  # fmt: skip
            if args.out:
                with atomic_path(args.out) as tmp:
                    pd.DataFrame(rows).to_csv(tmp, index=False)
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> str:
    """Per head: mean share of the oracle's gain and fit seconds over TRM seeds, best first."""
    tables = []
    for head, group in frame.groupby("head", sort=False):
        table = group.groupby(["lr", "hidden", "steps", "max_samples"]).agg(
            share=("share_of_oracle_gain", "mean"), worst=("share_of_oracle_gain", "min"),
            seeds=("trm_seed", "nunique"), fit_s=("fit_s", "mean")).reset_index()  # fmt: skip
        default = HEAD_SETTINGS[head]
        table["default"] = [(r.lr, r.hidden, r.steps, r.max_samples) == (default.lr, default.hidden, default.steps,
                            default.max_samples) for r in table.itertuples()]  # fmt: skip
        tables.append(f"### {head}\n\n" + markdown_table(table.sort_values("share", ascending=False), digits=3))
    return "\n\n".join(tables)


def _combo(text: str) -> tuple[float, int, int, int]:
    """``lr,hidden,steps,max_samples`` -> its tuple (argparse reports a ValueError as a bad --combos)."""
    lr, hidden, steps, max_samples = text.split(",")
    return float(lr), int(hidden), int(steps), int(max_samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="regime-chain")
    parser.add_argument("--trm-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--learner-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--lr", nargs="+", type=float, default=[0.005, 0.02, 0.05])
    parser.add_argument("--hidden", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--steps", nargs="+", type=int, default=[150, 300, 600])
    parser.add_argument("--max-samples", nargs="+", type=int, default=[1000])
    parser.add_argument("--combos", nargs="+", type=_combo, help="lr,hidden,steps,max_samples tuples to score "
                        "instead of the product of --lr/--hidden/--steps/--max-samples")
    parser.add_argument("--ponder-variants", nargs="+", type=lambda v: tuple(map(float, v.split(","))),
                        default=[(0.2, 0.01), (0.4, 0.01)], help="lambda_p,beta pairs (default: the quick config's)")
    parser.add_argument("--act-taus", nargs="+", type=float, default=[0.001, 0.01, 0.03])
    parser.add_argument("--step-cost", type=float, default=DEFAULT_STEP_COST)
    parser.add_argument("--out", type=Path, help="CSV of every scored row (resumable)")
    args = parser.parse_args(argv)
    with torch_threads(1):
        frame = search(args)
    print(summary(frame[(frame["task"] == args.task) & frame["head"].isin(args.heads)]))


if __name__ == "__main__":
    main()
