"""Evaluate halting policies on every sample of a split, and turn episodes into halting curves.

- ``evaluate(policy, task, split)``: one row per sample, every sample exactly once, deterministic.
- ``halting_curve(family, task, ...)``: sweep a family's knob; one row per point with 95% bootstrap
  confidence intervals (``scipy.stats.bootstrap``, percentile method) for accuracy and profit-weighted CE.
- ``summarize(curves)``: area under accuracy-vs-mean-steps, RL against the halt head at matched mean
  steps, and the share of the oracle's gain over fixed depth that each policy captures.

Returns are always computed under one evaluation step cost (the env default unless ``step_cost`` is
given), whatever cost an RL policy was trained with, so rows are comparable and the oracle bounds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from agents.policies import HaltingPolicy, make_policy
from trm_env.env import HaltingVectorEnv
from trm_env.tasks import Task, load_task

__all__ = [
    "CURVE_COLUMNS",
    "EPISODE_COLUMNS",
    "curve_from_episodes",
    "default_points",
    "evaluate",
    "evaluate_policies",
    "halting_curve",
    "paired_difference",
    "rule_policies",
    "summarize",
]

EPISODE_COLUMNS = ("index", "halt_step", "prediction", "label", "correct", "pnl", "profit_weighted_ce",
                   "episode_return")  # fmt: skip
KEYS = ("task", "policy", "param", "seed")
CURVE_COLUMNS = (*KEYS, "mean_steps", "accuracy", "accuracy_lo", "accuracy_hi", "mean_pnl", "profit_weighted_ce",
                 "profit_weighted_ce_lo", "profit_weighted_ce_hi", "mean_return", "n")  # fmt: skip
DEFAULT_PARAMS: dict[str, tuple[float, ...]] = {
    "halt_head": (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    "confidence": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    "fixed_depth": tuple(range(1, 17)),
    "random": (0.05, 0.1, 0.2, 0.4, 0.7),
    "oracle": (float("nan"),),
}


DEFAULT_POINTS = {"halt_head": 0.5, "confidence": 0.9, "random": 0.2, "oracle": float("nan")}


def default_points(episodes: pd.DataFrame, eval_cost: float, max_steps: int) -> pd.DataFrame:
    """The episodes of each family's default point (lowest seed): ``DEFAULT_POINTS``, fixed depth K, and the
    RL agent trained at the step cost closest to the evaluation cost."""
    rl_costs = episodes.loc[episodes["policy"].str.startswith("rl_"), "param"]
    rl_default = rl_costs.iloc[(rl_costs - eval_cost).abs().argmin()] if len(rl_costs) else np.nan
    wanted = {**DEFAULT_POINTS, "fixed_depth": max_steps}
    keep = episodes["policy"].map(lambda p: rl_default if p.startswith("rl_") else wanted[p])
    match = np.isclose(episodes["param"], keep) | (episodes["param"].isna() & keep.isna())
    first = episodes.groupby(["task", "policy", "param"], dropna=False)["seed"].transform("min")
    seed0 = episodes["seed"] == first
    return episodes[match & seed0]


def rule_policies(random_seeds: Sequence[int] = (0,)) -> list[HaltingPolicy]:
    """Every point of every rule family's default sweep (random: one run per seed)."""
    return [_seeded(make_policy(family, p), s) for family, params in DEFAULT_PARAMS.items() for p in params
            for s in (random_seeds if family == "random" else (0,))]  # fmt: skip


def _task(task: str | Task) -> Task:
    return load_task(task) if isinstance(task, str) else task


def evaluate(policy: HaltingPolicy, task: str | Task = "sp500", split: str = "test", **env_kwargs: Any) -> pd.DataFrame:
    """Run ``policy`` once on every sample of ``split``; one row per sample (+ ``difficulty`` if the task has it)."""
    n = len(_task(task).split(split))
    env = HaltingVectorEnv(num_envs=n, task=task, split=split, **env_kwargs)
    obs, _ = env.reset(options={"index": np.arange(n)})
    policy.bind(env)
    done = np.zeros(n, dtype=bool)
    episode_return = np.zeros(n)
    final: dict[str, np.ndarray] = {}
    for _ in range(env.max_steps):
        actions = np.where(done, 1, policy.act(obs))
        obs, rewards, terminated, _, info = env.step(actions)
        episode_return += np.where(done, 0.0, rewards)
        newly = terminated & ~done
        for key in env.core.info_keys:
            final.setdefault(key, np.zeros(n, dtype=info[key].dtype))[newly] = info[key][newly]
        done |= terminated
    if not done.all():
        raise RuntimeError("an episode did not end within max_steps; the env broke its contract")
    frame = pd.DataFrame({key: final[key] for key in env.core.info_keys}).rename(columns={"step": "halt_step"})
    frame["episode_return"] = episode_return
    extra = ["difficulty"] if "difficulty" in frame else []
    return frame[[*EPISODE_COLUMNS, *extra]]


def evaluate_policies(policies: Sequence[HaltingPolicy], task: str, split: str = "test", progress: bool = False,
                      **env_kwargs: Any) -> pd.DataFrame:  # fmt: skip
    """``evaluate`` each policy; episodes stacked with ``task, policy, param, seed`` in front."""
    frames = []
    for policy in tqdm(policies, desc=f"evaluate on {task}/{split}", unit="policy", disable=not progress):
        frame = evaluate(policy, task=task, split=split, **env_kwargs)
        frame.insert(0, "seed", policy.seed)
        frame.insert(0, "param", policy.param)
        frame.insert(0, "policy", policy.name)
        frame.insert(0, "task", task)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _mean_ci(values: np.ndarray, confidence_level: float, n_resamples: int, seed: int) -> tuple[float, float]:
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence_level, n_resamples=n_resamples,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def curve_from_episodes(episodes: pd.DataFrame, confidence_level: float = 0.95, n_resamples: int = 2000
                        ) -> pd.DataFrame:  # fmt: skip
    """One row per (task, policy, param): episodes of all seeds pooled (``seed`` lists them), with CIs.

    The bootstrap resamples the pooled (sample, seed) episodes, so RL rows carry seed-to-seed spread too.
    """
    rows = []
    for (task, policy, param), group in episodes.groupby(["task", "policy", "param"], sort=False, dropna=False):
        correct = group["correct"].to_numpy(dtype=float)
        pwce = group["profit_weighted_ce"].to_numpy(dtype=float)
        acc_lo, acc_hi = _mean_ci(correct, confidence_level, n_resamples, seed=0)
        ce_lo, ce_hi = _mean_ci(pwce, confidence_level, n_resamples, seed=1)
        rows.append({
            "task": task, "policy": policy, "param": param,
            "seed": ",".join(str(s) for s in sorted(group["seed"].unique())),
            "mean_steps": group["halt_step"].mean(), "accuracy": correct.mean(),
            "accuracy_lo": acc_lo, "accuracy_hi": acc_hi, "mean_pnl": group["pnl"].mean(),
            "profit_weighted_ce": pwce.mean(), "profit_weighted_ce_lo": ce_lo, "profit_weighted_ce_hi": ce_hi,
            "mean_return": group["episode_return"].mean(), "n": len(group),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def halting_curve(
    family: str,
    task: str = "sp500",
    params: Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    split: str = "test",
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


def _seeded(policy: HaltingPolicy, seed: int) -> HaltingPolicy:
    if policy.name == "random":
        return type(policy)(policy.param, seed=seed)
    return policy


def paired_difference(episodes: pd.DataFrame, first: tuple[str, float], second: tuple[str, float],
                      column: str = "episode_return", n_resamples: int = 2000) -> tuple[float, float, float]:
    """Mean of ``first - second`` over the same samples (seeds averaged per sample), with a paired 95% CI.

    ``first``/``second`` are ``(policy, param)`` points of one task's episodes.
    """
    def per_sample(policy: str, param: float) -> pd.Series:
        rows = episodes[(episodes["policy"] == policy) & np.isclose(episodes["param"], param, equal_nan=True)]
        return rows.groupby("index")[column].mean()

    a, b = per_sample(*first), per_sample(*second)
    a, b = a.align(b, join="inner")
    if len(a) == 0:
        raise ValueError(f"no common samples between {first} and {second}")
    result = stats.bootstrap((a.to_numpy(), b.to_numpy()), lambda x, y, axis=-1: (x - y).mean(axis=axis),
                             paired=True, vectorized=True, n_resamples=n_resamples, method="percentile",
                             rng=np.random.default_rng(0))  # fmt: skip
    ci = result.confidence_interval
    return float((a - b).mean()), float(ci.low), float(ci.high)


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
    interpolated at the same mean steps: "above", "below" or "within".
    """
    out = []
    for task, frame in curves.groupby("task", sort=False):
        fixed = frame.loc[frame["policy"] == "fixed_depth", "mean_return"].max()
        oracle = frame.loc[frame["policy"] == "oracle", "mean_return"].max()
        head = frame[frame["policy"] == "halt_head"].sort_values("mean_steps")
        depth = frame[frame["policy"] == "fixed_depth"]
        anchors = depth[depth["param"].isin([1, max_steps])]
        for policy, group in frame.groupby("policy", sort=False):
            best = group.loc[group["mean_return"].idxmax()]
            row = {"task": task, "policy": policy, "auc_accuracy": _area(group, anchors),
                   "best_param": best["param"], "best_mean_return": best["mean_return"],
                   "best_accuracy": best["accuracy"], "best_mean_steps": best["mean_steps"],
                   "oracle_gain_share": (best["mean_return"] - fixed) / (oracle - fixed) if oracle > fixed else np.nan,
                   "vs_halt_head": _versus(group, head) if policy.startswith("rl_") and len(head) else ""}  # fmt: skip
            out.append(row)
    return pd.DataFrame(out)


def _versus(rl: pd.DataFrame, head: pd.DataFrame) -> str:
    """Per RL point, "above"/"below"/"within" the halt head's CI band at matched mean steps."""
    verdicts = []
    for _, point in rl.sort_values("param").iterrows():
        steps = point["mean_steps"]
        lo = np.interp(steps, head["mean_steps"], head["accuracy_lo"])
        hi = np.interp(steps, head["mean_steps"], head["accuracy_hi"])
        verdict = "above" if point["accuracy"] > hi else "below" if point["accuracy"] < lo else "within"
        verdicts.append(f"{point['param']:g}:{verdict}")
    return " ".join(verdicts)
