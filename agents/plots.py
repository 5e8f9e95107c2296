"""The study's figures (matplotlib), shared by ``experiments/run.py`` and the notebook.

Every family keeps one style across a task's figures (``family_styles``: a colour with a marker and a line
style; fixed depth and the oracle in black); legends sit outside the axes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trm_env.io import atomic_path

__all__ = ["family_styles", "plot_coverage", "plot_curves", "plot_difficulty", "plot_forest", "plot_halting_steps",
           "plot_wall_time", "save_figure"]  # fmt: skip

METRICS = {
    "mean_return": ("mean return (higher is better)", "mean_return_lo", "mean_return_hi"),
    "accuracy": ("accuracy", "accuracy_lo", "accuracy_hi"),
    "mean_pnl": ("mean realized pnl", None, None),
    "profit_weighted_ce": ("profit-weighted CE (lower is better)", "profit_weighted_ce_lo", "profit_weighted_ce_hi"),
}
COLOURS = plt.get_cmap("tab10").colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
FIXED = {"fixed_depth": {"color": "black", "marker": ".", "linestyle": "-"},
         "oracle": {"color": "black", "marker": "*", "linestyle": ":"}}  # fmt: skip
Styles = dict[str, dict[str, Any]]
WIDE = 5.0  # the forest plot cuts CIs wider than this many times the median CI


def family_styles(families: Iterable[str]) -> Styles:
    """family -> colour, marker, line style. The others than ``FIXED``, sorted: family i gets colour i mod 10,
    line style i // 10 and marker i mod 7, so no two of the first 40 share a colour and a line style."""
    others = sorted(set(families) - set(FIXED))
    styles = {name: {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
                     "linestyle": LINESTYLES[(i // len(COLOURS)) % len(LINESTYLES)]} for i, name in enumerate(others)}
    return {**styles, **FIXED}


def _styles(styles: Styles | None, families: Iterable[str]) -> Styles:
    return family_styles(families) if styles is None else styles


def _legend(fig: Figure, ax: Axes) -> None:
    """One legend for the figure, right of its axes."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)


def _reads_label(family: str) -> bool:
    return family == "oracle" or family.startswith("privileged_")


def _zoom(curves: pd.DataFrame, metric: str) -> tuple[tuple[float, float], tuple[float, float], str] | None:
    """The window (x limits, y limits, what it shows) around the points whose ``metric`` is at least the lower of
    its values at the neighbours of the best fixed depth (by mean return); None without fixed depths."""
    fixed = curves[curves["policy"] == "fixed_depth"].set_index("param")
    if len(fixed) < 2:
        return None
    best = fixed["mean_return"].idxmax()
    neighbours = [k for k in (best - 1, best + 1) if k in fixed.index]
    floor = float(fixed.loc[neighbours, metric].min())
    above = curves[(curves[metric] >= floor) & ~curves["policy"].map(_reads_label)]
    steps = [*above["mean_steps"], *neighbours]
    values = above[metric].to_numpy(dtype=float)
    pad = 0.08 * (values.max() - floor or 1e-3)
    where = " and ".join(f"{k:g}" for k in neighbours)
    return ((min(steps) - 0.2, max(steps) + 0.2), (floor - pad, values.max() + pad),
            f"zoom: the points at or above fixed depth {where}, the neighbours of the best ({best:g}); the oracle\n"
            "and the privileged rules (they read the label) may lie outside")


def _draw_curves(ax: Axes, curves: pd.DataFrame, metric: str, styles: Styles, bands: tuple[str, ...]) -> None:
    label, lo, hi = METRICS[metric]
    for policy, group in curves.groupby("policy", sort=False):
        group, style = group.sort_values("mean_steps"), styles[policy]
        if len(group) == 1:
            ax.plot(group["mean_steps"], group[metric], label=policy, color=style["color"], marker=style["marker"],
                    markersize=11, linestyle="none", markeredgecolor="black", markeredgewidth=0.5)
            continue
        ax.plot(group["mean_steps"], group[metric], label=policy, markersize=4, linewidth=1.4, **style)
        if policy in bands and lo is not None and lo in group:
            ax.fill_between(group["mean_steps"], group[lo], group[hi], color=style["color"], alpha=0.12,
                            label=f"{policy}: 95% CI")  # fmt: skip
    ax.set_xlabel("mean halting step")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def plot_curves(curves: pd.DataFrame, metric: str = "accuracy", title: str = "", styles: Styles | None = None,
                bands: tuple[str, ...] = ("fixed_depth",)) -> Figure:  # fmt: skip
    """``metric`` against mean halting step, one line per family; the 95% CI band of the families in ``bands``
    (by default the fixed depth only: the bands of the return's level overlap where paired differences do not,
    which the forest plot shows). A second panel zooms on the points at or above the best fixed depth's neighbours
    (the best by mean return; ``_zoom``)."""
    styles = _styles(styles, curves["policy"])
    window = _zoom(curves, metric)
    fig, axes = plt.subplots(1, 2 if window else 1, figsize=(13 if window else 7.5, 4.8), squeeze=False)
    _draw_curves(axes[0, 0], curves, metric, styles, bands)
    axes[0, 0].set_title(title)
    if window:
        ax = axes[0, 1]
        _draw_curves(ax, curves, metric, styles, ())
        ax.set_xlim(*window[0])
        ax.set_ylim(*window[1])
        ax.set_title(window[2], fontsize=9)
    _legend(fig, axes[0, 0])
    fig.tight_layout()
    return fig


def plot_forest(summary: pd.DataFrame, title: str = "", styles: Styles | None = None) -> Figure:
    """Every family's gain over the fixed depth with its 95% CI, sorted, and a zero line. The axis spans the
    estimates and CIs of the families whose CI is at most ``WIDE`` times the median CI's width; a wider CI is cut
    at the edge, and an estimate beyond the axis is drawn at the edge as an arrow; both have their numbers written."""
    styles = _styles(styles, summary["policy"])
    rows = summary.sort_values("gain").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.4))
    width = rows["gain_hi"] - rows["gain_lo"]
    shown = rows[width <= WIDE * max(float(width[width > 0].median()), 1e-12)] if (width > 0).any() else rows
    low = min(shown["gain"].min(), shown["gain_lo"].min(), 0.0)
    high = max(shown["gain"].max(), shown["gain_hi"].max(), 0.0)
    pad = 0.05 * (high - low or 1e-3)
    for y, row in rows.iterrows():
        style = styles[row["policy"]]
        gain = float(np.clip(row["gain"], low - pad / 2, high + pad / 2))
        error = np.array([[gain - row["gain_lo"]], [row["gain_hi"] - gain]])
        off = gain != row["gain"]
        marker = ("<" if row["gain"] < low else ">") if off else style["marker"]
        ax.errorbar(gain, y, xerr=np.clip(np.nan_to_num(error), 0, None), color=style["color"], marker=marker,
                    capsize=3, linestyle="none")  # fmt: skip
        if row["gain_lo"] < low - pad or row["gain_hi"] > high + pad:
            text = f"{'gain ' + format(row['gain'], '+.3g') + ', ' if off else ''}CI [{row['gain_lo']:+.3g}, "
            ax.annotate(f"{text}{row['gain_hi']:+.3g}], off the axis", (0.99, y), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xlim(low - pad, high + pad)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), rows["policy"])
    for label in ax.get_yticklabels():
        if _reads_label(label.get_text()):
            label.set_color("grey")
    ax.set_xlabel("test mean return minus the val-chosen fixed depth's (95% CI); grey: reads the label")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_halting_steps(episodes: pd.DataFrame, max_steps: int, title: str = "") -> Figure:
    """Where each family halts: the share of its samples per halting step (its val-chosen point), one row per
    family ordered by mean step, its mean step marked."""
    shares = pd.crosstab(episodes["policy"], episodes["halt_step"], normalize="index")
    shares = shares.reindex(columns=range(1, max_steps + 1), fill_value=0.0)
    means = episodes.groupby("policy")["halt_step"].mean().sort_values()
    shares = shares.loc[means.index]
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(shares) + 1.6))
    image = ax.imshow(shares.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                      extent=(0.5, max_steps + 0.5, len(shares) - 0.5, -0.5))  # fmt: skip
    ax.plot(means.to_numpy(), range(len(means)), linestyle="none", marker="|", color="white", markersize=12,
            markeredgewidth=2, label="mean halting step")  # fmt: skip
    ax.set_yticks(range(len(shares)), shares.index)
    ax.set_xticks(range(1, max_steps + 1))
    ax.set_xlabel("halting step (white bar: the mean)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the family's samples", pad=0.02)
    fig.tight_layout()
    return fig


def plot_difficulty(episodes: pd.DataFrame, title: str = "", styles: Styles | None = None) -> Figure:
    """Mean halting step by difficulty, one line per family."""
    styles = _styles(styles, episodes["policy"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for policy, group in episodes.groupby("policy", sort=False):
        means = group.groupby("difficulty")["halt_step"].mean()
        style = {**styles[policy], "linestyle": styles[policy]["linestyle"].replace("none", "-")}
        ax.plot(means.index, means.to_numpy(), label=policy, **style)
    ax.set_xlabel("difficulty (regime-chain: the report that carries the answer; pointer: the hops to follow)")
    ax.set_ylabel("mean halting step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.tight_layout()
    return fig


def plot_wall_time(summary: pd.DataFrame, full_depth: dict[str, float], title: str = "",
                   styles: Styles | None = None) -> Figure:  # fmt: skip
    """Each family's test mean return against its measured live wall time per 1000 samples (full depth dashed)."""
    styles = _styles(styles, summary["policy"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for _, row in summary.dropna(subset=["wall_ms_per_1k"]).iterrows():
        style = styles[row["policy"]]
        error = [[row["mean_return"] - row["mean_return_lo"]], [row["mean_return_hi"] - row["mean_return"]]]
        ax.errorbar(row["wall_ms_per_1k"], row["mean_return"], yerr=error, marker=style["marker"], capsize=3,
                    color=style["color"], linestyle="none", label=row["policy"])  # fmt: skip
    ax.axvline(full_depth["wall_ms_per_1k"], color="black", linestyle="--", label="full depth (K steps)")
    ax.set_xlabel("measured wall time, ms per 1000 samples (batch 1024, one CPU thread)")
    ax.set_ylabel("test mean return (higher is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.tight_layout()
    return fig


def plot_coverage(coverage: pd.DataFrame) -> Figure:
    """Per task, the held-out risk of every re-split's calibrated exit, per (base, α): α as a red bar, and the
    share of splits at or below it."""
    tasks = list(coverage["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = coverage[coverage["task"] == task]
        groups = list(mine.groupby(["base", "alpha", "delta"], sort=False))
        for x, ((_, alpha, delta), g) in enumerate(groups):
            risk = g["holdout_risk"].to_numpy()
            ax.scatter(x + rng.uniform(-0.25, 0.25, len(risk)), risk, s=5, alpha=0.35, color=COLOURS[x % 10])
            ax.hlines(alpha, x - 0.4, x + 0.4, color="red", linewidth=2)
            share = (risk <= alpha).mean()
            ax.annotate(f"{share:.1%} ≤ α\n(need {1 - delta:.0%})", (x, 0.98), xycoords=("data", "axes fraction"),
                        ha="center", va="top", fontsize=8)  # fmt: skip
        ax.set_ylim(0, 1.25 * max(mine["holdout_risk"].max(), mine["alpha"].max()))
        ax.set_xticks(range(len(groups)), [f"{key[0]}\nα={key[1]:g}" for key, _ in groups], fontsize=8)
        ax.set_ylabel(f"held-out {coverage['risk'].iloc[0]} (one dot per split and TRM seed)")
        ax.set_title(f"{task}: Learn-then-Test on half of val ∪ test, risk on the other half")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (trimmed to what it draws, legends outside the axes included); close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
