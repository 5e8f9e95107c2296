"""The observation every halting method sees: the layout (defined here, once), bounds and computation.

After step t the model's class probabilities p_t, eight statistics of them and, in "latent" mode, its
answer state y_t. ``observation_table`` computes them for a whole rollout at once.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["KL_CAP", "OBSERVATIONS", "observation_layout", "observation_limits", "observation_table"]

OBSERVATIONS = ("summary", "latent")


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


KL_CAP = 30.0  # KL between successive steps is clipped here (a probability of ~1e-13 already gives ~30 nats)


def observation_limits(num_classes: int, hidden_dim: int, max_steps: int) -> dict[str, tuple[float, float]]:
    """Per layout entry, its (low, high); y ends in a parameter-free RMSNorm, so |y_j| <= sqrt(hidden_dim)."""
    log_c = float(np.log(num_classes))
    return {"probs": (0.0, 1.0), "max_prob": (0.0, 1.0), "entropy": (0.0, log_c), "halt_prob": (0.0, 1.0),
            "step_fraction": (0.0, 1.0), "movement": (0.0, 1.0), "kl_prev": (0.0, KL_CAP),
            "entropy_delta": (-log_c, log_c), "stable_steps": (0.0, float(max_steps)),
            "latent": (-float(np.sqrt(hidden_dim)), float(np.sqrt(hidden_dim)))}  # fmt: skip


def observation_table(logits: torch.Tensor, halt_logits: torch.Tensor, y: torch.Tensor
                      ) -> tuple[np.ndarray, dict[str, slice]]:  # fmt: skip
    """The (N, K, D) float32 "latent" observation of a rollout (the "summary" one is its first columns),
    clipped to its bounds, and its layout; inputs (N, K, C), (N, K) and (N, K, H)."""
    n, k, c = logits.shape
    hidden = y.shape[-1]
    probs, log_probs = logits.softmax(-1), logits.log_softmax(-1)
    previous = torch.cat([torch.full_like(probs[:, :1], 1.0 / c), probs[:, :-1]], dim=1)
    previous_log = torch.cat([torch.full_like(log_probs[:, :1], -float(np.log(c))), log_probs[:, :-1]], dim=1)
    entropy = -(probs * log_probs).sum(-1, keepdim=True)
    halt_prob = halt_logits.sigmoid()
    stats = {
        "probs": probs,
        "max_prob": probs.amax(-1, keepdim=True),
        "entropy": entropy,
        "halt_prob": halt_prob[..., None],
        "step_fraction": (torch.arange(1, k + 1, dtype=torch.float32) / k).expand(n, k)[..., None],
        "movement": 0.5 * (probs - previous).abs().sum(-1, keepdim=True),
        "kl_prev": (probs * (log_probs - previous_log)).sum(-1, keepdim=True),
        "entropy_delta": torch.diff(entropy, dim=1, prepend=torch.full_like(entropy[:, :1], float(np.log(c)))),
        "stable_steps": _stable_steps(logits.argmax(-1))[..., None],
        "latent": y,
    }
    layout = observation_layout(c, hidden)
    latent = torch.cat([stats[name] for name in layout], dim=-1).numpy()
    limits = observation_limits(c, hidden, k)
    for name, columns in layout.items():
        np.clip(latent[..., columns], *limits[name], out=latent[..., columns])
    return latent, layout


def _stable_steps(prediction: torch.Tensor) -> torch.Tensor:
    """(N, K) float: how many consecutive steps up to t (t included) have predicted what step t predicts."""
    run = torch.ones(prediction.shape, dtype=torch.float32)
    for t in range(1, prediction.shape[1]):
        run[:, t] = torch.where(prediction[:, t] == prediction[:, t - 1], run[:, t - 1] + 1, 1.0)
    return run
