"""RL halting policies: train a stable-baselines3 agent on the batched SB3 vec env, save, load, act.

The agent sees what every other policy sees (the env's observation) and is paid the env's reward:
by default ``-(1 - tanh(pnl / s)) * CE`` of the step it halts at (the per-sample profit-weighted loss
that TRMLoss minimises for the answer) minus ``step_cost`` for every step it keeps thinking. That is
not the halt head's signal: the halt head is trained with BCE toward "confident and correct".
Training runs on the **halt** split by default: data the TRM never saw (its train-split confidence is
optimistic, so a policy trained there would halt too early on unseen samples), kept apart from the
val split where the study makes its choices.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import get_linear_fn

from agents.policies import HaltingPolicy, Info
from trm_env.io import atomic_path, write_json_atomic
from trm_env.model import resolve_device, torch_threads
from trm_env.rollouts import Rollouts
from trm_env.sb3 import make_sb3_vec_env
from trm_env.task import Task

__all__ = ["ALGOS", "HYPERPARAMETERS", "N_ENVS", "RLHaltingPolicy", "StepOneHot", "save_rl_policy", "train_rl_policy"]

ALGOS = {"ppo": PPO, "dqn": DQN}

# Episodes last at most K = 16 steps and the objective is the undiscounted return, so gamma = 1.
# PPO as tuned on regime-chain's val split (docs/rl_tuning.md): gae_lambda = 1 (Monte Carlo advantages;
# bootstrapping on the critic cost a third of fitted-Q's gain), the one-hot step input (StepOneHot), and
# 128 envs x 8 steps = one 1024-row minibatch per epoch (an update costs about as much as a 256-row one).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_steps=8, batch_size=1024, n_epochs=4, learning_rate=1e-3, gamma=1.0, gae_lambda=1.0,
                ent_coef=0.01, step_onehot=True, policy_kwargs=dict(net_arch=[64, 64])),
    "dqn": dict(learning_rate=5e-4, buffer_size=50_000, learning_starts=1_000, batch_size=128, gamma=1.0,
                train_freq=4, target_update_interval=500, exploration_fraction=0.3, exploration_final_eps=0.02,
                step_onehot=True, policy_kwargs=dict(net_arch=[64, 64])),
}  # fmt: skip
N_ENVS = {"ppo": 128, "dqn": 16}  # the default number of envs per algorithm


class StepOneHot(BaseFeaturesExtractor):
    """The observation with a one-hot of its step appended (read back from the ``step_fraction`` column).

    With it a small MLP learns one halting boundary per step, as fitted-Q's per-step regressors do; from
    the step fraction alone it learns them far more slowly. It has no parameters and lives inside the
    SB3 policy, so a saved agent needs nothing else to act. ``hyperparameters`` with ``step_onehot=True``
    install it.
    """

    def __init__(self, observation_space: gym.spaces.Box, column: int, max_steps: int) -> None:
        super().__init__(observation_space, features_dim=observation_space.shape[0] + max_steps)
        self.column, self.max_steps = column, max_steps

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        step = torch.round(observations[:, self.column] * self.max_steps).long().clamp(1, self.max_steps) - 1
        onehot = torch.nn.functional.one_hot(step, self.max_steps).to(observations.dtype)
        return torch.cat([observations, onehot], dim=1)


class RLHaltingPolicy(HaltingPolicy):
    """A trained stable-baselines3 agent acting deterministically on the observations."""

    def __init__(self, model: Any, algo: str = "ppo", step_cost: float = float("nan"), seed: int = 0) -> None:
        self.model, self.algo = model, algo
        self.name, self.param, self.seed = f"rl_{algo}", float(step_cost), int(seed)

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        actions, _ = self.model.predict(observations, deterministic=True)
        return np.asarray(actions, dtype=np.int64).reshape(len(observations))

    @classmethod
    def load(cls, path: str | Path) -> RLHaltingPolicy:
        """Load ``<name>.zip`` saved by ``train_rl_policy`` (with its ``<name>.json`` beside it)."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise ValueError(f"RL policy {str(path)!r} needs both the SB3 zip and {meta_path.name} beside it")
        meta = json.loads(meta_path.read_text())
        algo = meta.get("algo")
        if algo not in ALGOS:
            raise ValueError(f"{meta_path}: unknown algo {algo!r}; valid: {sorted(ALGOS)}")
        try:
            model = ALGOS[algo].load(path, device="cpu")
        except Exception as exc:
            raise ValueError(f"RL policy {str(path)!r} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
        return cls(model, algo=algo, step_cost=meta["step_cost"], seed=meta["seed"])


def train_rl_policy(
    task: str | Task = "sp500",
    algo: str = "ppo",
    step_cost: float = 0.01,
    total_timesteps: int = 30_000,
    seed: int = 0,
    n_envs: int | None = None,
    split: str = "halt",
    out: str | Path | None = None,
    progress: bool = True,
    tensorboard_log: str | Path | None = None,
    hyperparameters: dict[str, Any] | None = None,
    device: str = "cpu",
    callback: BaseCallback | None = None,
    **env_kwargs: Any,
) -> RLHaltingPolicy:
    """Train an SB3 agent (``"ppo"`` or ``"dqn"``) to halt; with ``out``, save ``out`` (.zip) and its .json.

    ``n_envs`` defaults to ``N_ENVS[algo]``. TensorBoard logs go to ``tensorboard_log`` (default: a
    ``tensorboard`` folder beside ``out``). ``hyperparameters`` override ``HYPERPARAMETERS[algo]`` key by
    key; ``step_onehot=True`` among them installs ``StepOneHot``, ``learning_rate_end`` decays the learning
    rate linearly to it over the run. ``callback`` goes to SB3's ``learn``. ``device`` ("cpu", "cuda", "auto") is
    where the agent's network trains (a 64x64 MLP is fastest on the CPU). ``env_kwargs`` (checkpoint,
    rollouts, reward, observation, max_steps) go to the environment.
    """
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; valid: {sorted(ALGOS)}")
    n_envs = N_ENVS[algo] if n_envs is None else n_envs
    if not step_cost >= 0:
        raise ValueError(f"step_cost must be >= 0, got {step_cost}")
    if total_timesteps < 1 or n_envs < 1:
        raise ValueError(f"total_timesteps and n_envs must be >= 1, got {total_timesteps}, {n_envs}")
    if tensorboard_log is None and out is not None:
        tensorboard_log = Path(out).parent / "tensorboard"
    venv = make_sb3_vec_env(num_envs=n_envs, seed=seed, task=task, split=split, step_cost=step_cost, **env_kwargs)
    settings = {**HYPERPARAMETERS[algo], **(hyperparameters or {})}
    model = ALGOS[algo](
        "MlpPolicy", venv, seed=seed, device=resolve_device(device), verbose=0,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log), **_model_settings(settings, venv),
    )  # fmt: skip
    if tensorboard_log is None:
        model.set_logger(Logger(folder=None, output_formats=[]))  # SB3 would otherwise make an empty /tmp/SB3-* folder
    start = time.perf_counter()
    with torch_threads(1):  # a 64x64 MLP: threads only add overhead on CPU
        model.learn(total_timesteps, callback=callback, progress_bar=progress,
                    tb_log_name=f"{algo}_cost{step_cost:g}_seed{seed}")  # fmt: skip
    seconds = round(time.perf_counter() - start, 2)
    policy = RLHaltingPolicy(model, algo=algo, step_cost=step_cost, seed=seed)
    if out is not None:
        task_name = task.name if isinstance(task, Task) else task
        save_rl_policy(policy, out, task=task_name, split=split, total_timesteps=total_timesteps, n_envs=n_envs,
                       train_seconds=seconds, hyperparameters=json.loads(json.dumps(settings, default=str)),
                       env_kwargs={k: _describe(v) for k, v in env_kwargs.items()})  # fmt: skip
    return policy


def _model_settings(settings: dict[str, Any], venv: Any) -> dict[str, Any]:
    """SB3 keyword arguments from our hyperparameters: ``step_onehot`` and ``learning_rate_end`` become the
    features extractor and a linear learning-rate schedule."""
    model = {key: value for key, value in settings.items() if key not in ("step_onehot", "learning_rate_end")}
    if "learning_rate_end" in settings:
        model["learning_rate"] = get_linear_fn(settings["learning_rate"], settings["learning_rate_end"], 1.0)
    if settings.get("step_onehot"):
        table = venv.get_attr("rollouts")[0]
        extractor = dict(features_extractor_class=StepOneHot,
                         features_extractor_kwargs=dict(column=table.layout["step_fraction"].start,
                                                        max_steps=table.max_steps))  # fmt: skip
        model["policy_kwargs"] = {**model.get("policy_kwargs", {}), **extractor}
    return model


def _describe(value: Any) -> Any:
    """A JSON-friendly account of an env kwarg: plain values and paths as they are, a table by its key,
    other objects by type."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Rollouts):
        return f"Rollouts {value.task_name}/{value.split} key {value.key}"
    return str(value) if isinstance(value, os.PathLike) else type(value).__name__


def save_rl_policy(policy: RLHaltingPolicy, out: str | Path, **meta: Any) -> Path:
    """Save the SB3 zip and a JSON sidecar atomically (zip first; the sidecar marks the stage finished).

    ``meta`` must be JSON-serialisable (names and numbers, not objects): a ``TypeError`` says which is not.
    """
    out = Path(out).with_suffix(".zip")
    info = {"algo": policy.algo, "step_cost": policy.param, "seed": policy.seed, **meta}
    try:
        json.dumps(info)
    except TypeError as exc:
        raise TypeError(f"save_rl_policy meta must be JSON-serialisable: {exc}") from exc
    with atomic_path(out) as tmp:
        policy.model.save(tmp)
    write_json_atomic(out.with_suffix(".json"), info)
    return out
