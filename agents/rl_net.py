"""An RL agent's network on its own: the ``StepOneHot`` input, a JSON spec that rebuilds the SB3 policy without
unpickling anything, and the greedy batched forward that acts.

``policy_spec`` writes what SB3's own policy save would pickle (the spaces and the constructor's settings) as plain
JSON, naming each class from ``CLASSES``; ``build_policy`` builds the network from that spec and nothing else, so
a settings file can choose among those classes and set numbers, never run code. ``greedy_actions`` is SB3's
deterministic ``predict`` without its per-call overhead: one forward pass under ``torch.no_grad()``.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.dqn.policies import DQNPolicy

__all__ = ["CLASSES", "POLICIES", "StepOneHot", "build_policy", "greedy_actions", "policy_algo", "policy_spec"]


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


POLICIES: dict[str, type[BasePolicy]] = {"ppo": ActorCriticPolicy, "dqn": DQNPolicy}  # SB3's "MlpPolicy" of each
# the only classes a settings file may name (activations, optimizers, feature extractors)
CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    StepOneHot, FlattenExtractor, torch.nn.Tanh, torch.nn.ReLU, torch.nn.ELU, torch.nn.LeakyReLU, torch.nn.GELU,
    torch.nn.SiLU, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)}  # fmt: skip
CLASS_KEYS = ("activation_fn", "optimizer_class", "features_extractor_class")
SPEC_KEYS = {"policy", "observation_space", "action_space", "kwargs"}


def policy_algo(policy: BasePolicy) -> str:
    """``"ppo"`` or ``"dqn"``: the algorithm whose "MlpPolicy" ``policy`` is, else ``TypeError``."""
    for algo, cls in POLICIES.items():
        if type(policy) is cls and isinstance(policy.action_space, gym.spaces.Discrete):
            return algo
    raise TypeError(f"an RL halting agent is PPO's ActorCriticPolicy or DQN's DQNPolicy over a Discrete action "
                    f"space (SB3 'MlpPolicy'); got {type(policy).__name__}")  # fmt: skip


def policy_spec(policy: BasePolicy) -> dict[str, Any]:
    """The JSON settings ``build_policy`` rebuilds ``policy`` from; ``TypeError`` names a setting it cannot write."""
    policy_algo(policy)
    kwargs = {k: v for k, v in policy._get_constructor_parameters().items()
              if k not in ("observation_space", "action_space", "lr_schedule")}  # fmt: skip
    if isinstance(policy, ActorCriticPolicy):  # SB3 leaves it out of the constructor parameters
        kwargs["share_features_extractor"] = policy.share_features_extractor
    for key in CLASS_KEYS:
        if kwargs.get(key) not in CLASSES.values():
            raise TypeError(f"policy setting {key}={kwargs.get(key)!r} cannot be saved; known: {sorted(CLASSES)}")
        kwargs[key] = kwargs[key].__name__
    space = policy.observation_space
    spec = {"policy": type(policy).__name__, "action_space": {"n": int(policy.action_space.n)}, "kwargs": kwargs,
            "observation_space": {"low": space.low.tolist(), "high": space.high.tolist()}}  # fmt: skip
    try:
        json.dumps(spec)
    except TypeError as exc:
        raise TypeError(f"policy settings must be plain JSON values: {exc}") from exc
    return spec


def build_policy(spec: Any) -> BasePolicy:
    """A fresh SB3 policy (weights still to load) from ``policy_spec``'s JSON; ``ValueError`` says what is wrong."""
    if not isinstance(spec, dict) or set(spec) != SPEC_KEYS:
        raise ValueError(f"the policy spec must be an object with keys {sorted(SPEC_KEYS)}")
    classes = {cls.__name__: cls for cls in POLICIES.values()}
    if spec["policy"] not in classes:
        raise ValueError(f"policy must be one of {sorted(classes)}, got {spec['policy']!r}")
    try:
        low, high = (np.asarray(spec["observation_space"][k], dtype=np.float32) for k in ("low", "high"))
        spaces = gym.spaces.Box(low, high, dtype=np.float32), gym.spaces.Discrete(int(spec["action_space"]["n"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad observation_space or action_space: {type(exc).__name__}: {exc}") from exc
    kwargs = dict(spec["kwargs"]) if isinstance(spec["kwargs"], dict) else None
    if kwargs is None or any(not isinstance(kwargs.get(key), str) for key in CLASS_KEYS):
        raise ValueError(f"kwargs must be an object naming {list(CLASS_KEYS)}")
    for key in CLASS_KEYS:
        if kwargs[key] not in CLASSES:
            raise ValueError(f"{key} must be one of {sorted(CLASSES)}, got {kwargs[key]!r}")
        kwargs[key] = CLASSES[kwargs[key]]
    try:
        with torch.random.fork_rng(devices=[]):  # the throwaway initial weights leave the caller's RNG alone
            return classes[spec["policy"]](*spaces, lambda _: 0.0, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ValueError(f"bad policy settings: {type(exc).__name__}: {exc}") from exc


@torch.no_grad()
def greedy_actions(policy: BasePolicy, observations: np.ndarray) -> np.ndarray:
    """The greedy actions of ``policy`` on (B, D) observations, as int64 (B,): what SB3's
    ``predict(observations, deterministic=True)`` gives, in one forward pass."""
    obs = torch.as_tensor(observations, device=policy.device).float()
    if isinstance(policy, DQNPolicy):
        net = policy.q_net
        return net.q_net(net.features_extractor(obs)).argmax(dim=1).cpu().numpy().astype(np.int64)
    latent = policy.mlp_extractor.forward_actor(policy.pi_features_extractor(obs))
    logits = policy.action_net(latent)
    # the mode of SB3's Categorical, computed as torch.distributions does: argmax of the normalised probabilities
    probs = torch.softmax(logits - logits.logsumexp(dim=1, keepdim=True), dim=1)
    return probs.argmax(dim=1).cpu().numpy().astype(np.int64)
