"""Check the GPU path on a machine with CUDA: the same work on the GPU and on the CPU, compared and timed.

    python experiments/gpu_check.py                 # needs CUDA; prints a table, writes gpu_check.json
    python experiments/gpu_check.py --out runs/gpu.json --n 219000

1. Train the sp500 TRM from ``experiments/configs/sp500.json`` with ``device="cuda"`` and with ``device="cpu"``
   (the final model is evaluated on the CPU either way) and compare the test metrics of the last step.
2. Simulate a split of at least 32768 samples (regime-chain's test split at ``--n`` samples) with the shipped
   regime-chain TRM on both devices and compare the tables.
3. Live halting on that split at batch 32768 on the GPU: the halt head (threshold ``--threshold``) against the
   same model run for all K steps at the same batch size, and the decisions against the CPU table's.

Tolerances: training runs in another order of float operations on a GPU, so the two TRMs differ; their test
accuracy and profit-weighted CE at the last step must agree within ``TRAIN_TOLERANCE``. The same model
simulated on both devices must give observations within ``OBSERVATION_TOLERANCE`` and the same prediction on
at least ``AGREEMENT`` of the (sample, step) pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import HaltHeadPolicy, evaluate_live, halting_steps
from trm_env.io import write_json_atomic
from trm_env.live import full_depth
from trm_env.model import TinyRecursiveModel, resolve_device
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.tasks import load_task
from trm_env.training import TrainConfig, train

CONFIG = Path(__file__).resolve().parent / "configs" / "sp500.json"
TRAIN_TOLERANCE, OBSERVATION_TOLERANCE, AGREEMENT = 0.03, 1e-3, 0.999
LIVE_BATCH = 32768


def _train(device: str, epochs: int | None) -> dict[str, Any]:
    config = TrainConfig.from_json(CONFIG)
    config = replace(config, device=device, epochs=epochs or config.epochs)
    start = time.perf_counter()
    _, metrics = train(config, progress=False, tensorboard=False)
    test = metrics["test"]
    return {"seconds": time.perf_counter() - start, "epochs": metrics["epochs_run"],
            "accuracy": test["accuracy"][-1], "profit_weighted_ce": test["profit_weighted_ce"][-1]}  # fmt: skip


def _simulate(device: str, n: int) -> tuple[dict[str, Any], Any]:
    task = load_task("regime-chain", n=n)
    model = TinyRecursiveModel.load(shipped_checkpoint("regime-chain"))
    simulate(task, model, split="val", device=device, cache_dir=False)  # warm-up (CUDA context, kernels)
    start = time.perf_counter()
    table = simulate(task, model, split="test", device=device, cache_dir=False)
    return {"seconds": time.perf_counter() - start, "samples": table.num_samples}, table


def _live(n: int, threshold: float, table: Any) -> dict[str, Any]:
    """Live halting at batch 32768 on cuda: speed-up over full depth (best of 3 each, alternated), agreement."""
    task = load_task("regime-chain", n=n)
    model = TinyRecursiveModel.load(shipped_checkpoint("regime-chain"))
    policy = HaltHeadPolicy(threshold)
    frame = evaluate_live(policy, task, checkpoint=model, batch_size=LIVE_BATCH, device="cuda")  # warm-up
    model.to("cuda")
    inputs = torch.from_numpy(task.features[task.split("test")]).to("cuda")
    live, full = [], []
    for _ in range(3):
        full.append(float(full_depth(model, inputs, model.max_steps, LIVE_BATCH).sum()))
        live.append(evaluate_live(policy, task, checkpoint=model, batch_size=LIVE_BATCH, device="cuda")
                    .attrs["compute"]["wall_s"])  # fmt: skip
    model.to("cpu")
    steps = halting_steps(policy, table)
    return {"batch": LIVE_BATCH, "samples": len(frame), "live_s": min(live), "full_depth_s": min(full),
            "speedup": min(full) / min(live), "ideal_speedup": model.max_steps / frame["halt_step"].mean(),
            "agreement_with_cpu_table": float((frame["halt_step"].to_numpy() == steps).mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON results file")
    parser.add_argument("--n", type=int, default=219_000, help="regime-chain samples (test split: 15%% of them)")
    parser.add_argument("--epochs", type=int, help="cap the sp500 training epochs (default: its config's)")
    parser.add_argument("--threshold", type=float, default=0.95, help="the halt head's threshold for live halting")
    args = parser.parse_args(argv)
    resolve_device("cuda")  # a clear ValueError where there is no CUDA
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "cpu_threads": torch.get_num_threads()}
    results["train"] = {device: _train(device, args.epochs) for device in ("cuda", "cpu")}
    (gpu_sim, gpu_table), (cpu_sim, cpu_table) = _simulate("cuda", args.n), _simulate("cpu", args.n)
    results["simulate"] = {"cuda": gpu_sim, "cpu": cpu_sim}
    results["live"] = _live(args.n, args.threshold, cpu_table)
    gap = {k: abs(results["train"]["cuda"][k] - results["train"]["cpu"][k]) for k in ("accuracy", "profit_weighted_ce")}
    obs_gap = float(np.abs(gpu_table.observations["summary"] - cpu_table.observations["summary"]).max())
    agreement = float((gpu_table.prediction == cpu_table.prediction).mean())
    results["checks"] = {
        "train_gap": gap, "train_pass": all(v <= TRAIN_TOLERANCE for v in gap.values()),
        "observation_max_gap": obs_gap, "prediction_agreement": agreement,
        "simulate_pass": obs_gap <= OBSERVATION_TOLERANCE and agreement >= AGREEMENT,
        "live_pass": results["live"]["agreement_with_cpu_table"] >= AGREEMENT,
    }  # fmt: skip
    write_json_atomic(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
