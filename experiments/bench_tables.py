"""Benchmark rows of the model and the rollout table (see ``benchmark.py`` for the list and the targets)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from timing import best_rates, ratio_result
from torch.utils.flop_counter import FlopCounterMode

import trm_env.rollouts as rollouts_module
from agents.curves import rule_policies
from agents.evaluation import evaluate_by_stepping, evaluate_policies
from agents.policies import HaltingPolicy
from trm_env.env import HaltingEnv
from trm_env.model import TinyRecursiveModel, torch_threads
from trm_env.rollouts import Rollouts, shipped_checkpoint, simulate

ROLLOUT_ROWS, ROLLOUT_STEPS, MATMUL_WIDTH, WIDE_HIDDEN = 32768, 16, 256, 256
EVAL_TASK, NUM_VECTOR_ENVS = "regime-chain", 64


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
    result = ratio_result(best_rates(runs, rounds), "GFLOP/s", target=0.4)
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
    shipped = TinyRecursiveModel.load(shipped_checkpoint("sp500"))  # input width 34, hidden 128, n_latent 3
    x = torch.randn(rows, shipped.input_dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    wide = TinyRecursiveModel(**{**shipped.config, "hidden_dim": WIDE_HIDDEN}).eval()
    reps = 3 if quick else 20
    result = _rollout_row(shipped, x, rounds=1 if quick else 5, reps=reps)
    wide_result = _rollout_row(wide, x, rounds=1 if quick else 3, reps=reps)
    extra = {"rows": rows, "steps": ROLLOUT_STEPS, "threads": torch.get_num_threads()}
    return {**result, **extra, "hidden_256": wide_result}


def _table_rate(policies: list[HaltingPolicy], table: Rollouts) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        evaluate_policies(policies, table)
        return len(policies) * table.num_samples / (time.perf_counter() - start)

    return run


def _stepping_rate(policies: list[HaltingPolicy]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for policy in policies:
            evaluate_by_stepping(policy, EVAL_TASK)
        return len(policies) * len(simulate(EVAL_TASK).index) / (time.perf_counter() - start)

    return run


def _free_running_rate(policies: list[HaltingPolicy], steps: int) -> Callable[[], float]:
    """Episodes/s of the native vector env (64 envs, autoreset) acting with each policy for ``steps`` steps."""
    envs = gym.make_vec("trm_env/TRMHalting-RegimeChain-v0", num_envs=NUM_VECTOR_ENVS,
                        vectorization_mode="vector_entry_point")  # fmt: skip

    def run() -> float:
        episodes, start = 0, time.perf_counter()
        for policy in policies:
            obs, info = envs.reset(seed=0)
            policy.bind(envs.unwrapped.rollouts, envs.unwrapped.step_cost)
            for _ in range(steps):
                obs, _, terminated, _, info = envs.step(policy.act(obs, info))
                episodes += int(np.count_nonzero(terminated))
        return episodes / (time.perf_counter() - start)

    return run


def bench_evaluate_table(quick: bool) -> dict[str, Any]:
    """The 40 default rule points on regime-chain's test split: table vs env-driven evaluation vs free-running."""
    table = simulate(EVAL_TASK)
    policies = rule_policies()
    observation_only = [p for p in policies if p.name != "oracle"]
    rounds = 1 if quick else 3
    rates = best_rates({"ours": _table_rate(policies, table), "baseline": _stepping_rate(policies)}, rounds)
    free = best_rates({"free": _free_running_rate(observation_only, 50 if quick else 500)}, rounds)["free"]
    result = ratio_result(rates, "episodes/s", target=20.0)
    return {**result, "free_running": free, "ratio_vs_free_running": rates["ours"] / free, "target_vs_free": 5.0,
            "met_vs_free": rates["ours"] / free >= 5.0, "points": len(policies)}  # fmt: skip


def bench_env_from_saved(quick: bool) -> dict[str, Any]:
    """Builds/s of a HaltingEnv from a saved table vs from a fresh simulation (no disk cache), val split."""
    model = TinyRecursiveModel.load(shipped_checkpoint(EVAL_TASK))
    with tempfile.TemporaryDirectory() as tmp:
        saved = simulate(EVAL_TASK, model, split="val", cache_dir=False).save(Path(tmp) / "val")

        def from_saved() -> float:
            start = time.perf_counter()
            HaltingEnv(rollouts=Rollouts.load(saved))
            return 1.0 / (time.perf_counter() - start)

        def from_model() -> float:
            start = time.perf_counter()
            HaltingEnv(rollouts=_fresh_simulation(model))
            return 1.0 / (time.perf_counter() - start)

        rates = best_rates({"ours": from_saved, "baseline": from_model}, rounds=2 if quick else 5)
    return ratio_result(rates, "env builds/s", target=10.0)


def _fresh_simulation(model: TinyRecursiveModel) -> Rollouts:
    """Simulate regime-chain's val split afresh: no disk cache, and the in-memory cache emptied first."""
    rollouts_module._MEMORY.clear()
    return simulate(EVAL_TASK, model, split="val", cache_dir=False)
