"""The rollout table: a trained TRM's trajectories over one split, frozen as (samples x steps) arrays.

``simulate(task, checkpoint, split)`` runs the model once over every sample of the split for K steps
and returns a ``Rollouts``: per-step observations and halting rewards, the per-step and per-sample
information every evaluation reports, and ``layout``, **the one place the observation layout is
defined**. Every halting method is a function from per-step observations to a halting step over this
table; the environments (``trm_env.env``, ``trm_env.sb3``) are thin views over it, and
``agents.evaluate`` reads it directly.

Tables are cached by content: in memory, and on disk (``TRM_ENV_CACHE_DIR``, default
``~/.cache/trm_env/rollouts``; ``off`` disables it) so a fresh process or a subprocess worker loads
instead of re-simulating. The key covers the model's weights and config, the task's arrays, horizon and
strategy names, the split, K, the pnl scale and this code. Loads are checked (``trm_env.store``); a
damaged cache folder is moved aside with a warning and the table simulated again.

>>> rollouts = simulate("regime-chain", split="test")
>>> rollouts.observations["summary"].shape, rollouts.layout["halt_prob"]
((2400, 16, 16), slice(10, 11, None))
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_env.checks import check_int
from trm_env.model import TinyRecursiveModel, resolve_device
from trm_env.observation import (
    OBSERVATIONS,
    halt_probability,
    observation_bounds,
    observation_layout,
    observation_table,
)
from trm_env.stepping import step_outcome
from trm_env.store import discard, load_table, save_table
from trm_env.task import Task
from trm_env.tasks import load_task

__all__ = [
    "CHECKPOINT_DIR",
    "OBSERVATIONS",
    "REWARDS",
    "SHIPPED_SEEDS",
    "Rollouts",
    "as_rollouts",
    "observation_layout",
    "shipped_checkpoint",
    "simulate",
]

REWARDS = ("profit_weighted_ce", "pnl", "correct")
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
SHIPPED_SEEDS = (0, 1, 2)
_PACKAGE = Path(__file__).parent
# the code a table depends on: part of its key
_CODE = ("rollouts.py", "observation.py", "stepping.py", "model.py", "loss.py")
_CODE_DIGEST = hashlib.sha256(b"".join((_PACKAGE / name).read_bytes() for name in _CODE))
_MEMORY: OrderedDict[str, Rollouts] = OrderedDict()
_MEMORY_SIZE = 8


@dataclass(frozen=True, eq=False)
class Rollouts:
    """One model's trajectories over one split: N samples x K steps (step t+1 at position t).

    ``observations[mode]`` (N, K, D) float32 for "summary" and "latent"; ``halt_reward[reward]`` (N, K)
    float64, the terminal reward of halting at step t+1 before step costs; per step (N, K):
    ``prediction``, ``correct``, ``pnl`` (realized pnl of the prediction), ``profit_weighted_ce``,
    ``halt_prob``; per sample (N,): ``index`` (row in the task), ``label``, ``difficulty`` and ``date``
    where the task has them, and the task's privileged ``reference_steps``.
    """

    key: str
    task_name: str
    split: str
    observations: dict[str, np.ndarray]
    halt_reward: dict[str, np.ndarray]
    prediction: np.ndarray
    correct: np.ndarray
    pnl: np.ndarray
    profit_weighted_ce: np.ndarray
    halt_prob: np.ndarray
    index: np.ndarray
    label: np.ndarray
    difficulty: np.ndarray | None
    date: np.ndarray | None
    reference_steps: dict[str, np.ndarray]
    layout: dict[str, slice]
    num_classes: int
    max_steps: int
    pnl_scale: float
    horizon: int
    strategy_names: tuple[str, ...]

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def bounds(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) float32 bounds of an observation mode, from the layout."""
        hidden = self.layout["latent"].stop - self.layout["latent"].start
        return observation_bounds(self.num_classes, hidden, self.max_steps, self.observations[mode].shape[-1])

    def returns(self, reward: str, step_cost: float) -> np.ndarray:
        """(N, K) episode return of halting at step t+1: ``halt_reward - step_cost * t``."""
        return self.halt_reward[reward] - step_cost * np.arange(self.max_steps)

    def best_steps(self, reward: str, step_cost: float) -> np.ndarray:
        """Per sample, the step (1..K) with the highest return, earliest on ties: the oracle's choice."""
        return self.returns(reward, step_cost).argmax(axis=1) + 1

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by value, but unpickle into the shared memory cache (one copy per process and key)."""
        return _restore, (self.key, {f.name: getattr(self, f.name) for f in fields(self)})

    # ---- on-disk cache -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the table as a folder of ``.npy`` arrays plus ``meta.json`` with their digests, atomically."""
        return save_table(path, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, verify: bool | None = None) -> Rollouts:
        """Read a table written by ``save`` (memory-mapped, read-only, by default), checked as
        ``trm_env.store`` says; ``verify=True`` (or ``TRM_ENV_VERIFY=1``) checks every array's sha256 too.
        A damaged folder is a ``ValueError`` naming it and the file."""
        return cls(**load_table(path, mmap, verify))


def _restore(key: str, values: dict[str, Any]) -> Rollouts:
    return _remember(key, Rollouts(**values))


def _remember(key: str, rollouts: Rollouts) -> Rollouts:
    """Keep ``rollouts`` in the in-memory LRU cache (the one already there for the key wins)."""
    rollouts = _MEMORY.setdefault(key, rollouts)
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    return rollouts


def default_cache_dir() -> Path | None:
    """``TRM_ENV_CACHE_DIR`` (``off`` or empty: no disk cache), else ``$XDG_CACHE_HOME/trm_env/rollouts``."""
    configured = os.environ.get("TRM_ENV_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "none", "0") else Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trm_env" / "rollouts"


# ---- simulation -----------------------------------------------------------------------------------


def shipped_checkpoint(task_name: str, seed: int = 0) -> Path:
    """The folder of the TRM shipped for ``task_name`` trained with ``seed`` (0, 1 and 2 are shipped)."""
    return CHECKPOINT_DIR / task_name / f"seed{seed}"


def resolve_model(checkpoint: str | Path | TinyRecursiveModel | None, task: Task) -> TinyRecursiveModel:
    """The model from ``checkpoint`` (default: the task's shipped seed-0 TRM), checked against the task."""
    if isinstance(checkpoint, TinyRecursiveModel):
        model = checkpoint
    elif checkpoint is None or isinstance(checkpoint, str | os.PathLike):
        path = shipped_checkpoint(task.name) if checkpoint is None else Path(checkpoint)
        if checkpoint is None and not (path / "model.pt").is_file():
            raise ValueError(f"no shipped checkpoint for task {task.name!r} at {str(path)!r}; "
                             "pass checkpoint=<model.pt, run directory or TinyRecursiveModel>")  # fmt: skip
        model = TinyRecursiveModel.load(path)
    else:
        raise TypeError(f"checkpoint must be None, a path or a TinyRecursiveModel, got {type(checkpoint).__name__}")
    if model.input_dim != task.num_features:
        raise ValueError(f"checkpoint expects input width {model.input_dim}, but task {task.name!r} has "
                         f"{task.num_features}")  # fmt: skip
    mine = (model.num_classes, model.n_chunks, model.chunk_dim)
    theirs = (task.num_classes, task.n_chunks, task.chunk_dim)
    if mine != theirs:
        raise ValueError(f"checkpoint has {mine[0]} classes and stream chunks {mine[1]}x{mine[2]}, but task "
                         f"{task.name!r} has {theirs[0]} classes and chunks {theirs[1]}x{theirs[2]}")  # fmt: skip
    return model


def _model_digest(model: TinyRecursiveModel) -> str:
    """sha256 of the model's config and weights: the key of its content, wherever it came from."""
    digest = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def simulate(
    task: str | Task,
    checkpoint: str | Path | TinyRecursiveModel | None = None,
    split: str = "test",
    max_steps: int | None = None,
    device: str = "cpu",
    cache_dir: str | Path | bool | None = True,
) -> Rollouts:
    """The rollout table of ``checkpoint`` (default: the task's shipped model) over ``split``, K steps.

    ``task`` is a name of ``load_task`` or a ``Task``; ``checkpoint`` a ``model.pt``, a run directory or a
    ``TinyRecursiveModel``. ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (where the rollout runs; a table
    made on an accelerator is keyed apart from the CPU's). ``cache_dir=True`` uses ``default_cache_dir()``;
    a path, that folder; ``False``/``None`` keeps the table in memory only.
    """
    if not isinstance(task, Task | str):
        raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
    task = load_task(task) if isinstance(task, str) else task
    task.split(split)  # ValueError listing the valid splits
    model = resolve_model(checkpoint, task)
    max_steps = check_int("max_steps", model.max_steps if max_steps is None else max_steps, maximum=model.max_steps)
    where = resolve_device(device)
    parts = [_CODE_DIGEST.hexdigest(), _model_digest(model), task.key(), task.horizon, list(task.strategy_names),
             split, max_steps, model.pnl_scale]  # the task's key, and the two task fields it does not hash
    parts += [] if where.type == "cpu" else [where.type]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    if key in _MEMORY:
        return _remember(key, _MEMORY[key])
    folder = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)
    if folder is not None and (folder / key).exists():
        try:
            return _remember(key, Rollouts.load(folder / key))
        except ValueError as error:  # damaged: moved aside with a warning, then simulated again
            discard(folder / key, error)
    rollouts = _simulate(model, task, split, max_steps, key, where)
    if folder is not None:
        rollouts.save(folder / key)
    return _remember(key, rollouts)


@torch.no_grad()
def _simulate(model: TinyRecursiveModel, task: Task, split: str, k: int, key: str, device: torch.device) -> Rollouts:
    """One batched rollout over the split, turned into observation, reward and info tables step by step
    (``observation_step`` and ``step_outcome``: the functions live halting uses too)."""
    rows = task.split(split)
    x = torch.from_numpy(np.ascontiguousarray(task.features[rows]))
    home = next(model.parameters()).device
    logits, halt_logits, y = (t.cpu() for t in model.to(device).rollout(x.to(device), steps=k, return_answers=True))
    model.to(home)
    latent, layout = observation_table(logits, halt_logits, y)
    labels, pnl = torch.from_numpy(task.labels[rows]), torch.from_numpy(task.pnl[rows])
    pnl_matrix = torch.from_numpy(task.pnl_matrix[rows])
    steps = [step_outcome(logits[:, t].contiguous(), labels, pnl, pnl_matrix, model.pnl_scale) for t in range(k)]
    out = {name: np.stack([step[name] for step in steps], axis=1) for name in steps[0]}
    dates = task.dates[rows] if np.issubdtype(task.dates.dtype, np.datetime64) else None
    return Rollouts(
        key=key, task_name=task.name, split=split,
        observations={"summary": np.ascontiguousarray(latent[..., : layout["latent"].start]), "latent": latent},
        halt_reward={mode: out[f"reward_{mode}"] for mode in REWARDS}, prediction=out["prediction"],
        correct=out["correct"], pnl=out["pnl"], profit_weighted_ce=out["profit_weighted_ce"],
        halt_prob=halt_probability(halt_logits).double().numpy(), index=rows.copy(), label=labels.numpy(),
        difficulty=None if task.difficulty is None else task.difficulty[rows].copy(), date=dates,
        reference_steps={name: steps[rows].copy() for name, steps in task.reference_steps.items()},
        layout=layout, num_classes=logits.shape[-1], max_steps=k, pnl_scale=model.pnl_scale, horizon=task.horizon,
        strategy_names=tuple(task.strategy_names),
    )  # fmt: skip


def as_rollouts(
    source: str | Task | Rollouts | Path,
    checkpoint: str | Path | TinyRecursiveModel | None = None,
    split: str | None = None,
    max_steps: int | None = None,
) -> Rollouts:
    """A table from a task (name or ``Task``, simulated; split default "test"), a ``Rollouts`` or a saved folder.

    Given a table, ``split`` and ``max_steps`` may only repeat what it holds, and ``checkpoint`` must be None.
    """
    if isinstance(source, str | Task):
        return simulate(source, checkpoint, "test" if split is None else split, max_steps)
    table = source if isinstance(source, Rollouts) else Rollouts.load(source)
    for argument, given, held in (("split", split, table.split), ("max_steps", max_steps, table.max_steps)):
        if given is not None and given != held:
            raise ValueError(f"{argument}={given!r} disagrees with the rollouts given ({argument} {held!r})")
    if checkpoint is not None:
        raise ValueError("pass either rollouts or checkpoint=, not both (the rollouts fix the model)")
    return table
