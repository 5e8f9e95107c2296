"""The halting environment: a trained Tiny Recursive Model thinks step by step, the agent decides when to stop.

``HaltingEnv`` (a ``gymnasium.Env``) and ``HaltingVectorEnv`` (a native ``gymnasium.vector.VectorEnv``,
as ``CartPoleVectorEnv``) are thin views over one ``Rollouts`` table (``trm_env.rollouts``): the model's
trajectories over the split, simulated once and cached by content. A step is a few numpy look-ups in
the shared ``HaltingCore`` (``trm_env.core``); ``trm_env.sb3`` gives the same for stable-baselines3.

>>> import gymnasium, trm_env
>>> env = gymnasium.make("trm_env/TRMHalting-v0")  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from trm_env.checks import check_int
from trm_env.core import DEFAULT_STEP_COST, RENDER_MODES, CoreAttributes, DefaultTask, HaltingCore, IndexSampler
from trm_env.live_core import make_core
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import CHECKPOINT_DIR, OBSERVATIONS, REWARDS, Rollouts
from trm_env.task import Task

__all__ = [
    "CHECKPOINT_DIR",
    "DEFAULT_STEP_COST",
    "ENV_IDS",
    "OBSERVATIONS",
    "REWARDS",
    "HaltingCore",
    "HaltingEnv",
    "HaltingVectorEnv",
    "register_envs",
]

ENV_IDS = {
    "trm_env/TRMHalting-v0": "sp500",
    "trm_env/TRMHalting-RegimeChain-v0": "regime-chain",
    "trm_env/TRMHalting-Pointer-v0": "pointer",
    "trm_env/TRMHalting-PointerExtrapolate-v0": "pointer-extrapolate",
}


class HaltingEnv(CoreAttributes, gym.Env[np.ndarray, int]):
    """
    ## Description

    A trained Tiny Recursive Model (TRM) reads one sample (a market day, or a synthetic regime-chain
    sample) and refines its answer one recursion step at a time; after every step it prefers one of
    C strategies (8 on the built-in tasks). The agent watches the model think and decides, after each
    step, whether to halt and commit to the strategy the model currently prefers, or to pay for one
    more step. The model is frozen: the env is a view of its ``Rollouts`` table over the split
    (``self.rollouts``, simulated once and cached by content), so a step costs a few array look-ups.

    ## Action Space

    `Discrete(2)`: `0` = continue thinking, `1` = halt and commit to the current prediction. Any other
    value, or a non-scalar action, raises `ValueError`.

    ## Observation Space

    A float32 `Box` describing the model after step `t` (C strategies, H = the model's hidden size); the
    column slices are `self.rollouts.layout` (`probs`, `max_prob`, `entropy`, `halt_prob`,
    `step_fraction`, `movement`, `kl_prev`, `entropy_delta`, `stable_steps`, `latent`), defined once in
    `trm_env.rollouts.observation_layout`:

    | Index        | Observation                                                          | Min      | Max     |
    |--------------|----------------------------------------------------------------------|----------|---------|
    | 0 .. C-1     | probability of each strategy p_t (softmax of the task head)          | 0        | 1       |
    | C            | max probability                                                      | 0        | 1       |
    | C+1          | entropy H_t of p_t (nats)                                            | 0        | ln C    |
    | C+2          | the halt head's probability (sigmoid of the halt logit)              | 0        | 1       |
    | C+3          | step fraction t / max_steps, in (0, 1]                               | 0        | 1       |
    | C+4          | movement 0.5 * sum abs(p_t - p_(t-1)) (total variation; p_0 uniform) | 0        | 1       |
    | C+5          | KL(p_t ‖ p_(t-1)), clipped at 30                                     | 0        | 30      |
    | C+6          | entropy change H_t - H_(t-1) (H_0 = ln C)                            | -ln C    | ln C    |
    | C+7          | steps in a row, up to t, whose argmax is step t's (>= 1)             | 0        | K       |
    | C+8 .. C+7+H | `observation="latent"` only: the answer state y_t                    | -sqrt(H) | sqrt(H) |

    `observation="summary"` (default) has the first C + 8 components (16 for 8 strategies). y ends in a
    parameter-free RMSNorm, which bounds every component by sqrt(H).

    ## Rewards

    Continuing costs `-step_cost` (default 0.01). Halting, by action 1 or by the forced halt at
    `max_steps` (which costs no step), pays the terminal reward of the current step `t`:

    - `"profit_weighted_ce"` (default): `-(1 - tanh(pnl / s)) * CE(logits_t, label)` with `pnl` the
      sample's label pnl and `s` the `pnl_scale` the checkpoint was trained with (0.05 for the shipped
      ones): the per-sample quantity `TRMLoss` minimises;
    - `"pnl"`: realized pnl of the committed strategy, `pnl_matrix[sample, prediction_t] / s`;
    - `"correct"`: 1.0 if the committed strategy is the label, else 0.0.

    An episode's return is `-step_cost * (halt_step - 1) + terminal(halt_step)`.

    ## Starting State

    `reset` picks a sample of the split, uniformly from `self.np_random` (drawn 256 at a time), or
    sample `i` (its position in the split) with `options={"index": i}`; any other option key raises
    `ValueError`. The model has already done step 1, so the first observation describes step 1.

    ## Episode End

    Termination: action 1 at any step, or any action at step `max_steps` (a real commit). There is no
    truncation. Calling `step` after the episode ended, without `reset`, raises `RuntimeError`.

    ## Info

    `index` (sample position in the split: pass it back as `options={"index": ...}`), `step` (t),
    `prediction`, `label`, `correct`, `pnl` (realized pnl of the currently preferred strategy),
    `profit_weighted_ce`, `halt_prob`, and `difficulty` when the task defines it.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> env = gym.make("trm_env/TRMHalting-v0", split="test", reward="pnl")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0, options={"index": 3})  # doctest: +SKIP

    ```

    | Parameter     | Type                   | Default                | Description                                 |
    |---------------|------------------------|------------------------|---------------------------------------------|
    | `task`        | str or `Task`          | `"sp500"`              | a name of `trm_env.tasks.TASK_NAMES`        |
    | `checkpoint`  | path, run dir or model | shipped for the task   | `trm_env/checkpoints/<task>/seed0/`         |
    | `split`       | str                    | `"test"`               | `"train"`, `"halt"`, `"val"` or `"test"`    |
    | `max_steps`   | int                    | the model's K          | recursion steps per episode, 1..K           |
    | `step_cost`   | float >= 0             | `0.01`                 | the cost of each "continue"                 |
    | `reward`      | str                    | `"profit_weighted_ce"` | or `"pnl"`, `"correct"`                     |
    | `observation` | str                    | `"summary"`            | or `"latent"`                               |
    | `render_mode` | str or None            | `None`                 | `"ansi"` (a line of text) or `"rgb_array"`  |
    | `rollouts`    | `Rollouts` or folder   | None                   | a table (or `Rollouts.save` folder) to view |
    | `task_kwargs` | dict or None           | None                   | `load_task` overrides, e.g. `{"path": ...}` |

    With `rollouts=`, the table fixes task, model, split and K (arguments that disagree raise `ValueError`; the
    task an env id names is only a default, so any id views any table, e.g. one of `Rollouts.from_arrays`).
    Your own prices: `gym.make(id, task="csv", task_kwargs={"path": "prices.csv"}, checkpoint="runs/my-trm")`.

    ## Vectorized environment

    `gym.make_vec("trm_env/TRMHalting-v0", num_envs=64)` gives `HaltingVectorEnv`, which steps all
    envs with numpy at once; `trm_env.sb3.make_sb3_vec_env(num_envs=...)` gives the same for
    stable-baselines3.

    ## Version History

    * v0: Initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

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
        live: bool = False,
    ) -> None:
        self.core = make_core(1, live, task=task, checkpoint=checkpoint, split=split, max_steps=max_steps,
                              step_cost=step_cost, reward=reward, observation=observation, render_mode=render_mode,
                              rollouts=rollouts, task_kwargs=task_kwargs)  # fmt: skip
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self._sampler = IndexSampler(1, self.core.num_samples)
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self._sampler.rngs[0] is not self.np_random:
            self._sampler.seed(0, self.np_random)
        self.core.check_options(options)
        if options and "index" in options:
            position = self.core.check_position(options["index"])
        else:
            position = self._sampler.draw_one()
        self.core.begin(0, position)
        self._done = False
        return self.core.observe(0).copy(), self.core.info(0)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(action, bool | np.bool_):
            raise ValueError(f"action must be an integer 0 (continue) or 1 (halt), not a bool; got {action!r}")
        try:
            action = operator.index(action)
        except TypeError:
            raise ValueError(f"action must be a scalar integer, 0 (continue) or 1 (halt); got {action!r}") from None
        if action != 0 and action != 1:
            raise ValueError(f"action must be 0 (continue) or 1 (halt), got {action}")
        if self._done:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        reward, done = self.core.advance(0, action)
        self._done = bool(done)
        return self.core.observe(0).copy(), float(reward), self._done, False, self.core.info(0)

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: one line about the state; ``"rgb_array"``: a picture of the episode so far
        (``trm_env.render``: probabilities and halt probability per step, the committed answer once halted)."""
        return self.core.render(0, self._done)


class HaltingVectorEnv(CoreAttributes, VectorEnv):
    """``num_envs`` halting envs stepped at once with numpy; same keyword arguments as ``HaltingEnv``.

    Autoreset follows ``AutoresetMode.NEXT_STEP`` (as ``CartPoleVectorEnv``): the step after an episode
    ends resets that sub-env, ignores its action and returns its first observation with reward 0.
    ``reset(seed=s)`` seeds sub-env i with ``s + i``, exactly as ``SyncVectorEnv`` over ``HaltingEnv``
    would, so both give identical trajectories. ``options={"index": positions}`` (an int or one per
    sub-env) picks the samples. ``info`` holds every key of ``HaltingEnv``'s info as arrays, plus the
    ``_key`` masks.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": list(RENDER_MODES),
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, num_envs: int = 1, live: bool = False, **kwargs: Any) -> None:
        self.num_envs = check_int("num_envs", num_envs)
        self.core = make_core(num_envs, live, **kwargs)
        self.render_mode = self.core.render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._sampler = IndexSampler(num_envs, self.core.num_samples)
        self._envs = np.arange(num_envs)
        self._prev_done = np.zeros(num_envs, dtype=np.bool_)
        self._all = np.ones(num_envs, dtype=np.bool_)
        self._all.flags.writeable = False  # the shared, read-only info mask: every sub-env has info
        self._started = False

    @property
    def positions(self) -> np.ndarray:
        """The sample position (in the split) of each sub-env's current episode."""
        return self.core.positions(self._envs)

    @property
    def steps(self) -> np.ndarray:
        """The current recursion step t (1..max_steps) of each sub-env."""
        return self.core.steps(self._envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._sampler.seed_all([None if seed is None else seed + i for i in range(self.num_envs)])
        self.core.check_options(options)
        if options and "index" in options:
            indices = np.broadcast_to(np.asarray(options["index"]), (self.num_envs,))
            positions = np.array([self.core.check_position(i) for i in indices.tolist()], dtype=np.int64)
        else:
            positions = self._sampler.draw(self._envs)
        self.core.begin(self._envs, positions)
        self._prev_done[:] = False
        self._started = True
        return self.core.observe(self._envs), self.core.info_batch(self._envs, self._all)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self.core.check_actions(actions, self.num_envs)
        if not self._started:
            raise RuntimeError("call reset() before step()")
        rewards, terminated = self.core.advance(self._envs, actions)
        restart = self._prev_done
        if np.count_nonzero(restart):
            envs = self._envs[restart]
            self.core.begin(envs, self._sampler.draw(envs))
            rewards[restart] = 0.0
            terminated[restart] = False
        self._prev_done = terminated.copy()
        truncated, info = np.zeros(self.num_envs, dtype=np.bool_), self.core.info_batch(self._envs, self._all)
        return self.core.observe(self._envs), rewards, terminated, truncated, info

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(self.core.render(env, done) for env, done in enumerate(self._prev_done.tolist()))


def register_envs() -> None:
    """Register every ``ENV_IDS`` id with Gymnasium (ids already registered are left alone)."""
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="trm_env.env:HaltingEnv",
                vector_entry_point="trm_env.env:HaltingVectorEnv",
                kwargs={"task": DefaultTask(task)},  # a table given as rollouts= overrides it
            )
