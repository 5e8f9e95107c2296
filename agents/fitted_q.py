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
policies are judged against. The default regressor is ridge regression on the standardised summary
observation, its penalty chosen per step by RidgeCV's leave-one-out on the fitting split; any
scikit-learn regressor factory can replace it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.policies import ColumnPolicy, Info
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts

__all__ = ["MARGINS", "FittedQPolicy", "default_regressor"]

MARGINS = (-0.08, -0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32)  # reward units


def default_regressor() -> Any:
    """Ridge on standardised features, the penalty picked by efficient leave-one-out CV."""
    from sklearn.linear_model import RidgeCV  # imported here: an RL-only worker need not pay 1.5 s for sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


class FittedQPolicy(ColumnPolicy):
    """Backward-induction halting on the observation; ``fit`` on the halting learners' split first."""

    name, column_name = "fitted_q", "step_fraction"

    def __init__(self, margin: float = 0.0, regressor: Callable[[], Any] = default_regressor,
                 observation: str = "summary", seed: int = 0) -> None:  # fmt: skip
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
            raise ValueError(f"margin must be a finite number, got {margin!r}")
        self.param, self.regressor, self.observation, self.seed = float(margin), regressor, observation, seed
        self.models: list[Any] | None = None
        self._fit_layout: dict[str, slice] | None = None
        self._max_steps = 0

    def fit(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
            ) -> FittedQPolicy:  # fmt: skip
        """Backward induction over ``rollouts`` (the module docstring); returns ``self``."""
        observations, rewards = rollouts.observations[self.observation], rollouts.halt_reward[reward]
        k = rollouts.max_steps
        value = rewards[:, k - 1].copy()
        models: list[Any] = [None] * (k - 1)
        for t in range(k - 2, -1, -1):
            advantage = -step_cost + value - rewards[:, t]
            model = self.regressor().fit(observations[:, t], advantage)
            keep_going = model.predict(observations[:, t]) > 0
            value = np.where(keep_going, -step_cost + value, rewards[:, t])
            models[t] = model
        self.models, self._fit_layout, self._max_steps = models, dict(rollouts.layout), k
        return self

    def with_margin(self, margin: float) -> FittedQPolicy:
        """The same fitted regressors with another margin (a knob sweep costs no refit)."""
        other = FittedQPolicy(margin, self.regressor, self.observation, self.seed)
        other.models, other._fit_layout, other._max_steps = self.models, self._fit_layout, self._max_steps
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
        if self.models is None:
            raise RuntimeError("FittedQPolicy needs fit(rollouts) on the halting split before it acts")
        steps = np.rint(self.column(observations) * self._max_steps).astype(np.int64)
        advantage = np.full(len(observations), -np.inf)
        for step in np.unique(steps[steps < self._max_steps]):
            rows = steps == step
            advantage[rows] = self.models[step - 1].predict(observations[rows])
        return advantage

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return (self.predicted_advantage(observations) <= self.param).astype(np.int64)
