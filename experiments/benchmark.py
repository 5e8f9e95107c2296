"""Speed benchmarks, measured side by side in one run and reported as ratios (JSON out, table printed).

Each benchmark is a function ``(quick: bool) -> dict`` registered in ``BENCHMARKS``; ratio benchmarks
return ``ours``, ``baseline`` (both in ``unit``), ``ratio = ours / baseline`` and the ``target`` ratio.

- ``env_single``: ``gymnasium.make("trm_env/TRMHalting-v0")`` vs ``gymnasium.make("CartPole-v1")``,
  random actions from a seeded Generator, resets included (target >= 1.5x; goal 3x);
- ``env_vector``: the native vector env vs ``CartPoleVectorEnv``, 64 envs each (target >= 2.4x; goal 10x);
- ``sb3_ppo``: PPO("MlpPolicy") with identical hyperparameters and 8 envs on our SB3 vec env vs on
  CartPole-v1 in a ``DummyVecEnv`` (target >= 1x: the env must cost less than CartPole's physics);
- ``model_rollout``: ``TinyRecursiveModel.rollout`` of 32768 standard-normal samples for K=16 steps
  with the shipped sp500 architecture, FLOPs counted by ``FlopCounterMode``, vs a float32
  ``torch.mm`` of 32768x256 by 256x256 (target >= 0.4x of its FLOP rate); a second row gives the
  same for a hidden_dim=256 model of the same shape. Both run under the default thread count.
- ``evaluate_table``: the 40 default rule points on regime-chain's test split, evaluated from its
  ``Rollouts`` table (``agents.evaluate_policies``) vs the env-driven reference
  (``agents.evaluate_by_stepping``, one sub-env per sample): episodes/s (target >= 20x); the row also
  holds the rate of the native vector env (64 envs, NEXT_STEP autoreset) free-running the 39
  observation-only points, and the table's ratio to it (target >= 5x).
- ``env_from_saved``: building a ``HaltingEnv`` from a saved ``Rollouts`` folder vs simulating the table
  (disk cache off) and building it: builds/s on regime-chain's val split (target >= 10x).
- ``live_halting`` (``bench_live.py``): the halt head at its val-chosen threshold run live on regime-chain's
  test split at batch 1024 against the same model run for all K steps at the same batch size (target:
  speed-up >= 0.8 x K / mean steps); pointer's figure beside it;
- ``policy_overhead``: the share of live wall time each family spends deciding (target <= 10% for the rules,
  the heads and fitted-Q; PPO's reported);
- ``live_env``: env steps/s of the live vector env (64 envs) against the table's (reported, no target);
- ``ray_rl_stage`` (``bench_ray.py``): the study's RL stage (6 PPO agents) on a local Ray with 2 CPUs vs
  serially, each in a fresh process (target >= 1.6x): warm, as inside a run, in the row; cold (Ray's
  start-up and the workers' imports charged to this stage) and Ray with 1 CPU (the scaling) below it.

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
from bench_live import bench_live_env, bench_live_halting, bench_policy_overhead, format_live
from bench_ray import bench_ray_rl_stage
from bench_tables import NUM_VECTOR_ENVS, bench_env_from_saved, bench_evaluate_table, bench_model_rollout
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv
from timing import best_rates, ratio_result

import trm_env  # noqa: F401  (registers the trm_env ids)
from trm_env.io import write_json_atomic
from trm_env.model import torch_threads
from trm_env.sb3 import make_sb3_vec_env

ENV_ID = "trm_env/TRMHalting-v0"
CARTPOLE = "CartPole-v1"
PPO_ENVS, PPO_STEPS = 8, 128


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
    return ratio_result(best_rates(runs, rounds=1 if quick else 3), "env steps/s", target=1.5)


def _batched_step_rate(envs: gym.vector.VectorEnv | VecEnv, steps: int) -> Callable[[], float]:
    """Env steps/s of a Gymnasium or SB3 vector env under seeded random actions, autoreset included."""

    def run() -> float:
        actions = np.random.default_rng(0).integers(0, 2, size=(steps, envs.num_envs))
        if isinstance(envs, VecEnv):
            envs.seed(0)
            envs.reset()
        else:
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
        name: _batched_step_rate(
            gym.make_vec(env_id, num_envs=NUM_VECTOR_ENVS, vectorization_mode="vector_entry_point"), steps
        )
        for name, env_id in (("ours", ENV_ID), ("baseline", CARTPOLE))
    }
    return ratio_result(best_rates(runs, rounds=1 if quick else 3), "env steps/s", target=2.4)


def _ppo_rate(venv: VecEnv, timesteps: int) -> Callable[[], float]:
    def run() -> float:
        model = PPO("MlpPolicy", venv, n_steps=PPO_STEPS, seed=0, device="cpu")
        start = time.perf_counter()
        model.learn(timesteps)
        return model.num_timesteps / (time.perf_counter() - start)

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
    with torch_threads(1):  # tiny networks: threads only add noise on a shared machine
        rates = best_rates({name: _ppo_rate(venv, timesteps) for name, venv in venvs.items()}, rounds)
    steps = 500 if quick else 5_000
    venv_rates = best_rates({name: _batched_step_rate(venv, steps) for name, venv in venvs.items()}, rounds)
    extra = {f"{name}_venv_steps_per_s": rate for name, rate in venv_rates.items()}
    return {**ratio_result(rates, "env steps/s", target=1.0), **extra}


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "env_single": bench_env_single,
    "env_vector": bench_env_vector,
    "sb3_ppo": bench_sb3_ppo,
    "model_rollout": bench_model_rollout,
    "evaluate_table": bench_evaluate_table,
    "env_from_saved": bench_env_from_saved,
    "live_halting": bench_live_halting,
    "policy_overhead": bench_policy_overhead,
    "live_env": bench_live_env,
    "ray_rl_stage": bench_ray_rl_stage,
}
OWN_FORMAT = ("policy_overhead", "live_env")  # rows printed by their own lines, not as ratio rows


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of the ratio benchmarks (README-ready), then one of the rollout details if run."""
    lines = ["| benchmark | ours | baseline | unit | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    rows = []
    for name, r in results.items():
        if name in OWN_FORMAT:
            continue
        rows.append((name, r))
        if name == "model_rollout":
            rows.append((f"{name} (hidden_dim={r['hidden_256']['hidden_dim']})", r["hidden_256"]))
    for name, r in rows:
        lines.append(
            f"| {name} | {r['ours']:,.0f} | {r['baseline']:,.0f} | {r['unit']} | {r['ratio']:.2f}x "
            f"| >= {r['target']:.1f}x | {'yes' if r['met'] else 'NO'} |"
        )
    if "evaluate_table" in results:
        r = results["evaluate_table"]
        lines.append(f"| evaluate_table vs free-running vector env | {r['ours']:,.0f} | {r['free_running']:,.0f} "
                     f"| episodes/s | {r['ratio_vs_free_running']:.2f}x | >= {r['target_vs_free']:.1f}x "
                     f"| {'yes' if r['met_vs_free'] else 'NO'} |")  # fmt: skip
    lines += format_live(results)
    if "ray_rl_stage" in results:
        r = results["ray_rl_stage"]
        cold = "met" if r["met_cold"] else "NOT met"
        lines.append(f"\nray_rl_stage: {r['agents']} agents x {r['timesteps']:,} steps, warm (inside a run): "
                     f"serial {r['serial_warm_s']:.1f} s, Ray 2 CPUs {r['ray_2cpu_warm_s']:.1f} s ({r['ratio']:.2f}x); "
                     f"cold (the stage alone, start-up included): serial {r['serial_cold_s']:.1f} s, Ray 2 CPUs "
                     f"{r['ray_2cpu_cold_s']:.1f} s ({r['cold_ratio']:.2f}x, {cold}), Ray 1 CPU "
                     f"{r['ray_1cpu_cold_s']:.1f} s (1 -> 2 CPUs: {r['scaling_1_to_2_cpus']:.2f}x)")  # fmt: skip
    if "model_rollout" in results:
        r = results["model_rollout"]
        lines += [
            "",
            f"rollout of {r['rows']:,} samples x K={r['steps']}, {r['threads']} torch threads:",
            "",
            "| model | FLOPs/rollout | best wall s | GFLOP/s | matmul GFLOP/s | ratio | sample-steps/s | vs 40% |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, row in (("sp500 checkpoint", r), ("random init, same shape", r["hidden_256"])):
            lines.append(
                f"| {label}, hidden_dim={row['hidden_dim']} | {row['flops_per_rollout'] / 1e9:,.2f} G "
                f"| {row['rollout_s']:.3f} | {row['ours']:,.1f} | {row['baseline']:,.1f} | {row['ratio']:.1%} "
                f"| {row['sample_steps_per_s']:,.0f} | {'PASS' if row['met'] else 'FAIL'} |"
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
