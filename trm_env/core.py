"""The batched core shared by every env flavour: a ``Rollouts`` table seen as a state machine.

A state is a flat ``row = position * max_steps + (step - 1)``; a transition is looked up at
``code = 2 * row + action``. Every method works elementwise on a scalar row (``HaltingEnv``) or a batch
of rows (``HaltingVectorEnv``, ``HaltingSB3VecEnv``), so all flavours share one implementation and a
step is a few numpy look-ups.
"""

from __future__ import annotations

import numbers
import operator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from trm_env.model import TinyRecursiveModel
from trm_env.render import episode_frame
from trm_env.rollouts import OBSERVATIONS, REWARDS, Rollouts, as_rollouts
from trm_env.task import Task
from trm_env.tasks import load_task

__all__ = ["DEFAULT_STEP_COST", "RENDER_MODES", "CoreAttributes", "HaltingCore", "IndexSampler", "check_choice"]

DEFAULT_STEP_COST = 0.01
RENDER_MODES = ("ansi", "rgb_array")
INFO_FIELDS = ("index", "step", "prediction", "label", "correct", "pnl", "profit_weighted_ce", "halt_prob")
BLOCK = 256  # sample positions are drawn this many at a time from each sub-env's Generator


def check_choice(kind: str, value: object, valid: tuple[str | None, ...]) -> None:
    """``ValueError`` naming ``kind`` and the valid values unless ``value`` is one of them."""
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {list(valid)}")


class HaltingCore:
    """Settings, spaces and transition tables shared by every env flavour; stepping is pure indexing."""

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
    ) -> None:
        check_choice("reward", reward, REWARDS)
        check_choice("observation", observation, OBSERVATIONS)
        if render_mode not in (None, *RENDER_MODES):  # a TypeError, which SB3's make_vec_env falls back on
            raise TypeError(f"unknown render_mode {render_mode!r}; valid: {[None, *RENDER_MODES]}")
        if isinstance(step_cost, bool) or not isinstance(step_cost, numbers.Real) or not 0 <= step_cost < np.inf:
            raise ValueError(f"step_cost must be a finite number >= 0, got {step_cost!r}")
        if task_kwargs:
            if not isinstance(task, str):
                raise ValueError("task_kwargs go with a task name (load_task's overrides), not with a Task object")
            task = load_task(task, **task_kwargs)
        source = ("sp500" if task is None else task) if rollouts is None else rollouts
        self.rollouts = table = as_rollouts(source, checkpoint, split, max_steps)
        name = task.name if isinstance(task, Task) else task
        if rollouts is not None and name is not None and name != table.task_name:
            raise ValueError(f"task={name!r} disagrees with the rollouts given (task {table.task_name!r})")
        self.task_name, self.strategy_names, self.split = table.task_name, table.strategy_names, table.split
        self.max_steps, self.step_cost, self.num_samples = table.max_steps, float(step_cost), table.num_samples
        self.reward_mode, self.observation_mode, self.render_mode = reward, observation, render_mode
        self.observations = table.observations[observation].reshape(self.num_samples * self.max_steps, -1)
        self.observation_space = spaces.Box(*table.bounds(observation), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._build_info()
        self._build_transitions()

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
        self._mask_keys = tuple(f"_{key}" for key in self.info_keys)
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

    def transition(self, row: Any, action: Any) -> tuple[Any, Any, Any]:
        """``(next_row, reward, done)`` for a scalar or a batch of rows and (checked) actions."""
        code = 2 * row + action
        return self.next_row[code], self.reward[code], self.done[code]

    def start_rows(self, positions: Any) -> Any:
        """The row of step 1 of the given sample positions."""
        return positions * self.max_steps

    def check_position(self, position: Any) -> int:
        """A valid sample position from ``options["index"]``, else ``ValueError``."""
        try:
            position = operator.index(position)
        except TypeError:
            raise ValueError(f"options['index'] must be an integer, got {position!r}") from None
        if not 0 <= position < self.num_samples:
            raise ValueError(
                f"options['index'] must lie in 0..{self.num_samples - 1} ({self.split} split), got {position}"
            )
        return position

    @staticmethod
    def check_options(options: dict[str, Any] | None) -> None:
        """Refuse unknown reset options (a typo such as ``{"idx": 3}`` would otherwise be ignored)."""
        unknown = sorted(set(options or ()) - {"index"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; valid: ['index']")

    def check_actions(self, actions: Any, num_envs: int) -> np.ndarray:
        """A batch of actions as an integer array of shape (num_envs,) holding only 0 and 1, else ``ValueError``."""
        array = np.asarray(actions)
        if array.shape != (num_envs,) or array.dtype.kind not in "iub":
            raise ValueError(
                f"actions must be an integer array of shape ({num_envs},) with values in {{0, 1}}, "
                f"got shape {array.shape} and dtype {array.dtype}"
            )
        if np.count_nonzero(array >> 1):  # anything but 0 and 1 (negative numbers shift to -1)
            raise ValueError(f"actions must be 0 (continue) or 1 (halt), got {array.tolist()}")
        return array

    @cached_property
    def _record_tuples(self) -> list[tuple[Any, ...]]:
        """Every row's info as a tuple of Python scalars, built once on first use (single-env stepping)."""
        return self._records.tolist()

    def info(self, row: int) -> dict[str, Any]:
        """The info dict (Python scalars) of one state."""
        return dict(zip(self.info_keys, self._record_tuples[row], strict=True))

    def info_list(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """One info dict per row (the stable-baselines3 convention)."""
        return [dict(zip(self.info_keys, values, strict=True)) for values in self._records[rows].tolist()]

    def info_batch(self, rows: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays per key plus the ``_key`` masks (the Gymnasium vector convention)."""
        batch = {key: column[rows] for key, column in self.info_columns.items()}
        batch.update(dict.fromkeys(self._mask_keys, mask))
        return batch

    def render(self, row: int, done: bool) -> str | np.ndarray | None:
        """The state at ``row`` in the env's render mode: a line of text, a picture, or None."""
        if self.render_mode == "ansi":
            return self.describe(row)
        if self.render_mode != "rgb_array":
            return None
        start = row - row % self.max_steps
        probs = self.observations[start : row + 1, self.rollouts.layout["probs"]]
        halt = self.info_columns["halt_prob"][start : row + 1]
        return episode_frame(probs, halt, int(self.info_columns["label"][row]), self.max_steps, done)

    def describe(self, row: int) -> str:
        """One line of text about a state (the "ansi" rendering)."""
        info = self.info(row)
        prob = self.observations[row, self.rollouts.layout["probs"].start + info["prediction"]]
        return (
            f"{self.task_name}/{self.split} sample {info['index']} step {info['step']}/{self.max_steps}: "
            f"prefers {self.strategy_names[info['prediction']]} (p={prob:.2f}), "
            f"label {self.strategy_names[info['label']]}, halt p={info['halt_prob']:.3f}, pnl {info['pnl']:+.4f}"
        )


class IndexSampler:
    """Sample positions for each sub-env from its own Generator, ``BLOCK`` at a time.

    Single and vector envs use this same scheme, so sub-env i of a vector env seeded with s draws the
    very indices of a single env seeded with s + i.
    """

    def __init__(self, num_envs: int, num_samples: int) -> None:
        self.num_samples = num_samples
        self.rngs: list[np.random.Generator | None] = [None] * num_envs
        self.buffer = np.zeros((num_envs, BLOCK), dtype=np.int64)
        self.used = np.full(num_envs, BLOCK, dtype=np.int64)

    def seed(self, env: int, rng: np.random.Generator) -> None:
        """Draw sub-env ``env``'s indices from ``rng`` from now on."""
        self.rngs[env] = rng
        self.used[env] = BLOCK

    def seed_all(self, seeds: list[int | None]) -> None:
        """Seed sub-env i with ``seeds[i]``; ``None`` keeps its Generator (or starts one from entropy)."""
        for env, seed in enumerate(seeds):
            if seed is not None or self.rngs[env] is None:
                self.seed(env, seeding.np_random(seed)[0])

    def _refill(self, env: int) -> None:
        rng = self.rngs[env]
        if rng is None:
            raise RuntimeError("seed the sampler before drawing")
        self.buffer[env] = rng.integers(0, self.num_samples, size=BLOCK)
        self.used[env] = 0

    def draw_one(self, env: int = 0) -> int:
        """The next sample position of one sub-env."""
        if self.used[env] == BLOCK:
            self._refill(env)
        position = self.buffer[env, self.used[env]]
        self.used[env] += 1
        return int(position)

    def draw(self, envs: np.ndarray) -> np.ndarray:
        """The next sample position of each of the (distinct) sub-envs ``envs``."""
        used = self.used[envs]
        exhausted = used == BLOCK
        if np.count_nonzero(exhausted):
            for env in envs[exhausted].tolist():
                self._refill(env)
            used = self.used[envs]
        self.used[envs] = used + 1
        return self.buffer[envs, used]


class CoreAttributes:
    """Read-only settings of the shared core, exposed on every env flavour."""

    core: HaltingCore

    @property
    def rollouts(self) -> Rollouts:
        """The table this env is a view of (``agents.evaluate`` and every policy's ``bind`` take it)."""
        return self.core.rollouts

    @property
    def max_steps(self) -> int:
        """K: the number of recursion steps an episode can last."""
        return self.core.max_steps

    @property
    def step_cost(self) -> float:
        return self.core.step_cost

    @property
    def task_name(self) -> str:
        return self.core.task_name

    @property
    def split(self) -> str:
        return self.core.split

    @property
    def reward_mode(self) -> str:
        return self.core.reward_mode

    @property
    def observation_mode(self) -> str:
        return self.core.observation_mode

    @property
    def num_samples(self) -> int:
        """The number of samples (market days) in the split."""
        return self.core.num_samples
