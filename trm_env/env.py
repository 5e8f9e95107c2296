"""The halting environment: a trained Tiny Recursive Model thinks step by step, the agent decides when to stop.

One batched core serves every flavour: ``HaltingEnv`` (a ``gymnasium.Env``), ``HaltingVectorEnv`` (a
native ``gymnasium.vector.VectorEnv``) and ``trm_env.sb3.HaltingSB3VecEnv`` (a stable-baselines3
``VecEnv``). The model's rollout over the whole split is computed once, with one batched
``TinyRecursiveModel.rollout``, and cached per (model content, task, split, max_steps); every step is
then a few numpy look-ups in flat tables indexed by ``row = sample_position * max_steps + (step - 1)``.

>>> import gymnasium, trm_env
>>> env = gymnasium.make("trm_env/TRMHalting-v0")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import numbers
import operator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from trm_env.checks import check_int
from trm_env.loss import profit_weighted_ce
from trm_env.model import TinyRecursiveModel
from trm_env.tasks import Task, load_task

__all__ = [
    "DEFAULT_STEP_COST",
    "ENV_IDS",
    "OBSERVATIONS",
    "PNL_SCALE",
    "REWARDS",
    "SUMMARY_STATS",
    "HaltingCore",
    "HaltingEnv",
    "HaltingVectorEnv",
    "register_envs",
]

REWARDS = ("profit_weighted_ce", "pnl", "correct")
OBSERVATIONS = ("summary", "latent")
RENDER_MODES = ("ansi",)
SUMMARY_STATS = ("max_prob", "entropy", "halt_prob", "step_fraction", "movement")  # after the C probabilities
PNL_SCALE = 0.05
DEFAULT_STEP_COST = 0.01
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
ENV_IDS = {"trm_env/TRMHalting-v0": "sp500", "trm_env/TRMHalting-RegimeChain-v0": "regime-chain"}
INFO_FIELDS = (
    ("index", np.int64),
    ("step", np.int64),
    ("prediction", np.int64),
    ("label", np.int64),
    ("correct", np.bool_),
    ("pnl", np.float64),
    ("profit_weighted_ce", np.float64),
    ("halt_prob", np.float64),
)
BLOCK = 256  # sample indices are drawn this many at a time from each sub-env's Generator
_CACHE_SIZE = 8
_CACHE: dict[tuple[str, str, str, int], _Rollouts] = {}


def _check_choice(kind: str, value: object, valid: tuple[str | None, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {list(valid)}")


# ---- the precomputed rollouts ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Rollouts:
    """Everything served for one (model, task, split, max_steps), as flat (N * K, ...) tables."""

    key: tuple[str, str, str, int]
    num_steps: int
    observations: dict[str, np.ndarray]  # mode -> (N * K, D) float32
    terminal: dict[str, np.ndarray]  # reward mode -> (N * K,) float64
    info: np.ndarray  # (N * K,) structured array with the INFO_FIELDS (+ difficulty)
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)  # mode -> (low, high)

    @property
    def num_samples(self) -> int:
        return len(self.info) // self.num_steps

    @cached_property
    def info_columns(self) -> tuple[tuple[str, np.ndarray], ...]:
        """Contiguous copies of the info fields: batched gathers are faster than from strided views."""
        names = self.info.dtype.names or ()
        return tuple((name, np.ascontiguousarray(self.info[name])) for name in names)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by value, but unpickle into the shared cache (one copy per process and key)."""
        return _restore_rollouts, (
            self.key,
            self.num_steps,
            self.observations,
            self.terminal,
            self.info,
            self.bounds,
        )


def _restore_rollouts(key: tuple[str, str, str, int], *arrays: Any) -> _Rollouts:
    return _CACHE.setdefault(key, _Rollouts(key, *arrays))


def _model_digest(model: TinyRecursiveModel) -> str:
    """sha256 of the model's config and weights: the cache key of its content, wherever it came from."""
    digest = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _bounds(num_classes: int, hidden_dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Observation bounds per mode; y ends in a parameter-free RMSNorm, so |y_j| <= sqrt(hidden_dim)."""
    high = np.array([1.0] * num_classes + [1.0, np.log(num_classes), 1.0, 1.0, 1.0], dtype=np.float32)
    low = np.zeros_like(high)
    y_high = np.full(hidden_dim, np.sqrt(hidden_dim), dtype=np.float32)
    return {
        "summary": (low, high),
        "latent": (np.concatenate([low, -y_high]), np.concatenate([high, y_high])),
    }


@torch.no_grad()
def _simulate(model: TinyRecursiveModel, task: Task, split: str, max_steps: int, key: Any) -> _Rollouts:
    """One batched rollout over the split, turned into observation, reward and info tables."""
    rows = task.split(split)
    logits, halt_logits, y = model.rollout(
        torch.from_numpy(np.ascontiguousarray(task.features[rows])), steps=max_steps, return_answers=True
    )
    n, k, c = logits.shape
    labels = torch.from_numpy(task.labels[rows])[:, None]
    pnl_rows = torch.from_numpy(task.pnl_matrix[rows])
    probs = logits.softmax(-1)
    previous = torch.cat([torch.full_like(probs[:, :1], 1.0 / c), probs[:, :-1]], dim=1)
    halt_prob = halt_logits.sigmoid()
    summary = torch.cat(
        [
            probs,
            probs.amax(-1, keepdim=True),
            -(probs * logits.log_softmax(-1)).sum(-1, keepdim=True),
            halt_prob[..., None],
            (torch.arange(1, k + 1, dtype=torch.float32) / k).expand(n, k)[..., None],
            0.5 * (probs - previous).abs().sum(-1, keepdim=True),
        ],
        dim=-1,
    )
    bounds = _bounds(c, y.shape[-1])
    observations = {
        mode: np.clip(table.reshape(n * k, -1).numpy(), *bounds[mode]).astype(np.float32)
        for mode, table in (("summary", summary), ("latent", torch.cat([summary, y], dim=-1)))
    }
    pred = logits.argmax(-1)
    realized = pnl_rows.gather(1, pred)
    pwce = profit_weighted_ce(logits, labels, torch.from_numpy(task.pnl[rows])[:, None], PNL_SCALE)
    correct = pred == labels
    terminal = {
        "profit_weighted_ce": -pwce.double(),
        "pnl": realized.double() / PNL_SCALE,
        "correct": correct.double(),
    }
    columns = {
        "index": torch.arange(n)[:, None].expand(n, k),
        "step": torch.arange(1, k + 1).expand(n, k),
        "prediction": pred,
        "label": labels.expand(n, k),
        "correct": correct,
        "pnl": realized,
        "profit_weighted_ce": pwce,
        "halt_prob": halt_prob,
    }
    fields = list(INFO_FIELDS)
    if task.difficulty is not None:
        fields.append(("difficulty", np.int64))
        columns["difficulty"] = torch.from_numpy(task.difficulty[rows])[:, None].expand(n, k)
    info = np.empty(n * k, dtype=fields)
    for name, column in columns.items():
        info[name] = column.reshape(-1).numpy()
    return _Rollouts(
        key=key,
        num_steps=k,
        observations=observations,
        terminal={mode: value.reshape(-1).numpy() for mode, value in terminal.items()},
        info=info,
        bounds=bounds,
    )


def _resolve_model(checkpoint: str | Path | TinyRecursiveModel | None, task: Task) -> TinyRecursiveModel:
    """The model from ``checkpoint`` (default: the shipped one for the task), checked against the task."""
    if isinstance(checkpoint, TinyRecursiveModel):
        model = checkpoint
    else:
        path = CHECKPOINT_DIR / task.name / "model.pt" if checkpoint is None else Path(checkpoint)
        if checkpoint is None and not path.is_file():
            raise ValueError(
                f"no shipped checkpoint for task {task.name!r} at {str(path)!r}; "
                "pass checkpoint=<model.pt, run directory or TinyRecursiveModel>"
            )
        model = TinyRecursiveModel.load(path)
    if model.input_dim != task.num_features:
        raise ValueError(
            f"checkpoint expects input width {model.input_dim}, but task {task.name!r} has {task.num_features}"
        )
    if (model.num_classes, model.n_chunks, model.chunk_dim) != (
        task.num_classes,
        task.n_chunks,
        task.chunk_dim,
    ):
        raise ValueError(
            f"checkpoint has {model.num_classes} classes and stream chunks {model.n_chunks}x{model.chunk_dim}, "
            f"but task {task.name!r} has {task.num_classes} classes and chunks {task.n_chunks}x{task.chunk_dim}"
        )
    return model


def _rollouts(model: TinyRecursiveModel, task: Task, split: str, max_steps: int) -> _Rollouts:
    """The cached rollouts for this model content, task, split and horizon (computed on first use)."""
    key = (_model_digest(model), task.fingerprint(), split, max_steps)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = _simulate(model, task, split, max_steps, key)
    return _CACHE[key]


# ---- the batched core ----------------------------------------------------------------------------


class HaltingCore:
    """Settings, spaces and transition tables shared by every env flavour; stepping is pure indexing.

    A state is a flat ``row = position * max_steps + (step - 1)``; a transition is looked up at
    ``code = 2 * row + action``. Every method works elementwise on a scalar row (``HaltingEnv``) or a
    batch of rows (the vector envs), so all flavours share one implementation.
    """

    def __init__(
        self,
        task: str | Task = "sp500",
        checkpoint: str | Path | TinyRecursiveModel | None = None,
        split: str = "test",
        max_steps: int | None = None,
        step_cost: float = DEFAULT_STEP_COST,
        reward: str = "profit_weighted_ce",
        observation: str = "summary",
        render_mode: str | None = None,
    ) -> None:
        _check_choice("reward", reward, REWARDS)
        _check_choice("observation", observation, OBSERVATIONS)
        _check_choice("render_mode", render_mode, (None, *RENDER_MODES))
        if isinstance(step_cost, bool) or not isinstance(step_cost, numbers.Real) or not 0 <= step_cost < np.inf:
            raise ValueError(f"step_cost must be a finite number >= 0, got {step_cost!r}")
        if not isinstance(task, Task | str):
            raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
        task = load_task(task) if isinstance(task, str) else task
        task.split(split)  # ValueError listing the valid splits
        model = _resolve_model(checkpoint, task)
        max_steps = model.max_steps if max_steps is None else max_steps
        max_steps = check_int("max_steps", max_steps, maximum=model.max_steps)
        self.task_name, self.strategy_names, self.split = task.name, task.strategy_names, split
        self.max_steps, self.step_cost = int(max_steps), float(step_cost)
        self.reward_mode, self.observation_mode, self.render_mode = reward, observation, render_mode
        self.rollouts = _rollouts(model, task, split, self.max_steps)
        self.num_samples = self.rollouts.num_samples
        self.observations = self.rollouts.observations[observation]
        self.observation_space = spaces.Box(*self.rollouts.bounds[observation], dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.info_keys = self.rollouts.info.dtype.names
        self._mask_keys = tuple(f"_{key}" for key in self.info_keys)
        self._build_transitions()

    def _build_transitions(self) -> None:
        """Tables over ``code = 2 * row + action``: next row, reward and whether the episode ends."""
        terminal = self.rollouts.terminal[self.reward_mode]
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

    def info(self, row: int) -> dict[str, Any]:
        """The info dict (Python scalars) of one state."""
        return dict(zip(self.info_keys, self.rollouts.info[row].item(), strict=True))

    def info_list(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """One info dict per row (the stable-baselines3 convention)."""
        return [dict(zip(self.info_keys, values, strict=True)) for values in self.rollouts.info[rows].tolist()]

    def info_batch(self, rows: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays per key plus the ``_key`` masks (the Gymnasium vector convention)."""
        batch = {key: column[rows] for key, column in self.rollouts.info_columns}
        batch.update(dict.fromkeys(self._mask_keys, mask))
        return batch

    def describe(self, row: int) -> str:
        """One line of text about a state (the "ansi" rendering)."""
        info = self.info(row)
        prob = self.observations[row, info["prediction"]]
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
        assert rng is not None, "seed the sampler before drawing"
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


# ---- the environments ----------------------------------------------------------------------------


class HaltingEnv(CoreAttributes, gym.Env[np.ndarray, int]):
    """
    ## Description

    A trained Tiny Recursive Model (TRM) reads one sample (a market day, or a synthetic regime-chain
    sample) and refines its answer one recursion step at a time; after every step it prefers one of
    8 strategies. The agent watches the model think and decides, after each step, whether to halt and
    commit to the strategy the model currently prefers, or to pay for one more step. The model is
    frozen: its rollouts over the whole split are computed once and cached, so a step costs a few
    array look-ups.

    ## Action Space

    `Discrete(2)`: `0` = continue thinking, `1` = halt and commit to the current prediction. Any other
    value, or a non-scalar action, raises `ValueError`.

    ## Observation Space

    A float32 `Box` describing the model after step `t` (C = 8 strategies, H = the model's hidden size):

    | Index        | Observation                                                          | Min      | Max     |
    |--------------|----------------------------------------------------------------------|----------|---------|
    | 0 .. C-1     | probability of each strategy p_t (softmax of the task head)          | 0        | 1       |
    | C            | max probability                                                      | 0        | 1       |
    | C+1          | entropy of p_t (nats)                                                | 0        | ln C    |
    | C+2          | the halt head's probability (sigmoid of the halt logit)              | 0        | 1       |
    | C+3          | step fraction t / max_steps, in (0, 1]                               | 0        | 1       |
    | C+4          | movement 0.5 * sum abs(p_t - p_(t-1)) (total variation; p_0 uniform) | 0        | 1       |
    | C+5 .. C+4+H | `observation="latent"` only: the answer state y_t                    | -sqrt(H) | sqrt(H) |

    `observation="summary"` (default) has the first C + 5 = 13 components. y ends in a parameter-free
    RMSNorm, which bounds every component by sqrt(H).

    ## Rewards

    Continuing costs `-step_cost` (default 0.01). Halting, by action 1 or by the forced halt at
    `max_steps` (which costs no step), pays the terminal reward of the current step `t`:

    - `"profit_weighted_ce"` (default): `-(1 - tanh(pnl / 0.05)) * CE(logits_t, label)` with `pnl`
      the sample's label pnl: the per-sample quantity `TRMLoss` minimises;
    - `"pnl"`: realized pnl of the committed strategy, `pnl_matrix[sample, prediction_t] / 0.05`;
    - `"correct"`: 1.0 if the committed strategy is the label, else 0.0.

    An episode's return is `-step_cost * (halt_step - 1) + terminal(halt_step)`.

    ## Starting State

    `reset` picks a sample of the split, uniformly from `self.np_random` (drawn 256 at a time), or
    sample `i` (its position in the split) with `options={"index": i}`. The model has already done
    step 1, so the first observation describes step 1.

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
    | `checkpoint`  | path, run dir or model | shipped for the task   | `trm_env/checkpoints/<task>/model.pt`       |
    | `split`       | str                    | `"test"`               | `"train"`, `"val"` or `"test"`              |
    | `max_steps`   | int                    | the model's K          | recursion steps per episode, 1..K           |
    | `step_cost`   | float >= 0             | `0.01`                 | the cost of each "continue"                 |
    | `reward`      | str                    | `"profit_weighted_ce"` | or `"pnl"`, `"correct"`                     |
    | `observation` | str                    | `"summary"`            | or `"latent"`                               |
    | `render_mode` | str or None            | `None`                 | `"ansi"`: one line of text per state        |

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
        task: str | Task = "sp500",
        checkpoint: str | Path | TinyRecursiveModel | None = None,
        split: str = "test",
        max_steps: int | None = None,
        step_cost: float = DEFAULT_STEP_COST,
        reward: str = "profit_weighted_ce",
        observation: str = "summary",
        render_mode: str | None = None,
    ) -> None:
        self.core = HaltingCore(task, checkpoint, split, max_steps, step_cost, reward, observation, render_mode)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self._sampler = IndexSampler(1, self.core.num_samples)
        self._row = 0
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self._sampler.rngs[0] is not self.np_random:
            self._sampler.seed(0, self.np_random)
        if options and "index" in options:
            position = self.core.check_position(options["index"])
        else:
            position = self._sampler.draw_one()
        self._row = self.core.start_rows(position)
        self._done = False
        return self.core.observations[self._row].copy(), self.core.info(self._row)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        try:
            action = operator.index(action)
        except TypeError:
            raise ValueError(f"action must be a scalar integer, 0 (continue) or 1 (halt); got {action!r}") from None
        if action != 0 and action != 1:
            raise ValueError(f"action must be 0 (continue) or 1 (halt), got {action}")
        if self._done:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        row, reward, done = self.core.transition(self._row, action)
        self._row, self._done = int(row), bool(done)
        return (
            self.core.observations[self._row].copy(),
            float(reward),
            self._done,
            False,
            self.core.info(self._row),
        )

    def render(self) -> str | None:
        return self.core.describe(self._row) if self.render_mode == "ansi" else None


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

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        self.num_envs = check_int("num_envs", num_envs)
        self.core = HaltingCore(**kwargs)
        self.render_mode = self.core.render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._sampler = IndexSampler(num_envs, self.core.num_samples)
        self._envs = np.arange(num_envs)
        self._rows = np.zeros(num_envs, dtype=np.int64)
        self._prev_done = np.zeros(num_envs, dtype=np.bool_)
        self._all = np.ones(num_envs, dtype=np.bool_)
        self._all.flags.writeable = False  # the shared, read-only info mask: every sub-env has info
        self._started = False

    @property
    def positions(self) -> np.ndarray:
        """The sample position (in the split) of each sub-env's current episode."""
        return self._rows // self.core.max_steps

    @property
    def steps(self) -> np.ndarray:
        """The current recursion step t (1..max_steps) of each sub-env."""
        return self._rows % self.core.max_steps + 1

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._sampler.seed_all([None if seed is None else seed + i for i in range(self.num_envs)])
        if options and "index" in options:
            indices = np.broadcast_to(np.asarray(options["index"]), (self.num_envs,))
            positions = np.array([self.core.check_position(i) for i in indices.tolist()], dtype=np.int64)
        else:
            positions = self._sampler.draw(self._envs)
        self._rows = self.core.start_rows(positions)
        self._prev_done[:] = False
        self._started = True
        return self.core.observations[self._rows], self.core.info_batch(self._rows, self._all)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self.core.check_actions(actions, self.num_envs)
        if not self._started:
            raise RuntimeError("call reset() before step()")
        rows, rewards, terminated = self.core.transition(self._rows, actions)
        restart = self._prev_done
        if np.count_nonzero(restart):
            rows[restart] = self.core.start_rows(self._sampler.draw(self._envs[restart]))
            rewards[restart] = 0.0
            terminated[restart] = False
        self._rows = rows
        self._prev_done = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        return self.core.observations[rows], rewards, terminated, truncated, self.core.info_batch(rows, self._all)

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(self.core.describe(row) for row in self._rows.tolist())


def register_envs() -> None:
    """Register every ``ENV_IDS`` id with Gymnasium (ids already registered are left alone)."""
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="trm_env.env:HaltingEnv",
                vector_entry_point="trm_env.env:HaltingVectorEnv",
                kwargs={"task": task},
            )
