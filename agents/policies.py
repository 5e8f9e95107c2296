"""Halting policies: one protocol, ``policy.act(observations, info) -> actions`` on a batch.

Observations are rows of a ``Rollouts`` table's "summary" (or "latent") observation, shape (B, D);
actions are int64 (B,) with 0 = continue, 1 = halt. ``info`` is the env's info for the same rows (at
least ``index``, the sample position, and ``step``); privileged rules (the oracle) and the random rule
read it. Every policy carries ``name`` (its family, the ``policy`` column of every table) and ``param``
(the family's knob). ``bind(rollouts, step_cost, reward)`` hands a policy the table it is about to act
on (or, live, its ``TableSpec``): the column layout and class count come from there, never from constants.
``reads`` names what a privileged policy needs beyond the observation (live halting refuses those);
a ``stateful`` policy implements ``select(rows)`` so its per-row state follows rows that move.
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
    "LEARNED_FAMILIES",
    "POLICY_NAMES",
    "ConfidencePolicy",
    "EntropyExitPolicy",
    "FixedDepthPolicy",
    "HaltHeadPolicy",
    "HaltingPolicy",
    "KLExitPolicy",
    "OraclePolicy",
    "PatiencePolicy",
    "PrivilegedPolicy",
    "RandomPolicy",
    "make_policy",
]

Info = Mapping[str, np.ndarray] | None


class HaltingPolicy:
    """Base class: a named rule with one knob. Subclasses implement ``act``."""

    name: str = "policy"
    param: float = float("nan")
    seed: int = 0
    stateful: bool = False  # True: row i of a call continues row i of the previous one (called once per step)
    reads: str | None = None  # what a privileged policy reads that no deployed model has (None: deployable)

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        """Called with the table (and the evaluation's step cost and reward) before a batch of episodes."""

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        raise NotImplementedError

    def select(self, rows: np.ndarray) -> None:
        """Row j of the next ``act`` call continues row ``rows[j]`` of the last one (-1: a new sample).

        Stateless policies ignore it; a stateful one must keep its per-row state in step (live halting calls
        it when halted rows leave the batch and queued samples join it).
        """
        if self.stateful:
            raise NotImplementedError(f"{type(self).__name__} is stateful and must implement select(rows)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, param={self.param})"


def check_probability(name: str, value: float) -> float:
    """``value`` as a float in [0, 1], else ``ValueError`` naming ``name``."""
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
        self.param = check_probability("threshold", threshold)

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


class _ExitRule(ColumnPolicy):
    """A zero-shot exit: halt when a change statistic of the observation falls below ``threshold`` (strictly)."""

    def __init__(self, threshold: float) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold < np.inf:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        self.param = float(threshold)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return _halt_where(np.abs(self.column(observations)) < self.param)


class KLExitPolicy(_ExitRule):
    """Huginn's KL exit: halt when KL(p_t || p_(t-1)) < threshold (their default 5e-4)."""

    name, column_name = "kl_exit", "kl_prev"

    def __init__(self, threshold: float = 5e-4) -> None:
        super().__init__(threshold)


class EntropyExitPolicy(_ExitRule):
    """Huginn's entropy exit: halt when |H_t - H_(t-1)| < threshold (their default 1e-3)."""

    name, column_name = "entropy_exit", "entropy_delta"

    def __init__(self, threshold: float = 1e-3) -> None:
        super().__init__(threshold)


class PatiencePolicy(ColumnPolicy):
    """PABEE's patience: halt once the argmax has not changed for ``patience`` steps (p + 1 agreeing steps)."""

    name, column_name = "patience", "stable_steps"

    def __init__(self, patience: int = 4) -> None:
        self.param = check_int("patience", patience)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return _halt_where(self.column(observations) >= self.param + 1)


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
    """Halt with probability ``p`` at every step: the draw of (sample, step) is fixed by ``seed`` at ``bind``,
    so every evaluation path (table, env, live, any batching) sees the same draws. Reads ``info``'s
    ``index`` and ``step``."""

    name = "random"

    def __init__(self, p: float = 0.2, seed: int = 0) -> None:
        self.param = check_probability("p", p)
        self.seed = seed
        self._uniform: np.ndarray | None = None

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        self._uniform = np.random.default_rng(self.seed).random((rollouts.num_samples, rollouts.max_steps))

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if self._uniform is None:
            raise RuntimeError("RandomPolicy needs bind(rollouts) first: it draws one number per (sample, step)")
        index, step = _rows(self, info)
        return _halt_where(self._uniform[index, step - 1] < self.param)


def _rows(policy: HaltingPolicy, info: Info) -> tuple[np.ndarray, np.ndarray]:
    """The rows' sample positions and steps from ``info``, else ``ValueError``."""
    if info is None or "index" not in info or "step" not in info:
        raise ValueError(f"{type(policy).__name__}.act needs info with the rows' 'index' (position) and 'step'")
    return np.asarray(info["index"]), np.asarray(info["step"])


class StepTargetPolicy(HaltingPolicy):
    """A privileged rule: halt each sample at a step read from the table (``bind``), not from the observation.

    ``act`` reads the rows' sample position and step from ``info`` (``index``, ``step``), which both the
    env and table evaluation provide.
    """

    _targets: np.ndarray | None = None

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if self._targets is None:
            raise RuntimeError(f"{type(self).__name__} needs bind(rollouts) first: it reads each sample's step")
        index, step = _rows(self, info)
        return _halt_where(step >= self._targets[index])


class OraclePolicy(StepTargetPolicy):
    """Halt at the step that maximises terminal reward minus step costs for each sample (reads the label).

    It bounds the **mean return** of every policy under the same reward mode and step cost; accuracy,
    pnl and the area under a curve are not bounded by it.
    """

    name, reads = "oracle", "each sample's label (its best step is found from the rewards)"

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        self._targets = rollouts.best_steps(reward, step_cost)


class PrivilegedPolicy(StepTargetPolicy):
    """Halt at the step a task's privileged rule gives (``Task.reference_steps[rule]``, capped at K).

    On regime-chain: ``at_difficulty`` (right after the report that carries the answer) and ``final_flag``
    (at the first report whose final flag reads above 0.5). References, not contenders: they read what
    no halting policy sees. Family name ``privileged_<rule>``.
    """

    reads = "the task's privileged per-sample step (e.g. when the answer arrives)"

    def __init__(self, rule: str) -> None:
        self.rule, self.name = rule, f"privileged_{rule}"

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        if self.rule not in rollouts.reference_steps:
            raise ValueError(f"task {rollouts.task_name!r} defines no privileged rule {self.rule!r}; "
                             f"it has {sorted(rollouts.reference_steps)}")  # fmt: skip
        self._targets = np.minimum(rollouts.reference_steps[self.rule], rollouts.max_steps)


_FAMILIES: dict[str, type[HaltingPolicy]] = {
    "halt_head": HaltHeadPolicy,
    "confidence": ConfidencePolicy,
    "kl_exit": KLExitPolicy,
    "entropy_exit": EntropyExitPolicy,
    "patience": PatiencePolicy,
    "fixed_depth": FixedDepthPolicy,
    "random": RandomPolicy,
    "oracle": OraclePolicy,
}
LEARNED_FAMILIES = ("fitted_q", "fitted_q_ridge", "correct_head", "continuation_head", "ponder", "act", "rl_ppo",
                    "rl_dqn")
POLICY_NAMES = (*_FAMILIES, *LEARNED_FAMILIES)


def make_policy(name: str, param: Any = None) -> HaltingPolicy:
    """A rule policy by family name and knob (RL policies come from ``train_rl_policy`` or ``load``).

    Fixed depth and patience take a whole number (``4`` or ``4.0``); anything else is a ``ValueError``.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown policy {name!r}; valid rule policies: {sorted(_FAMILIES)} (learned families: "
                         f"{list(LEARNED_FAMILIES)} come from their fit or training)")  # fmt: skip
    cls = _FAMILIES[name]
    if name == "oracle" or param is None:
        return cls()
    if name in ("fixed_depth", "patience") and isinstance(param, float):
        if not param.is_integer():
            raise ValueError(f"{name}'s knob must be a whole number of steps, got {param!r}")
        param = int(param)
    return cls(param)
