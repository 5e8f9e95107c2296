"""Which model a table or a live run uses: a shipped checkpoint, a path or run directory, a ``TinyRecursiveModel``,
or any stepper (``trm_env.stepping``); and ``module_digest``, the content of a module that keys its tables."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from trm_env.model import TinyRecursiveModel
from trm_env.stepping import Stepper, check_stepper
from trm_env.task import Task

__all__ = ["CHECKPOINT_DIR", "JOINT_SEEDS", "SHIPPED_SEEDS", "module_digest", "resolve_model", "resolve_stepper",
           "shipped_checkpoint"]  # fmt: skip

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
SHIPPED_SEEDS = tuple(range(10))
JOINT_SEEDS = (0, 1, 2)  # the seeds shipped per joint halting objective (docs/joint_halting.md)


def shipped_checkpoint(task_name: str, seed: int = 0, halting: str = "bce") -> Path:
    """The folder of the TRM shipped for ``task_name`` trained with ``seed`` (``SHIPPED_SEEDS``: 0..9); a joint
    ``halting`` objective's TRMs lie in ``<task_name>-<halting>/`` (``JOINT_SEEDS``: 0, 1 and 2; sp500,
    regime-chain and pointer, ``agents.joint_study.JOINT_TASKS``)."""
    return CHECKPOINT_DIR / (task_name if halting == "bce" else f"{task_name}-{halting}") / f"seed{seed}"


def resolve_model(checkpoint: str | Path | TinyRecursiveModel | None, task: Task) -> TinyRecursiveModel:
    """The model from ``checkpoint`` (default: the task's shipped seed-0 TRM), checked against the task."""
    if isinstance(checkpoint, TinyRecursiveModel):
        model = checkpoint
    elif checkpoint is None or isinstance(checkpoint, str | os.PathLike):
        path = shipped_checkpoint(task.name) if checkpoint is None else Path(checkpoint)
        if checkpoint is None and not (path / "model.pt").is_file():
            raise ValueError(f"no shipped checkpoint for task {task.name!r} at {str(path)!r}; "
                             "pass checkpoint=<model.pt, run directory or TinyRecursiveModel>")  # fmt: skip
        model = TinyRecursiveModel.load(path)
    else:
        raise TypeError(f"checkpoint must be None, a path or a TinyRecursiveModel, got {type(checkpoint).__name__}")
    if model.input_dim != task.num_features:
        raise ValueError(f"checkpoint expects input width {model.input_dim}, but task {task.name!r} has "
                         f"{task.num_features}")  # fmt: skip
    mine = (model.num_classes, model.n_chunks, model.chunk_dim)
    theirs = (task.num_classes, task.n_chunks, task.chunk_dim)
    if mine != theirs:
        raise ValueError(f"checkpoint has {mine[0]} classes and stream chunks {mine[1]}x{mine[2]}, but task "
                         f"{task.name!r} has {theirs[0]} classes and chunks {theirs[1]}x{theirs[2]}")  # fmt: skip
    return model


def resolve_stepper(checkpoint: Any, task: Task) -> TinyRecursiveModel | Stepper:
    """A TRM from a path, a run directory or a model (``resolve_model``); any other object must be a stepper."""
    if checkpoint is None or isinstance(checkpoint, str | os.PathLike | TinyRecursiveModel):
        return resolve_model(checkpoint, task)
    return check_stepper(checkpoint)


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's config (a TRM's; else its class name) and weights: the key of its content."""
    config = module.config if isinstance(module, TinyRecursiveModel) else type(module).__qualname__
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
