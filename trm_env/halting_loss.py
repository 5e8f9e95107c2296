"""Halting objectives trained with the model (``TrainConfig.halting``), over all K deep-supervision steps at once.

Each takes a batch's K steps together: task logits (B, K, C), raw halt-head outputs (B, K, H) and the per-sample
task losses L (B, K), TRMLoss's profit-weighted cross-entropy of every step (``TRMLoss.task_losses``: the same
signal as the ``"bce"`` default, whose K per-step TRMLoss values are averaged as before):

- ``ponder`` (PonderNet): lambda_n = sigmoid(halt logit_n), lambda_K = 1, p_n = lambda_n prod_{j<n} (1 - lambda_j);
  loss mean_b [sum_n p_n L_n + beta KL(p || truncated Geometric(lambda_p))], the KL in the paper's direction
  (p first: sum_n p_n log(p_n / prior_n)).
- ``act`` (Graves): halting units h_n = sigmoid(halt logit_n); N the first n with sum_{j<=n} h_j >= 1 - eps
  (eps = 0.01, forced at K); remainder R = 1 - sum_{j<N} h_j; p_n = h_n (n < N), p_N = R; loss
  mean_b [sum_n p_n L_n + tau (N + R)], the gradient flowing through R. The task term is the expected loss (as
  PonderNet's), not the loss of ACT's mixed output: per-step CE is the signal every objective shares.
- ``q_halt`` (HRM/TRM): two outputs Q_halt, Q_continue; Q_halt's BCE target is "the prediction at step n is
  correct"; Q_continue's is sigmoid(V_{n+1}) of the next step, V_n = max(Q_halt_n, Q_continue_n) and V_K = Q_halt_K
  (the last step can only halt), targets detached; Q_continue at K is not supervised. TRM's code instead calls step n
  "last" when n = K and runs one extra forward pass to K + 1 for its target; our K steps hold every next step, so
  no extra pass is made. During training a sample halts at the first step n >= its minimum step with
  Q_halt > Q_continue (else at K); the minimum is 1, or with probability ``EXPLORATION`` a draw from [2, K] (seeded
  generator). As in TRM, a sample is supervised only up to its halting step: loss = sum over supervised (b, n) of
  [L + weight (BCE_halt + BCE_continue)] / their count (TRM: weight 0.5).

The model emits one halt logit per step for every objective (``TinyRecursiveModel.step``): logit(lambda_n),
logit(h_n), or Q_halt - Q_continue, so every halting rule reads the observation's ``halt_prob`` column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACT_EPSILON", "EXPLORATION", "HALTINGS", "JointObjective", "act_distribution", "act_loss",
           "check_halting", "exploration_min_steps", "geometric_prior", "ponder_distribution", "ponder_kl",
           "ponder_loss", "q_halt_loss", "q_targets", "rule_fires", "training_halts"]  # fmt: skip

HALTINGS = ("bce", "ponder", "act", "q_halt")
ACT_EPSILON = 0.01  # Graves' epsilon
EXPLORATION = 0.1  # TRM's halt_exploration_prob


def check_halting(halting: object) -> str:
    """``halting`` if it names an objective, else ``ValueError`` listing the valid ones."""
    if halting not in HALTINGS:
        raise ValueError(f"halting must be one of {list(HALTINGS)}, got {halting!r}")
    return str(halting)


def ponder_distribution(lambdas: Tensor) -> Tensor:
    """PonderNet's halting distribution p_n = lambda_n prod_{j<n} (1 - lambda_j), with lambda_K forced to 1."""
    lambdas = torch.cat([lambdas[:, :-1], torch.ones_like(lambdas[:, :1])], dim=1)
    survival = torch.cumprod(torch.cat([torch.ones_like(lambdas[:, :1]), 1 - lambdas[:, :-1]], dim=1), dim=1)
    return lambdas * survival


def act_distribution(units: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ACT's (p (B, K), halting step N (1-based), remainder R) from halting units h (B, K)."""
    k = units.shape[1]
    reached = torch.cumsum(units, dim=1) >= 1 - ACT_EPSILON
    reached[:, -1] = True
    halt = reached.float().argmax(dim=1)  # 0-based N - 1
    before = torch.arange(k, device=units.device)[None, :] < halt[:, None]
    remainder = 1 - (units * before).sum(dim=1)
    p = units * before + F.one_hot(halt, k) * remainder[:, None]
    return p, halt + 1, remainder


def geometric_prior(max_steps: int, lambda_p: float) -> Tensor:
    """Geometric(lambda_p) over steps 1..K, truncated at K and renormalised: (K,) float32."""
    if not 0.0 < lambda_p < 1.0:
        raise ValueError(f"lambda_p must lie in (0, 1), got {lambda_p!r}")
    prior = lambda_p * (1 - lambda_p) ** torch.arange(max_steps, dtype=torch.float32)
    return prior / prior.sum()


def ponder_kl(p: Tensor, lambda_p: float) -> Tensor:
    """Per row KL(p || prior) = sum_n p_n (log p_n - log prior_n), the paper's direction (0 log 0 = 0)."""
    prior = geometric_prior(p.shape[1], lambda_p).to(p)
    return (p * (torch.log(p.clamp_min(1e-12)) - torch.log(prior))).sum(dim=1)


def ponder_loss(losses: Tensor, halt_logits: Tensor, lambda_p: float, beta: float) -> Tensor:
    """PonderNet's loss of per-step losses (B, K) and halt logits (B, K) (see the module docstring)."""
    p = ponder_distribution(torch.sigmoid(halt_logits))
    return ((p * losses).sum(dim=1) + beta * ponder_kl(p, lambda_p)).mean()


def act_loss(losses: Tensor, halt_logits: Tensor, tau: float) -> Tensor:
    """ACT's loss of per-step losses (B, K) and halt logits (B, K): expected loss plus tau (N + R)."""
    p, halt, remainder = act_distribution(torch.sigmoid(halt_logits))
    return ((p * losses).sum(dim=1) + tau * (halt + remainder)).mean()


def q_targets(q: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    """The detached BCE targets of (Q_halt (B, K), Q_continue (B, K - 1)) from Q outputs (B, K, 2) and correctness."""
    q = q.detach()
    value = torch.maximum(q[..., 0], q[..., 1])
    value = torch.cat([value[:, :-1], q[:, -1:, 0]], dim=1)  # V_K = Q_halt_K: at K the only action is to halt
    return correct.to(q.dtype), torch.sigmoid(value[:, 1:])


def exploration_min_steps(batch: int, max_steps: int, generator: torch.Generator,
                          probability: float = EXPLORATION) -> Tensor:  # fmt: skip
    """(B,) minimum halting steps: 1, or with ``probability`` a uniform draw from [2, K] (TRM's exploration)."""
    explore = torch.rand(batch, generator=generator) < probability
    drawn = torch.randint(2, max_steps + 1, (batch,), generator=generator) if max_steps >= 2 else torch.ones(batch)
    return torch.where(explore, drawn.long(), torch.ones(batch, dtype=torch.long))


def training_halts(halt_logits: Tensor, min_steps: Tensor) -> Tensor:
    """(B,) 1-based halting step during training: the first n >= min_steps with halt logit > 0 (Q_halt > Q_continue),
    else K."""
    k = halt_logits.shape[1]
    steps = torch.arange(1, k + 1, device=halt_logits.device)[None, :]
    fires = (halt_logits.detach() > 0) & (steps >= min_steps[:, None].to(halt_logits.device))
    fires[:, -1] = True
    return fires.float().argmax(dim=1) + 1


def q_halt_loss(losses: Tensor, q: Tensor, correct: Tensor, min_steps: Tensor, weight: float) -> Tensor:
    """HRM/TRM's Q-halting loss over the supervised steps (up to each sample's training halt; module docstring)."""
    halt_target, continue_target = q_targets(q, correct)
    halt_bce = F.binary_cross_entropy_with_logits(q[..., 0], halt_target, reduction="none")
    continue_bce = F.binary_cross_entropy_with_logits(q[:, :-1, 1], continue_target, reduction="none")
    continue_bce = torch.cat([continue_bce, torch.zeros_like(continue_bce[:, :1])], dim=1)
    halts = training_halts(q[..., 0] - q[..., 1], min_steps)
    supervised = torch.arange(1, q.shape[1] + 1, device=q.device)[None, :] <= halts[:, None]
    per_step = losses + weight * (halt_bce + continue_bce)
    return (per_step * supervised).sum() / supervised.sum()


@torch.no_grad()
def rule_fires(halting: str, halt_logits: Tensor) -> Tensor:
    """(B, K) bool: where each objective's own halting rule at its default knob says halt (before forcing K):
    bce and q_halt sigmoid > 0.5, ponder cumulative p >= 0.5, act sum h >= 1 - eps."""
    probs = torch.sigmoid(halt_logits)
    if check_halting(halting) == "ponder":
        return 1 - torch.cumprod(1 - probs, dim=1) >= 0.5
    if halting == "act":
        return torch.cumsum(probs, dim=1) >= 1 - ACT_EPSILON
    return probs > 0.5


class JointObjective:
    """One joint objective's loss of a batch's K steps, with its settings and the exploration generator."""

    def __init__(self, halting: str, lambda_p: float = 0.2, beta: float = 0.01, tau: float = 0.01,
                 q_weight: float = 0.5, exploration: float = EXPLORATION, seed: int = 0) -> None:  # fmt: skip
        if check_halting(halting) == "bce":
            raise ValueError("halting 'bce' is TRMLoss itself, not a joint objective")
        geometric_prior(2, lambda_p)  # checks lambda_p
        for name, value in (("beta", beta), ("tau", tau), ("q_weight", q_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must lie in [0, 1], got {exploration!r}")
        self.halting, self.lambda_p, self.beta, self.tau = halting, lambda_p, beta, tau
        self.q_weight, self.exploration = q_weight, exploration
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, losses: Tensor, task_logits: Tensor, halt_outputs: Tensor, labels: Tensor,
                 explore: bool = True) -> Tensor:  # fmt: skip
        """The loss from per-step task losses (B, K), task logits (B, K, C), halt outputs (B, K, H), labels (B,);
        ``explore=False`` (validation) draws no exploration: every minimum halting step is 1."""
        if self.halting == "ponder":
            return ponder_loss(losses, halt_outputs[..., 0], self.lambda_p, self.beta)
        if self.halting == "act":
            return act_loss(losses, halt_outputs[..., 0], self.tau)
        if halt_outputs.shape[-1] != 2:
            raise ValueError(f"q_halt needs a model with 2 halt outputs, got {halt_outputs.shape[-1]}")
        correct = task_logits.detach().argmax(-1) == labels[:, None]
        batch, k = losses.shape
        min_steps = exploration_min_steps(batch, k, self.generator, self.exploration) if explore else \
            torch.ones(batch, dtype=torch.long)  # fmt: skip
        return q_halt_loss(losses, halt_outputs, correct, min_steps, self.q_weight)
