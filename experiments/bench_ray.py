"""Benchmark row ``ray_rl_stage``: the study's RL stage run serially vs as Ray tasks (see ``benchmark.py``).

The same RL trainings as ``experiments/run.py`` submits (``agents.stages.train_rl_stage``: PPO on the halt
split of the shipped regime-chain TRMs), each side in a fresh Python process, as a user runs it:

- **cold**: from the process's start until the last agent is on disk: interpreter, imports, the backend's
  start-up (Ray's ``init`` and its workers' own imports) and the first optimizer's one-off ``torch._dynamo``
  import in every process that trains;
- **warm**: the same stage run a second time on the same backend, as later stages of a run find it.

The row's ``ratio`` is warm: a run pays Ray's start-up and its workers' imports once, whatever stages follow;
``cold_ratio`` charges them all to this one stage, as if it ran alone. Target: Ray with 2 CPUs >= 1.6x serial
on 2 cores. Serial, Ray with 2 CPUs and Ray with 1 CPU (cold only, for the scaling) alternate over ``ROUNDS``
rounds and each keeps its best time.
Run alone: ``python experiments/benchmark.py --only ray_rl_stage``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASK, TRM_SEEDS, RL_SEEDS, ROUNDS = "regime-chain", (0, 1, 2), (0, 1), 2


def _run_stage(backend: Any, folder: Path, timesteps: int) -> None:
    from agents.rl import N_ENVS
    from agents.stages import train_rl_stage
    from trm_env.rollouts import shipped_checkpoint

    settings = {"algo": "ppo", "total_timesteps": timesteps, "n_envs": N_ENVS["ppo"], "hyperparameters": {}}
    for trm in TRM_SEEDS:
        for rl in RL_SEEDS:
            backend.submit(train_rl_stage, dict(task=TASK, task_kwargs={}, checkpoint=shipped_checkpoint(TASK, trm),
                                                step_cost=0.01, seed=rl, settings=settings,
                                                out=folder / f"trm{trm}_seed{rl}.pt"))  # fmt: skip
    _, failed = backend.gather()
    if failed is not None:
        raise failed


def _child(backend_name: str, num_cpus: int, timesteps: int, passes: int, started: float) -> dict[str, float]:
    """In a fresh process: the stage ``passes`` times on one backend; seconds since ``started`` (time.time())."""
    from agents.backend import make_backend

    backend = make_backend(backend_name, num_cpus=num_cpus if backend_name == "ray" else None)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(passes):
            begin = time.time()
            _run_stage(backend, Path(tmp) / f"pass{k}", timesteps)
            times["cold_s" if k == 0 else "warm_s"] = time.time() - (started if k == 0 else begin)
    begin = time.time()
    backend.close()
    times["close_s"] = time.time() - begin
    return times


def _fresh_process(backend_name: str, num_cpus: int, timesteps: int, passes: int) -> dict[str, float]:
    """The child's times, and ``process_s``: the child's whole life as this process saw it."""
    started = time.time()
    command = [sys.executable, __file__, backend_name, str(num_cpus), str(timesteps), str(passes), repr(started)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.time() - started}


def bench_ray_rl_stage(quick: bool) -> dict[str, Any]:
    """Seconds of the RL stage (6 agents), cold and warm, serially and on a local Ray with 2 and with 1 CPUs."""
    from trm_env.rollouts import shipped_checkpoint, simulate

    timesteps = 8_192 if quick else 200_000  # the quick config's RL budget
    for seed in TRM_SEEDS:  # tables on disk first, as a run's earlier stages leave them
        simulate(TASK, shipped_checkpoint(TASK, seed), split="halt")
    runs: dict[str, list[dict[str, float]]] = {"serial": [], "ray_2cpu": [], "ray_1cpu": []}
    for _ in range(1 if quick else ROUNDS):  # alternate the three sides and keep each one's best
        runs["serial"].append(_fresh_process("serial", 1, timesteps, 2))
        runs["ray_2cpu"].append(_fresh_process("ray", 2, timesteps, 2))
        runs["ray_1cpu"].append(_fresh_process("ray", 1, timesteps, 1))
    best = {f"{side}_{key}": min(run[key] for run in side_runs)
            for side, side_runs in runs.items() for key in side_runs[0]}  # fmt: skip
    serial, two, agents = best["serial_warm_s"], best["ray_2cpu_warm_s"], len(TRM_SEEDS) * len(RL_SEEDS)
    cold = best["serial_cold_s"] / best["ray_2cpu_cold_s"]
    return {"ours": 60 * agents / two, "baseline": 60 * agents / serial, "unit": "agents/min", "ratio": serial / two,
            "target": 1.6, "met": serial / two >= 1.6, "cold_ratio": cold, "met_cold": cold >= 1.6, **best,
            "scaling_1_to_2_cpus": best["ray_1cpu_cold_s"] / best["ray_2cpu_cold_s"], "runs": runs,
            "agents": agents, "timesteps": timesteps}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="One side of the ray_rl_stage benchmark (benchmark.py runs it).")
    parser.add_argument("backend", choices=("serial", "ray"))
    parser.add_argument("num_cpus", type=int)
    parser.add_argument("timesteps", type=int)
    parser.add_argument("passes", type=int)
    parser.add_argument("started", type=float, help="time.time() when the parent started this process")
    args = parser.parse_args()
    print(json.dumps(_child(args.backend, args.num_cpus, args.timesteps, args.passes, args.started)))


if __name__ == "__main__":
    main()
