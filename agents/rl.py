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

import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import get_linear_fn

from agents.policies import HaltingPolicy, Info
from agents.rl_net import StepOneHot, build_policy, greedy_actions, policy_algo, policy_spec
from trm_env.io import atomic_path, write_json_atomic
from trm_env.model import resolve_device, torch_threads
from trm_env.rollouts import Rollouts
from trm_env.sb3 import make_sb3_vec_env
from trm_env.task import Task

__all__ = ["AGENT_FORMAT", "ALGOS", "HYPERPARAMETERS", "N_ENVS", "RLHaltingPolicy", "StepOneHot", "agent_files",
           "save_rl_policy", "tensorboard_name", "train_rl_policy"]  # fmt: skip

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
AGENT_FORMAT = "trm-halting-agent/1"  # the settings file's "format": weights in .pt, settings in .json
AGENT_SUFFIXES = (".pt", ".json", ".zip")  # weights, settings, SB3 export (see agent_files)
PICKLED = ":serialized:"  # SB3's marker of a cloudpickled field


class RLHaltingPolicy(HaltingPolicy):
    """A trained stable-baselines3 agent acting greedily on the observations (one batched forward pass).

    ``model`` is the SB3 algorithm (``PPO``/``DQN``, as ``train_rl_policy`` returns it) or its policy network (as
    ``load`` rebuilds it); ``policy`` is the network either way. ``algo`` defaults to the model's own.
    """

    def __init__(self, model: Any, algo: str | None = None, step_cost: float = float("nan"), seed: int = 0) -> None:
        self.model = model
        self.policy: BasePolicy = model.policy if isinstance(model, BaseAlgorithm) else model
        actual = policy_algo(self.policy)
        if algo is not None and algo != actual:
            raise ValueError(f"algo {algo!r} does not match the model, a {actual} policy")
        self.algo, self.name, self.param, self.seed = actual, f"rl_{actual}", float(step_cost), int(seed)
        self._width = int(self.policy.observation_space.shape[0])

    def act(self, observations: np.ndarray, info: Info = None) -> np.ndarray:
        if np.ndim(observations) != 2 or np.shape(observations)[1] != self._width:
            raise ValueError(f"observations must be (B, {self._width}), got shape {np.shape(observations)}")
        return greedy_actions(self.policy, observations)

    @classmethod
    def load(cls, path: str | Path) -> RLHaltingPolicy:
        """Load an agent saved by ``save_rl_policy``: ``path`` names its ``.pt`` or ``.json`` (or their stem).

        Nothing in them can run code: the weights are read with ``torch.load(weights_only=True)`` and the network
        is rebuilt from the JSON settings (``agents.rl_net.build_policy``). The ``.zip`` beside them, SB3's
        export, is refused: SB3's loader unpickles code stored in it. A damaged or missing file gives a
        ``ValueError`` naming it.
        """
        weights, settings, _ = agent_files(path)
        if Path(path).suffix == ".zip":
            raise ValueError(f"{str(path)!r} is an SB3 zip: loading one unpickles code stored in it, so "
                             f"RLHaltingPolicy.load refuses it. Load {weights.name} (weights only, read with "
                             f"weights_only=True) with {settings.name} beside it instead; for a zip you trust, "
                             f"RLHaltingPolicy(stable_baselines3.PPO.load(path)).")  # fmt: skip
        if not weights.exists() and not settings.exists():
            raise ValueError(f"no RL agent at {str(path)!r}: neither {weights} nor {settings} exists")
        info = _read_settings(settings)
        try:
            policy = build_policy(info["policy"])
        except ValueError as exc:
            raise ValueError(f"{settings}: {exc}") from exc
        try:
            policy.load_state_dict(_read_weights(weights))
        except RuntimeError as exc:
            raise ValueError(f"{weights} does not fit the network {settings.name} describes: {exc}") from exc
        policy.set_training_mode(False)
        try:
            return cls(policy, algo=info["algo"], step_cost=info["step_cost"], seed=info["seed"])
        except ValueError as exc:
            raise ValueError(f"{settings}: {exc}") from exc


def agent_files(path: str | Path) -> tuple[Path, Path, Path]:
    """An agent's weights (``.pt``), settings (``.json``) and SB3 export (``.zip``), from any of them or their stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in AGENT_SUFFIXES else path
    weights, settings, export = (stem.with_name(stem.name + suffix) for suffix in AGENT_SUFFIXES)
    return weights, settings, export


def _pickled_fields(value: Any, where: str = "") -> list[str]:
    """Where ``value`` (parsed JSON) holds SB3's cloudpickled ``:serialized:`` fields."""
    if isinstance(value, dict):
        found = [where or "/"] if PICKLED in value else []
        return found + [f for k, v in value.items() for f in _pickled_fields(v, f"{where}/{k}")]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _pickled_fields(v, f"{where}/{i}")]
    return []


def _read_settings(path: Path) -> dict[str, Any]:
    """An agent's JSON settings, checked: written by ``save_rl_policy``, with no pickled field anywhere."""
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"RL agent settings {path} are missing or unreadable: {type(exc).__name__}: {exc}") from exc
    pickled = _pickled_fields(info)
    if pickled:
        raise ValueError(f"{path} holds pickled fields ({PICKLED} at {pickled}); an agent's settings are plain "
                         f"JSON and are never unpickled: this file was not written by save_rl_policy")  # fmt: skip
    if not isinstance(info, dict) or info.get("format") != AGENT_FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise ValueError(f"{path} is not an agent saved by save_rl_policy (format {found!r}, expected "
                         f"{AGENT_FORMAT!r}); older agents were SB3 zips only: retrain them")  # fmt: skip
    if info.get("algo") not in ALGOS:
        raise ValueError(f"{path}: unknown algo {info.get('algo')!r}; valid: {sorted(ALGOS)}")
    number, integer = isinstance(info.get("step_cost"), int | float), isinstance(info.get("seed"), int)
    if not number or not integer or isinstance(info["seed"], bool):
        raise ValueError(f"{path}: step_cost must be a number and seed an integer, got {info.get('step_cost')!r}, "
                         f"{info.get('seed')!r}")  # fmt: skip
    return info


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; weights_only refuses any code
        raise ValueError(f"RL agent weights {path} are missing, corrupt or unsafe: {type(exc).__name__}: {exc}"
                         ) from exc  # fmt: skip
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"RL agent weights {path} must hold a state dict of tensors")
    return state


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
    """Train an SB3 agent (``"ppo"`` or ``"dqn"``) to halt; with ``out``, save it there (``save_rl_policy``).

    ``n_envs`` defaults to ``N_ENVS[algo]``. TensorBoard logs go to ``tensorboard_log`` (default: a
    ``tensorboard`` folder beside ``out``), in ``tensorboard_name(algo, step_cost, seed)_<N>``.
    ``hyperparameters`` override ``HYPERPARAMETERS[algo]`` key by key; ``step_onehot=True`` among them installs
    ``StepOneHot``, ``learning_rate_end`` decays the learning rate linearly to it over the run. ``callback`` goes
    to SB3's ``learn``. ``device`` ("cpu", "cuda", "auto") is where the agent's network trains (a 64x64 MLP is
    fastest on the CPU). ``env_kwargs`` (checkpoint, rollouts, reward, observation, max_steps) go to the
    environment.
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
    if out is not None:
        policy_spec(model.policy)  # a network that could not be saved is refused before the training, not after
    start = time.perf_counter()
    with torch_threads(1):  # a 64x64 MLP: threads only add overhead on CPU
        model.learn(total_timesteps, callback=callback, progress_bar=progress,
                    tb_log_name=tensorboard_name(algo, step_cost, seed))  # fmt: skip
    seconds = round(time.perf_counter() - start, 2)
    policy = RLHaltingPolicy(model, algo=algo, step_cost=step_cost, seed=seed)
    if out is not None:
        task_name = task.name if isinstance(task, Task) else task
        save_rl_policy(policy, out, task=task_name, split=split, total_timesteps=total_timesteps, n_envs=n_envs,
                       train_seconds=seconds, hyperparameters=json.loads(json.dumps(settings, default=str)),
                       env_kwargs={k: _describe(v) for k, v in env_kwargs.items()})  # fmt: skip
    return policy


def tensorboard_name(algo: str, step_cost: float, seed: int) -> str:
    """The run name of an agent's TensorBoard logs (SB3 appends ``_<N>``)."""
    return f"{algo}_cost{step_cost:g}_seed{seed}"


def _model_settings(settings: dict[str, Any], venv: Any) -> dict[str, Any]:
    """SB3 keyword arguments from our hyperparameters: ``step_onehot`` and ``learning_rate_end`` become the
    features extractor and a linear learning-rate schedule."""
    model = {key: value for key, value in settings.items() if key not in ("step_onehot", "learning_rate_end")}
    if "learning_rate_end" in settings:
        model["learning_rate"] = get_linear_fn(settings["learning_rate"], settings["learning_rate_end"], 1.0)
    if settings.get("step_onehot"):
        spec = venv.get_attr("table_spec")[0]  # the table, or a live env's TableSpec
        extractor = dict(features_extractor_class=StepOneHot,
                         features_extractor_kwargs=dict(column=spec.layout["step_fraction"].start,
                                                        max_steps=spec.max_steps))  # fmt: skip
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
    """Save an agent as ``agent_files(out)``: the weights (``.pt``), the SB3 zip export for RL Zoo and SB3 users
    (``.zip``, only for an agent trained in this process) and the settings (``.json``), each atomically; the
    settings come last and mark the agent complete. Returns the ``.pt`` path, which ``RLHaltingPolicy.load`` takes.

    ``meta`` must be JSON-serialisable (names and numbers, not objects): a ``TypeError`` says which is not.
    """
    weights, settings, export = agent_files(out)
    info = {"algo": policy.algo, "step_cost": policy.param, "seed": policy.seed, **meta, "format": AGENT_FORMAT,
            "policy": policy_spec(policy.policy)}  # fmt: skip
    try:
        json.dumps(info)
    except TypeError as exc:
        raise TypeError(f"save_rl_policy meta must be JSON-serialisable: {exc}") from exc
    with atomic_path(weights) as tmp:
        torch.save(policy.policy.state_dict(), tmp)
    if isinstance(policy.model, BaseAlgorithm):
        with atomic_path(export) as tmp:
            policy.model.save(tmp)
    write_json_atomic(settings, info)
    return weights
