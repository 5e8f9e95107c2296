"""The halting learners of the study: fitted on the halt split, every hyperparameter chosen on val.

``fit_learners(family, halt, val, step_cost, seeds)`` returns every knob point of one learned family
(one per learner seed and knob value), ready to evaluate:

- ``fitted_q``: one backward-induction fit (deterministic: one seed), swept over its margin;
- ``correct_head`` / ``continuation_head``: one head per seed, swept over its threshold;
- ``ponder``: per seed, one head per (lambda_p, beta) variant (default ``PONDER_VARIANTS``); the variant
  with the best val return (at its best q) is kept and swept over q;
- ``act``: per seed, one head per ponder cost tau (ACT's knob needs a fit per value; default ``GRIDS["act"]``).

The knob itself is chosen later, with every other family's, on val.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.evaluation import evaluate_policies
from agents.fitted_q import MARGINS, FittedQPolicy
from agents.heads import ACTPolicy, ContinuationHeadPolicy, CorrectHeadPolicy, HeadPolicy, PonderPolicy
from agents.policies import HaltingPolicy
from trm_env.rollouts import Rollouts

__all__ = ["GRIDS", "LEARNERS", "PONDER_VARIANTS", "fit_learners"]

GRIDS: dict[str, tuple[float, ...]] = {
    "fitted_q": MARGINS,
    "correct_head": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
    "continuation_head": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "ponder": (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "act": (0.0, 0.001, 0.003, 0.01, 0.03, 0.1),
}
PONDER_VARIANTS = ((0.1, 0.01), (0.2, 0.01), (0.4, 0.01), (0.2, 0.1))  # (lambda_p, beta); reimplementations: 0.2, 0.01
LEARNERS = tuple(GRIDS)


def _sweep(head: HeadPolicy, grid: Sequence[float]) -> list[HaltingPolicy]:
    return [head.with_param(value) for value in grid]


def _best_ponder(halt: Rollouts, val: Rollouts, step_cost: float, seed: int,
                 variants: Sequence[tuple[float, float]]) -> list[HaltingPolicy]:  # fmt: skip
    """The q sweep of the (lambda_p, beta) variant with the best val mean return at its best q."""
    best, best_return = None, -float("inf")
    for lambda_p, beta in variants:
        points = _sweep(PonderPolicy(0.5, seed).fit(halt, step_cost, lambda_p=lambda_p, beta=beta), GRIDS["ponder"])
        frame = evaluate_policies(points, val, step_cost=step_cost)
        score = frame.groupby("param", sort=False)["episode_return"].mean().max()
        if score > best_return:
            best, best_return = points, score
    return best  # type: ignore[return-value]


def fit_learners(family: str, halt: Rollouts, val: Rollouts, step_cost: float, seeds: Sequence[int],
                 ponder_variants: Sequence[tuple[float, float]] = PONDER_VARIANTS,
                 act_taus: Sequence[float] = GRIDS["act"]) -> list[HaltingPolicy]:  # fmt: skip
    """Every knob point of ``family`` fitted on ``halt`` (see the module docstring); ``val`` picks variants."""
    if family == "fitted_q":
        fitted = FittedQPolicy().fit(halt, step_cost)
        return [fitted.with_margin(margin) for margin in GRIDS["fitted_q"]]
    points: list[HaltingPolicy] = []
    for seed in seeds:
        if family == "correct_head":
            points += _sweep(CorrectHeadPolicy(0.5, seed).fit(halt, step_cost), GRIDS[family])
        elif family == "continuation_head":
            points += _sweep(ContinuationHeadPolicy(0.5, seed).fit(halt, step_cost), GRIDS[family])
        elif family == "ponder":
            points += _best_ponder(halt, val, step_cost, seed, ponder_variants)
        elif family == "act":
            points += [ACTPolicy(tau, seed).fit(halt, step_cost) for tau in act_taus]
        else:
            raise ValueError(f"unknown learner family {family!r}; valid: {list(LEARNERS)}")
    return points
