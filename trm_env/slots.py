"""What every env core shares: settings checks, sample drawing, info dicts, pictures, and the env-facing
attributes.

Every env flavour (``HaltingEnv``, ``HaltingVectorEnv``, ``HaltingSB3VecEnv``) holds a core with one
*slot* per sub-env and talks to it through a few calls: ``begin(slots, positions)`` starts episodes,
``advance(slots, actions)`` returns rewards and ends, ``observe``/``info``/``info_list``/``info_batch``
read the slots' current step. Slots are a scalar (single env), an index array or ``slice(None)``.
``trm_env.core.HaltingCore`` answers them from a table, ``trm_env.live_core.LiveCore`` by running the model.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from trm_env.checks import check_actions
from trm_env.observation import OBSERVATIONS
from trm_env.render import episode_frame
from trm_env.rollouts import REWARDS

__all__ = ["BLOCK", "DEFAULT_STEP_COST", "RENDER_MODES", "REWARDS", "CoreAttributes", "IndexSampler", "SlotCore",
           "check_choice", "check_settings"]  # fmt: skip

DEFAULT_STEP_COST = 0.01
RENDER_MODES = ("ansi", "rgb_array")
BLOCK = 256  # sample positions are drawn this many at a time from each sub-env's Generator


def check_choice(kind: str, value: object, valid: tuple[str | None, ...]) -> None:
    """``ValueError`` naming ``kind`` and the valid values unless ``value`` is one of them."""
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {list(valid)}")


def check_settings(step_cost: float, reward: str, observation: str, render_mode: str | None) -> float:
    """The env settings every core checks: reward and observation modes, render mode (a ``TypeError``, which
    SB3's make_vec_env falls back on) and the step cost, returned as a float."""
    check_choice("reward", reward, REWARDS)
    check_choice("observation", observation, OBSERVATIONS)
    if render_mode not in (None, *RENDER_MODES):
        raise TypeError(f"unknown render_mode {render_mode!r}; valid: {[None, *RENDER_MODES]}")
    if isinstance(step_cost, bool) or not isinstance(step_cost, numbers.Real) or not 0 <= step_cost < np.inf:
        raise ValueError(f"step_cost must be a finite number >= 0, got {step_cost!r}")
    return float(step_cost)


class SlotCore:
    """What both cores share: settings, spaces, option and position checks, info dicts and rendering.

    A subclass fills ``observation_space``, ``layout``, ``num_samples``, ``max_steps``, ... and implements
    ``begin``, ``advance``, ``observe``, ``_values(slot)`` (the info tuple) and ``_columns(slots)`` (info
    arrays) and ``_episode(slot)`` (probabilities and halt probabilities so far, for pictures).
    """

    live = False
    info_keys: tuple[str, ...]
    task_name: str
    split: str
    max_steps: int
    num_samples: int
    render_mode: str | None
    strategy_names: tuple[str, ...]
    layout: dict[str, slice]

    def _values(self, slot: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def _columns(self, slots: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _episode(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def info(self, slot: int) -> dict[str, Any]:
        """The info dict (Python scalars) of one slot's current step."""
        return dict(zip(self.info_keys, self._values(slot), strict=True))

    def info_list(self, slots: Any) -> list[dict[str, Any]]:
        """One info dict per slot (the stable-baselines3 convention)."""
        columns = [column.tolist() for column in self._columns(slots).values()]
        return [dict(zip(self.info_keys, values, strict=True)) for values in zip(*columns, strict=True)]

    def info_batch(self, slots: Any, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays per key plus the ``_key`` masks (the Gymnasium vector convention)."""
        batch = self._columns(slots)
        batch.update(dict.fromkeys([f"_{key}" for key in self.info_keys], mask))
        return batch

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
        return check_actions(actions, num_envs, f"the actions given to {self.task_name}'s vector env")

    def render(self, slot: int, done: bool) -> str | np.ndarray | None:
        """The slot's state in the env's render mode: a line of text, a picture, or None."""
        if self.render_mode == "ansi":
            return self.describe(slot)
        if self.render_mode != "rgb_array":
            return None
        probs, halt = self._episode(slot)
        return episode_frame(probs, halt, int(self.info(slot)["label"]), self.max_steps, done)

    def describe(self, slot: int) -> str:
        """One line of text about a slot's state (the "ansi" rendering)."""
        info = self.info(slot)
        prob = self._episode(slot)[0][-1, info["prediction"]]
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

    core: Any

    @property
    def rollouts(self) -> Any:
        """The table this env is a view of (``agents.evaluate`` takes it); a live env has none."""
        return self.core.rollouts

    @property
    def table_spec(self) -> Any:
        """What a policy binds to: the table, or a live env's ``TableSpec``."""
        return self.core.table_spec

    @property
    def live(self) -> bool:
        """Whether the model runs as the env steps (``live=True``) rather than being read from a table."""
        return self.core.live

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
