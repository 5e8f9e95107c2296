"""Tune the RL halting agent against fitted-Q: candidates trained on the halt split, scored on val.

For one task and shipped TRM seed:

1. fitted-Q is fitted on the **halt** split and its margin (``MARGINS``) picked on **val**;
2. the best fixed depth (the k in 1..K with the highest val return) is the reference;
3. every RL candidate is trained on **halt** once per RL seed and scored on **val**.

Per candidate the table gives the timesteps, the wall and CPU seconds of one training (process CPU
time: torch runs on one thread, so CPU seconds are single-core seconds), the val mean return, the gain
over the best fixed depth and the **share of fitted-Q's gain** (means over the RL seeds; ``share_lo``
and ``share_hi`` are the worst and best seed). Returns use the profit-weighted CE reward and the
evaluation step cost (0.01). The test split is never read.

    python experiments/tune_rl.py --task regime-chain --trm-seed 0 --rl-seeds 0 1 2
    python experiments/tune_rl.py --candidates ppo_full --curve 10000,30000,100000,300000,1000000

With ``--curve`` every run is also scored on val at those timesteps (one run per seed, evaluated along
the way; with a constant learning rate that is what a run stopped there would give). ``--curve-split test``
scores the curve on test instead, as a report only (nothing is chosen from it): the learning curve the
study shows when PPO falls short of its target.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pandas as pd
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from agents.evaluation import evaluate, halting_steps
from agents.fitted_q import MARGINS, FittedQPolicy
from agents.rl import RLHaltingPolicy, train_rl_policy
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts, shipped_checkpoint, simulate

REWARD = "profit_weighted_ce"
# agents.rl.HYPERPARAMETERS before this tuning, kept here as the baseline
OLD_PPO = dict(n_steps=64, batch_size=256, n_epochs=4, learning_rate=1e-3, gamma=1.0, gae_lambda=0.95,
               ent_coef=0.01, policy_kwargs=dict(net_arch=[64, 64]))  # fmt: skip
OLD_DQN = dict(learning_rate=5e-4, buffer_size=50_000, learning_starts=1_000, batch_size=128, gamma=1.0,
               train_freq=4, target_update_interval=500, exploration_fraction=0.3, exploration_final_eps=0.02,
               policy_kwargs=dict(net_arch=[64, 64]))  # fmt: skip
# The tuned PPO (= agents.rl.HYPERPARAMETERS["ppo"] now): 128 envs x 8 steps = 1024 transitions per
# rollout taken as one minibatch (an update costs about as much at 1024 rows as at 256, so the CPU per
# step drops ~2x); gae_lambda = 1, Monte Carlo advantages: at 0.95 the advantages lean on a critic that
# lags the policy and fits the halt split's noise (share of fitted-Q's gain at 200k steps on TRM seed 0:
# 0.60 vs 0.94); a one-hot step input (StepOneHot), one halting boundary per step as fitted-Q has one
# regressor per step (0.43 without it).
PPO_CORE = dict(n_steps=8, batch_size=1024, n_epochs=4, learning_rate=1e-3, gamma=1.0, gae_lambda=1.0,
                ent_coef=0.01, step_onehot=True, policy_kwargs=dict(net_arch=[64, 64]))  # fmt: skip


def ppo(total_timesteps: int, n_envs: int = 128, **changes: Any) -> dict[str, Any]:
    """A PPO candidate: PPO_CORE with ``changes``."""
    return dict(algo="ppo", total_timesteps=total_timesteps, n_envs=n_envs, hyperparameters={**PPO_CORE, **changes})


CANDIDATES: dict[str, dict[str, Any]] = {
    # the defaults before this tuning, at the quick config's budget
    "ppo_default": dict(algo="ppo", total_timesteps=100_000, n_envs=16, hyperparameters=OLD_PPO),
    "dqn_default": dict(algo="dqn", total_timesteps=100_000, n_envs=16, hyperparameters=OLD_DQN),
    # DQN with the one-hot step
    "dqn_onehot": dict(algo="dqn", total_timesteps=200_000, n_envs=16,
                       hyperparameters={**OLD_DQN, "step_onehot": True}),
    "dqn_onehot_64": dict(algo="dqn", total_timesteps=200_000, n_envs=64,
                          hyperparameters={**OLD_DQN, "step_onehot": True, "train_freq": 1, "batch_size": 256}),
    "dqn_onehot_128": dict(algo="dqn", total_timesteps=200_000, n_envs=128,
                           hyperparameters={**OLD_DQN, "step_onehot": True, "train_freq": 1, "gradient_steps": 2,
                                            "batch_size": 256}),
    # PPO_CORE with one change (all worse than ppo_quick on TRM seeds 0 and 2)
    "ppo_lambda0.95": ppo(200_000, gae_lambda=0.95),
    "ppo_no_onehot": ppo(200_000, step_onehot=False),
    "ppo_ent0": ppo(200_000, ent_coef=0.0),
    "ppo_64x16": ppo(200_000, n_envs=64, n_steps=16),
    "ppo_32x32": ppo(200_000, n_envs=32, n_steps=32),
    "ppo_256x8": ppo(200_000, n_envs=256, batch_size=2048),
    # the recommendations
    "ppo_quick": ppo(200_000),
    "ppo_full": ppo(1_000_000),
    "ppo_full_decay": ppo(1_000_000, learning_rate_end=0.0),
}  # fmt: skip


def mean_return(policy: Any, table: Rollouts) -> float:
    return float(evaluate(policy, table, step_cost=DEFAULT_STEP_COST, reward=REWARD).episode_return.mean())


def references(task: str, trm_seed: int, curve_split: str = "val") -> dict[str, Any]:
    """The halt and val tables, the best fixed depth on val and fitted-Q (margin picked on val); for the learning
    curve, the ``curve_split`` table and both references' returns on it (their val-chosen points)."""
    checkpoint = shipped_checkpoint(task, trm_seed)
    halt, val = simulate(task, checkpoint, split="halt"), simulate(task, checkpoint, split="val")
    curve = simulate(task, checkpoint, split=curve_split)
    depth_returns = val.returns(REWARD, DEFAULT_STEP_COST).mean(axis=0)
    depth = int(depth_returns.argmax()) + 1
    fitted = FittedQPolicy().fit(halt, DEFAULT_STEP_COST, REWARD)
    by_margin = {margin: mean_return(fitted.with_margin(margin), val) for margin in MARGINS}
    margin = max(by_margin, key=by_margin.__getitem__)
    return dict(halt=halt, val=val, fixed_depth=depth, fixed=float(depth_returns.max()), margin=margin,
                fitted_q=by_margin[margin], curve=curve,
                curve_fixed=float(curve.returns(REWARD, DEFAULT_STEP_COST)[:, depth - 1].mean()),
                curve_fitted_q=mean_return(fitted.with_margin(margin), curve))  # fmt: skip


class ValCurve(BaseCallback):
    """Score the agent on val when the run passes each of ``steps`` timesteps."""

    def __init__(self, steps: list[int], val: Rollouts) -> None:
        super().__init__()
        self.steps, self.val, self.points = sorted(steps), val, []

    def _on_step(self) -> bool:
        while len(self.points) < len(self.steps) and self.num_timesteps >= self.steps[len(self.points)]:
            self.points.append((self.steps[len(self.points)], mean_return(RLHaltingPolicy(self.model), self.val)))
        return True


def train_and_score(name: str, spec: dict[str, Any], rl_seed: int, ref: dict[str, Any], task: str,
                    curve: list[int]) -> tuple[dict[str, Any], list[tuple[int, float]]]:  # fmt: skip
    """One training on halt; its val row and (with ``curve``) its val learning curve."""
    callback = ValCurve([s for s in curve if s <= spec["total_timesteps"]], ref["curve"]) if curve else None
    cpu, wall = time.process_time(), time.perf_counter()
    policy = train_rl_policy(task=task, rollouts=ref["halt"], algo=spec["algo"], step_cost=DEFAULT_STEP_COST,
                             total_timesteps=spec["total_timesteps"], seed=rl_seed, n_envs=spec["n_envs"],
                             split="halt", progress=False, hyperparameters=spec["hyperparameters"],
                             callback=callback)  # fmt: skip
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    row = dict(candidate=name, rl_seed=rl_seed, timesteps=spec["total_timesteps"], wall_s=wall, cpu_s=cpu,
               val_return=mean_return(policy, ref["val"]), halt_return=mean_return(policy, ref["halt"]),
               mean_steps=float(halting_steps(policy, ref["val"], DEFAULT_STEP_COST, REWARD).mean()))  # fmt: skip
    return row, callback.points if callback else []


def add_shares(frame: pd.DataFrame, fixed: float, fitted_q: float, column: str = "val_return") -> pd.DataFrame:
    frame["gain"] = frame[column] - fixed
    frame["share"] = frame["gain"] / (fitted_q - fixed)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="regime-chain")
    parser.add_argument("--trm-seed", type=int, default=0, help="the shipped TRM seed (default 0)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                        metavar="NAME", help=f"default: all of {', '.join(CANDIDATES)}")  # fmt: skip
    parser.add_argument("--rl-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, help="override every candidate's total_timesteps")
    parser.add_argument("--curve", type=lambda s: [int(x) for x in s.split(",")], default=[],
                        help="comma-separated timesteps at which to score each run on val")  # fmt: skip
    parser.add_argument("--curve-split", default="val", choices=["val", "test"],
                        help="where --curve scores the runs (test: a report only, nothing is chosen from it)")
    parser.add_argument("--csv", help="also write the per-run rows here")
    args = parser.parse_args()

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # a one-off import (~3 s) kept out of the timings
    ref = references(args.task, args.trm_seed, args.curve_split)
    gain = ref["fitted_q"] - ref["fixed"]
    print(f"{args.task} TRM seed {args.trm_seed}, val: best fixed depth {ref['fixed_depth']} returns "
          f"{ref['fixed']:.4f}; fitted-Q (margin {ref['margin']:+g}) {ref['fitted_q']:.4f}; "
          f"gain {gain:.4f}")  # fmt: skip
    rows, curves = [], []
    runs = [(name, seed) for name in args.candidates for seed in args.rl_seeds]
    for name, seed in tqdm(runs, desc="train on halt", unit="run"):
        spec = dict(CANDIDATES[name])
        if args.timesteps:
            spec["total_timesteps"] = args.timesteps
        row, points = train_and_score(name, spec, seed, ref, args.task, args.curve)
        rows.append(row)
        curves += [dict(candidate=name, rl_seed=seed, timesteps=t, curve_return=r) for t, r in points]
        tqdm.write(f"  {name} seed {seed}: val {row['val_return']:.4f} (halt {row['halt_return']:.4f}), "
                   f"{row['cpu_s']:.1f} CPU s")  # fmt: skip

    runs_frame = add_shares(pd.DataFrame(rows), ref["fixed"], ref["fitted_q"])
    if args.csv:
        runs_frame.assign(task=args.task, trm_seed=args.trm_seed).to_csv(args.csv, index=False)
    table = runs_frame.groupby("candidate", sort=False).agg(
        timesteps=("timesteps", "first"), wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean"),
        val_return=("val_return", "mean"), gain=("gain", "mean"), share=("share", "mean"),
        share_lo=("share", "min"), share_hi=("share", "max"), halt_return=("halt_return", "mean"),
        mean_steps=("mean_steps", "mean"), seeds=("rl_seed", "size"))  # fmt: skip
    print(f"\nval, mean over RL seeds {args.rl_seeds}:")
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    if curves:
        curve = add_shares(pd.DataFrame(curves), ref["curve_fixed"], ref["curve_fitted_q"], "curve_return")
        curve = curve.groupby(["candidate", "timesteps"])
        print(f"\nlearning curve on {args.curve_split} (mean over RL seeds; share_lo/hi: worst and best seed; fixed "
              f"depth {ref['fixed_depth']} returns {ref['curve_fixed']:.4f}, fitted-Q {ref['curve_fitted_q']:.4f}):")
        print(curve.agg(mean_return=("curve_return", "mean"), share=("share", "mean"), share_lo=("share", "min"),
                        share_hi=("share", "max")).to_string(float_format=lambda x: f"{x:.4g}"))  # fmt: skip
    print(json.dumps({k: ref[k] for k in ("fixed_depth", "fixed", "margin", "fitted_q")}))


if __name__ == "__main__":
    main()
