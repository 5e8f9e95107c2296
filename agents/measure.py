"""What halting saves: every family's val-chosen point run live, its wall time measured against full depth.

``live_stage`` is one stage of the study per task, run after the choices on val. For each deployable
family it rebuilds the chosen point (rules by name; learned families refitted on ``halt`` exactly as the
evaluation stage fitted them, learner seed 0; RL agents loaded) and:

- **equality**: on every TRM seed, runs it live on the whole test split (batch 1024) and counts the samples
  whose halting step or prediction differs from the table's (``live_mismatches``; expected 0);
- **throughput**: on the first TRM seed, on a fixed subsample of test (the first ``timing_samples``), times
  it live at batch 1024 in ``rounds`` rounds alternated with the same model run for all K steps at the same
  batch size; medians give ``wall_ms_per_1k`` (ms per 1000 samples), ``speedup`` (full depth / live),
  ``ideal_speedup`` (K / mean steps) and ``policy_share`` (the share of live wall time spent deciding);
- **latency**: one request at a time (batch 1), p50 and p99 per sample of ``LATENCY_FAMILIES`` and full depth.

Everything runs on the CPU with one torch thread. The oracle and the privileged rules read the label: no
compute columns. A joint family (``agents.joint``) runs on its own TRMs (``joint``: seed -> family -> folder):
its equality against its own tables on each seed given, its throughput against its own TRM's full depth on the
first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluation import halting_steps
from agents.joint import JOINT_FAMILIES, joint_policies
from agents.learners import LEARNERS, fit_learners
from agents.live import evaluate_live
from agents.policies import HaltingPolicy, make_policy
from agents.rl import RLHaltingPolicy
from trm_env.io import write_json_atomic
from trm_env.live import full_depth, halt_live
from trm_env.model import torch_threads
from trm_env.observation import observation_layout
from trm_env.rollouts import resolve_model, simulate
from trm_env.stepping import TableSpec
from trm_env.tasks import load_task

__all__ = ["COMPUTE_COLUMNS", "LATENCY_FAMILIES", "TIMED", "chosen_policy", "deployable_choices", "live_stage",
           "time_live"]  # fmt: skip

COMPUTE_COLUMNS = ("wall_ms_per_1k", "speedup", "ideal_speedup", "policy_share", "live_mismatches")
TIMED = ("wall_ms_per_1k", "speedup", "policy_share")  # measured wall times: they differ from run to run
LATENCY_FAMILIES = ("halt_head", "fitted_q", "rl_ppo")
BATCH = 1024


def deployable_choices(chosen: Any) -> dict[str, Any]:
    """family -> val-chosen knob of the families that can run live (not the oracle, not the privileged rules);
    where ``chosen`` has a ``per_trm_seed`` dict (the calibrated families), TRM seed -> [family, knob] instead."""
    out: dict[str, Any] = {}
    for _, row in chosen.iterrows():
        if row["policy"] != "oracle" and not row["policy"].startswith("privileged_"):
            per_seed = row.get("per_trm_seed")
            out[row["policy"]] = per_seed if isinstance(per_seed, dict) else float(row["param"])
    return out


def _at_seed(family: str, choice: Any, seed: int) -> tuple[str, float]:
    """The (family, knob) that a family's choice runs on TRM seed ``seed``."""
    if isinstance(choice, dict):
        found = choice[seed] if seed in choice else choice[str(seed)]
        return str(found[0]), float(found[1])
    return family, float(choice)


def chosen_policy(family: str, param: float, halt_table: Any, val_table: Any, settings: dict[str, Any],
                  rl_paths: Sequence[Path], fitted: dict[Any, list[HaltingPolicy]] | None = None
                  ) -> HaltingPolicy:  # fmt: skip
    """The policy at a family's chosen knob, as the evaluation stage made it (learner seed 0); ``fitted`` keeps the
    learners fitted on these tables for the next call (a calibrated family reuses its base's fit)."""
    if family.startswith("rl_"):
        path = next((p for p in rl_paths if np.isclose(RLHaltingPolicy.load(p).param, param)), None)
        if path is None:
            raise ValueError(f"no {family} agent trained at cost {param:g} among {[str(p) for p in rl_paths]}")
        return RLHaltingPolicy.load(path)
    if family in LEARNERS:
        taus = [param] if family == "act" else settings["act_taus"]
        fitted = {} if fitted is None else fitted
        key = (family, tuple(taus))
        if key not in fitted:
            fitted[key] = fit_learners(family, halt_table, val_table, settings["step_cost"], [0],
                                       [tuple(v) for v in settings["ponder_variants"]], taus)  # fmt: skip
        return next(p for p in fitted[key] if np.isclose(p.param, param))
    return make_policy(family, int(param) if family in ("fixed_depth", "patience") else param)


def _mismatches(policy: HaltingPolicy, test: Any, task: Any, checkpoint: Path, cost: float) -> int:
    """Test samples whose live halting step or prediction differs from the table's."""
    steps = halting_steps(policy, test, cost)
    live = evaluate_live(policy, task, "test", cost, checkpoint=checkpoint, batch_size=BATCH)
    predicted = test.prediction[np.arange(test.num_samples), steps - 1]
    return int(((live["halt_step"].to_numpy() != steps) | (live["prediction"].to_numpy() != predicted)).sum())


def time_live(model: Any, inputs: torch.Tensor, policies: dict[str, HaltingPolicy], spec: TableSpec, cost: float,
           rounds: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """Median wall, policy share and mean steps of each policy live, rounds alternated with full depth."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ("full_depth", *policies)}
    for _ in range(rounds):
        runs["full_depth"].append({"wall_s": float(full_depth(model, inputs, spec.max_steps, BATCH).sum())})
        for name, policy in policies.items():
            policy.bind(spec, cost)
            run = halt_live(model, inputs, policy, spec, batch_size=BATCH)
            runs[name].append({**run.compute, "mean_steps": float(run.halt_step.mean())})
    out = {}
    full = float(np.median([r["wall_s"] for r in runs["full_depth"]]))
    for name, rows in runs.items():
        wall = float(np.median([r["wall_s"] for r in rows]))
        share = float(np.median([r.get("policy_s", 0.0) / r["wall_s"] for r in rows]))
        steps = rows[0].get("mean_steps", spec.max_steps)
        out[name] = {"wall_ms_per_1k": 1e6 * wall / len(inputs), "speedup": full / wall,
                     "ideal_speedup": spec.max_steps / steps, "policy_share": share}  # fmt: skip
    return out


def _latency(model: Any, inputs: torch.Tensor, policies: dict[str, HaltingPolicy], spec: TableSpec, cost: float
             ) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50/p99 ms per sample served one at a time (batch 1)."""
    seconds = {"full_depth": full_depth(model, inputs, spec.max_steps, batch_size=1)}
    for name in LATENCY_FAMILIES:
        if name in policies:
            policies[name].bind(spec, cost)
            seconds[name] = halt_live(model, inputs, policies[name], spec, batch_size=1).latency_s
    return {name: {"p50_ms": 1000 * float(np.percentile(s, 50)), "p99_ms": 1000 * float(np.percentile(s, 99))}
            for name, s in seconds.items()}  # fmt: skip


def _timing_inputs(task: Any, model: Any, samples: int) -> tuple[torch.Tensor, TableSpec]:
    """The first ``samples`` test inputs and their table spec."""
    rows = task.split("test")[:samples]
    inputs = torch.from_numpy(np.ascontiguousarray(task.features[rows]))
    return inputs, TableSpec(task.name, "test", observation_layout(model.num_classes, model.task_head.in_features),
                             model.num_classes, model.max_steps, len(rows), model.pnl_scale)  # fmt: skip


def _joint_live(task: Any, chosen: dict[str, float], joint: dict[int, dict[str, Path]], settings: dict[str, Any],
                result: dict[str, Any]) -> None:  # fmt: skip
    """Each joint family's chosen point on its own TRMs: mismatches on every seed, timing on the first."""
    if not joint:
        raise ValueError(f"joint families {sorted(chosen)} run live on their own TRMs: pass joint (seed -> folders)")
    cost, first = settings["step_cost"], min(joint)
    for seed, folders in sorted(joint.items()):
        for family, param in chosen.items():
            policy = joint_policies(family, (param,))[0]
            table = simulate(task, folders[family], split="test")
            result["mismatches"].setdefault(seed, {})[family] = _mismatches(policy, table, task, folders[family],
                                                                            cost)  # fmt: skip
            if seed == first:
                model = resolve_model(folders[family], task)
                inputs, spec = _timing_inputs(task, model, settings["timing_samples"])
                timing = time_live(model, inputs, {family: policy}, spec, cost, settings["timing_rounds"])
                result["timing"][family] = timing[family]


def live_stage(task: str, task_kwargs: dict[str, Any], checkpoints: dict[int, Path], chosen: dict[str, Any],
               settings: dict[str, Any], rl_paths: dict[int, list[Path]], out: Path,
               joint: dict[int, dict[str, Path]] | None = None) -> None:  # fmt: skip
    """Measure every deployable chosen point of ``task`` (module docstring); write ``out`` (JSON).

    ``chosen``: family -> val-chosen knob (or TRM seed -> [family, knob], see ``deployable_choices``);
    ``settings``: the evaluation settings plus ``timing_samples``, ``timing_rounds`` and ``latency_samples``;
    ``joint``: the joint families' own TRM folders per seed.
    """
    loaded, cost = load_task(task, **task_kwargs), settings["step_cost"]
    own = {family: param for family, param in chosen.items() if family in JOINT_FAMILIES}
    chosen = {family: param for family, param in chosen.items() if family not in own}
    result: dict[str, Any] = {"mismatches": {}, "trm_seeds": sorted(checkpoints)}
    with torch_threads(1):
        for seed, checkpoint in sorted(checkpoints.items()):
            tables = {split: simulate(loaded, checkpoint, split=split) for split in ("halt", "val", "test")}
            fitted: dict[Any, list[HaltingPolicy]] = {}
            policies = {family: chosen_policy(*_at_seed(family, choice, seed), tables["halt"], tables["val"], settings,
                                              rl_paths[seed], fitted) for family, choice in chosen.items()}  # fmt: skip
            result["mismatches"][seed] = {family: _mismatches(p, tables["test"], loaded, checkpoint, cost)
                                          for family, p in policies.items()}  # fmt: skip
            if seed == min(checkpoints):
                model = resolve_model(checkpoint, loaded)
                inputs, spec = _timing_inputs(loaded, model, settings["timing_samples"])
                result["timing"] = time_live(model, inputs, policies, spec, cost, settings["timing_rounds"])
                spec = TableSpec(**{**spec.__dict__, "num_samples": settings["latency_samples"]})
                result["latency"] = _latency(model, inputs[: settings["latency_samples"]], policies, spec, cost)
        if own:
            _joint_live(loaded, own, joint or {}, settings, result)
    result.update(samples=len(inputs), rounds=settings["timing_rounds"], batch_size=BATCH)
    write_json_atomic(out, json.loads(json.dumps(result)))
