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

Any model that refines an answer step by step gets a table too: ``Rollouts.from_arrays`` takes its exported
per-step logits, and ``simulate`` takes any object with the step protocol (``trm_env.stepping``) as
``checkpoint``. Both build the table with ``simulate``'s own builder (``trm_env.arrays.table_fields``).

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

from trm_env.arrays import REWARDS, RewardTable, as_tensors, check_arrays, check_names, content_key, table_fields
from trm_env.checks import check_int
from trm_env.loss import PNL_SCALE
from trm_env.model import TinyRecursiveModel, resolve_device
from trm_env.observation import OBSERVATIONS, observation_bounds, observation_layout
from trm_env.resolve import (
    CHECKPOINT_DIR,
    SHIPPED_SEEDS,
    module_digest,
    resolve_model,
    resolve_stepper,
    shipped_checkpoint,
)
from trm_env.stepping import Stepper, rollout_steps, stepper_pnl_scale
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
    "resolve_model",
    "resolve_stepper",
    "shipped_checkpoint",
    "simulate",
]

_PACKAGE = Path(__file__).parent
# the code a table depends on: part of its key
_CODE = ("rollouts.py", "arrays.py", "resolve.py", "observation.py", "stepping.py", "model.py", "loss.py")
_CODE_DIGEST = hashlib.sha256(b"".join((_PACKAGE / name).read_bytes() for name in _CODE))
_MEMORY: OrderedDict[str, Rollouts] = OrderedDict()
_MEMORY_SIZE = 8


@dataclass(frozen=True, eq=False)
class Rollouts:
    """One model's trajectories over one split: N samples x K steps (step t+1 at position t).

    ``observations[mode]`` (N, K, D) float32 for "summary" and "latent"; ``halt_reward[reward]`` (N, K)
    float64, the terminal reward of halting at step t+1 before step costs; per step (N, K): ``prediction``,
    ``correct``, ``pnl`` (realized pnl of the prediction; NaN without a pnl matrix), ``profit_weighted_ce``,
    ``halt_prob``; per sample (N,): ``index`` (row in the task), ``label``, ``difficulty`` and ``date``
    where the task has them, and the task's privileged ``reference_steps``. ``has_halt_head``: whether the model
    gave halt logits (if not, ``halt_prob`` is 0.5 everywhere and the study skips the halt-head family).
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
    has_halt_head: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.halt_reward, RewardTable):  # a missing reward mode says why (trm_env.arrays)
            object.__setattr__(self, "halt_reward", RewardTable(self.halt_reward))

    @classmethod
    def from_arrays(cls, logits: Any, labels: Any, *, halt_logits: Any = None, pnl_matrix: Any = None, pnl: Any = None,
                    difficulty: Any = None, split: str = "test", task_name: str = "custom", latent: Any = None,
                    pnl_scale: float = PNL_SCALE) -> Rollouts:  # fmt: skip
        """The table of any model's per-step outputs over one split: logits (N, K, C) of steps 1..K (K >= 2, C >= 2)
        and labels (N,) in [0, C); numpy arrays or tensors, e.g. ``**np.load("test.npz")``.

        Optional: ``halt_logits`` (N, K) (else ``halt_prob`` is 0.5 and the halt-head family is skipped);
        ``latent`` (N, K, H), |values| <= sqrt(H) (else the "latent" observation is the "summary" one);
        ``pnl_matrix`` (N, C) and/or ``pnl`` (N,) (the labelled answer's pnl; default: the matrix's entry);
        ``difficulty`` (N,). Observations, rewards and info come from ``simulate``'s own builder. Rewards:

        - ``"profit_weighted_ce"``: ``-(1 - tanh(pnl / pnl_scale)) * CE``; without pnl, pnl is 0 and the weight
          1, so it is ``-CE`` (the negative cross-entropy of the label);
        - ``"correct"``: 1.0 if the step's argmax is the label, else 0.0;
        - ``"pnl"``: ``pnl_matrix[prediction] / pnl_scale``, only with a pnl matrix (asking a table without one
          is a ``ValueError``; its per-step ``pnl`` info is NaN).

        ``index`` is 0..N-1, no dates or privileged references, horizon 1. The key is the sha256 of the arrays
        and settings (and this code). Bad input is a ``ValueError`` naming the argument.
        """
        check_names(split, task_name, pnl_scale)
        arrays = check_arrays(logits, labels, halt_logits, latent, pnl_matrix, pnl, difficulty)
        key = content_key([_CODE_DIGEST.hexdigest(), "arrays", task_name, split, float(pnl_scale)], arrays)
        if key in _MEMORY:
            return _remember(key, _MEMORY[key])
        t = as_tensors(arrays)
        fields = table_fields(t["logits"], t["halt_logits"], t["latent"], t["labels"], t["pnl"], t["pnl_matrix"],
                              pnl_scale)  # fmt: skip
        n, c = len(arrays["labels"]), fields["num_classes"]
        return _remember(key, cls(key=key, task_name=task_name, split=split, **fields, index=np.arange(n),
                                  difficulty=arrays["difficulty"], date=None, reference_steps={}, horizon=1,
                                  strategy_names=tuple(str(i) for i in range(c))))  # fmt: skip

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


def _simulation_key(model: Any, task: Task, split: str, k: int, where: torch.device, key: str | None) -> str | None:
    """The content key of a simulation, or None (a stepper that is no ``nn.Module`` and was given no ``key``)."""
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty string (a version of the stepper), got {key!r}")
    if not isinstance(model, torch.nn.Module) and key is None:
        return None
    identity = module_digest(model) if isinstance(model, torch.nn.Module) else None
    parts = [_CODE_DIGEST.hexdigest(), identity, task.key(), task.horizon, list(task.strategy_names), split, k,
             stepper_pnl_scale(model)]  # the task's key, and the two task fields it does not hash
    parts += ([] if key is None else [key]) + ([] if where.type == "cpu" else [where.type])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def simulate(
    task: str | Task,
    checkpoint: str | Path | TinyRecursiveModel | Stepper | None = None,
    split: str = "test",
    max_steps: int | None = None,
    device: str = "cpu",
    cache_dir: str | Path | bool | None = True,
    key: str | None = None,
) -> Rollouts:
    """The rollout table of ``checkpoint`` (default: the task's shipped model) over ``split``, K steps.

    ``task`` is a name of ``load_task`` or a ``Task``; ``checkpoint`` a ``model.pt``, a run directory, a
    ``TinyRecursiveModel``, or **any stepper** (``trm_env.stepping``: ``initial_state(x)``, ``step(state)``;
    optional ``latent(state)``, ``max_steps`` (else pass ``max_steps``), ``pnl_scale`` (default 0.05)).
    Tables are cached by content: a TRM or any ``torch.nn.Module`` stepper is keyed by its class, config and
    weights (``state_dict``); any other stepper only by ``key``, a version string you pass: without it, its table
    is simulated every call and cached nowhere. ``key`` also joins a module's key (for behaviour its weights do
    not hold). ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (where the rollout runs; a table made on an
    accelerator is keyed apart from the CPU's). ``cache_dir=True`` uses ``default_cache_dir()``; a path, that
    folder; ``False``/``None`` keeps the table in memory only.
    """
    if not isinstance(task, Task | str):
        raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
    task = load_task(task) if isinstance(task, str) else task
    task.split(split)  # ValueError listing the valid splits
    model = resolve_stepper(checkpoint, task)
    most = getattr(model, "max_steps", None)
    if max_steps is None and most is None:
        raise ValueError("max_steps must be given: the stepper states no max_steps of its own")
    max_steps = check_int("max_steps", most if max_steps is None else max_steps, maximum=most)
    where = resolve_device(device)
    table_key = _simulation_key(model, task, split, max_steps, where, key)
    if table_key is None:
        return _simulate(model, task, split, max_steps, None, where)
    if table_key in _MEMORY:
        return _remember(table_key, _MEMORY[table_key])
    folder = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)
    if folder is not None and (folder / table_key).exists():
        try:
            return _remember(table_key, Rollouts.load(folder / table_key))
        except ValueError as error:  # damaged: moved aside with a warning, then simulated again
            discard(folder / table_key, error)
    rollouts = _simulate(model, task, split, max_steps, table_key, where)
    if folder is not None:
        rollouts.save(folder / table_key)
    return _remember(table_key, rollouts)


@torch.no_grad()
def _simulate(model: TinyRecursiveModel | Stepper, task: Task, split: str, k: int, key: str | None,
              device: torch.device) -> Rollouts:  # fmt: skip
    """One batched rollout over the split, turned into a table by ``table_fields`` (built step by step with the
    functions live halting uses). ``key`` None: the table's key is the digest of its model outputs."""
    rows = task.split(split)
    x = torch.from_numpy(np.ascontiguousarray(task.features[rows])).to(device)
    module = model if isinstance(model, torch.nn.Module) else None
    home = next(module.parameters(), torch.empty(0)).device if module is not None else None
    try:
        if module is not None:
            module.to(device)
        if isinstance(model, TinyRecursiveModel):
            outputs = model.rollout(x, steps=k, return_answers=True)
        else:
            outputs = rollout_steps(model, x, k)
    finally:
        if module is not None:
            module.to(home)
    logits, halt_logits, latent = (None if t is None else t.cpu() for t in outputs)
    if logits.shape[-1] != task.num_classes:
        raise ValueError(f"the model gives {logits.shape[-1]} classes, but task {task.name!r} has {task.num_classes}")
    pnl_matrix = torch.from_numpy(task.pnl_matrix[rows])
    fields = table_fields(logits, halt_logits, latent, torch.from_numpy(task.labels[rows]),
                          torch.from_numpy(task.pnl[rows]), pnl_matrix, stepper_pnl_scale(model))  # fmt: skip
    if key is None:
        outputs = {"logits": logits.numpy(), "halt_logits": None if halt_logits is None else halt_logits.numpy(),
                   "latent": None if latent is None else latent.numpy()}  # fmt: skip
        key = content_key([_CODE_DIGEST.hexdigest(), "stepper", task.key(), split, fields["pnl_scale"]], outputs)
    dates = task.dates[rows] if np.issubdtype(task.dates.dtype, np.datetime64) else None
    return Rollouts(
        key=key, task_name=task.name, split=split, **fields, index=rows.copy(),
        difficulty=None if task.difficulty is None else task.difficulty[rows].copy(), date=dates,
        reference_steps={name: steps[rows].copy() for name, steps in task.reference_steps.items()},
        horizon=task.horizon, strategy_names=tuple(task.strategy_names),
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
