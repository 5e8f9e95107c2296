"""Fitted-Q halting: the best halting policy the observation allows, by backward induction over a table.

Optimal stopping in the Longstaff–Schwartz form (least-squares fitted Q iteration). With ``r_t`` the
terminal reward of halting at step t, ``c`` the step cost and ``V_t`` the realized value of the fitted
policy from step t on:

    V_K = r_K                                       (the forced halt)
    for t = K-1 down to 1:
        A_t = (-c + V_{t+1}) - r_t                  (the realized advantage of continuing)
        fit  Â_t(o_t) ~ A_t                         (a regressor per step, on the step-t observation)
        V_t = r_t  where Â_t(o_t) <= 0,  else  -c + V_{t+1}

The halting reward depends on the label, which no policy sees, so the regression target is the
*advantage* of continuing and the policy halts where its prediction is at most ``margin`` (the knob:
a positive margin halts earlier, a negative one later). Fitted on one split and scored on another, its
return is a valid lower bound on what the observation allows: the attainable reference that learned
policies are judged against. The regressor is one of ``agents.regressors.REGRESSORS`` by name (default
``ridge``: ridge on the standardised summary observation, its penalty chosen per step by RidgeCV's
leave-one-out on the fitting split) or any scikit-learn regressor factory; the study fits each named
one and keeps the best on val (``agents.learners``). Fitting runs scikit-learn on one thread
(threadpoolctl), so a fit gives the same model in any process; acting scores a whole batch, its rows at
mixed steps, in a few numpy operations (``agents.regressors.compile_steps``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.policies import ColumnPolicy, Info
from agents.regressors import REGRESSORS, Regressor, StepPredictor, compile_steps, sorted_probabilities
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts

__all__ = ["MARGINS", "FittedQPolicy", "default_regressor"]
PROBE_ROWS = 256  # rows per step on which a fit checks its compiled predictor against scikit-learn's

MARGINS = (-0.08, -0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32)  # reward units


def default_regressor() -> Any:
    """Ridge on standardised features, the penalty picked by efficient leave-one-out CV."""
    return REGRESSORS["ridge"].make()


def _margin(margin: float) -> float:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    return float(margin)


def _as_regressor(regressor: str | Callable[[], Any]) -> Regressor:
    if isinstance(regressor, str):
        if regressor not in REGRESSORS:
            raise ValueError(f"regressor must be one of {list(REGRESSORS)} or a factory, got {regressor!r}")
        return REGRESSORS[regressor]
    if not callable(regressor):
        raise TypeError(f"regressor must be a name in {list(REGRESSORS)} or a callable factory, got {regressor!r}")
    return Regressor(getattr(regressor, "__name__", "custom"), regressor)


class FittedQPolicy(ColumnPolicy):
    """Backward-induction halting on the observation; ``fit`` on the halting learners' split first.

    ``name`` is the family the policy reports under (the study's ``fitted_q``, or ``fitted_q_ridge`` for the
    ridge-only reference); ``details`` names its regressor."""

    column_name = "step_fraction"

    def __init__(self, margin: float = 0.0, regressor: str | Callable[[], Any] = "ridge",
                 observation: str = "summary", seed: int = 0, name: str = "fitted_q") -> None:  # fmt: skip
        self.param, self.observation, self.seed, self.name = _margin(margin), observation, seed, name
        self.regressor = _as_regressor(regressor)
        self.details = {"regressor": self.regressor.name}
        self.models: list[Any] | None = None
        self._predictor: StepPredictor | None = None
        self._fit_layout: dict[str, slice] | None = None
        self._max_steps = 0

    def features(self, observations: np.ndarray) -> np.ndarray:
        """What the regressor sees: float64 observations, their probabilities sorted if it asks for that."""
        if not self.regressor.sorted_probs:
            return np.asarray(observations, dtype=np.float64)
        if self._fit_layout is None:
            raise RuntimeError("FittedQPolicy needs fit(rollouts) first: the layout locates the probabilities")
        return sorted_probabilities(observations, self._fit_layout["probs"])

    def fit(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
            ) -> FittedQPolicy:  # fmt: skip
        """Backward induction over ``rollouts`` (the module docstring), single-threaded; returns ``self``."""
        from threadpoolctl import threadpool_limits

        self._fit_layout = dict(rollouts.layout)
        observations, rewards = self.features(rollouts.observations[self.observation]), rollouts.halt_reward[reward]
        k = rollouts.max_steps
        value = rewards[:, k - 1].copy()
        models: list[Any] = [None] * (k - 1)
        with threadpool_limits(limits=1):
            for t in range(k - 2, -1, -1):
                advantage = -step_cost + value - rewards[:, t]
                model = self.regressor.make().fit(observations[:, t], advantage)
                keep_going = model.predict(observations[:, t]) > 0
                value = np.where(keep_going, -step_cost + value, rewards[:, t])
                models[t] = model
            self._predictor = compile_steps(models, observations[:PROBE_ROWS, : k - 1])
        self.models, self._max_steps = models, k
        return self

    def with_margin(self, margin: float) -> FittedQPolicy:
        """The same fitted regressors with another margin (a knob sweep costs no refit)."""
        other = copy.copy(self)
        other.param = _margin(margin)
        return other

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        if self.models is None:
            raise RuntimeError("FittedQPolicy needs fit(rollouts) on the halting split before it acts")
        if rollouts.layout != self._fit_layout or rollouts.max_steps != self._max_steps:
            raise ValueError("FittedQPolicy was fitted on a table with another observation layout or K")
        super().bind(rollouts)

    def predicted_advantage(self, observations: np.ndarray) -> np.ndarray:
        """Â_t for each row at its own step (rows at the last step get -inf: the halt is forced)."""
        if self._predictor is None:
            raise RuntimeError("FittedQPolicy needs fit(rollouts) on the halting split before it acts")
        steps = np.rint(self.column(observations) * self._max_steps).astype(np.int64)
        advantage = np.full(len(observations), -np.inf)
        rows = steps < self._max_steps
        advantage[rows] = self._predictor.predict(self.features(observations[rows]), steps[rows] - 1)
        return advantage

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return (self.predicted_advantage(observations) <= self.param).astype(np.int64)
