"""Where a study's tables come from: one model of a task is a TRM run folder (its tables simulated on the task) or
**saved tables per split** (any model: ``.npz`` files of per-step outputs, or ``Rollouts.save`` folders).

A run config (``experiments/run.py``) names tables per task, one entry per TRM seed (several models count as
seeds): ``"tables": {"digits": [{"halt": "s0/halt.npz", "val": "s0/val.npz", "test": "s0/test.npz"}, ...]}``.
``halt``, ``val`` and ``test`` are required; ``train`` is optional (its path is checked, the table is not used:
no halting learner fits on the split the model learned). An ``.npz`` holds the arguments of
``Rollouts.from_arrays`` (``logits``, ``labels``, optionally ``halt_logits``, ``latent``, ``pnl_matrix``, ``pnl``,
``difficulty``); the task's name and the split come from the config. Tables have no model to run, so the
study's live stage skips them (no compute columns).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from trm_env.rollouts import Rollouts, simulate
from trm_env.tasks import load_task

__all__ = ["OPTIONAL_SPLITS", "TABLE_SPLITS", "ModelSource", "check_tables", "read_table", "source_digest",
           "split_table"]  # fmt: skip

TABLE_SPLITS = ("halt", "val", "test")  # what the study needs: learners fit on halt, choices on val, reports on test
OPTIONAL_SPLITS = ("train",)
ModelSource = Path | dict[str, Path]  # a TRM run folder, or split -> saved table


def read_table(path: Path, split: str, task: str) -> Rollouts:
    """The table saved at ``path`` for ``split`` of ``task``: an ``.npz`` of ``from_arrays``' arguments, or a
    ``Rollouts.save`` folder (whose split and task must be these)."""
    if path.is_dir():
        table = Rollouts.load(path)
        if (table.split, table.task_name) != (split, task):
            raise ValueError(f"{str(path)!r} holds split {table.split!r} of task {table.task_name!r}, not split "
                             f"{split!r} of {task!r}")  # fmt: skip
        return table
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    try:
        return Rollouts.from_arrays(**arrays, split=split, task_name=task)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: {error}") from error


def split_table(task: str, task_kwargs: dict[str, Any], source: ModelSource, split: str) -> Rollouts:
    """The table of one model of ``task`` on ``split``: read from saved tables, or simulated from a TRM folder."""
    if isinstance(source, dict):
        return read_table(Path(source[split]), split, task)
    return simulate(load_task(task, **task_kwargs), source, split=split)


def source_digest(source: ModelSource) -> str:
    """sha256 of what a model's tables depend on: its ``model.pt``, or the file of each saved table the study
    reads (a folder's ``meta.json``, which holds the digests of its arrays)."""
    if not isinstance(source, dict):
        return hashlib.sha256((Path(source) / "model.pt").read_bytes()).hexdigest()
    files = {split: Path(source[split]) for split in TABLE_SPLITS}
    digests = {split: hashlib.sha256((f / "meta.json" if f.is_dir() else f).read_bytes()).hexdigest()
               for split, f in files.items()}  # fmt: skip
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def check_tables(task: str, entries: Any, seeds: list[int]) -> list[dict[str, Path]]:
    """A config's ``tables[task]``: one ``{split: path}`` per TRM seed, with the required splits, each path an
    existing ``.npz`` file or saved folder; else ``ValueError`` naming what is wrong."""
    where = f"tables[{task!r}]"
    if not isinstance(entries, list) or len(entries) != len(seeds):
        raise ValueError(f"{where} must list one {{split: path}} per TRM seed {seeds}, got {entries!r}")
    out = []
    for seed, entry in zip(seeds, entries, strict=True):
        splits = set(entry) if isinstance(entry, dict) else set()
        if not isinstance(entry, dict) or not set(TABLE_SPLITS) <= splits <= {*TABLE_SPLITS, *OPTIONAL_SPLITS}:
            raise ValueError(f"{where} of TRM seed {seed} must map each of {list(TABLE_SPLITS)} (and optionally "
                             f"{list(OPTIONAL_SPLITS)}) to a saved table, got {entry!r}")  # fmt: skip
        paths = {split: Path(path) for split, path in entry.items()}
        missing = [str(p) for p in paths.values() if not ((p.is_file() and p.suffix == ".npz") or p.is_dir())]
        if missing:
            raise ValueError(f"{where} of TRM seed {seed}: no .npz file or saved table folder at {missing}")
        out.append(paths)
    return out
