"""Speed benchmarks, measured side by side in one run and reported as ratios (JSON out, table printed).

Each benchmark is a function ``(quick: bool) -> dict`` registered in ``BENCHMARKS``; ratio benchmarks
return ``ours``, ``baseline`` (both in ``unit``), ``ratio = ours / baseline`` and the ``target`` ratio.

- ``env_single``: ``gymnasium.make("trm_env/TRMHalting-v0")`` vs ``gymnasium.make("CartPole-v1")``,
  random actions from a seeded Generator, resets included (target >= 1x);
- ``env_vector``: the native vector env vs ``CartPoleVectorEnv``, 64 envs each (target >= 2x);
- ``sb3_ppo``: PPO("MlpPolicy") with identical hyperparameters and 8 envs on our SB3 vec env vs on
  CartPole-v1 in a ``DummyVecEnv`` (target >= 1x: the env must cost less than CartPole's physics).

Every measurement alternates ours and the baseline over a few rounds and keeps each one's best rate,
so a busy machine slows both alike. ``python experiments/benchmark.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

import trm_env  # noqa: F401  (registers the trm_env ids)
from trm_env.sb3 import make_sb3_vec_env
from trm_env.training import write_json_atomic

ENV_ID = "trm_env/TRMHalting-v0"
CARTPOLE = "CartPole-v1"
NUM_VECTOR_ENVS = 64
PPO_ENVS, PPO_STEPS = 8, 128


def _best_rates(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Alternate the timed runs (each returns items per second) and keep each one's best rate."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


def _ratio_result(rates: dict[str, float], unit: str, target: float) -> dict[str, Any]:
    ratio = rates["ours"] / rates["baseline"]
    return {**rates, "unit": unit, "ratio": ratio, "target": target, "met": ratio >= target}


def _single_env_rate(env: gym.Env, steps: int) -> Callable[[], float]:
    def run() -> float:
        actions = np.random.default_rng(0).integers(0, 2, size=steps).tolist()
        env.reset(seed=0)
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)

    return run


def bench_env_single(quick: bool) -> dict[str, Any]:
    """Single-env steps/s through ``gymnasium.make`` (wrappers included), resets included."""
    steps = 5_000 if quick else 200_000
    runs = {"ours": _single_env_rate(gym.make(ENV_ID), steps), "baseline": _single_env_rate(gym.make(CARTPOLE), steps)}
    return _ratio_result(_best_rates(runs, rounds=1 if quick else 3), "env steps/s", target=1.0)


def _vector_env_rate(envs: gym.vector.VectorEnv, steps: int) -> Callable[[], float]:
    def run() -> float:
        actions = np.random.default_rng(0).integers(0, 2, size=(steps, envs.num_envs))
        envs.reset(seed=0)
        start = time.perf_counter()
        for action in actions:
            envs.step(action)
        return steps * envs.num_envs / (time.perf_counter() - start)

    return run


def bench_env_vector(quick: bool) -> dict[str, Any]:
    """Native vector envs, 64 sub-envs each, autoreset included: env steps/s."""
    steps = 2_000 if quick else 20_000
    runs = {
        name: _vector_env_rate(
            gym.make_vec(env_id, num_envs=NUM_VECTOR_ENVS, vectorization_mode="vector_entry_point"), steps
        )
        for name, env_id in (("ours", ENV_ID), ("baseline", CARTPOLE))
    }
    return _ratio_result(_best_rates(runs, rounds=1 if quick else 3), "env steps/s", target=2.0)


def _ppo_rate(venv: VecEnv, timesteps: int) -> Callable[[], float]:
    def run() -> float:
        model = PPO("MlpPolicy", venv, n_steps=PPO_STEPS, seed=0, device="cpu")
        start = time.perf_counter()
        model.learn(timesteps)
        return model.num_timesteps / (time.perf_counter() - start)

    return run


def _sb3_step_rate(venv: VecEnv, steps: int) -> Callable[[], float]:
    def run() -> float:
        actions = np.random.default_rng(0).integers(0, 2, size=(steps, venv.num_envs))
        venv.reset()
        start = time.perf_counter()
        for action in actions:
            venv.step(action)
        return steps * venv.num_envs / (time.perf_counter() - start)

    return run


def bench_sb3_ppo(quick: bool) -> dict[str, Any]:
    """PPO("MlpPolicy", n_steps=128, otherwise defaults) on 8 envs, one torch thread: training env steps/s.

    Training dominates both runs, so the ratio sits near 1; ``*_venv_steps_per_s`` isolate the
    VecEnvs' own cost (random actions, no policy) to show where the difference comes from.
    """
    timesteps = PPO_ENVS * PPO_STEPS * (1 if quick else 4)
    venvs = {
        "ours": make_sb3_vec_env(num_envs=PPO_ENVS, seed=0),
        "baseline": make_vec_env(CARTPOLE, n_envs=PPO_ENVS, seed=0),
    }
    rounds = 1 if quick else 5  # training dominates, so the ratio is near 1: more rounds, less noise
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add noise on a shared machine
    try:
        rates = _best_rates({name: _ppo_rate(venv, timesteps) for name, venv in venvs.items()}, rounds)
    finally:
        torch.set_num_threads(threads)
    steps = 500 if quick else 5_000
    venv_rates = _best_rates({name: _sb3_step_rate(venv, steps) for name, venv in venvs.items()}, rounds)
    extra = {f"{name}_venv_steps_per_s": rate for name, rate in venv_rates.items()}
    return {**_ratio_result(rates, "env steps/s", target=1.0), **extra}


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "env_single": bench_env_single,
    "env_vector": bench_env_vector,
    "sb3_ppo": bench_sb3_ppo,
}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of the ratio benchmarks (README-ready)."""
    lines = ["| benchmark | ours | baseline | unit | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['ours']:,.0f} | {r['baseline']:,.0f} | {r['unit']} | {r['ratio']:.2f}x "
            f"| >= {r['target']:.1f}x | {'yes' if r['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with few steps (noisy ratios)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark.json"), help="JSON results file")
    args = parser.parse_args(argv)
    results = {name: BENCHMARKS[name](args.quick) for name in (args.only or BENCHMARKS)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"quick": args.quick, "results": results})
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
