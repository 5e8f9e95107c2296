"""Tables from per-step outputs: the one builder of a table's observations, rewards and info, and the checks of
``Rollouts.from_arrays``.

``table_fields`` turns a rollout's per-step outputs (logits, halt logits, latent state) and the samples' labels and
pnl into a table's fields with the per-step functions live halting uses too (``observation_table``,
``step_outcome``): ``simulate`` and ``Rollouts.from_arrays`` both call it, so a model's table is the same whichever
way it came. ``check_arrays`` refuses bad input with a ``ValueError`` naming the argument; ``content_key`` is the
sha256 of arrays and settings that keys a table by content.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trm_env.observation import halt_probability, observation_table
from trm_env.stepping import step_outcome
from trm_env.task import SPLITS

__all__ = ["REWARDS", "RewardTable", "as_tensors", "check_arrays", "check_names", "content_key", "table_fields"]

REWARDS = ("profit_weighted_ce", "pnl", "correct")


class RewardTable(dict):
    """``halt_reward``: reward mode -> (N, K) terminal rewards. A mode the table lacks (``"pnl"`` without a pnl
    matrix) is a ``ValueError`` that says why, wherever it is asked for (env, evaluation, learners)."""

    def __missing__(self, mode: str) -> np.ndarray:
        why = " ('pnl' needs a pnl matrix: Rollouts.from_arrays(..., pnl_matrix=...))" if mode == "pnl" else ""
        raise ValueError(f"reward {mode!r} is not in this table, which has {sorted(self)}{why}")


def _array(name: str, value: Any, shape: tuple[int | None, ...], integer: bool = False) -> np.ndarray:
    """``value`` as a numpy array of ``shape`` (None: any size), of integers or of real numbers, else ``ValueError``."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except ValueError as error:  # a ragged nesting
        raise ValueError(f"{name} must be a rectangular array: {error}") from error
    is_int = np.issubdtype(array.dtype, np.integer)
    if not is_int if integer else not (is_int or np.issubdtype(array.dtype, np.floating)):
        what = "integers" if integer else "real numbers"
        raise ValueError(f"{name} must be an array of {what}, got dtype {array.dtype}")
    if array.ndim != len(shape) or any(want not in (None, got) for got, want in zip(array.shape, shape, strict=True)):
        wanted = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    return array


def _finite(name: str, array: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``array`` as ``dtype``, refused if it holds NaN or inf (after the conversion: float32 overflows past 3.4e38)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused below
        out = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite; it holds NaN or inf (as {np.dtype(dtype).name})")
    return out


def check_arrays(logits: Any, labels: Any, halt_logits: Any = None, latent: Any = None, pnl_matrix: Any = None,
                 pnl: Any = None, difficulty: Any = None) -> dict[str, np.ndarray | None]:  # fmt: skip
    """The arguments of ``Rollouts.from_arrays`` as checked numpy arrays: float32 (as a model's outputs and a
    ``Task``'s pnl are), labels int64, difficulty int64 or float64; None stays None."""
    logits = _array("logits", logits, (None, None, None))
    n, k, c = logits.shape
    for count, least, what in ((n, 1, "samples (N)"), (k, 2, "steps (K): halting needs a choice"),
                               (c, 2, "classes (C)")):  # fmt: skip
        if count < least:
            raise ValueError(f"logits (N, K, C) must hold at least {least} {what}, got shape {logits.shape}")
    labels = _array("labels", labels, (n,), integer=True).astype(np.int64)
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c - 1}] (C = {c} classes), got values in [{labels.min()}, "
                         f"{labels.max()}]")  # fmt: skip
    out = {"logits": _finite("logits", logits), "labels": labels}
    for name, value, shape in (("halt_logits", halt_logits, (n, k)), ("latent", latent, (n, k, None)),
                               ("pnl_matrix", pnl_matrix, (n, c)), ("pnl", pnl, (n,))):  # fmt: skip
        out[name] = None if value is None else _finite(name, _array(name, value, shape))
    if out["latent"] is not None:
        hidden = out["latent"].shape[-1]
        if hidden < 1 or np.abs(out["latent"]).max() > np.sqrt(hidden):
            raise ValueError(f"latent (N, K, H) needs H >= 1 and |values| <= sqrt(H), the observation's bound (e.g. "
                             f"an RMS-normalised state); got H = {hidden}")  # fmt: skip
    if difficulty is not None:
        difficulty = _array("difficulty", difficulty, (n,))
        integral = np.issubdtype(difficulty.dtype, np.integer)
        difficulty = _finite("difficulty", difficulty, np.int64 if integral else np.float64)
    return {**out, "difficulty": difficulty}


def check_names(split: Any, task_name: Any, pnl_scale: Any) -> None:
    """``split`` one of ``SPLITS``, ``task_name`` a non-empty string, ``pnl_scale`` a finite number > 0."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if not isinstance(task_name, str) or not task_name.strip():
        raise ValueError(f"task_name must be a non-empty string, got {task_name!r}")
    if isinstance(pnl_scale, bool) or not isinstance(pnl_scale, numbers.Real) or not 0 < pnl_scale < np.inf:
        raise ValueError(f"pnl_scale must be a finite number > 0, got {pnl_scale!r}")


def content_key(parts: list[Any], arrays: dict[str, np.ndarray | None]) -> str:
    """sha256 of ``parts`` (JSON) and of each array's name, dtype, shape and bytes (None counts as absent)."""
    digest = hashlib.sha256(json.dumps(parts).encode())
    for name, array in arrays.items():
        digest.update(f"{name}:{'none' if array is None else f'{array.dtype.str}{array.shape}'}".encode())
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def table_fields(logits: Tensor, halt_logits: Tensor | None, latent: Tensor | None, labels: Tensor,
                 pnl: Tensor | None, pnl_matrix: Tensor | None, pnl_scale: float) -> dict[str, Any]:  # fmt: skip
    """A table's observations, rewards and per-step info from (N, K, C) logits, (N, K) halt logits, (N, K, H)
    latent states, (N,) labels and pnl and the (N, C) pnl matrix (CPU tensors).

    No halt logits: zeros, so ``halt_prob`` is 0.5 (and ``has_halt_head`` False); no latent: hidden width 0; no
    ``pnl``: the pnl matrix's entry of the label, else 0 (profit weight 1: the profit-weighted CE is the CE); no
    pnl matrix: the realized ``pnl`` is NaN and there is no ``"pnl"`` reward.
    """
    n, k, c = logits.shape
    halt = logits.new_zeros(n, k) if halt_logits is None else halt_logits
    observations, layout = observation_table(logits, halt, logits.new_zeros(n, k, 0) if latent is None else latent)
    if pnl is None:
        pnl = logits.new_zeros(n) if pnl_matrix is None else pnl_matrix.gather(1, labels[:, None])[:, 0]
    steps = [step_outcome(logits[:, t].contiguous(), labels, pnl, pnl_matrix, pnl_scale) for t in range(k)]
    out = {name: np.stack([step[name] for step in steps], axis=1) for name in steps[0]}
    return dict(
        observations={"summary": np.ascontiguousarray(observations[..., : layout["latent"].start]),
                      "latent": observations},
        halt_reward=RewardTable({mode: out[f"reward_{mode}"] for mode in REWARDS if f"reward_{mode}" in out}),
        prediction=out["prediction"], correct=out["correct"], pnl=out["pnl"],
        profit_weighted_ce=out["profit_weighted_ce"], halt_prob=halt_probability(halt).double().numpy(),
        label=labels.numpy(), layout=layout, num_classes=c, max_steps=k, pnl_scale=float(pnl_scale),
        has_halt_head=halt_logits is not None,
    )  # fmt: skip


def as_tensors(arrays: dict[str, np.ndarray | None]) -> dict[str, Tensor | None]:
    """``check_arrays``' output as CPU tensors sharing its memory."""
    return {name: None if array is None else torch.from_numpy(array) for name, array in arrays.items()}
