"""Does the calibrated exits' guarantee hold? The re-split check on a finished run, at any settings.

    python experiments/ltt_coverage.py --run runs/quick
    python experiments/ltt_coverage.py --run runs/quick --alphas 0.02 0.1 --delta 0.05 --risk disagreement

The study (``experiments/run.py``) runs this check at its own settings (``agents.ltt_study``: risk accuracy_drop,
α 0.01 and 0.05, δ 0.1, 200 splits) and reports it. This script re-reads a run's tables and halting steps (no
training, no evaluation) and, per task, base family (the halt head, fitted-Q) and TRM seed, draws ``--n-splits``
random halves of val ∪ test: Learn-then-Test on one half, the risk measured on the other. The guarantee holds
where the share of splits whose measured risk is <= α is >= 1 - δ. Tasks whose samples are not exchangeable
(market days) are skipped. Writes ``ltt_coverage.csv`` and ``ltt_coverage.png`` to ``--out`` (default: the run
folder) and prints the shares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from agents.calibrate import RISKS
from agents.ltt_study import ALPHAS, BASES, DELTA, N_SPLITS, RISK, coverage
from agents.plots import plot_coverage, save_figure
from agents.report import load_results
from agents.report_text import coverage_lines
from trm_env.io import atomic_path
from trm_env.rollouts import shipped_checkpoint

TASKS = ("regime-chain", "pointer")


def checkpoint(config: dict, run: Path, task: str, seed: int) -> Path:
    """The run's TRM folder of (task, seed): retrained in the run, given in its config, or shipped."""
    if config["retrain"]:
        return run / "trm" / task / f"seed{seed}"
    given = config["checkpoints"].get(task)
    return Path(given[config["trm_seeds"].index(seed)]) if given else shipped_checkpoint(task, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/quick"), help="a finished run folder")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"tasks of the run (default {TASKS})")
    parser.add_argument("--bases", nargs="+", default=list(BASES), help=f"threshold families (default {BASES})")
    parser.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS), help="risk levels α")
    parser.add_argument("--delta", type=float, default=DELTA, help=f"δ (default {DELTA})")
    parser.add_argument("--risk", choices=sorted(RISKS), default=RISK, help=f"the risk (default {RISK})")
    parser.add_argument("--n-splits", type=int, default=N_SPLITS, help=f"random halves per TRM seed ({N_SPLITS})")
    parser.add_argument("--out", type=Path, help="where the CSV and the figure go (default: --run)")
    args = parser.parse_args(argv)
    recorded = args.run / "config.json"
    if not recorded.is_file():
        raise ValueError(f"--run must be a finished run folder (with config.json), got {args.run}")
    config = json.loads(recorded.read_text())
    unknown = sorted(set(args.tasks) - set(config["tasks"]))
    if unknown:
        raise ValueError(f"--tasks must be tasks of the run {config['tasks']}; not there: {unknown}")
    frames = []
    for task in args.tasks:
        seeds = {seed: {"checkpoint": checkpoint(config, args.run, task, seed),
                        **{p.stem: p for p in sorted((args.run / "episodes" / task / f"trm{seed}").glob("*.npz"))}}
                 for seed in config["trm_seeds"]}  # fmt: skip
        results = load_results(task, config["task_kwargs"].get(task, {}), seeds, config["eval_step_cost"])
        frames.append(coverage(results, tuple(args.bases), tuple(args.alphas), args.delta, args.risk, args.n_splits))
    found = pd.concat(frames, ignore_index=True)
    if found.empty:
        print("no task with exchangeable samples among", args.tasks)
        return 1
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "ltt_coverage.csv") as tmp:
        found.to_csv(tmp, index=False)
    save_figure(plot_coverage(found), out / "ltt_coverage.png")
    print("\n".join(coverage_lines(found)))
    print(f"\nwritten: {out / 'ltt_coverage.csv'}, {out / 'ltt_coverage.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
