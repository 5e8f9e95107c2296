"""Halting curves: sweep a family's knob, turn episodes into points with honest CIs, and summarise.

- ``halting_curve(family, task, ...)``: one row per knob value with 95% cluster-bootstrap CIs for
  accuracy and profit-weighted CE: samples are resampled, seeds averaged within a sample first.
- ``summarize(curves)``: area under accuracy-vs-mean-steps, RL against the halt head at matched mean
  steps, and the share of the oracle's gain over fixed depth that each family captures.
- ``paired_difference``: one point minus another over the same samples, with a paired CI.

Returns are always computed under one evaluation step cost, whatever cost an RL policy was trained
with, so rows are comparable; the oracle bounds every row's mean return (not its accuracy or AUC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from agents.evaluation import Source, evaluate_policies
from agents.policies import HaltingPolicy, make_policy
from agents.stats import cluster_means, percentile_interval, sample_weights, weighted_means

__all__ = [
    "CURVE_COLUMNS",
    "DEFAULT_PARAMS",
    "curve_from_episodes",
    "default_points",
    "halting_curve",
    "paired_difference",
    "rule_policies",
    "summarize",
]

KEYS = ("task", "policy", "param", "seed")
CURVE_COLUMNS = (*KEYS, "mean_steps", "accuracy", "accuracy_lo", "accuracy_hi", "mean_pnl", "profit_weighted_ce",
                 "profit_weighted_ce_lo", "profit_weighted_ce_hi", "mean_return", "n")  # fmt: skip
# Grids reach past the points any task chose on val, so a choice on an edge is a finding, not an artefact.
DEFAULT_PARAMS: dict[str, tuple[float, ...]] = {
    "halt_head": (0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99,
                  0.995, 0.999),
    "confidence": (0.13, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
    "kl_exit": (1e-6, 1e-5, 1e-4, 5e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0),
    "entropy_exit": (1e-5, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0),
    "patience": tuple(range(1, 15)),
    "fixed_depth": tuple(range(1, 17)),
    "random": (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9),
    "oracle": (float("nan"),),
}  # fmt: skip
DEFAULT_POINTS = {"halt_head": 0.5, "confidence": 0.9, "random": 0.2, "oracle": float("nan")}


def rule_policies(random_seeds: Sequence[int] = (0,), max_steps: int = 16) -> list[HaltingPolicy]:
    """Every point of every rule family's default sweep (random: one run per seed; fixed depth 1..K)."""
    params = {**DEFAULT_PARAMS, "fixed_depth": tuple(range(1, max_steps + 1))}
    return [_seeded(make_policy(family, p), s) for family, values in params.items() for p in values
            for s in (random_seeds if family == "random" else (0,))]  # fmt: skip


def _seeded(policy: HaltingPolicy, seed: int) -> HaltingPolicy:
    if policy.name == "random":
        return type(policy)(policy.param, seed=seed)
    return policy


def default_points(episodes: pd.DataFrame, eval_cost: float, max_steps: int) -> pd.DataFrame:
    """The episodes of each family's default point (lowest seed): ``DEFAULT_POINTS``, fixed depth K, and the
    RL agent trained at the step cost closest to the evaluation cost."""
    rl_costs = episodes.loc[episodes["policy"].str.startswith("rl_"), "param"]
    rl_default = rl_costs.iloc[(rl_costs - eval_cost).abs().argmin()] if len(rl_costs) else np.nan
    wanted = {**DEFAULT_POINTS, "fixed_depth": max_steps}
    keep = episodes["policy"].map(lambda p: rl_default if p.startswith("rl_") else wanted.get(p, np.nan))
    match = np.isclose(episodes["param"], keep) | (episodes["param"].isna() & keep.isna())
    first = episodes.groupby(["task", "policy", "param"], dropna=False)["seed"].transform("min")
    return episodes[match & (episodes["seed"] == first)]


def curve_from_episodes(episodes: pd.DataFrame, confidence_level: float = 0.95, n_resamples: int = 2000
                        ) -> pd.DataFrame:  # fmt: skip
    """One row per (task, policy, param): episodes of all seeds pooled (``seed`` lists them), with CIs.

    The CIs are a cluster bootstrap: samples are resampled, each carrying the mean of its seeds, so
    adding identical seeds leaves them unchanged.
    """
    rows, weights = [], {}
    for (task, policy, param), group in episodes.groupby(["task", "policy", "param"], sort=False, dropna=False):
        means = pd.concat([cluster_means(group, c) for c in ("correct", "profit_weighted_ce")], axis=1)
        n = len(means)
        if n not in weights:
            weights[n] = sample_weights(n, n_resamples, seed=0)
        replicates = weighted_means(weights[n], means.to_numpy(dtype=float))
        (acc_lo, acc_hi), (ce_lo, ce_hi) = (percentile_interval(replicates[:, j], confidence_level) for j in (0, 1))
        rows.append({
            "task": task, "policy": policy, "param": param,
            "seed": ",".join(str(s) for s in sorted(group["seed"].unique())),
            "mean_steps": group["halt_step"].mean(), "accuracy": group["correct"].mean(),
            "accuracy_lo": acc_lo, "accuracy_hi": acc_hi, "mean_pnl": group["pnl"].mean(),
            "profit_weighted_ce": group["profit_weighted_ce"].mean(), "profit_weighted_ce_lo": ce_lo,
            "profit_weighted_ce_hi": ce_hi, "mean_return": group["episode_return"].mean(), "n": len(group),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def halting_curve(
    family: str,
    task: Source = "sp500",
    params: Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    split: str | None = None,
    policies: Sequence[HaltingPolicy] | None = None,
    **env_kwargs: Any,
) -> pd.DataFrame:
    """Sweep a family's knob (or evaluate the given ``policies``, e.g. RL agents over step costs).

    Rule families: ``halt_head`` and ``confidence`` (threshold), ``fixed_depth`` (k), ``random`` (p, one
    run per seed), ``oracle``. For RL pass the trained ``policies``; their ``param`` is the training step cost.
    """
    if policies is None:
        if family not in DEFAULT_PARAMS:
            raise ValueError(f"unknown family {family!r}; valid: {sorted(DEFAULT_PARAMS)} (RL: pass policies=...)")
        params = DEFAULT_PARAMS[family] if params is None else params
        if len(params) == 0:
            raise ValueError("params must not be empty")
        policies = [_seeded(make_policy(family, p), s) for p in params for s in (seeds if family == "random" else (0,))]
    return curve_from_episodes(evaluate_policies(policies, task, split, **env_kwargs))


def _point(episodes: pd.DataFrame, point: tuple[str, float], column: str) -> pd.Series:
    policy, param = point
    rows = episodes[(episodes["policy"] == policy) & np.isclose(episodes["param"], param, equal_nan=True)]
    return cluster_means(rows, column)


def paired_difference(
    episodes: pd.DataFrame,
    first: tuple[str, float],
    second: tuple[str, float],
    column: str = "episode_return",
    n_resamples: int = 2000,
) -> tuple[float, float, float]:
    """Mean of ``first - second`` over the same samples (seeds averaged per sample), with a paired 95% CI.

    ``first``/``second`` are ``(policy, param)`` points of one task's episodes; positive means ``first`` is higher.
    """
    a, b = _point(episodes, first, column), _point(episodes, second, column)
    a, b = a.align(b, join="inner")
    if len(a) == 0:
        raise ValueError(f"no common samples between {first} and {second}")
    difference = (a - b).to_numpy(dtype=float)
    replicates = weighted_means(sample_weights(len(difference), n_resamples, seed=0), difference)
    low, high = percentile_interval(replicates)
    return float(difference.mean()), low, high


def _area(group: pd.DataFrame, anchors: pd.DataFrame) -> float:
    """Mean accuracy over mean steps in [1, K], the curve anchored at both ends.

    Every family reaches the two ends with its extreme knob (halt at step 1 / never halt), where its
    accuracy is fixed depth 1's and fixed depth K's; ``anchors`` holds those two rows (NaN without them).
    """
    if len(anchors) < 2:
        return float("nan")
    points = pd.concat([anchors, group]).sort_values("mean_steps", kind="stable")
    points = points.groupby("mean_steps", as_index=False)["accuracy"].mean()
    low, high = anchors["mean_steps"].min(), anchors["mean_steps"].max()
    grid = np.linspace(low, high, 301)
    return float(np.interp(grid, points["mean_steps"], points["accuracy"]).mean())


def summarize(curves: pd.DataFrame, max_steps: int = 16) -> pd.DataFrame:
    """Per (task, policy): AUC of accuracy vs mean steps, best mean return, share of the oracle's gain.

    ``auc_accuracy`` is the mean accuracy over [1, K] with every curve anchored at fixed depth 1 and K.
    ``oracle_gain_share`` = (best return of the family - best fixed depth) / (oracle - best fixed depth);
    ``vs_halt_head`` (RL rows only) compares each RL point's accuracy with the halt-head curve's 95% band
    at the same mean steps: "above", "below", "within", or "n/a" outside the halt head's range of steps.
    """
    out = []
    for task, frame in curves.groupby("task", sort=False):
        fixed = frame.loc[frame["policy"] == "fixed_depth", "mean_return"].max()
        oracle = frame.loc[frame["policy"] == "oracle", "mean_return"].max()
        head = frame[frame["policy"] == "halt_head"]
        depth = frame[frame["policy"] == "fixed_depth"]
        anchors = depth[depth["param"].isin([1, max_steps])]
        for policy, group in frame.groupby("policy", sort=False):
            best = group.loc[group["mean_return"].idxmax()]
            versus = versus_band(group, head) if policy.startswith("rl_") and len(head) else ""
            row = {"task": task, "policy": policy, "auc_accuracy": _area(group, anchors),
                   "best_param": best["param"], "best_mean_return": best["mean_return"],
                   "best_accuracy": best["accuracy"], "best_mean_steps": best["mean_steps"],
                   "oracle_gain_share": (best["mean_return"] - fixed) / (oracle - fixed) if oracle > fixed else np.nan,
                   "vs_halt_head": versus}  # fmt: skip
            out.append(row)
    return pd.DataFrame(out)


def versus_band(points: pd.DataFrame, band: pd.DataFrame) -> str:
    """Per point (by param), "above"/"below"/"within" ``band``'s accuracy CI at matched mean steps.

    The band is interpolated between its points, never extrapolated: a point outside the band's range
    of mean steps is "n/a".
    """
    band = band.groupby("mean_steps", as_index=False)[["accuracy_lo", "accuracy_hi"]].mean()
    low, high = band["mean_steps"].min(), band["mean_steps"].max()
    verdicts = []
    for _, point in points.sort_values("param").iterrows():
        steps = point["mean_steps"]
        if not low <= steps <= high:
            verdicts.append(f"{point['param']:g}:n/a")
            continue
        lo = np.interp(steps, band["mean_steps"], band["accuracy_lo"])
        hi = np.interp(steps, band["mean_steps"], band["accuracy_hi"])
        verdict = "above" if point["accuracy"] > hi else "below" if point["accuracy"] < lo else "within"
        verdicts.append(f"{point['param']:g}:{verdict}")
    return " ".join(verdicts)
