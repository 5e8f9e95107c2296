"""Fitted-Q's regressors side by side on val: the share of the oracle's gain each reaches, its fit time, the choice.

    python experiments/fitted_q_regressors.py --tasks regime-chain pointer sp500 --trm-seeds 0 1 2

Per task and shipped TRM seed, every regressor of ``agents.regressors.REGRESSORS`` is fitted on ``halt``
(single-threaded; ``fit_s``) and scored on ``val`` at its best margin (``val_s``: evaluating every margin
there): the share of the oracle's gain over the best fixed depth (both on val) it reaches.
``fit_learners("fitted_q", ...)`` keeps the best (the first of equals): the ``chosen`` column. Test is
never read. Prints a Markdown table; ``--out`` also writes a CSV (docs/fitted_q.md has the results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from agents.evaluation import evaluate_policies
from agents.fitted_q import MARGINS, FittedQPolicy
from agents.regressors import REGRESSORS
from agents.report import markdown_table
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_path
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.tasks import load_task


def compare(task: str, trm_seed: int, step_cost: float) -> list[dict[str, object]]:
    """One row per regressor: val return at its best margin, share of the oracle's gain, fit seconds on halt and
    seconds to evaluate every margin on val (``val_s``: the predictions)."""
    loaded, checkpoint = load_task(task), shipped_checkpoint(task, trm_seed)
    halt, val = (simulate(loaded, checkpoint, split=split) for split in ("halt", "val"))
    returns = val.returns("profit_weighted_ce", step_cost)
    fixed, oracle = returns.mean(axis=0).max(), returns.max(axis=1).mean()
    rows = []
    for name in REGRESSORS:
        start = time.perf_counter()
        fitted = FittedQPolicy(regressor=name).fit(halt, step_cost)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        frame = evaluate_policies([fitted.with_margin(m) for m in MARGINS], val, step_cost=step_cost)
        predict_seconds = time.perf_counter() - start
        by_margin = frame.groupby("param")["episode_return"].mean()
        best = by_margin.max()
        rows.append({"task": task, "trm_seed": trm_seed, "regressor": name, "margin": by_margin.idxmax(),
                     "val_return": best, "share_of_oracle_gain": (best - fixed) / (oracle - fixed), "fit_s": seconds,
                     "val_s": predict_seconds})
    best = max(rows, key=lambda row: row["val_return"])  # the first of equals, as fit_learners
    for row in rows:
        row["chosen"] = row is best
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["regime-chain", "pointer", "sp500"])
    parser.add_argument("--trm-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--step-cost", type=float, default=DEFAULT_STEP_COST)
    parser.add_argument("--out", type=Path, help="also write the table as CSV here")
    args = parser.parse_args(argv)
    frame = pd.DataFrame([row for task in args.tasks for seed in args.trm_seeds
                          for row in compare(task, seed, args.step_cost)])  # fmt: skip
    print(markdown_table(frame))
    if args.out:
        with atomic_path(args.out) as tmp:
            frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
