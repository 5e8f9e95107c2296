"""The study's units of work, as plain functions of paths and settings (so any backend can run them).

- ``train_trm_stage``: one TRM seed of a task, trained on its train split.
- ``train_rl_stage``: one RL halting agent, trained on the halt split of one TRM's tables (``out`` is its ``.pt``;
  its settings and SB3 export go beside it, see ``agents.rl.save_rl_policy``).
- ``evaluate_stage``: one group of halting policies on one TRM's val and test tables: rules (and the
  task's privileged references), RL agents, one learned family fitted on the halt split
  (``agents.learners``), or a joint family's knob sweep (``agents.joint``, on its own TRM's tables). It writes
  the halting step of every (policy point, sample) as ``.npz``; every other column is read back from
  the tables (``halting_frame``), so a stage's artifact stays small.

Every stage writes its artifact atomically and runs torch on one thread, whatever the backend, so a stage
gives the same bytes in this process or in a Ray worker. A model's tables come from its ``checkpoint``: a TRM run
folder (simulated) or, for any other model, saved tables per split (``agents.sources``); a table without halt
logits has no halt-head family.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.curves import rule_policies
from agents.evaluation import episode_columns, halting_steps
from agents.joint import JOINT_FAMILIES, joint_policies
from agents.learners import LEARNERS, fit_learners
from agents.policies import HaltingPolicy, PrivilegedPolicy
from agents.rl import RLHaltingPolicy, tensorboard_name, train_rl_policy
from agents.sources import ModelSource, split_table
from trm_env.io import atomic_path
from trm_env.model import torch_threads
from trm_env.rollouts import Rollouts
from trm_env.training import TrainConfig, train

__all__ = ["EVAL_SPLITS", "GROUPS", "evaluate_stage", "halting_frame", "load_points", "train_rl_stage",
           "train_trm_stage"]  # fmt: skip

EVAL_SPLITS = ("val", "test")  # choices are made on val; test only reports
GROUPS = ("rules", "rl", *LEARNERS, *JOINT_FAMILIES)


def train_trm_stage(task: str, seed: int, config_path: Path, out_dir: Path) -> None:
    """Train one TRM seed from a training config file (its ``seed`` replaced) into ``out_dir``."""
    config = TrainConfig.from_json(config_path)
    config.seed = seed
    if config.task != task:
        raise ValueError(f"{config_path} trains task {config.task!r}, not {task!r}")
    with torch_threads(1):
        train(config, out_dir=out_dir, progress=False)


def train_rl_stage(task: str, task_kwargs: dict[str, Any], checkpoint: ModelSource, step_cost: float, seed: int,
                   settings: dict[str, Any], out: Path, tensorboard: Path | None = None) -> None:  # fmt: skip
    """Train one RL agent on the halt split of ``checkpoint``'s table and save it to ``out``.

    Its TensorBoard logs from an earlier try (``tensorboard/<name>_<N>``) are deleted first: a redone stage's
    logs replace the old ones. ``tensorboard`` must be this stage's own folder (no other stage with its name)."""
    if tensorboard is not None:
        clear_tensorboard_runs(tensorboard, tensorboard_name(settings["algo"], step_cost, seed))
    with torch_threads(1):
        table = split_table(task, task_kwargs, checkpoint, "halt")
        train_rl_policy(task=task, rollouts=table, step_cost=step_cost, seed=seed, split="halt", out=out,
                        progress=False, tensorboard_log=tensorboard, **settings)  # fmt: skip


def clear_tensorboard_runs(folder: Path, name: str) -> None:
    """Delete SB3's TensorBoard run folders ``folder/<name>_<N>``."""
    run = re.compile(re.escape(name) + r"_\d+")
    for path in folder.glob("*") if folder.is_dir() else ():
        if run.fullmatch(path.name) and path.is_dir():
            shutil.rmtree(path)


def _policies(group: str, task: str, task_kwargs: dict[str, Any], checkpoint: ModelSource, tables: dict[str, Rollouts],
              settings: dict[str, Any], rl_paths: Sequence[Path]) -> list[HaltingPolicy]:  # fmt: skip
    if group == "rules":
        test = tables["test"]
        privileged = [PrivilegedPolicy(rule) for rule in sorted(test.reference_steps)]
        rules = [p for p in rule_policies(settings["random_seeds"], test.max_steps)
                 if test.has_halt_head or p.name != "halt_head"]  # fmt: skip
        return [*rules, *privileged]
    if group == "rl":
        return [RLHaltingPolicy.load(path) for path in rl_paths]
    if group in LEARNERS:
        halt = split_table(task, task_kwargs, checkpoint, "halt")
        return fit_learners(group, halt, tables["val"], settings["step_cost"], settings["learner_seeds"],
                            [tuple(v) for v in settings["ponder_variants"]], settings["act_taus"])  # fmt: skip
    if group in JOINT_FAMILIES:
        return joint_policies(group)
    raise ValueError(f"unknown policy group {group!r}; valid: {list(GROUPS)}")


def evaluate_stage(task: str, task_kwargs: dict[str, Any], checkpoint: ModelSource, group: str,
                   settings: dict[str, Any], out: Path, rl_paths: Sequence[Path] = ()) -> None:  # fmt: skip
    """Evaluate one policy group on the val and test tables of ``checkpoint``; write ``out`` (.npz).

    ``settings``: ``step_cost`` (the evaluation cost), ``random_seeds``, ``learner_seeds``, and the learners'
    ``ponder_variants`` and ``act_taus``.
    """
    cost = settings["step_cost"]
    with torch_threads(1):
        tables = {split: split_table(task, task_kwargs, checkpoint, split) for split in EVAL_SPLITS}
        policies = _policies(group, task, task_kwargs, checkpoint, tables, settings, rl_paths)
        arrays = {f"steps_{split}": np.array([halting_steps(p, tables[split], cost) for p in policies], dtype=np.int16)
                  .reshape(len(policies), -1) for split in EVAL_SPLITS}  # fmt: skip
    points = [{"policy": p.name, "param": p.param, "seed": p.seed, **getattr(p, "details", {})} for p in policies]
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, points=np.array(json.dumps(points)), **arrays)


def load_points(path: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The point list and the per-split (P, N) halting steps of an ``evaluate_stage`` artifact."""
    with np.load(path, allow_pickle=False) as data:
        points = json.loads(str(data["points"]))
        return points, {split: data[f"steps_{split}"].astype(np.int64) for split in EVAL_SPLITS}


def halting_frame(table: Rollouts, points: list[dict[str, Any]], steps: np.ndarray, step_cost: float
                  ) -> pd.DataFrame:  # fmt: skip
    """The episodes of (P, N) halting steps on ``table``: ``policy, param, seed`` and the episode columns."""
    n = steps.shape[1]
    front = pd.DataFrame({key: np.repeat([p[key] for p in points], n) for key in ("policy", "param", "seed")})
    return pd.concat([front, pd.DataFrame(episode_columns(table, steps, step_cost, "profit_weighted_ce"))], axis=1)
