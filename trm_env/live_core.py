"""The live core: the env's slot calls (``trm_env.slots``) answered by running the model, one step at a time.

``gym.make(id, live=True)`` (and the vector and SB3 envs) build this instead of a table: each slot holds
its sample's recursion state, and a slot that continues runs one model step. Steps are lazy: ``advance``
and ``begin`` only mark slots as due, and the next read (``observe``, ``info``...) runs **one batched
model step over every due slot**, so a vector env steps its active envs together. The observation,
rewards and info come from the table's own per-step functions (``observation_step``, ``step_outcome``,
``run_step``), so a live env gives the table env's episodes for the same seeds and actions. Its uses:
splits too large to tabulate, and models that change while an agent learns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from trm_env.checks import check_int
from trm_env.core import HaltingCore
from trm_env.model import TinyRecursiveModel
from trm_env.observation import (
    halt_probability,
    initial_carry,
    observation_bounds,
    observation_layout,
    observation_step,
)
from trm_env.rollouts import resolve_model
from trm_env.slots import DEFAULT_STEP_COST, SlotCore, check_settings
from trm_env.stepping import TableSpec, run_step, select_rows, step_outcome
from trm_env.task import Task
from trm_env.tasks import load_task

__all__ = ["LiveCore", "make_core"]

_INFO = ("prediction", "correct", "pnl", "profit_weighted_ce")


def _assign(storage: Any, rows: torch.Tensor, values: Any) -> None:
    """Write ``values``' rows into ``storage`` at ``rows`` (same structure of tensors)."""
    if isinstance(storage, torch.Tensor):
        storage[rows] = values
    elif isinstance(storage, dict):
        for key in storage:
            _assign(storage[key], rows, values[key])
    elif isinstance(storage, tuple | list):
        for held, value in zip(storage, values, strict=True):
            _assign(held, rows, value)


class LiveCore(SlotCore):
    """Slots of a live env over one split of a task; the same arguments as ``HaltingCore`` but ``rollouts``."""

    live = True

    def __init__(
        self,
        task: str | Task | None = None,
        checkpoint: str | Path | TinyRecursiveModel | None = None,
        split: str | None = None,
        max_steps: int | None = None,
        step_cost: float = DEFAULT_STEP_COST,
        reward: str = "profit_weighted_ce",
        observation: str = "summary",
        render_mode: str | None = None,
        task_kwargs: dict[str, Any] | None = None,
        num_slots: int = 1,
    ) -> None:
        self.step_cost = check_settings(step_cost, reward, observation, render_mode)
        if task_kwargs and not isinstance(task, str):
            raise ValueError("task_kwargs go with a task name (load_task's overrides), not with a Task object")
        if not isinstance(task, Task):
            task = load_task("sp500" if task is None else task, **(task_kwargs or {}))
        self.split = "test" if split is None else split
        self.model = resolve_model(checkpoint, task)
        self.max_steps = check_int("max_steps", self.model.max_steps if max_steps is None else max_steps,
                                   maximum=self.model.max_steps)  # fmt: skip
        rows = task.split(self.split)
        self.inputs = torch.from_numpy(np.ascontiguousarray(task.features[rows]))
        self.labels, self.pnl = torch.from_numpy(task.labels[rows]), torch.from_numpy(task.pnl[rows])
        self.pnl_matrix = torch.from_numpy(task.pnl_matrix[rows])
        self.difficulty = None if task.difficulty is None else task.difficulty[rows]
        self.task_name, self.strategy_names, self.num_samples = task.name, tuple(task.strategy_names), len(rows)
        self.reward_mode, self.observation_mode, self.render_mode = reward, observation, render_mode
        c, hidden = self.model.num_classes, self.model.task_head.in_features
        self.layout = observation_layout(c, hidden)
        width = self.layout["latent"].stop if observation == "latent" else self.layout["latent"].start
        self.observation_space = spaces.Box(*observation_bounds(c, hidden, self.max_steps, width), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.table_spec = TableSpec(task.name, self.split, self.layout, c, self.max_steps, len(rows),
                                    self.model.pnl_scale)
        self.info_keys = ("index", "step", "prediction", "label", "correct", "pnl", "profit_weighted_ce", "halt_prob",
                          *(("difficulty",) if self.difficulty is not None else ()))  # the table core's order
        self._allocate(num_slots, width, c)

    def _allocate(self, slots: int, width: int, c: int) -> None:
        """Per-slot storage: model state, carry, observation, info, terminal reward, episode so far."""
        with torch.no_grad():
            fresh = self.model.initial_state(self.inputs[np.zeros(slots, dtype=np.int64)])
        self.state = type(fresh)(*[None if t is None else t.clone(memory_format=torch.contiguous_format)
                                   for t in fresh])  # fmt: skip
        self.carry = initial_carry(slots, c)
        self.obs = np.zeros((slots, width), dtype=np.float32)
        self.values = {"index": np.zeros(slots, np.int64), "step": np.zeros(slots, np.int64),
                       "prediction": np.zeros(slots, np.int64), "label": np.zeros(slots, np.int64),
                       "correct": np.zeros(slots, bool), "pnl": np.zeros(slots), "profit_weighted_ce": np.zeros(slots),
                       "halt_prob": np.zeros(slots), "difficulty": np.zeros(slots, np.int64)}  # fmt: skip
        self.terminal, self.due, self.ended = np.zeros(slots), np.zeros(slots, bool), np.ones(slots, bool)
        self.history = (np.zeros((slots, self.max_steps, c), np.float32), np.zeros((slots, self.max_steps)))
        self._all = np.arange(slots)

    @property
    def rollouts(self) -> Any:
        raise AttributeError("a live env builds no table; policies bind to env.table_spec")

    def begin(self, slots: Any, positions: Any) -> None:
        """Start each slot's episode on the sample at ``positions``; its step 1 runs at the next read."""
        slots = self._all[slots]
        positions = np.array(np.broadcast_to(positions, np.shape(slots)), dtype=np.int64)
        index = torch.from_numpy(np.atleast_1d(slots))
        with torch.no_grad():
            _assign(self.state, index, self.model.initial_state(self.inputs[np.atleast_1d(positions)]))
        _assign(self.carry, index, initial_carry(len(index), self.table_spec.num_classes))
        self.values["index"][slots], self.values["step"][slots] = positions, 0
        self.values["label"][slots] = self.labels.numpy()[positions]
        if self.difficulty is not None:
            self.values["difficulty"][slots] = self.difficulty[positions]
        self.due[slots], self.ended[slots] = True, False

    def advance(self, slots: Any, actions: Any) -> tuple[Any, Any]:
        """``(reward, done)`` per slot; a continuing slot becomes due for its next step. Slots whose episode
        has ended are left alone (reward 0, not done): the vector envs restart them next."""
        slots = self._all[slots]
        going = ~self.ended[slots]
        halt = (np.asarray(actions) == 1) | (self.values["step"][slots] >= self.max_steps)
        reward = np.where(going, np.where(halt, self.terminal[slots], -self.step_cost), 0.0)
        done = going & halt
        self.ended[slots] |= done
        self.due[slots] |= going & ~halt
        return reward, done

    def _run(self) -> None:
        """One model step over every due slot, written back into the slots."""
        slots = np.flatnonzero(self.due)
        index = torch.from_numpy(slots)
        state, logits, halt_logits, latent = run_step(self.model, select_rows(self.state, index), len(slots))
        _assign(self.state, index, state)
        self.values["step"][slots] += 1
        steps = torch.from_numpy(self.values["step"][slots])
        obs, carry = observation_step(logits, halt_logits, steps, self.max_steps, select_rows(self.carry, index),
                                      latent if self.observation_mode == "latent" else None)  # fmt: skip
        _assign(self.carry, index, carry)
        self.obs[slots] = obs.numpy()
        positions = self.values["index"][slots]
        out = step_outcome(logits, self.labels[positions], self.pnl[positions], self.pnl_matrix[positions],
                           self.table_spec.pnl_scale)  # fmt: skip
        for key in _INFO:
            self.values[key][slots] = out[key]
        self.values["halt_prob"][slots] = halt_probability(halt_logits).double().numpy()
        self.terminal[slots] = out[f"reward_{self.reward_mode}"]
        t = self.values["step"][slots] - 1
        self.history[0][slots, t], self.history[1][slots, t] = obs[:, self.layout["probs"]].numpy(), (
            self.values["halt_prob"][slots])
        self.due[slots] = False

    def _read(self, slots: Any) -> Any:
        slots = self._all[slots]
        if self.due[slots].any():
            self._run()
        return slots

    def observe(self, slots: Any) -> np.ndarray:
        return self.obs[self._read(slots)]

    def positions(self, slots: Any) -> np.ndarray:
        return self.values["index"][slots]

    def steps(self, slots: Any) -> np.ndarray:
        return self.values["step"][self._read(slots)]

    def _values(self, slot: int) -> tuple[Any, ...]:
        slot = self._read(slot)
        return tuple(self.values[key][slot].item() for key in self.info_keys)

    def _columns(self, slots: Any) -> dict[str, np.ndarray]:
        slots = self._read(slots)
        return {key: self.values[key][slots] for key in self.info_keys}

    def _episode(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        steps = int(self.steps(slot))
        return self.history[0][slot, :steps], self.history[1][slot, :steps]


def make_core(num_slots: int = 1, live: bool = False, rollouts: Any = None, **kwargs: Any) -> SlotCore:
    """A table core (default) or, with ``live=True``, a live one, with ``num_slots`` slots."""
    if not isinstance(live, bool):
        raise ValueError(f"live must be True or False, got {live!r}")
    if live and rollouts is not None:
        raise ValueError("live=True runs the model and builds no table: pass rollouts= without live=True")
    if live:
        return LiveCore(num_slots=num_slots, **kwargs)
    return HaltingCore(rollouts=rollouts, num_slots=num_slots, **kwargs)

