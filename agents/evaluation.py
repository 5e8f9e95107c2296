"""Evaluate halting policies on a ``Rollouts`` table: every sample of a split once, deterministic.

The halting step of a sample is the first step t at which ``policy.act(observations[:, t], info_t)``
says halt (t = K is forced); its return is ``halt_reward[t] - step_cost * (t - 1)``, read from the
table. A stateless policy acts on every (step, sample) row in step-major order in one call, which
draws exactly what an env-driven evaluation's K calls (one per step, on the whole split) draw, so
seeded random rules match too; a ``stateful`` policy (one that accumulates over steps) gets those K
calls.
``evaluate_by_stepping`` is that env-driven path, kept as the reference for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from agents.policies import HaltingPolicy
from trm_env.checks import check_actions
from trm_env.core import DEFAULT_STEP_COST, check_choice
from trm_env.env import HaltingVectorEnv
from trm_env.rollouts import OBSERVATIONS, REWARDS, Rollouts, as_rollouts
from trm_env.task import Task

__all__ = ["EPISODE_COLUMNS", "episode_columns", "evaluate", "evaluate_by_stepping", "evaluate_policies",
           "halting_steps"]  # fmt: skip

EPISODE_COLUMNS = ("index", "halt_step", "prediction", "label", "correct", "pnl", "profit_weighted_ce",
                   "episode_return")  # fmt: skip
Source = str | Task | Rollouts | Path


def _settings(step_cost: float | None, reward: str, observation: str) -> float:
    check_choice("reward", reward, REWARDS)
    check_choice("observation", observation, OBSERVATIONS)
    cost = DEFAULT_STEP_COST if step_cost is None else step_cost
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < np.inf:
        raise ValueError(f"step_cost must be a finite number >= 0, got {cost!r}")
    return float(cost)


def halting_steps(policy: HaltingPolicy, rollouts: Rollouts, step_cost: float = DEFAULT_STEP_COST,
                  reward: str = "profit_weighted_ce", observation: str = "summary") -> np.ndarray:  # fmt: skip
    """(N,) int64: the step (1..K) at which ``policy`` halts on each sample of the table."""
    return _first_halts(policy, rollouts, _StepMajor(rollouts, observation), step_cost, reward)


class _StepMajor:
    """A table's observations and info rows in step-major order: all samples at step 1, then step 2, ...

    One ``act`` call on these K * N rows draws exactly what K calls on the N rows of each step would.
    """

    def __init__(self, rollouts: Rollouts, observation: str) -> None:
        n, k = rollouts.num_samples, rollouts.max_steps
        step_major = rollouts.observations[observation].transpose(1, 0, 2)
        self.observations = np.ascontiguousarray(step_major).reshape(n * k, -1)
        self.info = {"index": np.tile(np.arange(n), k), "step": np.repeat(np.arange(1, k + 1), n)}


def _first_halts(policy: HaltingPolicy, rollouts: Rollouts, rows: _StepMajor, step_cost: float, reward: str
                 ) -> np.ndarray:  # fmt: skip
    policy.bind(rollouts, step_cost, reward)
    n, k = rollouts.num_samples, rollouts.max_steps
    if policy.stateful:  # one call per step, as an env-driven evaluation makes them
        blocks = [slice(t * n, (t + 1) * n) for t in range(k)]
        actions = np.concatenate([check_actions(policy.act(rows.observations[b], {key: v[b] for key, v in
                                                                                   rows.info.items()}),
                                                n, repr(policy), t + 1) for t, b in enumerate(blocks)])  # fmt: skip
    else:
        actions = check_actions(policy.act(rows.observations, rows.info), n * k, repr(policy), rows.info["step"])
    halt = actions.reshape(k, n)[: k - 1] == 1
    return np.where(halt.any(axis=0), halt.argmax(axis=0) + 1, k).astype(np.int64)


def episode_columns(rollouts: Rollouts, steps: np.ndarray, step_cost: float, reward: str) -> dict[str, np.ndarray]:
    """The episode columns of (P, N) halting steps (P policies on the same table), P * N rows."""
    steps = np.atleast_2d(steps)
    rows, t = np.broadcast_to(np.arange(rollouts.num_samples), steps.shape).ravel(), steps.ravel() - 1
    tile = len(steps)
    columns = {
        "index": rows, "halt_step": steps.ravel(), "prediction": rollouts.prediction[rows, t],
        "label": np.tile(rollouts.label, tile), "correct": rollouts.correct[rows, t], "pnl": rollouts.pnl[rows, t],
        "profit_weighted_ce": rollouts.profit_weighted_ce[rows, t],
        "episode_return": rollouts.halt_reward[reward][rows, t] - step_cost * t,
    }  # fmt: skip
    if rollouts.difficulty is not None:
        columns["difficulty"] = np.tile(rollouts.difficulty, tile)
    return columns


def _table(task: Source, split: str | None, env_kwargs: dict[str, Any]) -> tuple[Rollouts, str, str]:
    unknown = sorted(set(env_kwargs) - {"checkpoint", "max_steps", "reward", "observation"})
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {unknown}; valid: checkpoint, max_steps, reward, observation")
    rollouts = as_rollouts(task, env_kwargs.get("checkpoint"), split, env_kwargs.get("max_steps"))
    return rollouts, env_kwargs.get("reward", "profit_weighted_ce"), env_kwargs.get("observation", "summary")


def evaluate(policy: HaltingPolicy, task: Source = "sp500", split: str | None = None, step_cost: float | None = None,
             **env_kwargs: Any) -> pd.DataFrame:  # fmt: skip
    """Run ``policy`` once on every sample of ``split``; one row per sample (+ ``difficulty`` if the task has it).

    ``task`` is a task name, a ``Task``, a ``Rollouts`` or a saved rollouts folder; ``split`` defaults to
    "test" (or the table's own split). ``env_kwargs``: ``checkpoint``, ``max_steps``, ``reward``,
    ``observation``, as the env takes them; ``step_cost`` defaults to the env's 0.01.
    """
    rollouts, reward, observation = _table(task, split, env_kwargs)
    cost = _settings(step_cost, reward, observation)
    steps = halting_steps(policy, rollouts, cost, reward, observation)
    return pd.DataFrame(episode_columns(rollouts, steps[None], cost, reward))


def evaluate_policies(
    policies: Sequence[HaltingPolicy],
    task: Source,
    split: str | None = None,
    progress: bool = False,
    step_cost: float | None = None,
    **env_kwargs: Any,
) -> pd.DataFrame:
    """``evaluate`` each policy on one table (built once); episodes stacked with ``task, policy, param, seed``."""
    rollouts, reward, observation = _table(task, split, env_kwargs)
    cost = _settings(step_cost, reward, observation)
    rows = _StepMajor(rollouts, observation)
    desc = f"evaluate on {rollouts.task_name}/{rollouts.split}"
    bar = tqdm(policies, desc=desc, unit="policy", disable=not progress)
    steps = np.array([_first_halts(policy, rollouts, rows, cost, reward) for policy in bar], dtype=np.int64)
    n, count = rollouts.num_samples, len(policies)
    names = [p.name for p in policies]
    families = list(dict.fromkeys(names))
    front = {
        "task": pd.Categorical.from_codes(np.zeros(n * count, dtype=np.int8), [rollouts.task_name]),
        "policy": pd.Categorical.from_codes(np.repeat([families.index(p) for p in names], n), families),
        "param": np.repeat(np.array([p.param for p in policies], dtype=float), n),
        "seed": np.repeat(np.array([p.seed for p in policies], dtype=np.int64), n),
    }
    return pd.DataFrame({**front, **episode_columns(rollouts, steps.reshape(count, n), cost, reward)})


def evaluate_by_stepping(policy: HaltingPolicy, task: str | Task = "sp500", split: str = "test",
                         **env_kwargs: Any) -> pd.DataFrame:  # fmt: skip
    """The reference path: step a ``HaltingVectorEnv`` with one sub-env per sample until every episode ends."""
    n = len(as_rollouts(task, env_kwargs.get("checkpoint"), split, env_kwargs.get("max_steps")).index)
    env = HaltingVectorEnv(num_envs=n, task=task, split=split, **env_kwargs)
    obs, info = env.reset(options={"index": np.arange(n)})
    policy.bind(env.table_spec, env.step_cost, env.reward_mode)
    done = np.zeros(n, dtype=bool)
    episode_return = np.zeros(n)
    final: dict[str, np.ndarray] = {}
    for step in range(1, env.max_steps + 1):
        actions = np.where(done, 1, check_actions(policy.act(obs, info), n, repr(policy), step))
        obs, rewards, terminated, _, info = env.step(actions)
        episode_return += np.where(done, 0.0, rewards)
        newly = terminated & ~done
        for key in env.core.info_keys:
            final.setdefault(key, np.zeros(n, dtype=info[key].dtype))[newly] = info[key][newly]
        done |= terminated
    if not done.all():
        raise RuntimeError("an episode did not end within max_steps; the env broke its contract")
    frame = pd.DataFrame({key: final[key] for key in env.core.info_keys}).rename(columns={"step": "halt_step"})
    frame["episode_return"] = episode_return
    extra = ["difficulty"] if "difficulty" in frame else []
    return frame[[*EPISODE_COLUMNS, *extra]]
