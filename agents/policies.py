"""Halting policies: one protocol, ``policy.act(observations, info) -> actions`` on a batch.

Observations are rows of a ``Rollouts`` table's "summary" (or "latent") observation, shape (B, D);
actions are int64 (B,) with 0 = continue, 1 = halt. ``info`` is the env's info for the same rows (at
least ``index``, the sample position, and ``step``); only privileged rules (the oracle) read it.
Every policy carries ``name`` (its family, the ``policy`` column of every table) and ``param`` (the
family's knob). ``bind(rollouts, step_cost, reward)`` hands a policy the table it is about to act on:
the column layout and class count come from there, never from constants.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from trm_env.checks import check_int
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts

__all__ = [
    "POLICY_NAMES",
    "ConfidencePolicy",
    "FixedDepthPolicy",
    "HaltHeadPolicy",
    "HaltingPolicy",
    "OraclePolicy",
    "RandomPolicy",
    "make_policy",
]

Info = Mapping[str, np.ndarray] | None


class HaltingPolicy:
    """Base class: a named rule with one knob. Subclasses implement ``act``."""

    name: str = "policy"
    param: float = float("nan")
    seed: int = 0

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        """Called with the table (and the evaluation's step cost and reward) before a batch of episodes."""

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, param={self.param})"


def _probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def _halt_where(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.int64)


class ColumnPolicy(HaltingPolicy):
    """A rule on one named observation column, located through the bound table's layout."""

    column_name: str
    _column: int | None = None

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        self._column = rollouts.layout[self.column_name].start

    def column(self, observations: np.ndarray) -> np.ndarray:
        if self._column is None:
            raise RuntimeError(f"{type(self).__name__} needs bind(rollouts) first: the layout gives its column")
        return observations[:, self._column]


class ThresholdPolicy(ColumnPolicy):
    """Halt when the observation column exceeds ``threshold`` (strictly)."""

    def __init__(self, threshold: float) -> None:
        self.param = _probability("threshold", threshold)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return _halt_where(self.column(observations) > self.param)


class HaltHeadPolicy(ThresholdPolicy):
    """Halt when the model's own halt head says p(halt) > ``threshold``: the supervised method."""

    name, column_name = "halt_head", "halt_prob"

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)


class ConfidencePolicy(ThresholdPolicy):
    """Halt when the max class probability exceeds ``threshold`` (early exit, no learned head)."""

    name, column_name = "confidence", "max_prob"

    def __init__(self, threshold: float = 0.9) -> None:
        super().__init__(threshold)


class FixedDepthPolicy(ColumnPolicy):
    """Always think ``k`` steps (k >= max_steps runs every step, as TRM does at evaluation)."""

    name, column_name = "fixed_depth", "step_fraction"

    def __init__(self, k: int = 16) -> None:
        self.param = check_int("k", k)
        self._max_steps = 0

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        super().bind(rollouts)
        self._max_steps = rollouts.max_steps

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        step = np.rint(self.column(observations) * self._max_steps)
        return _halt_where(step >= self.param)


class RandomPolicy(HaltingPolicy):
    """Halt with probability ``p`` at every step, from its own seeded Generator (restarted by ``bind``)."""

    name = "random"

    def __init__(self, p: float = 0.2, seed: int = 0) -> None:
        self.param = _probability("p", p)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        self._rng = np.random.default_rng(self.seed)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return _halt_where(self._rng.random(len(observations)) < self.param)


class OraclePolicy(HaltingPolicy):
    """Halt at the step that maximises terminal reward minus step costs for each sample (reads the label).

    It bounds the **mean return** of every policy under the same reward mode and step cost; accuracy,
    pnl and the area under a curve are not bounded by it. It reads the table (``bind``) and the sample
    position and step from ``info``.
    """

    name = "oracle"

    def __init__(self) -> None:
        self._best: np.ndarray | None = None

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        self._best = rollouts.best_steps(reward, step_cost)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if self._best is None:
            raise RuntimeError("OraclePolicy needs bind(rollouts) first: it reads each sample's best step")
        if info is None or "index" not in info or "step" not in info:
            raise ValueError("OraclePolicy.act needs info with the rows' 'index' (sample position) and 'step'")
        return _halt_where(np.asarray(info["step"]) >= self._best[np.asarray(info["index"])])


_FAMILIES: dict[str, type[HaltingPolicy]] = {
    "halt_head": HaltHeadPolicy,
    "confidence": ConfidencePolicy,
    "fixed_depth": FixedDepthPolicy,
    "random": RandomPolicy,
    "oracle": OraclePolicy,
}
POLICY_NAMES = (*_FAMILIES, "rl_ppo", "rl_dqn")


def make_policy(name: str, param: Any = None) -> HaltingPolicy:
    """A rule policy by family name and knob (RL policies come from ``train_rl_policy`` or ``load``).

    Fixed depth takes a whole number (``4`` or ``4.0``); anything else is a ``ValueError``.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown policy {name!r}; valid rule policies: {sorted(_FAMILIES)} (RL: rl_ppo, rl_dqn)")
    cls = _FAMILIES[name]
    if name == "oracle" or param is None:
        return cls()
    if name == "fixed_depth" and isinstance(param, float):
        if not param.is_integer():
            raise ValueError(f"k must be a whole number of steps, got {param!r}")
        param = int(param)
    return cls(param)
