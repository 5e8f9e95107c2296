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

``ponder`` and ``act`` accumulate over steps, so they are stateful: a batch's row i continues row i of
the previous call, and a row at step 1 starts afresh (both evaluation paths call them once per step).

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

from agents.policies import HaltingPolicy, Info, check_probability
from trm_env.core import DEFAULT_STEP_COST
from trm_env.model import torch_threads
from trm_env.rollouts import Rollouts

__all__ = ["ACT_EPSILON", "HEAD_SETTINGS", "ACTPolicy", "ContinuationHeadPolicy", "CorrectHeadPolicy", "HeadSettings",
           "PonderPolicy", "continuation_target", "ponder_distribution"]  # fmt: skip

ACT_EPSILON, HALT_BIAS = 0.01, -5.0


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


def ponder_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    """PonderNet's halting distribution p_t = lambda_t prod_{j<t} (1 - lambda_j), with lambda_K forced to 1."""
    lambdas = torch.cat([lambdas[:, :-1], torch.ones_like(lambdas[:, :1])], dim=1)
    survival = torch.cumprod(torch.cat([torch.ones_like(lambdas[:, :1]), 1 - lambdas[:, :-1]], dim=1), dim=1)
    return lambdas * survival


def act_distribution(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ACT's (p (N, K), halting step N (1-based), remainder R) from halting units h (N, K)."""
    k = units.shape[1]
    reached = torch.cumsum(units, dim=1) >= 1 - ACT_EPSILON
    reached[:, -1] = True
    halt = reached.float().argmax(dim=1)  # 0-based N - 1
    before = torch.arange(k)[None, :] < halt[:, None]
    remainder = 1 - (units * before).sum(dim=1)
    p = units * before + torch.nn.functional.one_hot(halt, k) * remainder[:, None]
    return p, halt + 1, remainder


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


class _CumulativeHead(HeadPolicy):
    """Halts where a per-sample running quantity of the head's outputs reaches ``threshold()``."""

    stateful = True
    _running: np.ndarray | None = None
    _max_steps = 0

    def threshold(self) -> float:
        raise NotImplementedError

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if info is None or "step" not in info:
            raise ValueError(f"{type(self).__name__}.act needs info['step'] (it accumulates over steps)")
        outputs = 1 / (1 + np.exp(-self.halt_logits(observations)))
        step = np.asarray(info["step"])
        if self._running is None or len(self._running) != len(outputs):
            self._running = np.zeros(len(outputs))
        self._running = self.update(np.where(step == 1, 0.0, self._running), outputs)
        return ((self._running >= self.threshold()) | (step >= self._max_steps)).astype(np.int64)

    def bind(self, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce"
             ) -> None:  # fmt: skip
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} needs fit(rollouts) on the halting split before it acts")
        self._max_steps, self._running = rollouts.max_steps, None

    def select(self, rows: np.ndarray) -> None:
        if self._running is not None:
            self._running = np.where(rows >= 0, self._running[np.maximum(rows, 0)], 0.0) if len(self._running) else (
                np.zeros(len(rows)))


class PonderPolicy(_CumulativeHead):
    """PonderNet on the table; knob q (halt where the cumulative halting probability reaches q)."""

    name = "ponder"

    def __init__(self, q: float = 0.5, seed: int = 0, settings: HeadSettings | None = None) -> None:
        super().__init__(check_probability("q", q), seed, settings)

    def fit(self, table: Rollouts, step_cost: float = DEFAULT_STEP_COST, reward: str = "profit_weighted_ce",
            lambda_p: float = 0.2, beta: float = 0.01) -> PonderPolicy:  # fmt: skip
        losses = torch.from_numpy(-table.halt_reward[reward]).float()
        k = losses.shape[1]
        prior = lambda_p * (1 - lambda_p) ** torch.arange(k, dtype=torch.float32)
        prior = prior / prior.sum()

        def loss(logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            p = ponder_distribution(torch.sigmoid(logits))
            kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(prior))).sum(dim=1)
            return ((p * losses[rows]).sum(dim=1) + beta * kl).mean()

        self._fit(table, loss)
        self.details = {"lambda_p": lambda_p, "beta": beta}
        return self

    def threshold(self) -> float:
        return self.param

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return 1 - (1 - running) * (1 - outputs)  # cumulative p = 1 - prod (1 - lambda)


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

        def loss(logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            p, halt, remainder = act_distribution(torch.sigmoid(logits))
            return ((p * losses[rows]).sum(dim=1) + self.param * (halt + remainder)).mean()

        self._fit(table, loss)
        return self

    def threshold(self) -> float:
        return 1 - ACT_EPSILON

    def update(self, running: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        return running + outputs
