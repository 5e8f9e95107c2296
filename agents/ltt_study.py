"""The study's calibrated exits: a family ``calibrated_<base>_a<α>`` per base and α, by Learn-then-Test on val.

Per base family (the halt head's threshold, fitted-Q's margin), α in ``ALPHAS``, TRM seed and learner seed:
Learn-then-Test (``agents.calibrate``, risk ``RISK``, δ = ``DELTA``, fixed-sequence from the latest-halting knob)
on that seed's val table over the base's grid; the chosen knob's halting steps on val and test become the
family's point; where no knob passes, full depth. The family's ``param`` is α (what a user sets); the knobs chosen
per seed go in its ``detail``; its ``selected_on`` is "val (LTT)": its knob is the cheapest one with the
guarantee, not the one with the best mean return.

Only where val and test are exchangeable (``agents.calibrate.exchangeability``). On a market task no family is
added: ``add_calibrated`` still returns rows, calibrated on every h-th val day (labels that do not overlap),
marked ``guarantee`` False, descriptive only.

``coverage`` checks the guarantee: per TRM seed, ``N_SPLITS`` random halves of val ∪ test, calibrate on one half,
measure the risk on the other; the share of splits with measured risk <= α should be >= 1 - δ.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from agents.calibrate import RISKS, calibrate_steps, conservative_first, exchangeability, resplit_coverage, risk_losses
from agents.study import Results

__all__ = ["ALPHAS", "BASES", "CALIBRATION_COLUMNS", "COVERAGE_COLUMNS", "DELTA", "RISK", "add_calibrated",
           "chosen_risk", "coverage", "family_name", "live_choices", "mark_selected", "parse_family"]  # fmt: skip

BASES, ALPHAS, DELTA, RISK, N_SPLITS = ("halt_head", "fitted_q"), (0.01, 0.05), 0.1, "accuracy_drop", 200
CALIBRATION_COLUMNS = ("task", "family", "base", "risk", "alpha", "delta", "trm_seed", "learner_seed", "guarantee",
                       "calibrated_on", "n_calibration", "threshold", "val_risk", "val_mean_steps", "test_risk",
                       "test_mean_steps")  # fmt: skip
COVERAGE_COLUMNS = ("task", "base", "risk", "alpha", "delta", "trm_seed", "split", "found", "threshold",
                    "holdout_risk", "holdout_mean_steps")  # fmt: skip
_NAME = re.compile(r"calibrated_(?P<base>.+)_a(?P<alpha>[0-9.e-]+)")


def family_name(base: str, alpha: float) -> str:
    return f"calibrated_{base}_a{alpha:g}"


def parse_family(name: str) -> tuple[str, float] | None:
    """(base, α) of a calibrated family's name; None for any other family."""
    found = _NAME.fullmatch(name)
    return (found["base"], float(found["alpha"])) if found else None


def _grid(results: Results, base: str, split: str) -> list[tuple[str, str, float]]:
    """The base's points on ``split`` from its latest-halting knob to its earliest."""
    keys = [key for key in results.keys(split) if key[1] == base]
    return [keys[i] for i in conservative_first(base, [key[2] for key in keys])]


def _stack(results: Results, keys: list[tuple[str, str, float]], trm_seed: int, learner: int) -> np.ndarray:
    return np.stack([results.steps(key, trm_seed, learner) for key in keys])


def add_calibrated(results: Results, bases: tuple[str, ...] = BASES, alphas: tuple[float, ...] = ALPHAS,
                   delta: float = DELTA, risk: str = RISK) -> pd.DataFrame:  # fmt: skip
    """Add the calibrated families to ``results`` where the guarantee holds; one row per calibration."""
    rows = []
    for base in (b for b in bases if _grid(results, b, "val")):
        keys = {split: _grid(results, base, split) for split in ("val", "test")}
        params = [key[2] for key in keys["val"]]
        if [key[2] for key in keys["test"]] != params:
            raise ValueError(f"{results.task} {base}: val and test hold different knobs")
        for trm_seed in results.trm_seeds:
            tables = {split: results.tables[(trm_seed, split)] for split in keys}
            for learner in results.learner_seeds(keys["val"][0]):
                steps = {split: _stack(results, keys[split], trm_seed, learner) for split in keys}
                for alpha in alphas:
                    rows.append(_calibrate(results, base, params, tables, steps, (trm_seed, learner), alpha, delta,
                                           risk))  # fmt: skip
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def _calibrate(results: Results, base: str, params: list[float], tables: dict[str, Any], steps: dict[str, np.ndarray],
               seeds: tuple[int, int], alpha: float, delta: float, risk: str) -> dict[str, Any]:  # fmt: skip
    """One calibration on val for (TRM seed, learner seed) ``seeds`` (thinned to every h-th day where the guarantee
    fails); the family's point is recorded where the guarantee holds."""
    reason = exchangeability(tables["val"])
    thin = 1 if reason is None else tables["val"].horizon
    found = calibrate_steps(steps["val"], tables["val"], params, risk, alpha, delta, thin=thin)
    chosen = {split: steps[split][found.index] if found.found else np.full(table.num_samples, table.max_steps)
              for split, table in tables.items()}  # fmt: skip
    name = family_name(base, alpha)
    if reason is None:
        _record(results, name, alpha, seeds, chosen, found.param)
    return {"task": results.task, "family": name, "base": base, "risk": risk, "alpha": alpha, "delta": delta,
            "trm_seed": seeds[0], "learner_seed": seeds[1],
            "guarantee": reason is None, "calibrated_on": "val" if thin == 1 else f"val, every {thin}th day",
            "n_calibration": found.n, "threshold": found.param,
            **{f"{split}_risk": risk_losses(tables[split], chosen[split], risk).mean() for split in tables},
            **{f"{split}_mean_steps": chosen[split].mean() for split in tables}}  # fmt: skip


def _record(results: Results, name: str, alpha: float, seeds: tuple[int, int], chosen: dict[str, np.ndarray],
            threshold: float) -> None:  # fmt: skip
    trm_seed, learner = seeds
    for split, steps in chosen.items():
        results.add(trm_seed, split, {"policy": name, "param": alpha, "seed": learner}, steps)
    who = f"TRM seed {trm_seed}" + (f", learner seed {learner}" if learner else "")
    results.details[name].add(f"{who}: " + (f"{threshold:g}" if np.isfinite(threshold) else "none, full depth"))


def mark_selected(summary: pd.DataFrame) -> pd.DataFrame:
    """``selected_on`` is "val (LTT)" for the calibrated families."""
    calibrated = summary["policy"].map(lambda name: parse_family(name) is not None)
    return summary.assign(selected_on=np.where(calibrated, "val (LTT)", summary["selected_on"]))


def live_choices(calibration: pd.DataFrame, max_steps: int) -> dict[str, dict[int, list[Any]]]:
    """family -> TRM seed -> [family, knob] that the live stage runs (learner seed 0; none: full depth)."""
    rows = calibration[calibration["guarantee"] & (calibration["learner_seed"] == 0)]
    return {name: {int(row["trm_seed"]): [row["base"], float(row["threshold"])] if np.isfinite(row["threshold"])
                   else ["fixed_depth", float(max_steps)] for _, row in group.iterrows()}
            for name, group in rows.groupby("family", sort=False)}  # fmt: skip


def coverage(results: Results, bases: tuple[str, ...] = BASES, alphas: tuple[float, ...] = ALPHAS,
             delta: float = DELTA, risk: str = RISK, n_splits: int = N_SPLITS) -> pd.DataFrame:  # fmt: skip
    """The re-split check of the guarantee (module docstring), one row per (base, α, TRM seed, split); empty
    where the guarantee does not hold (market tasks)."""
    rows = []
    for base in (b for b in bases if _grid(results, b, "val")):
        keys = {split: _grid(results, base, split) for split in ("val", "test")}
        for trm_seed in results.trm_seeds:
            tables = {split: results.tables[(trm_seed, split)] for split in keys}
            if exchangeability(tables["val"]) is not None:
                continue
            learner = results.learner_seeds(keys["val"][0])[0]
            steps = {split: _stack(results, keys[split], trm_seed, learner) for split in keys}
            losses = np.concatenate([risk_losses(tables[s], steps[s], risk) for s in keys], axis=1)
            pooled = np.concatenate([steps[s] for s in keys], axis=1)
            params = np.array([key[2] for key in keys["val"]])
            for alpha in alphas:
                found = resplit_coverage(losses, pooled, tables["val"].max_steps, alpha, delta, n_splits,
                                         seed=trm_seed, binary=RISKS[risk])
                rows += [{"task": results.task, "base": base, "risk": risk, "alpha": alpha, "delta": delta,
                          "trm_seed": trm_seed, "split": i, "found": bool(found["found"][i]),
                          "threshold": params[found["index"][i]] if found["found"][i] else np.nan,
                          "holdout_risk": found["holdout_risk"][i], "holdout_mean_steps": found["holdout_steps"][i]}
                         for i in range(n_splits)]  # fmt: skip
    return pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))


def chosen_risk(results: Results, family: str, param: float, risk: str = RISK) -> float:
    """The test risk of ``family``'s point at ``param``, averaged over TRM seeds and learner seeds."""
    key = results.point("test", family, param)
    return float(np.mean([risk_losses(results.tables[(t, "test")], results.steps(key, t, r), risk).mean()
                          for t in results.trm_seeds for r in results.learner_seeds(key)]))  # fmt: skip
