"""The joint halting families in the study: their own TRMs' tables, their per-step quality against the BCE TRM.

A joint family (``agents.joint``) is evaluated on the tables of the TRMs trained with its objective
(``shipped_checkpoint(task, seed, objective)``), its knob chosen on val like every family's. TRM seed k of the
family stands beside the BCE TRM's seed k: the samples are the same, so its gain over the BCE TRM's val-chosen
fixed depth and its verdicts are paired by (seed index, sample) like every other family's. The two seeds are
independent trainings, so the pairing of their indices is arbitrary; the t over the seeds' mean differences
treats each pair as one unit, and the shared-sample variance still cancels what the samples share.

``step_profiles`` and ``step_lines`` answer "does joint training make early steps better, or the last step
worse?": each objective's models against the BCE models, test accuracy and profit-weighted CE per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from agents.joint import JOINT_FAMILIES
from agents.sources import split_table
from agents.stats import Draws
from agents.study import Results
from trm_env.resolve import JOINT_SEEDS

__all__ = ["JOINT_CHECKPOINTS", "JOINT_COMPARED", "JOINT_GROUPS", "JOINT_INPUTS", "JOINT_SEEDS", "JOINT_TASKS",
           "JOINT_VERDICTS", "add_joint_tables", "plot_steps", "step_lines", "step_profiles"]  # fmt: skip

JOINT_CHECKPOINTS = "joint_checkpoints"  # in a TRM seed's artifacts: joint family -> the folder of its own TRM
JOINT_TASKS = ("sp500", "regime-chain", "pointer")  # the tasks that ship joint TRMs, seeds JOINT_SEEDS
JOINT_GROUPS = (JOINT_CHECKPOINTS, *JOINT_FAMILIES)  # a TRM seed's artifacts of the joint families
JOINT_INPUTS = ("checkpoint", "rules", "rl", "fitted_q", *JOINT_GROUPS)  # the artifacts their analysis reads
JOINT_COMPARED = ("fixed_depth", "oracle", "halt_head", "rl_ppo", "fitted_q", *JOINT_FAMILIES)  # and its families
JOINT_VERDICTS = tuple((family, other) for family in JOINT_FAMILIES for other in ("halt_head", "rl_ppo", "fitted_q"))
METRICS = {"correct": "accuracy", "profit_weighted_ce": "profit_weighted_ce"}  # table attribute -> column
LABELS = {"accuracy": "accuracy", "profit_weighted_ce": "profit-weighted CE"}


def add_joint_tables(results: Results, task: str, task_kwargs: dict[str, Any], seed: int, folders: dict[str, Path],
                     splits: tuple[str, ...]) -> None:  # fmt: skip
    """Each joint family's tables of TRM seed ``seed`` on ``splits``, from the folder of its own TRM."""
    for family, folder in folders.items():
        for split in splits:
            results.family_tables[(family, seed, split)] = split_table(task, task_kwargs, folder, split)


def _per_step(results: Results, family: str | None, metric: str) -> np.ndarray:
    """(T, N, K) test values of ``metric`` at every step: ``family``'s own TRMs, or the BCE TRMs (None)."""
    return np.stack([getattr(results.tables[(seed, "test")] if family is None else
                             results.family_tables[(family, seed, "test")], metric).astype(float)
                     for seed in results.trm_seeds])  # fmt: skip


def _families(results: Results) -> list[str]:
    return [f for f in JOINT_FAMILIES if (f, results.trm_seeds[0], "test") in results.family_tables]


def step_profiles(results: Results) -> pd.DataFrame:
    """Test accuracy and profit-weighted CE per step (mean over TRM seeds) of the BCE TRMs and each joint family's."""
    rows = []
    for family in (None, *_families(results)):
        model = "bce" if family is None else JOINT_FAMILIES[family]
        values = {name: _per_step(results, family, metric).mean(axis=(0, 1)) for metric, name in METRICS.items()}
        rows += [{"task": results.task, "model": model, "step": k + 1, **{n: float(v[k]) for n, v in values.items()}}
                 for k in range(len(values["accuracy"]))]  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "model", "step", *METRICS.values()])


def _difference(draws: Draws, first: np.ndarray, second: np.ndarray) -> str:
    found = draws.difference(first, second)
    sign = "higher" if found.low > 0 else "lower" if found.high < 0 else "no significant difference"
    return f"{found.estimate:+.4f} [{found.low:+.4f}, {found.high:+.4f}] ({sign})"


def step_lines(results: Results, draws: Draws) -> list[str]:
    """Per joint family: its models minus the BCE models at step 1 and at step K, test accuracy and profit-weighted
    CE, paired by (seed index, sample) with the study's 95% CIs."""
    lines = []
    for family in _families(results):
        parts = []
        for metric, name in METRICS.items():
            own, bce = _per_step(results, family, metric), _per_step(results, None, metric)
            k = own.shape[2]
            parts += [f"{LABELS[name]} at step {s + 1} {own[..., s].mean():.4f} vs {bce[..., s].mean():.4f}, "
                      f"difference "
                      f"{_difference(draws, own[..., s], bce[..., s])}" for s in (0, k - 1)]  # fmt: skip
        lines.append(f"[{results.task}] {JOINT_FAMILIES[family]}-trained TRMs minus the BCE TRMs on test: "
                     f"{'; '.join(parts)}")  # fmt: skip
    return lines


def plot_steps(profiles: pd.DataFrame, title: str = "") -> Figure:
    """Test accuracy and profit-weighted CE per step, one line per training objective."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, METRICS.values(), strict=True):
        for model, group in profiles.groupby("model", sort=False):
            ax.plot(group["step"], group[name], marker="o", ms=3, label=model)
        ax.set_xlabel("recursion step")
        ax.set_ylabel(LABELS[name] + (" (lower is better)" if name == "profit_weighted_ce" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
