"""The halting rules of TRMs trained with a joint halting objective (``TrainConfig.halting``, ``trm_env.halting_loss``).

Each reads the model's own ``halt_prob`` column, so it runs on a table (``agents.evaluate``) and live
(``agents.evaluate_live``) alike; it belongs on the tables of a model trained with its objective:

- ``ponder_joint`` (PonderNet): halt where the cumulative halting probability 1 - prod_{j<=n} (1 - lambda_j)
  reaches q (the knob, default 0.5).
- ``act_joint`` (Graves' ACT): halt where the running sum of halting units sum_{j<=n} h_j reaches the knob, a
  threshold (default 1 - eps = 0.99, the rule the model was trained under; smaller halts earlier).
- ``q_halt_joint`` (HRM/TRM): halt where sigmoid(Q_halt - Q_continue) exceeds the knob, a threshold (default
  0.5: HRM's rule Q_halt > Q_continue).

K is always forced. The two cumulative rules are stateful (``agents.cumulative``).
"""

from __future__ import annotations

import numpy as np

from agents.cumulative import CumulativePolicy, act_update, ponder_update
from agents.policies import ColumnPolicy, HaltHeadPolicy, HaltingPolicy, check_probability
from trm_env.halting_loss import ACT_EPSILON

__all__ = ["JOINT_FAMILIES", "JOINT_GRIDS", "ACTJointPolicy", "PonderJointPolicy", "QHaltJointPolicy",
           "joint_policies"]  # fmt: skip

JOINT_FAMILIES = {"ponder_joint": "ponder", "act_joint": "act", "q_halt_joint": "q_halt"}  # family -> objective
JOINT_GRIDS: dict[str, tuple[float, ...]] = {
    "ponder_joint": (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    "act_joint": (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1 - ACT_EPSILON),
    "q_halt_joint": (0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99,
                     0.995, 0.999),
}  # fmt: skip


class _JointCumulative(CumulativePolicy, ColumnPolicy):
    """A cumulative rule on the model's own halt probability (the ``halt_prob`` column)."""

    column_name = "halt_prob"

    def __init__(self, threshold: float) -> None:
        self.param = check_probability("threshold", threshold)

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        return self.column(observations).astype(np.float64)

    def threshold(self) -> float:
        return self.param


class PonderJointPolicy(_JointCumulative):
    """PonderNet's rule: halt where the cumulative p = 1 - prod (1 - lambda) reaches ``q``."""

    name = "ponder_joint"

    def __init__(self, q: float = 0.5) -> None:
        super().__init__(check_probability("q", q))

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return ponder_update(running, outputs)


class ACTJointPolicy(_JointCumulative):
    """ACT's rule: halt where the running sum of halting units reaches ``threshold`` (default 1 - eps)."""

    name = "act_joint"

    def __init__(self, threshold: float = 1 - ACT_EPSILON) -> None:
        super().__init__(threshold)

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return act_update(running, outputs)


class QHaltJointPolicy(HaltHeadPolicy):
    """HRM's rule: halt where sigmoid(Q_halt - Q_continue), the model's ``halt_prob``, exceeds ``threshold``."""

    name = "q_halt_joint"


_CLASSES: dict[str, type[HaltingPolicy]] = {"ponder_joint": PonderJointPolicy, "act_joint": ACTJointPolicy,
                                            "q_halt_joint": QHaltJointPolicy}  # fmt: skip


def joint_policies(family: str, params: tuple[float, ...] | None = None) -> list[HaltingPolicy]:
    """Every knob point of a joint family (default ``JOINT_GRIDS[family]``)."""
    if family not in _CLASSES:
        raise ValueError(f"unknown joint family {family!r}; valid: {list(_CLASSES)}")
    return [_CLASSES[family](value) for value in (JOINT_GRIDS[family] if params is None else params)]
