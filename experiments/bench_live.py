"""Benchmark rows of live halting (see ``benchmark.py`` for the list and the targets).

Every row runs on the CPU with one torch thread, TRM seed 0, and alternates the runs it compares
(``agents.measure.time_live``: medians of rounds, live alternated with full depth at the same batch size).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.curves import DEFAULT_PARAMS
from agents.evaluation import evaluate_policies
from agents.fitted_q import FittedQPolicy
from agents.heads import ACTPolicy, ContinuationHeadPolicy, CorrectHeadPolicy, PonderPolicy
from agents.measure import time_live
from agents.policies import HaltHeadPolicy, HaltingPolicy, make_policy
from agents.regressors import REGRESSORS
from agents.rl import train_rl_policy
from trm_env.core import DEFAULT_STEP_COST
from trm_env.model import torch_threads
from trm_env.observation import observation_layout
from trm_env.rollouts import resolve_model, simulate
from trm_env.stepping import TableSpec
from trm_env.tasks import load_task

BATCH, VECTOR_ENVS = 1024, 64


def _setup(task: str) -> tuple[Any, torch.Tensor, TableSpec]:
    loaded = load_task(task)
    model = resolve_model(None, loaded)
    rows = loaded.split("test")
    spec = TableSpec(task, "test", observation_layout(model.num_classes, model.task_head.in_features),
                     model.num_classes, model.max_steps, len(rows), model.pnl_scale)  # fmt: skip
    return model, torch.from_numpy(np.ascontiguousarray(loaded.features[rows])), spec


def _val_threshold(task: str) -> float:
    """The halt head's threshold with the best mean return on val (its study grid)."""
    points = [HaltHeadPolicy(t) for t in DEFAULT_PARAMS["halt_head"]]
    frame = evaluate_policies(points, simulate(task, split="val"))
    return float(frame.groupby("param")["episode_return"].mean().idxmax())


def bench_live_halting(quick: bool) -> dict[str, Any]:
    """The halt head at its val-chosen threshold, live at batch 1024 on test, vs the same model run for K steps:
    the speed-up must reach 0.8 x K / mean steps (regime-chain; pointer's figure beside it)."""
    rounds, rows = 2 if quick else 5, {}
    with torch_threads(1):
        for task in ("regime-chain", "pointer"):
            model, inputs, spec = _setup(task)
            threshold = _val_threshold(task)
            timed = time_live(model, inputs, {"halt_head": HaltHeadPolicy(threshold)}, spec, DEFAULT_STEP_COST, rounds)
            row = timed["halt_head"]
            rows[task] = {**row, "threshold": threshold, "samples": len(inputs),
                          "full_ms_per_1k": timed["full_depth"]["wall_ms_per_1k"],
                          "target": 0.8 * row["ideal_speedup"], "met": row["speedup"] >= 0.8 * row["ideal_speedup"]}
    main = rows["regime-chain"]
    return {"ours": 1e6 / main["wall_ms_per_1k"], "baseline": 1e6 / main["full_ms_per_1k"], "unit": "samples/s",
            "ratio": main["speedup"], "target": main["target"], "met": main["met"], "tasks": rows}  # fmt: skip


def _overhead_policies(task: str, quick: bool) -> dict[str, HaltingPolicy]:
    halt = simulate(task, split="halt")
    knobs = {"halt_head": 0.9, "confidence": 0.95, "kl_exit": 0.003, "entropy_exit": 0.001, "patience": 3,
             "fixed_depth": 5, "random": 0.2}  # near regime-chain's val choices
    rules = {name: make_policy(name, param) for name, param in knobs.items()}
    fitted_q = {f"fitted_q[{name}]": FittedQPolicy(0.02, name).fit(halt) for name in REGRESSORS}  # each candidate
    learned = {**fitted_q, "correct_head": CorrectHeadPolicy(0.9).fit(halt),
               "continuation_head": ContinuationHeadPolicy(0.5).fit(halt), "ponder": PonderPolicy(0.3).fit(halt),
               "act": ACTPolicy(0.01).fit(halt)}  # fmt: skip
    ppo = train_rl_policy(task=task, total_timesteps=4096 if quick else 50_000, progress=False)
    return {**rules, **learned, "rl_ppo": ppo}


def bench_policy_overhead(quick: bool) -> dict[str, Any]:
    """The share of live wall time each family spends deciding (regime-chain test, batch 1024): at most 10% for
    the rules, the heads and fitted-Q; PPO's reported."""
    task = "regime-chain"
    with torch_threads(1):
        policies = _overhead_policies(task, quick)
        model, inputs, spec = _setup(task)
        timed = time_live(model, inputs, policies, spec, DEFAULT_STEP_COST, 2 if quick else 5)
    shares = {name: timed[name]["policy_share"] for name in policies}
    judged = {name: share for name, share in shares.items() if not name.startswith("rl_")}
    worst = max(judged, key=judged.get)
    return {"shares": shares, "worst": worst, "worst_share": judged[worst], "target": 0.10,
            "met": judged[worst] <= 0.10, "rl_ppo_share": shares["rl_ppo"]}  # fmt: skip


def _vector_rate(live: bool, steps: int) -> float:
    envs = gym.make_vec("trm_env/TRMHalting-RegimeChain-v0", num_envs=VECTOR_ENVS,
                        vectorization_mode="vector_entry_point", live=live)  # fmt: skip
    actions = np.random.default_rng(0).integers(0, 2, size=(steps, VECTOR_ENVS))
    envs.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    return steps * VECTOR_ENVS / (time.perf_counter() - start)


def bench_live_env(quick: bool) -> dict[str, Any]:
    """Env steps/s of the live vector env (64 envs, one model step per call) against the table's (reported)."""
    steps = 100 if quick else 1_000
    with torch_threads(1):
        rates = {"live": 0.0, "table": 0.0}
        for _ in range(1 if quick else 3):
            for name in rates:
                rates[name] = max(rates[name], _vector_rate(name == "live", steps))
    return {"ours": rates["live"], "baseline": rates["table"], "unit": "env steps/s",
            "ratio": rates["live"] / rates["table"]}  # fmt: skip


def format_live(results: dict[str, dict[str, Any]]) -> list[str]:
    """The lines ``benchmark.py`` prints for these rows."""
    lines = []
    if "live_halting" in results:
        for task, r in results["live_halting"]["tasks"].items():
            lines.append(f"live_halting {task}: halt head > {r['threshold']:g} (val-chosen), {r['samples']} test "
                         f"samples, batch {BATCH}: {r['wall_ms_per_1k']:.1f} vs full depth {r['full_ms_per_1k']:.1f} "
                         f"ms per 1000 samples = {r['speedup']:.2f}x (ideal {r['ideal_speedup']:.2f}x, target "
                         f"{r['target']:.2f}x: {'met' if r['met'] else 'NOT met'}); deciding {r['policy_share']:.1%}")
    if "policy_overhead" in results:
        r = results["policy_overhead"]
        shares = ", ".join(f"{name} {share:.1%}" for name, share in r["shares"].items())
        lines.append(f"policy_overhead (share of live wall time spent deciding, regime-chain, batch {BATCH}): "
                     f"{shares}; worst of rules/heads/fitted-Q {r['worst']} {r['worst_share']:.1%} (target <= 10%: "
                     f"{'met' if r['met'] else 'NOT met'})")  # fmt: skip
    if "live_env" in results:
        r = results["live_env"]
        lines.append(f"live_env: {VECTOR_ENVS} envs live {r['ours']:,.0f} vs table {r['baseline']:,.0f} env steps/s "
                     f"({r['ratio']:.3f}x; reported only)")  # fmt: skip
    return lines
