"""The table core: a ``Rollouts`` table seen as a state machine, behind the slot calls of ``trm_env.slots``.

A slot's state is a flat ``row = position * max_steps + (step - 1)``; a transition is looked up at
``code = 2 * row + action``. Every call works elementwise on a scalar slot (``HaltingEnv``) or a batch
of slots (``HaltingVectorEnv``, ``HaltingSB3VecEnv``), so a step is a few numpy look-ups.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import Rollouts, as_rollouts
from trm_env.slots import (
    DEFAULT_STEP_COST,
    RENDER_MODES,
    CoreAttributes,
    IndexSampler,
    SlotCore,
    check_choice,
    check_settings,
)
from trm_env.task import Task
from trm_env.tasks import load_task

__all__ = ["DEFAULT_STEP_COST", "RENDER_MODES", "CoreAttributes", "DefaultTask", "HaltingCore", "IndexSampler",
           "check_choice", "check_settings"]  # fmt: skip


class DefaultTask(str):
    """The task an env id names (``register_envs``): only a default, which a table given as ``rollouts=`` overrides
    (``gym.make("trm_env/TRMHalting-v0", rollouts=table)`` views any table); a ``task=`` you pass must agree."""


class HaltingCore(SlotCore):
    """The table core: settings, spaces and transition tables; stepping is pure indexing (module docstring)."""

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
        rollouts: Rollouts | str | Path | None = None,
        task_kwargs: dict[str, Any] | None = None,
        num_slots: int = 1,
    ) -> None:
        self.step_cost = check_settings(step_cost, reward, observation, render_mode)
        if task_kwargs:
            if not isinstance(task, str):
                raise ValueError("task_kwargs go with a task name (load_task's overrides), not with a Task object")
            task = load_task(task, **task_kwargs)
        source = ("sp500" if task is None else task) if rollouts is None else rollouts
        self.rollouts = table = as_rollouts(source, checkpoint, split, max_steps)
        name = task.name if isinstance(task, Task) else task
        if rollouts is not None and name is not None and name != table.task_name and not isinstance(task, DefaultTask):
            raise ValueError(f"task={name!r} disagrees with the rollouts given (task {table.task_name!r})")
        self.task_name, self.strategy_names, self.split = table.task_name, table.strategy_names, table.split
        self.max_steps, self.num_samples, self.layout = table.max_steps, table.num_samples, table.layout
        self.reward_mode, self.observation_mode, self.render_mode = reward, observation, render_mode
        self.observations = table.observations[observation].reshape(self.num_samples * self.max_steps, -1)
        self.observation_space = spaces.Box(*table.bounds(observation), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.rows = np.zeros(num_slots, dtype=np.int64)
        self._build_info()
        self._build_transitions()

    @property
    def table_spec(self) -> Rollouts:
        """What a policy binds to: the table itself."""
        return self.rollouts

    def _build_info(self) -> None:
        """Flat (N * K,) info columns, and the same as one structured array for fast per-row dicts."""
        t = self.rollouts
        n, k = self.num_samples, self.max_steps
        columns = {"index": np.repeat(np.arange(n), k), "step": np.tile(np.arange(1, k + 1), n),
                   "prediction": t.prediction, "label": np.repeat(t.label, k), "correct": t.correct, "pnl": t.pnl,
                   "profit_weighted_ce": t.profit_weighted_ce, "halt_prob": t.halt_prob}  # fmt: skip
        if t.difficulty is not None:
            columns["difficulty"] = np.repeat(t.difficulty, k)
        self.info_columns = {key: np.ascontiguousarray(value).reshape(-1) for key, value in columns.items()}
        self.info_keys = tuple(self.info_columns)
        self._records = np.empty(n * k, dtype=[(key, c.dtype) for key, c in self.info_columns.items()])
        for key, column in self.info_columns.items():
            self._records[key] = column

    def _build_transitions(self) -> None:
        """Tables over ``code = 2 * row + action``: next row, reward and whether the episode ends."""
        terminal = self.rollouts.halt_reward[self.reward_mode].reshape(-1)
        rows = np.arange(len(terminal))
        last = rows % self.max_steps == self.max_steps - 1
        done = np.stack([last, np.ones_like(last)], axis=1)
        self.done = done.ravel()
        self.next_row = (rows[:, None] + ~done).ravel()
        self.reward = np.stack([np.where(last, terminal, -self.step_cost), terminal], axis=1).ravel()

    def begin(self, slots: Any, positions: Any) -> None:
        """Start an episode on each slot: the sample at ``positions``, after its step 1."""
        self.rows[slots] = positions * self.max_steps

    def advance(self, slots: Any, actions: Any) -> tuple[Any, Any]:
        """``(reward, done)`` of the (checked) actions on the slots, which move to their next step."""
        code = 2 * self.rows[slots] + actions
        self.rows[slots] = self.next_row[code]
        return self.reward[code], self.done[code]

    def observe(self, slots: Any) -> np.ndarray:
        """The slots' current observations (a view for one slot: copy it before handing it out)."""
        return self.observations[self.rows[slots]]

    def positions(self, slots: Any) -> np.ndarray:
        return self.rows[slots] // self.max_steps

    def steps(self, slots: Any) -> np.ndarray:
        return self.rows[slots] % self.max_steps + 1

    @cached_property
    def _record_tuples(self) -> list[tuple[Any, ...]]:
        """Every row's info as a tuple of Python scalars, built once on first use (single-env stepping)."""
        return self._records.tolist()

    def _values(self, slot: int) -> tuple[Any, ...]:
        return self._record_tuples[self.rows[slot]]

    def _columns(self, slots: Any) -> dict[str, np.ndarray]:
        rows = self.rows[slots]
        return {key: column[rows] for key, column in self.info_columns.items()}

    def info_list(self, slots: Any) -> list[dict[str, Any]]:
        return [dict(zip(self.info_keys, values, strict=True)) for values in self._records[self.rows[slots]].tolist()]

    def _episode(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        row = int(self.rows[slot])
        start = row - row % self.max_steps
        probs = self.observations[start : row + 1, self.layout["probs"]]
        return probs, self.info_columns["halt_prob"][start : row + 1]


