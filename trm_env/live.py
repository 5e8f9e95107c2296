"""Live halting: run a model step by step and retire every sample from the batch the moment it halts.

The rollout table (``trm_env.rollouts``) runs every sample for all K steps; here the compute a halting
policy saves is really saved. ``halt_live(stepper, inputs, policy, spec)`` keeps a batch of at most
``batch_size`` rows:

    admit queued samples until the batch is full       (continuous batching, as a server would)
    one model step for every row in the batch           (rows stand at different steps)
    observation_step -> policy.act                      (the table's observation, built from per-row state)
    halted rows (and rows at step K) leave the batch    (FastBERT's hidden[~done], results scattered back)

A stateful policy (``policy.stateful``) is told which rows of its last call each row of the next one
continues (``policy.select(rows)``, -1 for a new sample), so its per-sample state survives compaction.
The observation and the model's numbers are those of the table (``observation_step``, ``run_step``), so
a policy halts where ``agents.evaluate`` says it does, sample for sample. ``full_depth`` times the same
model run for all K steps at the same batch size, the baseline of every speed-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trm_env.checks import check_actions, check_int
from trm_env.observation import OBSERVATIONS, halt_probability, initial_carry, observation_step
from trm_env.stepping import Stepper, TableSpec, cat_rows, run_step, select_rows

__all__ = ["LiveRun", "full_depth", "halt_live"]


@dataclass
class LiveRun:
    """Per sample (in input order): the halting step, the logits and halt probability there, the latency
    from admission to halt (s); and ``compute``: ``wall_s``, ``model_s`` (model steps), ``observe_s``
    (building observations), ``policy_s`` (deciding), ``sample_steps`` (rows stepped)."""

    halt_step: np.ndarray
    logits: Tensor
    halt_prob: np.ndarray
    latency_s: np.ndarray
    compute: dict[str, float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _admit(stepper: Stepper, inputs: Tensor, batch: dict[str, Any], start: int, stop: int, num_classes: int) -> None:
    """Append samples ``start:stop`` to the batch, each at step 0 with a fresh state and carry."""
    fresh = {"state": stepper.initial_state(inputs[start:stop]),
             "carry": initial_carry(stop - start, num_classes, inputs.device),
             "positions": np.arange(start, stop), "steps": np.zeros(stop - start, dtype=np.int64),
             "source": np.full(stop - start, -1, dtype=np.int64)}  # fmt: skip
    for key, value in fresh.items():
        old = batch.get(key)
        if old is None:
            batch[key] = value
        elif isinstance(value, np.ndarray):
            batch[key] = np.concatenate([old, value])
        else:
            batch[key] = cat_rows([old, value])


def halt_live(stepper: Stepper, inputs: Tensor, policy: Any, spec: TableSpec, observation: str = "summary",
              batch_size: int = 1024) -> LiveRun:  # fmt: skip
    """Halt every row of ``inputs`` live under ``policy`` (already bound to ``spec``); see the module docstring."""
    if observation not in OBSERVATIONS:
        raise ValueError(f"unknown observation {observation!r}; valid: {list(OBSERVATIONS)}")
    batch_size, n, k = check_int("batch_size", batch_size), len(inputs), spec.max_steps
    if policy.stateful and not callable(getattr(policy, "select", None)):
        raise ValueError(f"{policy!r} is stateful but has no select(rows): live halting moves rows between calls")
    halt_step, halt_prob = np.zeros(n, dtype=np.int64), np.zeros(n)
    logits_out = torch.zeros(n, spec.num_classes, device=inputs.device)
    started, finished = np.zeros(n), np.zeros(n)
    timer = dict.fromkeys(("model_s", "observe_s", "policy_s", "sample_steps"), 0.0)
    batch: dict[str, Any] = {}
    queued, wall = 0, time.perf_counter()
    while queued < n or len(batch.get("positions", ())):
        room = min(batch_size - len(batch.get("positions", ())), n - queued)
        if room > 0:
            _admit(stepper, inputs, batch, queued, queued + room, spec.num_classes)
            started[queued : queued + room], queued = time.perf_counter(), queued + room
        rows, t0 = len(batch["positions"]), time.perf_counter()
        batch["state"], logits, halt_logits, latent = run_step(stepper, batch["state"], rows)
        _sync(inputs.device)
        t1 = time.perf_counter()
        batch["steps"] += 1
        steps = torch.from_numpy(batch["steps"]).to(inputs.device)
        obs, batch["carry"] = observation_step(logits, halt_logits, steps, k, batch["carry"],
                                               latent if observation == "latent" else None)  # fmt: skip
        obs = obs.cpu().numpy()
        t2 = time.perf_counter()
        if policy.stateful:
            policy.select(batch["source"])
        actions = policy.act(obs, {"index": batch["positions"], "step": batch["steps"]})
        t3 = time.perf_counter()
        halt = (check_actions(actions, rows, repr(policy), batch["steps"]) == 1) | (batch["steps"] >= k)
        done, where = batch["positions"][halt], torch.from_numpy(halt).to(inputs.device)
        halt_step[done], logits_out[done] = batch["steps"][halt], logits[where]
        halt_prob[done], finished[done] = halt_probability(halt_logits[where]).double().cpu().numpy(), t3
        keep = np.flatnonzero(~halt)
        if len(keep) < rows:  # nobody halted: the batch stays as it is, no copy
            index = torch.from_numpy(keep).to(inputs.device)
            batch.update(state=select_rows(batch["state"], index), carry=select_rows(batch["carry"], index),
                         positions=batch["positions"][keep], steps=batch["steps"][keep])  # fmt: skip
        batch["source"] = keep
        for key, amount in zip(timer, (t1 - t0, t2 - t1, t3 - t2, rows), strict=True):
            timer[key] += amount
    timer["wall_s"] = time.perf_counter() - wall
    return LiveRun(halt_step, logits_out, halt_prob, finished - started, timer)


def full_depth(stepper: Stepper, inputs: Tensor, max_steps: int, batch_size: int = 1024) -> np.ndarray:
    """Seconds per batch of running every row for ``max_steps`` steps in batches of ``batch_size``: what TRM's
    evaluation does (at batch 1, each sample's latency)."""
    seconds = []
    with torch.no_grad():
        for rows in inputs.split(check_int("batch_size", batch_size)):
            start = time.perf_counter()
            state = stepper.initial_state(rows)
            for _ in range(max_steps):
                state = run_step(stepper, state, len(rows))[0]
            _sync(inputs.device)
            seconds.append(time.perf_counter() - start)
    return np.array(seconds)
