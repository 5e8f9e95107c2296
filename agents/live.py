"""``evaluate_live``: the same evaluation as ``agents.evaluate``, with the model really running.

Where ``evaluate`` reads each sample's halting step off a frozen table, ``evaluate_live`` runs the model
step by step (``trm_env.live.halt_live``): halted samples leave the batch, queued ones refill it, and the
wall time, the model's and the policy's share of it are measured. Deployable policies only: the oracle
and the privileged rules read what a deployed model never has, and are refused.

>>> from agents import HaltHeadPolicy, evaluate_live
>>> frame = evaluate_live(HaltHeadPolicy(0.5), "regime-chain", batch_size=256)  # doctest: +SKIP
>>> frame.attrs["compute"]["sample_steps"] < 16 * len(frame)  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agents.evaluation import EPISODE_COLUMNS, _settings
from agents.policies import HaltingPolicy
from trm_env.checks import check_int
from trm_env.live import LiveRun, halt_live
from trm_env.model import TinyRecursiveModel, resolve_device, torch_threads
from trm_env.observation import observation_layout
from trm_env.rollouts import resolve_stepper
from trm_env.stepping import Stepper, TableSpec, check_stepper, run_step, step_outcome, stepper_pnl_scale
from trm_env.task import Task
from trm_env.tasks import load_task

__all__ = ["evaluate_live", "live_model"]

Checkpoint = str | os.PathLike | TinyRecursiveModel | Stepper | None


def live_model(checkpoint: Checkpoint, task: Task | None) -> Stepper:
    """The stepper to run: a TRM from a path (default: the task's shipped one), or any object with the step protocol."""
    if task is not None:
        return resolve_stepper(checkpoint, task)
    if checkpoint is None:
        raise ValueError("raw inputs need checkpoint= (a model.pt, run directory, TinyRecursiveModel or stepper)")
    if isinstance(checkpoint, str | os.PathLike):
        return TinyRecursiveModel.load(Path(checkpoint))
    return checkpoint if isinstance(checkpoint, TinyRecursiveModel) else check_stepper(checkpoint)


def _spec(stepper: Stepper, inputs: torch.Tensor, name: str, split: str, max_steps: int | None) -> TableSpec:
    """The layout and sizes of the table this run would have made: classes and hidden width from one probe step."""
    _, logits, _, latent = run_step(stepper, stepper.initial_state(inputs[:1]), 1)
    most = getattr(stepper, "max_steps", None)
    if max_steps is None and most is None:
        raise ValueError("max_steps must be given: the stepper states no max_steps of its own")
    k = check_int("max_steps", most if max_steps is None else max_steps, maximum=most)
    hidden = 0 if latent is None else latent.shape[-1]
    return TableSpec(name, split, observation_layout(logits.shape[-1], hidden), logits.shape[-1], k, len(inputs),
                     stepper_pnl_scale(stepper))  # fmt: skip


def _compute(run: LiveRun, batch_size: int, device: torch.device) -> dict[str, Any]:
    latency = 1000 * run.latency_s
    return {**run.compute, "batch_size": batch_size, "device": device.type,
            "latency_p50_ms": float(np.percentile(latency, 50)), "latency_p99_ms": float(np.percentile(latency, 99))}


def _inputs(task: str | Task | np.ndarray | torch.Tensor, split: str | None
            ) -> tuple[Task | None, str | None, torch.Tensor]:  # fmt: skip
    """The task (None for raw inputs), the split and the (N, F) float32 inputs to run."""
    if isinstance(task, str | Task):
        loaded = load_task(task) if isinstance(task, str) else task
        split = "test" if split is None else split
        return loaded, split, torch.from_numpy(np.ascontiguousarray(loaded.features[loaded.split(split)]))
    if not isinstance(task, np.ndarray | torch.Tensor):
        raise TypeError(f"task must be a task name, a Task or raw inputs (N, F), got {type(task).__name__}")
    if split is not None:
        raise ValueError("split goes with a task, not with raw inputs")
    inputs = torch.as_tensor(task, dtype=torch.float32)
    if inputs.ndim != 2 or len(inputs) == 0 or not torch.isfinite(inputs).all():
        raise ValueError(f"raw inputs must be finite, of shape (N, F) with N >= 1; got shape {tuple(inputs.shape)}")
    return None, None, inputs


def evaluate_live(policy: HaltingPolicy, task: str | Task | np.ndarray | torch.Tensor = "sp500",
                  split: str | None = None, step_cost: float | None = None, *, checkpoint: Checkpoint = None,
                  batch_size: int = 1024, device: str = "cpu", max_steps: int | None = None,
                  reward: str = "profit_weighted_ce", observation: str = "summary", threads: int = 1
                  ) -> pd.DataFrame:  # fmt: skip
    """Run ``policy`` live once on every sample of ``split``; one row per sample, ``evaluate``'s columns and order.

    ``task``: a task name or ``Task`` (``split`` default "test"; ``checkpoint`` default the task's shipped
    seed-0 TRM), or **raw inputs**, a float array (N, F) with ``checkpoint`` (a ``model.pt``, run directory,
    ``TinyRecursiveModel`` or any stepper): then there is no label and the frame holds ``index``,
    ``halt_step`` and ``prediction`` only. ``checkpoint`` may be any object with the step protocol
    (``trm_env.stepping``). ``frame.attrs["compute"]``: ``wall_s``, ``model_s``, ``observe_s``,
    ``policy_s``, ``sample_steps``, ``batch_size``, ``device``, ``latency_p50_ms``/``latency_p99_ms``
    (admission to halt, per sample). ``threads``: torch's CPU threads while it runs (default 1: a 128-wide
    layer is too small to split, and on a busy machine two threads wait on each other).
    """
    if policy.reads is not None:
        raise ValueError(f"{policy.name} cannot run live: it reads {policy.reads}, which a deployed model does not "
                         f"have; evaluate it on the table with agents.evaluate")  # fmt: skip
    cost, where = _settings(step_cost, reward, observation), resolve_device(device)
    loaded, split, inputs = _inputs(task, split)
    stepper = live_model(checkpoint, loaded)
    module = stepper if isinstance(stepper, torch.nn.Module) else None
    home = next(module.parameters()).device if module is not None else None
    try:
        if module is not None:
            module.to(where)
        inputs = inputs.to(where)
        spec = _spec(stepper, inputs, loaded.name if loaded else "inputs", split or "inputs", max_steps)
        policy.bind(spec, cost, reward)
        with torch_threads(check_int("threads", threads)):
            run = halt_live(stepper, inputs, policy, spec, observation, batch_size)
    finally:
        if module is not None:
            module.to(home)
    return _frame(run, loaded, split, spec, cost, reward, _compute(run, batch_size, where))


def _frame(run: LiveRun, task: Task | None, split: str | None, spec: TableSpec, cost: float, reward: str,
           compute: dict[str, Any]) -> pd.DataFrame:  # fmt: skip
    logits = run.logits.cpu()
    if task is None:
        frame = pd.DataFrame({"index": np.arange(len(logits)), "halt_step": run.halt_step,
                              "prediction": logits.argmax(-1).numpy()})  # fmt: skip
    else:
        rows = task.split(split)
        labels, pnl = torch.from_numpy(task.labels[rows]), torch.from_numpy(task.pnl[rows])
        out = step_outcome(logits, labels, pnl, torch.from_numpy(task.pnl_matrix[rows]), spec.pnl_scale)
        columns = {"index": np.arange(len(rows)), "halt_step": run.halt_step, "prediction": out["prediction"],
                   "label": labels.numpy(), "correct": out["correct"], "pnl": out["pnl"],
                   "profit_weighted_ce": out["profit_weighted_ce"],
                   "episode_return": out[f"reward_{reward}"] - cost * (run.halt_step - 1)}  # fmt: skip
        frame = pd.DataFrame({name: columns[name] for name in EPISODE_COLUMNS})
        if task.difficulty is not None:
            frame["difficulty"] = task.difficulty[rows]
    frame.attrs["compute"] = compute
    return frame
