"""The step protocol: what a model must offer to be simulated into a table or halted live, and the
per-row operations both need.

A *stepper* is any object with ``initial_state(x) -> state`` and ``step(state) -> (state, logits (B, C),
halt_logits (B,) or None)``; optionally ``latent(state) -> (B, H)``, the extra columns of the "latent"
observation, and the attributes ``max_steps`` (its K) and ``pnl_scale`` (of the profit weight; default 0.05).
A state is a tensor, or a tuple/NamedTuple/list/dict of tensors (``None`` allowed), each
with one row per sample first, and rows must not interact: then rows can leave a batch and new ones can
join it at any step. ``TinyRecursiveModel`` is one stepper.

``run_step`` runs one step on a batch and pads a batch of fewer than ``MIN_ROWS`` rows: MKL's sgemm takes
another kernel below 8 rows whose last bits differ, so padding keeps every row's numbers those of a large
batch, and live halting gives the table's numbers bit for bit (on CPU). ``rollout_steps`` runs K steps on a
batch (``simulate`` of a stepper). ``step_outcome`` turns one step's logits into what halting there earns, for
the table and live alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from trm_env.loss import PNL_SCALE, profit_weighted_ce

__all__ = ["MIN_ROWS", "Stepper", "TableSpec", "cat_rows", "check_stepper", "replace_rows", "rollout_steps", "run_step",
           "select_rows", "step_outcome", "stepper_pnl_scale"]  # fmt: skip

MIN_ROWS = 8


class Stepper(Protocol):
    def initial_state(self, x: Tensor) -> Any: ...

    def step(self, state: Any) -> tuple[Any, Tensor, Tensor | None]: ...


@dataclass(frozen=True)
class TableSpec:
    """What a policy binds to when no table exists (live halting): the layout and sizes a table would have."""

    task_name: str
    split: str
    layout: dict[str, slice]
    num_classes: int
    max_steps: int
    num_samples: int
    pnl_scale: float
    reference_steps: dict[str, np.ndarray] = field(default_factory=dict)


def _map(fn: Callable[..., Tensor], state: Any, *others: Any) -> Any:
    """``fn`` over the tensors of ``state``, each with the tensors at the same place in ``others``."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state, *others)
    if isinstance(state, dict):
        return {key: _map(fn, value, *(other[key] for other in others)) for key, value in state.items()}
    if isinstance(state, tuple | list):
        values = [_map(fn, value, *(other[i] for other in others)) for i, value in enumerate(state)]
        return type(state)(*values) if hasattr(state, "_fields") else type(state)(values)
    raise TypeError(f"a stepper's state must hold tensors (in tuples, lists or dicts), got {type(state).__name__}")


def select_rows(state: Any, rows: Tensor) -> Any:
    """The state of the given rows (an index or boolean mask), in that order."""
    index = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
    return _map(lambda t: t.index_select(0, index), state)  # index_select: about 4x faster than t[index] here


def replace_rows(state: Any, rows: Tensor, fresh: Any, owned: Any) -> Any:
    """``state`` with its ``rows`` (an index) replaced by the rows of ``fresh``: written in place into a tensor
    that ``owned`` (what this function returned before, or None) holds at the same place, else into a copy
    (so a tensor that aliases someone's input, or is an expanded view, is never written to)."""
    if owned is None:
        return _map(lambda t, f: t.index_copy(0, rows, f), state, fresh)
    return _map(lambda t, f, o: t.index_copy_(0, rows, f) if t is o else t.index_copy(0, rows, f), state, fresh, owned)


def cat_rows(states: Sequence[Any]) -> Any:
    """The states of several batches as one, rows in order."""
    first = states[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(states)
    if isinstance(first, dict):
        return {key: cat_rows([s[key] for s in states]) for key in first}
    if isinstance(first, tuple | list):
        values = [cat_rows([s[i] for s in states]) for i in range(len(first))]
        return type(first)(*values) if hasattr(first, "_fields") else type(first)(values)
    raise TypeError(f"a stepper's state must hold tensors (in tuples, lists or dicts), got {type(first).__name__}")


def check_stepper(stepper: Any, argument: str = "checkpoint") -> Stepper:
    """``stepper`` if it has the step protocol (callable ``initial_state`` and ``step``), else ``TypeError``."""
    if not (callable(getattr(stepper, "initial_state", None)) and callable(getattr(stepper, "step", None))):
        raise TypeError(f"{argument} must be a path, a TinyRecursiveModel or a stepper with initial_state(x) and "
                        f"step(state), got {type(stepper).__name__}")  # fmt: skip
    return stepper


def stepper_pnl_scale(stepper: Any) -> float:
    """The pnl scale of a stepper's profit weight: its ``pnl_scale`` attribute, else ``PNL_SCALE``."""
    return float(getattr(stepper, "pnl_scale", PNL_SCALE))


def _padded_step(stepper: Stepper, state: Any, rows: int) -> tuple[Any, Tensor, Tensor | None, Tensor | None]:
    """One step of ``rows`` rows, padded below ``MIN_ROWS``: ``(state, logits, halt logits, latent)``, each of the
    last two None where the stepper gives none."""
    pad = MIN_ROWS - rows
    if pad > 0:
        state = cat_rows([state, select_rows(state, torch.zeros(pad, dtype=torch.long))])
    with torch.no_grad():
        state, logits, halt_logits = stepper.step(state)
        latent = stepper.latent(state) if hasattr(stepper, "latent") else None
    if pad > 0:
        keep = torch.arange(rows)
        state, logits = select_rows(state, keep), logits[:rows]
        halt_logits = None if halt_logits is None else halt_logits[:rows]
        latent = None if latent is None else latent[:rows]
    return state, logits, halt_logits, latent


def run_step(stepper: Stepper, state: Any, rows: int) -> tuple[Any, Tensor, Tensor, Tensor | None]:
    """One step of ``rows`` rows: ``(state, logits, halt_logits, latent or None)``, padded below ``MIN_ROWS``.

    A stepper without halt logits gets zeros (halt probability 0.5 in the observation).
    """
    state, logits, halt_logits, latent = _padded_step(stepper, state, rows)
    return state, logits, logits.new_zeros(len(logits)) if halt_logits is None else halt_logits, latent


def rollout_steps(stepper: Stepper, x: Tensor, steps: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Every row of ``x`` for ``steps`` steps: logits (N, K, C), halt logits (N, K) or None (the stepper gave
    none), latent (N, K, H) or None (no ``latent``); the numbers live halting gets (``run_step``'s padding)."""
    state, logits, halts, latents = stepper.initial_state(x), [], [], []
    for _ in range(steps):
        state, step_logits, halt_logits, latent = _padded_step(stepper, state, len(x))
        logits.append(step_logits)
        halts.append(halt_logits)
        latents.append(latent)
    given = [halt is not None for halt in halts]
    if any(given) and not all(given):
        raise ValueError("the stepper gave halt logits at some steps and None at others; give them at every step")
    stacked = [None if parts[0] is None else torch.stack(parts, dim=1) for parts in (halts, latents)]
    return torch.stack(logits, dim=1), stacked[0], stacked[1]


def step_outcome(logits: Tensor, labels: Tensor, pnl: Tensor, pnl_matrix: Tensor | None, pnl_scale: float
                 ) -> dict[str, np.ndarray]:  # fmt: skip
    """What halting at this step earns, per row (float64 numpy): ``prediction``, ``correct``, realized ``pnl``,
    ``profit_weighted_ce`` and the terminal reward of each mode (``reward_<mode>``, before step costs).

    ``logits`` (B, C); ``labels`` (B,), ``pnl`` (B,) the labelled strategy's pnl, ``pnl_matrix`` (B, C). Without a
    pnl matrix the realized ``pnl`` is unknown (NaN) and there is no ``reward_pnl``.
    """
    prediction = logits.argmax(-1)
    pwce = profit_weighted_ce(logits, labels, pnl, pnl_scale).double().cpu().numpy()
    correct = (prediction == labels).cpu().numpy()
    out = {"prediction": prediction.cpu().numpy(), "correct": correct, "pnl": np.full(len(correct), np.nan),
           "profit_weighted_ce": pwce, "reward_profit_weighted_ce": -pwce, "reward_correct": correct.astype(np.float64)}
    if pnl_matrix is not None:
        out["pnl"] = pnl_matrix.gather(1, prediction[:, None])[:, 0].double().cpu().numpy()
        out["reward_pnl"] = out["pnl"] / pnl_scale
    return out
