"""Live halting: run a model step by step and retire every sample from the batch the moment it halts.

The rollout table (``trm_env.rollouts``) runs every sample for all K steps; here the compute a halting
policy saves is really saved. ``halt_live(stepper, inputs, policy, spec)`` keeps a batch of at most
``batch_size`` rows:

    admit queued samples until the batch is full       (continuous batching, as a server would)
    one model step for every row in the batch           (rows stand at different steps)
    observation_step -> policy.act                      (the table's observation, built from per-row state)
    halted rows (and rows at step K) leave the batch    (FastBERT's hidden[~done], results scattered back)

Queued samples take the slots that halted rows free, so the rows that stay are not copied; once the queue
runs dry, the rows that stay are compacted instead.

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
from trm_env.observation import OBSERVATIONS, Carry, initial_carry, observation_layout, observation_step
from trm_env.stepping import Stepper, TableSpec, cat_rows, replace_rows, run_step, select_rows

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


@dataclass
class _Batch:
    """The rows in flight: model state, observation carry and, per row, its sample (``positions``), its step and
    the row of the previous call it continues (``source``, -1 for a new sample)."""

    state: Any
    carry: Carry
    positions: np.ndarray
    steps: np.ndarray
    source: np.ndarray


def _fresh(stepper: Stepper, inputs: Tensor, start: int, stop: int, num_classes: int) -> _Batch:
    """Samples ``start:stop``, each at step 0 with a fresh state and carry."""
    rows = stop - start
    return _Batch(stepper.initial_state(inputs[start:stop]), initial_carry(rows, num_classes, inputs.device),
                  np.arange(start, stop), np.zeros(rows, dtype=np.int64), np.full(rows, -1))  # fmt: skip


def _refill(batch: _Batch, owned: Any, halt: np.ndarray, fresh: _Batch | None) -> _Batch:
    """The batch once its ``halt`` rows leave and ``fresh`` joins: in the slots the halted rows free when it fills
    them all (the rows that stay are not copied; ``owned``, the state last returned, may be written in place),
    else after the rows that stay."""
    freed = np.flatnonzero(halt)
    if fresh is not None and len(fresh.positions) == len(freed):
        index, source = torch.from_numpy(freed).to(fresh.carry.stable.device), np.arange(len(halt))
        positions, steps, source[freed] = batch.positions.copy(), batch.steps.copy(), -1
        positions[freed], steps[freed] = fresh.positions, 0
        carry = replace_rows(batch.carry, index, fresh.carry, batch.carry)  # observation_step's: new every step
        return _Batch(replace_rows(batch.state, index, fresh.state, owned), carry, positions, steps, source)
    keep = np.flatnonzero(~halt)
    index = torch.from_numpy(keep).to(batch.carry.stable.device)
    kept = _Batch(select_rows(batch.state, index), select_rows(batch.carry, index), batch.positions[keep],
                  batch.steps[keep], keep)  # fmt: skip
    if fresh is None:
        return kept
    rows = [np.concatenate([getattr(kept, key), getattr(fresh, key)]) for key in ("positions", "steps", "source")]
    return _Batch(cat_rows([kept.state, fresh.state]), cat_rows([kept.carry, fresh.carry]), *rows)


@torch.inference_mode()
def _advance(stepper: Stepper, batch: _Batch, k: int, latent_mode: bool) -> tuple[Tensor, np.ndarray, float]:
    """One model step of every row and its observation: ``(logits, observation, seconds of the model step)``."""
    start, device = time.perf_counter(), batch.carry.stable.device
    batch.state, logits, halt_logits, latent = run_step(stepper, batch.state, len(batch.positions))
    _sync(device)
    model_s = time.perf_counter() - start
    batch.steps += 1
    obs, batch.carry = observation_step(logits, halt_logits, torch.from_numpy(batch.steps).to(device), k, batch.carry,
                                        latent if latent_mode else None)  # fmt: skip
    return logits, obs.cpu().numpy(), model_s


@torch.inference_mode()
def _retire(batch: _Batch, halt: np.ndarray, logits: Tensor, out: dict[str, Any], halt_prob: np.ndarray) -> None:
    """Write the halted rows' step, logits and halt probability into ``out`` (in input order)."""
    done, where = batch.positions[halt], torch.from_numpy(np.flatnonzero(halt)).to(logits.device)
    out["halt_step"][done], out["halt_prob"][done] = batch.steps[halt], halt_prob[halt]
    out["logits"].index_copy_(0, torch.from_numpy(done).to(logits.device), logits.index_select(0, where))


def halt_live(stepper: Stepper, inputs: Tensor, policy: Any, spec: TableSpec, observation: str = "summary",
              batch_size: int = 1024) -> LiveRun:  # fmt: skip
    """Halt every row of ``inputs`` live under ``policy`` (already bound to ``spec``); see the module docstring."""
    if observation not in OBSERVATIONS:
        raise ValueError(f"unknown observation {observation!r}; valid: {list(OBSERVATIONS)}")
    batch_size, n, k = check_int("batch_size", batch_size), len(inputs), spec.max_steps
    if policy.stateful and not callable(getattr(policy, "select", None)):
        raise ValueError(f"{policy!r} is stateful but has no select(rows): live halting moves rows between calls")
    out = {"halt_step": np.zeros(n, dtype=np.int64), "halt_prob": np.zeros(n), "started": np.zeros(n),
           "finished": np.zeros(n), "logits": torch.zeros(n, spec.num_classes, device=inputs.device)}  # fmt: skip
    timer = dict.fromkeys(("model_s", "observe_s", "policy_s", "sample_steps"), 0.0)
    column = observation_layout(spec.num_classes, 0)["halt_prob"].start  # the observation's sigmoid(halt logit)
    wall, queued = time.perf_counter(), min(batch_size, n)
    with torch.inference_mode():
        batch, owned, out["started"][:queued] = _fresh(stepper, inputs, 0, queued, spec.num_classes), None, wall
    while len(batch.positions):
        rows, t0 = len(batch.positions), time.perf_counter()
        logits, obs, model_s = _advance(stepper, batch, k, observation == "latent")
        t2 = time.perf_counter()
        if policy.stateful:
            policy.select(batch.source)
        actions = policy.act(obs, {"index": batch.positions, "step": batch.steps})
        t3 = time.perf_counter()
        halt = (check_actions(actions, rows, repr(policy), batch.steps) == 1) | (batch.steps >= k)
        batch.source = np.arange(rows)
        if halt.any():  # else nobody halted, and the batch stays as it is
            _retire(batch, halt, logits, out, obs[:, column])
            out["finished"][batch.positions[halt]], stop = t3, min(queued + int(halt.sum()), n)
            with torch.inference_mode():
                fresh = _fresh(stepper, inputs, queued, stop, spec.num_classes) if stop > queued else None
                out["started"][queued:stop], queued = time.perf_counter(), stop
                batch = _refill(batch, owned, halt, fresh)
            owned = batch.state
        for key, amount in zip(timer, (model_s, t2 - t0 - model_s, t3 - t2, rows), strict=True):
            timer[key] += amount
    timer["wall_s"] = time.perf_counter() - wall
    return LiveRun(out["halt_step"], out["logits"], out["halt_prob"], out["finished"] - out["started"], timer)


def full_depth(stepper: Stepper, inputs: Tensor, max_steps: int, batch_size: int = 1024) -> np.ndarray:
    """Seconds per batch of running every row for ``max_steps`` steps in batches of ``batch_size``: what TRM's
    evaluation does (at batch 1, each sample's latency)."""
    seconds = []
    with torch.inference_mode():
        for rows in inputs.split(check_int("batch_size", batch_size)):
            start = time.perf_counter()
            state = stepper.initial_state(rows)
            for _ in range(max_steps):
                state = run_step(stepper, state, len(rows))[0]
            _sync(inputs.device)
            seconds.append(time.perf_counter() - start)
    return np.array(seconds)
