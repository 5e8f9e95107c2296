"""Halting-curve figures (matplotlib), shared by ``experiments/run.py`` and the notebook."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from trm_env.io import atomic_path

__all__ = ["plot_curves", "plot_difficulty", "plot_halting_steps", "plot_wall_time", "save_figure"]

METRICS = {
    "mean_return": ("mean return (higher is better)", "mean_return_lo", "mean_return_hi"),
    "accuracy": ("accuracy", "accuracy_lo", "accuracy_hi"),
    "mean_pnl": ("mean realized pnl", None, None),
    "profit_weighted_ce": ("profit-weighted CE (lower is better)", "profit_weighted_ce_lo", "profit_weighted_ce_hi"),
}


def plot_curves(curves: pd.DataFrame, metric: str = "accuracy", title: str = "") -> Figure:
    """``metric`` against mean halting step, one line per policy family, 95% CI bands where available."""
    label, lo, hi = METRICS[metric]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, group in curves.groupby("policy", sort=False):
        group = group.sort_values("mean_steps")
        style = dict(marker="*", markersize=14, linestyle="none") if len(group) == 1 else dict(marker="o", ms=3)
        (line,) = ax.plot(group["mean_steps"], group[metric], label=policy, **style)
        if lo is not None and lo in group and len(group) > 1:
            ax.fill_between(group["mean_steps"], group[lo], group[hi], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("mean halting step")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_halting_steps(episodes: pd.DataFrame, max_steps: int, title: str = "") -> Figure:
    """Distribution of halting steps per policy (one default point each)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.arange(1, max_steps + 2) - 0.5
    for policy, group in episodes.groupby("policy", sort=False):
        ax.hist(group["halt_step"], bins=bins, histtype="step", linewidth=1.5, density=True, label=policy)
    ax.set_xlabel("halting step")
    ax.set_ylabel("share of samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_difficulty(episodes: pd.DataFrame, title: str = "") -> Figure:
    """Mean halting step by difficulty, one line per policy."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, group in episodes.groupby("policy", sort=False):
        means = group.groupby("difficulty")["halt_step"].mean()
        ax.plot(means.index, means.to_numpy(), marker="o", label=policy)
    ax.set_xlabel("difficulty (regime-chain: the report that carries the answer; pointer: the hops to follow)")
    ax.set_ylabel("mean halting step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_wall_time(summary: pd.DataFrame, full_depth: dict[str, float], title: str = "") -> Figure:
    """Each family's test mean return against its measured live wall time per 1000 samples (full depth dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    measured = summary.dropna(subset=["wall_ms_per_1k"])
    for _, row in measured.iterrows():
        error = [[row["mean_return"] - row["mean_return_lo"]], [row["mean_return_hi"] - row["mean_return"]]]
        ax.errorbar(row["wall_ms_per_1k"], row["mean_return"], yerr=error, marker="o", capsize=3, label=row["policy"])
    ax.axvline(full_depth["wall_ms_per_1k"], color="black", linestyle="--", label="full depth (K steps)")
    ax.set_xlabel("measured wall time, ms per 1000 samples (batch 1024, one CPU thread)")
    ax.set_ylabel("test mean return (higher is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
