"""The halting learners of the study: fitted on the halt split, every hyperparameter chosen on val.

``fit_learners(family, halt, val, step_cost, seeds)`` returns every knob point of one learned family
(one per learner seed and knob value), ready to evaluate:

- ``fitted_q``: one backward-induction fit per regressor of ``FITTED_Q_REGRESSORS`` (deterministic: one seed);
  the regressor with the best val return (at its best margin) is kept and swept over the margin; its
  name is in the points' ``details``;
- ``fitted_q_ridge``: the ridge-only fit (the earlier reference), swept over the margin;
- ``correct_head`` / ``continuation_head``: one head per seed, swept over its threshold;
- ``ponder``: per seed, one head per (lambda_p, beta) variant (default ``PONDER_VARIANTS``); the variant
  with the best val return (at its best q) is kept and swept over q;
- ``act``: per seed, one head per ponder cost tau (ACT's knob needs a fit per value; default ``GRIDS["act"]``).

The knob itself is chosen later, with every other family's, on val.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agents.evaluation import evaluate_policies
from agents.fitted_q import MARGINS, FittedQPolicy
from agents.heads import ACTPolicy, ContinuationHeadPolicy, CorrectHeadPolicy, HeadPolicy, HeadSettings, PonderPolicy
from agents.policies import HaltingPolicy
from agents.regressors import REGRESSORS
from trm_env.rollouts import Rollouts

__all__ = ["FITTED_Q_REGRESSORS", "GRIDS", "LEARNERS", "PONDER_VARIANTS", "fit_learners"]

GRIDS: dict[str, tuple[float, ...]] = {
    "fitted_q": MARGINS,
    "fitted_q_ridge": MARGINS,
    "correct_head": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
    "continuation_head": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "ponder": (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "act": (0.0, 0.001, 0.003, 0.01, 0.03, 0.1),
}
PONDER_VARIANTS = ((0.1, 0.01), (0.2, 0.01), (0.4, 0.01), (0.2, 0.1))  # (lambda_p, beta); reimplementations: 0.2, 0.01
LEARNERS = tuple(GRIDS)
FITTED_Q_REGRESSORS = tuple(REGRESSORS)  # in order of simplicity: a tie on val keeps the simpler


def _sweep(head: HeadPolicy, grid: Sequence[float]) -> list[HaltingPolicy]:
    return [head.with_param(value) for value in grid]


def _best_sweep(sweeps: Iterable[list[HaltingPolicy]], val: Rollouts, step_cost: float) -> list[HaltingPolicy]:
    """The sweep with the best val mean return at its best knob (the first of equals)."""
    best, best_return = None, -float("inf")
    for points in sweeps:
        frame = evaluate_policies(points, val, step_cost=step_cost)
        score = frame.groupby("param", sort=False)["episode_return"].mean().max()
        if score > best_return:
            best, best_return = points, score
    if best is None:
        raise ValueError("no candidate to choose from: the list of variants is empty")
    return best


def _fitted_q_sweep(halt: Rollouts, step_cost: float, regressor: str, name: str) -> list[HaltingPolicy]:
    fitted = FittedQPolicy(regressor=regressor, name=name).fit(halt, step_cost)
    return [fitted.with_margin(margin) for margin in GRIDS[name]]


def fit_learners(family: str, halt: Rollouts, val: Rollouts, step_cost: float, seeds: Sequence[int],
                 ponder_variants: Sequence[tuple[float, float]] = PONDER_VARIANTS,
                 act_taus: Sequence[float] = GRIDS["act"], *, settings: HeadSettings | None = None
                 ) -> list[HaltingPolicy]:  # fmt: skip
    """Every knob point of ``family`` fitted on ``halt`` (see the module docstring); ``val`` picks variants.

    ``settings``: how a head trains (default: ``HEAD_SETTINGS[family]``); fitted-Q ignores it."""
    if family == "fitted_q":
        sweeps = (_fitted_q_sweep(halt, step_cost, regressor, family) for regressor in FITTED_Q_REGRESSORS)
        return _best_sweep(sweeps, val, step_cost)
    if family == "fitted_q_ridge":
        return _fitted_q_sweep(halt, step_cost, "ridge", family)
    points: list[HaltingPolicy] = []
    for seed in seeds:
        if family == "correct_head":
            points += _sweep(CorrectHeadPolicy(0.5, seed, settings).fit(halt, step_cost), GRIDS[family])
        elif family == "continuation_head":
            points += _sweep(ContinuationHeadPolicy(0.5, seed, settings).fit(halt, step_cost), GRIDS[family])
        elif family == "ponder":
            heads = (PonderPolicy(0.5, seed, settings).fit(halt, step_cost, lambda_p=lambda_p, beta=beta)
                     for lambda_p, beta in ponder_variants)  # fmt: skip
            points += _best_sweep((_sweep(head, GRIDS[family]) for head in heads), val, step_cost)
        elif family == "act":
            points += [ACTPolicy(tau, seed, settings).fit(halt, step_cost) for tau in act_taus]
        else:
            raise ValueError(f"unknown learner family {family!r}; valid: {list(LEARNERS)}")
    return points
