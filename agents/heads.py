"""Post-hoc halting heads: the field's halting objectives, each trained on the frozen halt-split table.

Every head is a small MLP on the same summary observation the RL agent sees (standardised with the
fitting table's statistics), its output bias started at -5 as the TRM's halt head (an unbiased head
halts at once: the known cause of ACT/PonderNet collapse). Per (sample, step) the table gives the
profit-weighted CE ``L_t`` of halting there, the reward ``r_t = -L_t`` and correctness. The objectives:

- ``correct_head``: BCE toward "the prediction at t is correct" (TRM's and HRM's target); halts when
  p > threshold.
- ``continuation_head``: BCE toward "no later step s improves the reward by more than cost * (s - t)",
  the oracle's cost-aware rule learned as classification (the supervised twin of the RL reward); halts
  when p > threshold.
- ``ponder`` (PonderNet): lambda_t = sigmoid(head), lambda_K = 1, p_t = lambda_t prod_{j<t} (1 - lambda_j);
  loss sum_t p_t L_t + beta KL(p || truncated Geometric(lambda_p)); halts at the first t where the
  cumulative p reaches q (the knob).
- ``act`` (Graves' ACT): halting units h_t; N the first t with sum_{j<=t} h_j >= 1 - eps (eps = 0.01),
  remainder R = 1 - sum_{j<N} h_j, p_t = h_t (t < N), p_N = R; loss sum_t p_t L_t + tau (N + R), the
  gradient flowing through R; halts where the sum reaches 1 - eps. The knob is tau. The table holds
  per-step losses, not outputs, so the task term is the expected loss sum_t p_t L_t (PonderNet's form),
  not the loss of ACT's mixed output.

``ponder`` and ``act`` accumulate over steps, so they are stateful (``agents.cumulative``): a batch's row i
continues row i of the previous call, and a row at step 1 starts afresh (both evaluation paths call them once
per step). Their distributions and losses are ``trm_env.halting_loss``'s, shared with the joint training.
Each head trains with full-batch Adam on a seeded subset of the halt split; its ``HeadSettings`` (width,
Adam steps, learning rate, subset size) default to ``HEAD_SETTINGS[name]``, chosen per head by a search
on val (``experiments/tune_heads.py``, docs/heads_tuning.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.cumulative import CumulativePolicy, act_update, ponder_update
from agents.policies import HaltingPolicy, Info, check_probability
from trm_env.core import DEFAULT_STEP_COST
from trm_env.halting_loss import ACT_EPSILON, act_distribution, act_loss, ponder_distribution, ponder_loss
from trm_env.model import torch_threads
from trm_env.rollouts import Rollouts

__all__ = ["ACT_EPSILON", "HEAD_SETTINGS", "ACTPolicy", "ContinuationHeadPolicy", "CorrectHeadPolicy", "HeadSettings",
           "PonderPolicy", "act_distribution", "continuation_target", "ponder_distribution"]  # fmt: skip

HALT_BIAS = -5.0


@dataclass(frozen=True)
class HeadSettings:
    """How a head trains: an MLP of one ``hidden``-unit tanh layer, ``steps`` full-batch Adam steps at ``lr``
    on the trajectories of at most ``max_samples`` samples."""

    hidden: int = 32
    steps: int = 300
    lr: float = 0.02
    max_samples: int = 1000

    def __post_init__(self) -> None:
        for name in ("hidden", "steps", "max_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not (0 < self.lr < math.inf):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")


# the search on val (regime-chain and pointer, docs/heads_tuning.md); act kept the old defaults
HEAD_SETTINGS = {"correct_head": HeadSettings(hidden=64), "continuation_head": HeadSettings(lr=0.05),
                 "ponder": HeadSettings(lr=0.05), "act": HeadSettings()}  # fmt: skip


def continuation_target(rewards: np.ndarray, step_cost: float) -> np.ndarray:
    """(N, K) bool: halting at t is right, i.e. r_t >= r_s - cost * (s - t) for every later step s."""
    k = rewards.shape[1]
    later_best = np.full(rewards.shape[0], -np.inf)
    target = np.zeros(rewards.shape, dtype=bool)
    for t in range(k - 1, -1, -1):  # later_best = max_{s>t} (r_s - cost * (s - t))
        target[:, t] = rewards[:, t] >= later_best
        later_best = np.maximum(later_best, rewards[:, t]) - step_cost
    return target


class HeadPolicy(HaltingPolicy):
    """A small MLP from the observation to a halting logit, fitted on a table (see the module docstring)."""

    def __init__(self, param: float, seed: int = 0, settings: HeadSettings | None = None) -> None:
        if settings is not None and not isinstance(settings, HeadSettings):
            raise TypeError(f"settings must be a HeadSettings, got {settings!r}")
        self.param, self.seed = param, int(seed)
        self.settings = HEAD_SETTINGS[self.name] if settings is None else settings
        self.net: nn.Sequential | None = None
        self._scale: tuple[np.ndarray, np.ndarray] | None = None
        self.details: dict[str, float] = {}

    def _inputs(self, observations: np.ndarray) -> torch.Tensor:
        mean, std = self._scale  # type: ignore[misc]
        return torch.from_numpy(((observations - mean) / std).astype(np.float32))

    def _fit(self, table: Rollouts, loss_fn: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> None:
        """Full-batch Adam on the trajectories of at most ``settings.max_samples`` samples (a seeded subset);
        ``loss_fn(logits (n, K), rows)`` gets the logits and which table rows they belong to."""
        rng, n, size = np.random.default_rng(self.seed), table.num_samples, self.settings.max_samples
        rows = np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)
        observations = table.observations["summary"][rows]
        flat = observations.reshape(-1, observations.shape[-1]).astype(np.float64)
        self._scale = (flat.mean(axis=0), np.where(flat.std(axis=0) > 1e-8, flat.std(axis=0), 1.0))
        torch.manual_seed(self.seed)
        hidden = self.settings.hidden
        self.net = nn.Sequential(nn.Linear(flat.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.constant_(self.net[-1].bias, HALT_BIAS)
        x = self._inputs(observations)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.settings.lr)
        with torch_threads(1):
            for _ in range(self.settings.steps):
                optimizer.zero_grad()
                loss_fn(self.net(x)[..., 0], rows).backward()
                optimizer.step()

    def halt_logits(self, observations: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} needs fit(rollouts) on the halting split before it acts")
        with torch.no_grad():
            return self.net(self._inputs(observations))[..., 0].numpy()

    def with_param(self, param: float) -> HeadPolicy:
        """The same fitted head with another knob value (no refit)."""
        other = type(self)(param, self.seed, self.settings)
        other.net, other._scale, other.details = self.net, self._scale, self.details
        return other


class _ClassifierHead(HeadPolicy):
    def __init__(self, threshold: float = 0.5, seed: int = 0, settings: HeadSettings | None = None) -> None:
        super().__init__(check_probability("threshold", threshold), seed, settings)

    def target(self, table: Rollouts, step_cost: float, reward: str) -> np.ndarray:
        raise NotImplementedError

    def fit(self, table: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
            ) -> _ClassifierHead:  # fmt: skip
        target = torch.from_numpy(self.target(table, step_cost, reward).astype(np.float32))
        self._fit(table, lambda logits, rows: nn.functional.binary_cross_entropy_with_logits(logits, target[rows]))
        return self

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        return (1 / (1 + np.exp(-self.halt_logits(observations))) > self.param).astype(np.int64)


class CorrectHeadPolicy(_ClassifierHead):
    name = "correct_head"

    def target(self, table: Rollouts, step_cost: float, reward: str) -> np.ndarray:
        return table.correct


class ContinuationHeadPolicy(_ClassifierHead):
    name = "continuation_head"

    def target(self, table: Rollouts, step_cost: float, reward: str) -> np.ndarray:
        return continuation_target(table.halt_reward[reward], step_cost)


class _CumulativeHead(HeadPolicy, CumulativePolicy):
    """A fitted head whose sigmoid outputs accumulate over the steps (``agents.cumulative``)."""

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-self.halt_logits(observations)))

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} needs fit(rollouts) on the halting split before it acts")
        super().bind(rollouts, step_cost, reward)


class PonderPolicy(_CumulativeHead):
    """PonderNet on the table; knob q (halt where the cumulative halting probability reaches q)."""

    name = "ponder"

    def __init__(self, q: float = 0.5, seed: int = 0, settings: HeadSettings | None = None) -> None:
        super().__init__(check_probability("q", q), seed, settings)

    def fit(self, table: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce",
            lambda_p: float = 0.2, beta: float = 0.01) -> PonderPolicy:  # fmt: skip
        losses = torch.from_numpy(-table.halt_reward[reward]).float()
        self._fit(table, lambda logits, rows: ponder_loss(losses[rows], logits, lambda_p, beta))
        self.details = {"lambda_p": lambda_p, "beta": beta}
        return self

    def threshold(self) -> float:
        return self.param

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return ponder_update(running, outputs)


class ACTPolicy(_CumulativeHead):
    """Graves' ACT on the table; knob tau, the ponder cost it was trained with."""

    name = "act"

    def __init__(self, tau: float = 0.01, seed: int = 0, settings: HeadSettings | None = None) -> None:
        if not tau >= 0:
            raise ValueError(f"tau must be >= 0, got {tau!r}")
        super().__init__(float(tau), seed, settings)

    def fit(self, table: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
            ) -> ACTPolicy:  # fmt: skip
        losses = torch.from_numpy(-table.halt_reward[reward]).float()
        self._fit(table, lambda logits, rows: act_loss(losses[rows], logits, self.param))
        return self

    def threshold(self) -> float:
        return 1 - ACT_EPSILON

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return act_update(running, outputs)
