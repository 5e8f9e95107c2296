"""Benchmark row ``ray_rl_stage``: the study's RL stage run serially vs as Ray tasks (see ``benchmark.py``).

The same RL trainings as ``experiments/run.py`` submits (``agents.stages.train_rl_stage``: PPO on the halt
split of the shipped regime-chain TRMs), timed end to end on each backend, Ray's start-up included: serially in
this process, on a local Ray with 2 worker CPUs and with 1. Target: Ray with 2 CPUs >= 1.6x serial on 2 cores.
Serial and Ray with 2 CPUs alternate over ``ROUNDS`` rounds and each keeps its best time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from agents.backend import make_backend
from agents.rl import N_ENVS
from agents.stages import train_rl_stage
from trm_env.rollouts import shipped_checkpoint, simulate

TASK, TRM_SEEDS, RL_SEEDS, ROUNDS = "regime-chain", (0, 1, 2), (0, 1), 2


def _jobs(folder: Path, timesteps: int) -> list[dict[str, Any]]:
    settings = {"algo": "ppo", "total_timesteps": timesteps, "n_envs": N_ENVS["ppo"], "hyperparameters": {}}
    return [dict(task=TASK, task_kwargs={}, checkpoint=shipped_checkpoint(TASK, trm), step_cost=0.01, seed=rl,
                 settings=settings, out=folder / f"trm{trm}_seed{rl}.zip")
            for trm in TRM_SEEDS for rl in RL_SEEDS]  # fmt: skip


def _stage_seconds(backend_name: str, num_cpus: int | None, timesteps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        backend = make_backend(backend_name, num_cpus=num_cpus)
        try:
            for kwargs in _jobs(Path(tmp), timesteps):
                backend.submit(train_rl_stage, kwargs)
            _, failed = backend.gather()
        finally:
            backend.close()
        if failed is not None:
            raise failed
        return time.perf_counter() - start


def bench_ray_rl_stage(quick: bool) -> dict[str, Any]:
    """Seconds of the RL stage (6 agents) serially and on a local Ray with 2 and with 1 CPUs."""
    timesteps = 8_192 if quick else 200_000  # the quick config's RL budget
    for seed in TRM_SEEDS:  # tables on disk first, as a run's earlier stages leave them
        simulate(TASK, shipped_checkpoint(TASK, seed), split="halt")
    serials, twos = [], []
    for _ in range(1 if quick else ROUNDS):  # alternate the two sides and keep each one's best, as benchmark.py does
        serials.append(_stage_seconds("serial", None, timesteps))
        twos.append(_stage_seconds("ray", 2, timesteps))
    serial, two, one = min(serials), min(twos), _stage_seconds("ray", 1, timesteps)
    agents = len(TRM_SEEDS) * len(RL_SEEDS)
    return {"ours": agents / two, "baseline": agents / serial, "unit": "agents/s", "ratio": serial / two,
            "target": 1.6, "met": serial / two >= 1.6, "serial_s": serial, "ray_2cpu_s": two, "ray_1cpu_s": one,
            "serial_runs_s": serials, "ray_2cpu_runs_s": twos,
            "scaling_1_to_2_cpus": one / two, "agents": agents, "timesteps": timesteps}  # fmt: skip
