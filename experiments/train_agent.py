"""Train one RL halting policy (stable-baselines3) and compare it with the halt head on the test split.

    python experiments/train_agent.py --task regime-chain --step-cost 0.01 --timesteps 200000
    python experiments/train_agent.py --task sp500 --algo dqn --out runs/agents/sp500_dqn
    python experiments/train_agent.py --task csv --path prices.csv --checkpoint runs/my-trm

Any other ``--name value`` flag is a ``load_task`` override of the task (``--path`` for csv).

The agent trains on the halt split (``--split``) and is evaluated on every test sample, next to
the supervised halt head (threshold 0.5) and the oracle, under the environment's default step cost.
It is saved as ``<out>.pt`` (weights) and ``<out>.json`` (settings), which ``RLHaltingPolicy.load`` and
``compare_halting.py --rl`` take, and ``<out>.zip``, an SB3 export for RL Zoo and SB3 (never loaded here).
TensorBoard logs go to ``<out>_tensorboard/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from agents import HaltHeadPolicy, OraclePolicy, curve_from_episodes, evaluate_policies, train_rl_policy
from agents.rl import agent_files
from trm_env.tasks import SPLITS, TASK_NAMES, load_task, overrides_from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sp500", choices=TASK_NAMES)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "dqn"])
    parser.add_argument("--step-cost", type=float, default=0.01, help="cost of each 'continue' during training")
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, help="default: agents.rl.N_ENVS of the algo (ppo 128, dqn 16)")
    parser.add_argument("--split", default="halt", choices=SPLITS, help="training split (default: halt)")
    parser.add_argument("--checkpoint", help="TRM checkpoint (default: the shipped one for the task)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the agent trains")
    parser.add_argument("--out", type=Path, help="where to save the agent, <out>.pt/.json/.zip "
                        "(default runs/agents/<task>_<algo>_cost<c>_seed<s>)")
    args, extra = parser.parse_known_args(argv)
    task = load_task(args.task, **overrides_from_args(extra))
    out = args.out or Path("runs") / "agents" / f"{args.task}_{args.algo}_cost{args.step_cost:g}_seed{args.seed}"
    env_kwargs = {} if args.checkpoint is None else {"checkpoint": args.checkpoint}
    policy = train_rl_policy(task=task, algo=args.algo, step_cost=args.step_cost, total_timesteps=args.timesteps,
                             seed=args.seed, n_envs=args.n_envs, split=args.split, out=out, device=args.device,
                             tensorboard_log=Path(f"{out}_tensorboard"), **env_kwargs)  # fmt: skip
    episodes = evaluate_policies([policy, HaltHeadPolicy(0.5), OraclePolicy()], task, **env_kwargs)
    curves = curve_from_episodes(episodes)
    columns = ["policy", "param", "mean_steps", "accuracy", "mean_pnl", "profit_weighted_ce", "mean_return"]
    with pd.option_context("display.width", 160):
        print(f"saved {agent_files(out)[0]} (and its .json settings, .zip SB3 export)\n")
        print(curves[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
