"""A stable-baselines3 ``VecEnv`` over the batched halting core: many envs, no Python loop per env.

>>> from stable_baselines3 import PPO
>>> venv = make_sb3_vec_env(num_envs=8, seed=0, task="regime-chain")  # doctest: +SKIP
>>> PPO("MlpPolicy", venv).learn(10_000)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from trm_env.checks import check_int
from trm_env.core import CoreAttributes, IndexSampler
from trm_env.live_core import make_core

__all__ = ["HaltingSB3VecEnv", "make_sb3_vec_env"]


class HaltingSB3VecEnv(CoreAttributes, VecEnv):
    """``num_envs`` halting envs for stable-baselines3; same keyword arguments as ``HaltingEnv``.

    Same-step autoreset, as ``DummyVecEnv``: a finished sub-env returns its next episode's first
    observation, with the last one in ``infos[i]["terminal_observation"]`` and
    ``infos[i]["TimeLimit.truncated"] = False`` (episodes always end by a real halt). ``seed(s)``
    seeds sub-env i with ``s + i`` at the next ``reset()``, so trajectories match ``HaltingEnv``
    and ``HaltingVectorEnv`` bit for bit; ``set_options({"index": i})`` picks the samples.

    The sub-envs share one core: ``get_attr`` reads its (common) settings, ``env_method`` supports
    ``"render"``, and ``set_attr`` is refused since the settings are baked into precomputed tables.
    """

    def __init__(self, num_envs: int = 1, live: bool = False, **env_kwargs: Any) -> None:
        num_envs = check_int("num_envs", num_envs)
        self.core = make_core(num_envs, live, **env_kwargs)
        self._sampler = IndexSampler(num_envs, self.core.num_samples)
        self._envs = np.arange(num_envs)
        self._actions: np.ndarray | None = None
        super().__init__(num_envs, self.core.observation_space, self.core.action_space)

    def reset(self) -> VecEnvObs:
        self._sampler.seed_all(self._seeds)
        for options in self._options:
            self.core.check_options(options)
        chosen = np.array(["index" in options for options in self._options])
        positions = np.zeros(self.num_envs, dtype=np.int64)
        positions[~chosen] = self._sampler.draw(self._envs[~chosen])
        for env in self._envs[chosen].tolist():
            positions[env] = self.core.check_position(self._options[env]["index"])
        self.core.begin(self._envs, positions)
        self.reset_infos = self.core.info_list(self._envs)
        self._reset_seeds()
        self._reset_options()
        return self.core.observe(self._envs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.core.check_actions(actions, self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        rewards, dones = self.core.advance(self._envs, self._actions)
        self._actions = None
        envs = self._envs[dones]
        finals, final_infos = self.core.observe(envs), self.core.info_list(envs)  # ended slots: no model step due
        self.core.begin(envs, self._sampler.draw(envs))
        infos = self.core.info_list(self._envs)  # one batched step (live) over the continuing and restarted slots
        for env, final, info in zip(envs.tolist(), finals, final_infos, strict=True):
            self.reset_infos[env] = infos[env]
            infos[env] = {**info, "terminal_observation": final, "TimeLimit.truncated": False}
        return self.core.observe(self._envs), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        """Nothing to release: the envs are rows of shared read-only tables."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "np_random":
            return [self._sampler.rngs[env] for env in self._get_indices(indices)]
        value = getattr(self.core, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"cannot set {attr_name!r}: the sub-envs share one core whose settings are baked into "
            "precomputed tables; build a new env with make_sb3_vec_env(...)"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        if method_name != "render":
            raise AttributeError(f"sub-env method {method_name!r} is not supported; only 'render' is")
        return [self.core.render(env, False) for env in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        return [self.core.render(env, False) for env in range(self.num_envs)]


def make_sb3_vec_env(num_envs: int = 1, seed: int | None = None, monitor: bool = True, **env_kwargs: Any
                     ) -> VecEnv:  # fmt: skip
    """A ``HaltingSB3VecEnv``, wrapped in ``VecMonitor`` (episode returns and lengths, ``rollout/ep_rew_mean``)
    unless ``monitor=False``; with ``seed``, sub-env i is seeded with ``seed + i`` at the first reset."""
    venv = HaltingSB3VecEnv(num_envs, **env_kwargs)
    if seed is not None:
        venv.seed(seed)
    return VecMonitor(venv) if monitor else venv
