"""Halting policies: one protocol, ``policy.act(observations) -> actions`` on a batch.

Observations are the env's "summary" (or "latent") rows, shape (B, D); actions are int64 (B,) with
0 = continue, 1 = halt. Every policy carries ``name`` (its family, the ``policy`` column of every
table) and ``param`` (the family's knob). ``bind(env)`` hands a policy the vector env it is about to
run on; only the rules that need more than the observation (fixed depth, oracle) use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trm_env.checks import check_int
from trm_env.env import SUMMARY_STATS, HaltingVectorEnv

__all__ = [
    "POLICY_NAMES",
    "ConfidencePolicy",
    "FixedDepthPolicy",
    "HaltHeadPolicy",
    "HaltingPolicy",
    "OraclePolicy",
    "RLHaltingPolicy",
    "RandomPolicy",
    "make_policy",
]

NUM_CLASSES = 8  # the summary observation: C class probabilities, then SUMMARY_STATS
MAX_PROB, HALT_PROB, STEP_FRACTION = (
    NUM_CLASSES + SUMMARY_STATS.index(name) for name in ("max_prob", "halt_prob", "step_fraction")
)


class HaltingPolicy:
    """Base class: a named rule with one knob. Subclasses implement ``act``."""

    name: str = "policy"
    param: float = float("nan")
    seed: int = 0

    def bind(self, env: HaltingVectorEnv) -> None:
        """Called with the env before a batch of episodes; the default needs nothing from it."""

    def act(self, observations: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, param={self.param})"


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def _halt_where(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.int64)


class _ThresholdPolicy(HaltingPolicy):
    """Halt when observation column ``column`` exceeds ``threshold`` (strictly)."""

    column: int

    def __init__(self, threshold: float) -> None:
        self.param = _probability("threshold", threshold)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return _halt_where(observations[:, self.column] > self.param)


class HaltHeadPolicy(_ThresholdPolicy):
    """Halt when the model's own halt head says p(halt) > ``threshold``: the supervised method."""

    name, column = "halt_head", HALT_PROB

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)


class ConfidencePolicy(_ThresholdPolicy):
    """Halt when the max class probability exceeds ``threshold`` (early exit, no learned head)."""

    name, column = "confidence", MAX_PROB

    def __init__(self, threshold: float = 0.9) -> None:
        super().__init__(threshold)


class FixedDepthPolicy(HaltingPolicy):
    """Always think ``k`` steps (k >= max_steps runs every step, as TRM does at evaluation)."""

    name = "fixed_depth"

    def __init__(self, k: int = 16) -> None:
        self.param = check_int("k", k)
        self._max_steps: int | None = None

    def bind(self, env: HaltingVectorEnv) -> None:
        self._max_steps = env.max_steps

    def act(self, observations: np.ndarray) -> np.ndarray:
        if self._max_steps is None:
            raise RuntimeError("FixedDepthPolicy needs bind(env) first (it reads the step from the step fraction)")
        step = np.rint(observations[:, STEP_FRACTION] * self._max_steps)
        return _halt_where(step >= self.param)


class RandomPolicy(HaltingPolicy):
    """Halt with probability ``p`` at every step, from its own seeded Generator."""

    name = "random"

    def __init__(self, p: float = 0.2, seed: int = 0) -> None:
        self.param = _probability("p", p)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def bind(self, env: HaltingVectorEnv) -> None:
        self._rng = np.random.default_rng(self.seed)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return _halt_where(self._rng.random(len(observations)) < self.param)


class OraclePolicy(HaltingPolicy):
    """Halt at the step that maximises terminal reward minus step costs for each sample (uses the label).

    The upper bound of every curve: no policy that sees only observations can earn a higher mean return
    under the same reward mode and step cost.
    """

    name = "oracle"

    def __init__(self) -> None:
        self._env: HaltingVectorEnv | None = None
        self._best: np.ndarray | None = None

    def bind(self, env: HaltingVectorEnv) -> None:
        self._env = env
        self._best = best_halt_steps(env)

    def act(self, observations: np.ndarray) -> np.ndarray:
        if self._env is None or self._best is None:
            raise RuntimeError("OraclePolicy needs bind(env) first: it reads the sample's label through the env")
        return _halt_where(self._env.steps >= self._best[self._env.positions])


def best_halt_steps(env: HaltingVectorEnv) -> np.ndarray:
    """Per sample position, the step t (1..K) maximising ``terminal(t) - step_cost * (t - 1)`` (earliest on ties)."""
    k = env.max_steps
    terminal = env.core.rollouts.terminal[env.reward_mode].reshape(-1, k)
    value = terminal - env.step_cost * np.arange(k)
    return value.argmax(axis=1) + 1


class RLHaltingPolicy(HaltingPolicy):
    """A trained stable-baselines3 agent acting deterministically on the observations."""

    def __init__(self, model: Any, algo: str = "ppo", step_cost: float = float("nan"), seed: int = 0) -> None:
        self.model, self.algo = model, algo
        self.name, self.param, self.seed = f"rl_{algo}", float(step_cost), int(seed)

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(observations, deterministic=True)
        return np.asarray(actions, dtype=np.int64).reshape(len(observations))

    @classmethod
    def load(cls, path: str | Path) -> RLHaltingPolicy:
        """Load ``<name>.zip`` saved by ``agents.train_rl_policy`` (with its ``<name>.json`` beside it)."""
        from agents.rl import ALGOS

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
            raise ValueError(f"RL policy {str(path)!r} is corrupt or unreadable: {exc}") from exc
        return cls(model, algo=algo, step_cost=meta["step_cost"], seed=meta["seed"])


_FAMILIES = {
    "halt_head": HaltHeadPolicy,
    "confidence": ConfidencePolicy,
    "fixed_depth": FixedDepthPolicy,
    "random": RandomPolicy,
    "oracle": OraclePolicy,
}
POLICY_NAMES = (*_FAMILIES, "rl_ppo", "rl_dqn")


def make_policy(name: str, param: float | None = None) -> HaltingPolicy:
    """A rule policy by family name and knob (RL policies come from ``train_rl_policy`` or ``load``)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown policy {name!r}; valid rule policies: {sorted(_FAMILIES)} (RL: rl_ppo, rl_dqn)")
    cls = _FAMILIES[name]
    if name == "oracle" or param is None:
        return cls()
    return cls(int(param)) if name == "fixed_depth" else cls(param)
