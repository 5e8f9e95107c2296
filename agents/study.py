"""The study's analysis: every point on val and test with hierarchical CIs, choices on val, verdicts on test.

A task's ``Results`` hold, per (split, family, param), arrays (T TRM seeds, R learner seeds, N samples)
of halting step, return, correctness, pnl and profit-weighted CE, read from the task's TRM tables (a joint
family's from its own TRMs' tables, ``family_tables``: the same samples, see ``agents.joint_study``). From them:

Every interval is 95% and calibrated at a few TRM seeds (``agents.stats``: a t over TRM seeds with the
shared sample variance from the bootstrap draws; Fieller's interval for shares). From the arrays:

- ``curves``: one row per point and split, with CIs of accuracy, pwCE and return.
- ``choose``: per family, the knob with the best mean return **on val**; whether it sits on its grid's edge.
- ``summarize``: per family, its val-chosen point **on test**: mean return, the gain over the val-chosen
  fixed depth (paired per TRM seed and sample), the share of the oracle's and of fitted-Q's gain it
  captures, each with Fieller's CI (the latter only where fitted-Q's own gain is significantly above zero:
  a share of noise means nothing; a share's bounds are NaN where its denominator is not significant).
- ``verdict``: one family minus another on test, with a CI; beside it, descriptive only, the share of
  hierarchical-bootstrap draws where the first is above and rliable's run-level probability of improvement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from agents.policies import LEARNED_FAMILIES
from agents.stats import Draws, percentile_interval
from trm_env.rollouts import Rollouts

__all__ = ["CURVE_COLUMNS", "METRICS", "SUMMARY_COLUMNS", "Results", "choose", "curves", "oracle_split", "summarize",
           "verdict"]  # fmt: skip

METRICS = ("halt_step", "episode_return", "correct", "pnl", "profit_weighted_ce")
CURVE_COLUMNS = ("task", "split", "policy", "param", "seed", "n_trm_seeds", "mean_steps", "accuracy", "accuracy_lo",
                 "accuracy_hi", "mean_pnl", "profit_weighted_ce", "profit_weighted_ce_lo", "profit_weighted_ce_hi",
                 "mean_return", "mean_return_lo", "mean_return_hi", "n")  # fmt: skip
SUMMARY_COLUMNS = ("task", "policy", "param", "selected_on", "mean_return", "mean_return_lo", "mean_return_hi", "gain",
                   "gain_lo", "gain_hi", "oracle_gain_share", "oracle_gain_share_lo", "oracle_gain_share_hi",
                   "attainable_gain_share", "attainable_gain_share_lo", "attainable_gain_share_hi", "accuracy",
                   "mean_steps", "n_trm_seeds", "n_rl_seeds", "on_edge", "halt_at_1", "halt_at_k", "collapsed_runs",
                   "detail")  # fmt: skip
COLLAPSE = 0.95  # a run collapses when at least this share of its test episodes halts at step 1, or at K
Key = tuple[str, str, float]  # (split, family, param)


@dataclass
class Results:
    """One task's per-point arrays; ``add`` the halting steps of each (TRM seed, split, point)."""

    task: str
    trm_seeds: list[int]
    step_cost: float
    tables: dict[tuple[int, str], Rollouts] = field(default_factory=dict)
    family_tables: dict[tuple[str, int, str], Rollouts] = field(default_factory=dict)  # (family, seed, split)
    details: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _steps: dict[Key, dict[tuple[int, int], np.ndarray]] = field(default_factory=lambda: defaultdict(dict))
    _arrays: dict[Key, dict[str, np.ndarray]] = field(default_factory=dict)

    def add(self, trm_seed: int, split: str, point: dict[str, Any], steps: np.ndarray) -> None:
        """Record a point's halting steps; keys beyond policy/param/seed are hyperparameters chosen on val."""
        self._steps[(split, point["policy"], float(point["param"]))][(trm_seed, int(point["seed"]))] = steps
        extra = {k: v for k, v in point.items() if k not in ("policy", "param", "seed")}
        if extra:
            self.details[point["policy"]].add(", ".join(f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}"
                                                        for k, v in sorted(extra.items())))  # fmt: skip

    def table(self, family: str, trm_seed: int, split: str) -> Rollouts:
        """The table ``family`` is evaluated on: its own TRM's (``family_tables``), else the task's TRM's."""
        own = self.family_tables.get((family, trm_seed, split))
        return self.tables[(trm_seed, split)] if own is None else own

    def steps(self, key: Key, trm_seed: int, learner_seed: int) -> np.ndarray:
        return self._steps[key][(trm_seed, learner_seed)]

    def keys(self, split: str) -> list[Key]:
        return [key for key in self._steps if key[0] == split]

    def point(self, split: str, family: str, param: float) -> Key:
        """The key of ``family``'s point at ``param`` (NaN matches NaN) on ``split``."""
        return next(k for k in self.keys(split) if k[1] == family and np.isclose(k[2], param, equal_nan=True))

    def learner_seeds(self, key: Key) -> list[int]:
        return sorted({seed for _, seed in self._steps[key]})

    def arrays(self, key: Key) -> dict[str, np.ndarray]:
        """Every metric of a point as (T, R, N); every TRM seed must hold the same learner seeds."""
        if key not in self._arrays:
            self._arrays[key] = self._build(key)
        return self._arrays[key]

    def _build(self, key: Key) -> dict[str, np.ndarray]:
        split, seeds = key[0], self.learner_seeds(key)
        found = self._steps[key]
        missing = [(t, r) for t in self.trm_seeds for r in seeds if (t, r) not in found]
        if missing:
            raise ValueError(f"{self.task} {key}: no episodes for (TRM seed, learner seed) {missing}")
        out: dict[str, list[list[np.ndarray]]] = {metric: [] for metric in METRICS}
        for t in self.trm_seeds:
            table = self.table(key[1], t, split)
            rows = [_metrics(table, found[(t, r)], self.step_cost) for r in seeds]
            for metric in METRICS:
                out[metric].append([row[metric] for row in rows])
        return {metric: np.asarray(values, dtype=float) for metric, values in out.items()}


def _metrics(table: Rollouts, steps: np.ndarray, step_cost: float) -> dict[str, np.ndarray]:
    rows, t = np.arange(table.num_samples), steps - 1
    return {"halt_step": steps, "episode_return": table.halt_reward["profit_weighted_ce"][rows, t] - step_cost * t,
            "correct": table.correct[rows, t], "pnl": table.pnl[rows, t],
            "profit_weighted_ce": table.profit_weighted_ce[rows, t]}  # fmt: skip


def curves(results: Results, draws: dict[str, Draws]) -> pd.DataFrame:
    """Every point on every split: means, 95% calibrated CIs of accuracy, pwCE and return."""
    rows = []
    for split, split_draws in draws.items():
        keys = results.keys(split)
        arrays = [results.arrays(key) for key in keys]
        split_rows = [{"task": results.task, "split": split, "policy": key[1], "param": key[2],
                       "seed": ",".join(map(str, results.learner_seeds(key))), "n_trm_seeds": len(results.trm_seeds),
                       "mean_steps": a["halt_step"].mean(), "mean_pnl": a["pnl"].mean(), "n": a["halt_step"].size}
                      for key, a in zip(keys, arrays, strict=True)]  # fmt: skip
        for metric, name in (("correct", "accuracy"), ("profit_weighted_ce", "profit_weighted_ce"),
                             ("episode_return", "mean_return")):  # fmt: skip
            for row, a, found in zip(split_rows, arrays, split_draws.intervals([a[metric] for a in arrays]),
                                     strict=True):  # fmt: skip
                row[name], row[f"{name}_lo"], row[f"{name}_hi"] = a[metric].mean(), found.low, found.high
        rows += split_rows
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def choose(curve: pd.DataFrame) -> pd.DataFrame:
    """Per family, the point with the highest mean return on val; ``on_edge`` if it is an end of its grid."""
    val = curve[curve["split"] == "val"]
    rows = []
    for family, group in val.groupby("policy", sort=False):
        best = group.loc[group["mean_return"].idxmax()]
        params = group["param"].dropna()
        edge = len(params) > 2 and best["param"] in (params.min(), params.max())
        rows.append({"policy": family, "param": best["param"], "val_mean_return": best["mean_return"],
                     "on_edge": bool(edge), "grid_size": len(group)})  # fmt: skip
    return pd.DataFrame(rows)


def _chosen(results: Results, chosen: pd.DataFrame, family: str, split: str = "test") -> dict[str, np.ndarray]:
    param = chosen.set_index("policy").loc[family, "param"]
    return results.arrays(results.point(split, family, param))


def verdict(results: Results, chosen: pd.DataFrame, draws: Draws, first: str, second: str) -> dict[str, Any]:
    """``first`` minus ``second`` (val-chosen points) in test mean return with its calibrated 95% CI (``low``,
    ``high``, ``df``); descriptive beside it: ``share_draws_a_above_b``, the share of hierarchical-bootstrap
    draws where ``first``'s mean is above ``second``'s (ties half), and ``poi_runs`` [``poi_runs_lo``,
    ``poi_runs_hi``], rliable's run-level probability of improvement (pairs of runs within a TRM seed).
    ``fragile`` lists the learned families (``LEARNED_FAMILIES``) of the two that have one learner run per TRM
    seed: the verdict then rests on one training run each, which a retrain can move."""
    a, b = (_chosen(results, chosen, f)["episode_return"] for f in (first, second))
    found = draws.difference(a, b)
    diff = draws.replicates(a, first) - draws.replicates(b, second)
    poi, poi_replicates = draws.improvement(a, b, (first, second))
    poi_low, poi_high = percentile_interval(poi_replicates)
    share = float((diff > 0).mean() + (diff == 0).mean() / 2)
    fragile = [f for f, runs in ((first, a), (second, b)) if f in LEARNED_FAMILIES and runs.shape[1] == 1]
    return {"first": first, "second": second, "difference": a.mean() - b.mean(), "low": found.low,
            "high": found.high, "df": found.df, "share_draws_a_above_b": share,
            "poi_runs": poi, "poi_runs_lo": poi_low, "poi_runs_hi": poi_high,
            "fragile": fragile}  # fmt: skip


def oracle_split(curve: pd.DataFrame) -> dict[str, float]:
    """The oracle's gain on test over fixed depth 1, split into its systematic part (the best fixed depth)
    and its per-sample part (picking each sample's best step)."""
    test = curve[curve["split"] == "test"]
    fixed = test[test["policy"] == "fixed_depth"].set_index("param")["mean_return"]
    oracle = float(test.loc[test["policy"] == "oracle", "mean_return"].iloc[0])
    return {"depth_1": float(fixed.loc[1.0]), "best_fixed": float(fixed.max()), "best_k": float(fixed.idxmax()),
            "oracle": oracle, "systematic": float(fixed.max() - fixed.loc[1.0]),
            "per_sample": oracle - float(fixed.max())}  # fmt: skip


def _collapsed(steps: np.ndarray, max_steps: int) -> float:
    """The share of (TRM seed, learner seed) runs whose test episodes nearly all halt at step 1, or at K."""
    ends = np.maximum((steps == 1).mean(axis=2), (steps == max_steps).mean(axis=2))
    return float((ends >= COLLAPSE).mean())


def _share(draws: Draws, gain: np.ndarray, reference: np.ndarray, shown: bool) -> tuple[float, float, float]:
    """mean(gain) / mean(reference) and Fieller's CI, both (T, N) paired gains; NaN unless ``shown``."""
    if not shown:
        return np.nan, np.nan, np.nan
    return (gain.mean() / reference.mean(), *draws.ratio_interval(gain, reference))


def summarize(results: Results, chosen: pd.DataFrame, draws: Draws) -> pd.DataFrame:
    """Per family, its val-chosen point on test (the columns of README's results tables)."""
    fixed = _chosen(results, chosen, "fixed_depth")["episode_return"].mean(axis=1)  # (T, N): learner seeds averaged
    oracle_gain = _chosen(results, chosen, "oracle")["episode_return"].mean(axis=1) - fixed
    fitted_gain, attainable = np.full_like(fixed, np.nan), False
    if "fitted_q" in set(chosen["policy"]):
        fitted_gain = _chosen(results, chosen, "fitted_q")["episode_return"].mean(axis=1) - fixed
        attainable = draws.interval(fitted_gain).low > 0
    max_steps = results.tables[(results.trm_seeds[0], "test")].max_steps
    rows = []
    for _, pick in chosen.iterrows():
        family = pick["policy"]
        arrays = _chosen(results, chosen, family)
        returns = arrays["episode_return"]
        gain = returns.mean(axis=1) - fixed
        mean, gain_ci = draws.interval(returns), draws.interval(gain)
        cells = {"mean_return": (returns.mean(), mean.low, mean.high), "gain": (gain.mean(), gain_ci.low, gain_ci.high),
                 "oracle_gain_share": _share(draws, gain, oracle_gain, oracle_gain.mean() > 0),
                 "attainable_gain_share": _share(draws, gain, fitted_gain, attainable)}  # fmt: skip
        rows.append({
            "task": results.task, "policy": family, "param": pick["param"], "selected_on": "val",
            **{f"{name}{suffix}": v for name, cell in cells.items()
               for suffix, v in zip(("", "_lo", "_hi"), cell, strict=True)},
            "accuracy": arrays["correct"].mean(), "mean_steps": arrays["halt_step"].mean(),
            "n_trm_seeds": returns.shape[0], "n_rl_seeds": returns.shape[1], "on_edge": pick["on_edge"],
            "halt_at_1": float((arrays["halt_step"] == 1).mean()),
            "halt_at_k": float((arrays["halt_step"] == max_steps).mean()),
            "collapsed_runs": _collapsed(arrays["halt_step"], max_steps),
            "detail": "; ".join(sorted(results.details.get(family, ()))),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
