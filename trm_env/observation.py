"""The observation every halting method sees: the layout (defined here, once), its bounds, and the one
per-step function that computes it, for a table and for live inference alike.

After step t the model's class probabilities p_t, eight statistics of them and, in "latent" mode, its
answer state y_t. ``observation_step`` computes step t for a batch of rows from their logits and a
``Carry`` of what the statistics need from step t-1; ``observation_table`` runs it over a whole rollout.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["KL_CAP", "OBSERVATIONS", "Carry", "halt_probability", "initial_carry", "observation_bounds",
           "observation_layout", "observation_limits", "observation_step", "observation_table"]  # fmt: skip

OBSERVATIONS = ("summary", "latent")
KL_CAP = 30.0  # KL between successive steps is clipped here (a probability of ~1e-13 already gives ~30 nats)


def observation_layout(num_classes: int, hidden_dim: int) -> dict[str, slice]:
    """Name -> column slice of the observation: C class probabilities, eight statistics, then y (latent only).

    The "summary" observation is every column before ``latent``; "latent" adds the answer state y. The
    statistics of step t: ``max_prob``, ``entropy`` H_t, the halt head's ``halt_prob``, ``step_fraction``
    t/K, ``movement`` (total variation from p_(t-1)), ``kl_prev`` = KL(p_t || p_(t-1)), ``entropy_delta``
    H_t - H_(t-1) and ``stable_steps``, how many steps in a row up to t have had today's argmax (p_0 is
    uniform). The last three are the signals of the zero-shot exits (Huginn's KL and entropy rules, PABEE's
    patience), so every halting method sees the same observation.
    """
    widths = {"probs": num_classes, "max_prob": 1, "entropy": 1, "halt_prob": 1, "step_fraction": 1,
              "movement": 1, "kl_prev": 1, "entropy_delta": 1, "stable_steps": 1, "latent": hidden_dim}  # fmt: skip
    layout, start = {}, 0
    for name, width in widths.items():
        layout[name] = slice(start, start + width)
        start += width
    return layout


def observation_limits(num_classes: int, hidden_dim: int, max_steps: int) -> dict[str, tuple[float, float]]:
    """Per layout entry, its (low, high); y ends in a parameter-free RMSNorm, so |y_j| <= sqrt(hidden_dim)."""
    log_c = float(np.log(num_classes))
    return {"probs": (0.0, 1.0), "max_prob": (0.0, 1.0), "entropy": (0.0, log_c), "halt_prob": (0.0, 1.0),
            "step_fraction": (0.0, 1.0), "movement": (0.0, 1.0), "kl_prev": (0.0, KL_CAP),
            "entropy_delta": (-log_c, log_c), "stable_steps": (0.0, float(max_steps)),
            "latent": (-float(np.sqrt(hidden_dim)), float(np.sqrt(hidden_dim)))}  # fmt: skip


def observation_bounds(num_classes: int, hidden_dim: int, max_steps: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) float32 vectors of the first ``width`` observation columns (the Box of a mode)."""
    layout, limits = observation_layout(num_classes, hidden_dim), observation_limits(num_classes, hidden_dim, max_steps)
    low, high = np.zeros(width, np.float32), np.zeros(width, np.float32)
    for name, columns in layout.items():
        if columns.start < width:
            low[columns], high[columns] = limits[name]
    return low, high


def halt_probability(halt_logits: Tensor) -> Tensor:
    """sigmoid(halt logit) as float32, computed in float64: the same bits whatever the batch (a float32 sigmoid
    rounds differently in SIMD lanes and in a batch's scalar tail, so a row's value would depend on its batch)."""
    return halt_logits.double().sigmoid().float()


class Carry(NamedTuple):
    """What step t's statistics need from step t-1, per row: p, log p, entropy, argmax and its run length."""

    probs: Tensor
    log_probs: Tensor
    entropy: Tensor
    prediction: Tensor
    stable: Tensor


def initial_carry(rows: int, num_classes: int, device: torch.device | str = "cpu") -> Carry:
    """The carry before step 1: p_0 uniform, H_0 = ln C, no argmax yet (so step 1 starts a run of 1)."""
    log_c, shape = float(np.log(num_classes)), (rows, num_classes)
    return Carry(torch.full(shape, 1.0 / num_classes, device=device), torch.full(shape, -log_c, device=device),
                 torch.full((rows, 1), log_c, device=device), torch.full((rows,), -1, dtype=torch.long, device=device),
                 torch.zeros(rows, device=device))  # fmt: skip


def _softmax(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float32 (softmax, log_softmax) over the last axis, computed in float64 (the same bits whatever the batch, as
    ``halt_probability``), and the argmax; from elementwise ops and one ``max``, as torch's softmax, argmax and
    amax kernels take several times longer over 8 classes."""
    wide = logits.double()
    top, prediction = wide.max(-1)
    shifted = wide - top[:, None]
    exp = shifted.exp()
    total = exp.sum(-1, keepdim=True)
    return (exp / total).float(), (shifted - total.log()).float(), prediction


def observation_step(logits: Tensor, halt_logits: Tensor, steps: Tensor, max_steps: int, carry: Carry,
                     latent: Tensor | None = None) -> tuple[Tensor, Carry]:  # fmt: skip
    """Step t's float32 observation of a batch of rows, clipped to its bounds, and the carry for step t+1.

    ``logits`` (B, C), ``halt_logits`` (B,), ``steps`` (B,) the step t of each row (1..K); with ``latent``
    (B, H) the "latent" observation, else the "summary" one. Rows are independent: any batch of rows,
    at any mix of steps, gives each row what a whole rollout gives it.
    """
    c = logits.shape[-1]
    probs, log_probs, prediction = _softmax(logits)
    entropy = -(probs * log_probs).sum(-1, keepdim=True)
    stable = torch.where(prediction == carry.prediction, carry.stable + 1, 1.0)
    # max_prob: p at the argmax is the largest p (exp, / and the float cast never reverse an order), as amax gives it
    columns = [
        probs, probs.gather(-1, prediction[:, None]), entropy, halt_probability(halt_logits)[:, None],
        (steps.to(torch.float32) / max_steps)[:, None], 0.5 * (probs - carry.probs).abs().sum(-1, keepdim=True),
        (probs * (log_probs - carry.log_probs)).sum(-1, keepdim=True), entropy - carry.entropy, stable[:, None],
    ]  # fmt: skip
    hidden = 0 if latent is None else latent.shape[-1]
    observation = torch.cat(columns if latent is None else [*columns, latent], dim=-1)
    low, high = _bounds(c, hidden, max_steps, observation.shape[-1], observation.device)
    return torch.clamp(observation, low, high), Carry(probs, log_probs, entropy, prediction, stable)


_BOUNDS: dict[tuple[int, int, int, int, str], tuple[Tensor, Tensor]] = {}


def _bounds(c: int, hidden: int, k: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``observation_bounds`` as tensors on ``device``, built once per shape."""
    key = (c, hidden, k, width, str(device))
    if key not in _BOUNDS:
        _BOUNDS[key] = tuple(torch.from_numpy(b).to(device) for b in observation_bounds(c, hidden, k, width))
    return _BOUNDS[key]


def observation_table(logits: Tensor, halt_logits: Tensor, y: Tensor) -> tuple[np.ndarray, dict[str, slice]]:
    """The (N, K, D) float32 "latent" observation of a rollout (the "summary" one is its first columns) and
    its layout, from (N, K, C) logits, (N, K) halt logits and (N, K, H) answer states: ``observation_step``
    over the K steps."""
    n, k, c = logits.shape
    carry, steps, out = initial_carry(n, c, logits.device), torch.zeros(n, dtype=torch.long), []
    for t in range(k):
        observation, carry = observation_step(logits[:, t].contiguous(), halt_logits[:, t].contiguous(), steps + t + 1,
                                              k, carry, y[:, t].contiguous())  # fmt: skip
        out.append(observation)
    return torch.stack(out, dim=1).cpu().numpy(), observation_layout(c, y.shape[-1])
