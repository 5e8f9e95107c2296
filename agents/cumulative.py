"""Halting rules that accumulate a per-step output in [0, 1] over the steps: PonderNet's and ACT's.

A ``CumulativePolicy`` halts where a per-sample running quantity of its per-step ``outputs`` reaches
``threshold()`` (K forced). It is stateful: row i of an ``act`` call continues row i of the previous one, a row
at step 1 starts afresh, and ``select(rows)`` moves the running values with rows that leave or join a live batch.
The outputs come from a post-hoc head (``agents.heads``) or from the model's own halt head (``agents.joint``).
"""

from __future__ import annotations

import numpy as np

from agents.policies import HaltingPolicy, Info
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts

__all__ = ["CumulativePolicy", "act_update", "ponder_update"]


def ponder_update(running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """PonderNet's cumulative halting probability: 1 - prod (1 - lambda)."""
    return 1 - (1 - running) * (1 - outputs)


def act_update(running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """ACT's running sum of halting units."""
    return running + outputs


class CumulativePolicy(HaltingPolicy):
    """Halts where ``update``'s running quantity of ``outputs(observations)`` reaches ``threshold()``."""

    stateful = True
    _running: np.ndarray | None = None
    _max_steps = 0

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def threshold(self) -> float:
        raise NotImplementedError

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if info is None or "step" not in info:
            raise ValueError(f"{type(self).__name__}.act needs info['step'] (it accumulates over steps)")
        outputs = self.outputs(observations)
        step = np.asarray(info["step"])
        if self._running is None or len(self._running) != len(outputs):
            self._running = np.zeros(len(outputs))
        self._running = self.update(np.where(step == 1, 0.0, self._running), outputs)
        return ((self._running >= self.threshold()) | (step >= self._max_steps)).astype(np.int64)

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        super().bind(rollouts, step_cost, reward)
        self._max_steps, self._running = rollouts.max_steps, None

    def select(self, rows: np.ndarray) -> None:
        if self._running is not None:
            self._running = np.where(rows >= 0, self._running[np.maximum(rows, 0)], 0.0) if len(self._running) else (
                np.zeros(len(rows)))
