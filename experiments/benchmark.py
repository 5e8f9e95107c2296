"""Speed benchmarks, measured side by side in one run and reported as ratios (JSON out, table printed).

Each benchmark is a function ``(quick: bool) -> dict`` registered in ``BENCHMARKS``; ratio benchmarks
return ``ours``, ``baseline`` (both in ``unit``), ``ratio = ours / baseline`` and the ``target`` ratio.

- ``env_single``: ``gymnasium.make("trm_env/TRMHalting-v0")`` vs ``gymnasium.make("CartPole-v1")``,
  random actions from a seeded Generator, resets included (target >= 1x);
- ``env_vector``: the native vector env vs ``CartPoleVectorEnv``, 64 envs each (target >= 2x);
- ``sb3_ppo``: PPO("MlpPolicy") with identical hyperparameters and 8 envs on our SB3 vec env vs on
  CartPole-v1 in a ``DummyVecEnv`` (target >= 1x: the env must cost less than CartPole's physics);
- ``model_rollout``: ``TinyRecursiveModel.rollout`` of 32768 standard-normal samples for K=16 steps
  with the shipped sp500 architecture, FLOPs counted by ``FlopCounterMode``, vs a float32
  ``torch.mm`` of 32768x256 by 256x256 (target >= 0.4x of its FLOP rate); a second row gives the
  same for a hidden_dim=256 model of the same shape. Both run under the default thread count.

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
from torch.utils.flop_counter import FlopCounterMode

import trm_env  # noqa: F401  (registers the trm_env ids)
from trm_env.io import write_json_atomic
from trm_env.model import TinyRecursiveModel, torch_threads
from trm_env.sb3 import make_sb3_vec_env

ENV_ID = "trm_env/TRMHalting-v0"
CARTPOLE = "CartPole-v1"
NUM_VECTOR_ENVS = 64
PPO_ENVS, PPO_STEPS = 8, 128
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "trm_env" / "checkpoints" / "sp500"
ROLLOUT_ROWS, ROLLOUT_STEPS, MATMUL_WIDTH, WIDE_HIDDEN = 32768, 16, 256, 256


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
    return _ratio_result(_best_rates(runs, rounds=1 if quick else 3), "env steps/s", target=2.0)


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
        rates = _best_rates({name: _ppo_rate(venv, timesteps) for name, venv in venvs.items()}, rounds)
    steps = 500 if quick else 5_000
    venv_rates = _best_rates({name: _batched_step_rate(venv, steps) for name, venv in venvs.items()}, rounds)
    extra = {f"{name}_venv_steps_per_s": rate for name, rate in venv_rates.items()}
    return {**_ratio_result(rates, "env steps/s", target=1.0), **extra}


def _matmul_rate(rows: int, reps: int) -> Callable[[], float]:
    """GFLOP/s of the best of ``reps`` float32 ``torch.mm`` calls, (rows x 256) @ (256 x 256)."""
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(rows, MATMUL_WIDTH, generator=generator)
    b = torch.randn(MATMUL_WIDTH, MATMUL_WIDTH, generator=generator)
    out = torch.empty(rows, MATMUL_WIDTH)
    flops = 2 * rows * MATMUL_WIDTH * MATMUL_WIDTH

    def run() -> float:
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        return flops / best / 1e9

    return run


def _rollout_rate(model: TinyRecursiveModel, x: torch.Tensor, flops: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        model.rollout(x, steps=ROLLOUT_STEPS)
        return flops / (time.perf_counter() - start) / 1e9

    return run


def _rollout_row(model: TinyRecursiveModel, x: torch.Tensor, rounds: int, reps: int) -> dict[str, Any]:
    """One model's rollout GFLOP/s vs the 256-wide matmul's, alternated over ``rounds``."""
    # FlopCounterMode sees the calling thread only: count on rollout's sequential (one-thread) path
    with torch_threads(1), FlopCounterMode(display=False) as counter:
        model.rollout(x, steps=ROLLOUT_STEPS)
    flops = counter.get_total_flops()
    model.rollout(x, steps=ROLLOUT_STEPS)  # warm-up outside the counter
    runs = {"ours": _rollout_rate(model, x, flops), "baseline": _matmul_rate(x.shape[0], reps)}
    result = _ratio_result(_best_rates(runs, rounds), "GFLOP/s", target=0.4)
    wall = flops / (result["ours"] * 1e9)
    return {
        **result,
        "hidden_dim": model.config["hidden_dim"],
        "flops_per_rollout": flops,
        "rollout_s": wall,
        "sample_steps_per_s": x.shape[0] * ROLLOUT_STEPS / wall,
    }


def bench_model_rollout(quick: bool) -> dict[str, Any]:
    """``rollout`` GFLOP/s (FLOPs by ``FlopCounterMode``) vs a float32 32768x256 @ 256x256 ``torch.mm``.

    The shipped sp500 model (hidden_dim 128) is the measured row (target >= 0.4x); ``hidden_256``
    holds the same measurement for a hidden_dim=256 model of the same shape, whose matmuls are as
    wide as the reference's. Default thread count; ``--quick`` uses 4096 rows and one round.
    """
    rows = 4_096 if quick else ROLLOUT_ROWS
    shipped = TinyRecursiveModel.load(SHIPPED_CHECKPOINT)  # input width 34, hidden 128, n_latent 3, n_cycles 1
    x = torch.randn(rows, shipped.input_dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    wide = TinyRecursiveModel(**{**shipped.config, "hidden_dim": WIDE_HIDDEN}).eval()
    reps = 3 if quick else 20
    result = _rollout_row(shipped, x, rounds=1 if quick else 5, reps=reps)
    wide_result = _rollout_row(wide, x, rounds=1 if quick else 3, reps=reps)
    extra = {"rows": rows, "steps": ROLLOUT_STEPS, "threads": torch.get_num_threads()}
    return {**result, **extra, "hidden_256": wide_result}


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "env_single": bench_env_single,
    "env_vector": bench_env_vector,
    "sb3_ppo": bench_sb3_ppo,
    "model_rollout": bench_model_rollout,
}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of the ratio benchmarks (README-ready), then one of the rollout details if run."""
    lines = ["| benchmark | ours | baseline | unit | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    rows = []
    for name, r in results.items():
        rows.append((name, r))
        if name == "model_rollout":
            rows.append((f"{name} (hidden_dim={r['hidden_256']['hidden_dim']})", r["hidden_256"]))
    for name, r in rows:
        lines.append(
            f"| {name} | {r['ours']:,.0f} | {r['baseline']:,.0f} | {r['unit']} | {r['ratio']:.2f}x "
            f"| >= {r['target']:.1f}x | {'yes' if r['met'] else 'NO'} |"
        )
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
