"""Tasks: which of a task's strategies (classes) to pick for each sample, and the pnl every choice would realize.

``load_task(name, **overrides) -> Task`` is the one entry point:

- ``"sp500"``, ``"nasdaq"``: real daily prices shipped inside the ``arch`` package (see ``trm_env.market``).
- ``"csv"``: the user's own daily prices, ``load_task("csv", path="prices.csv")`` (CSV or Parquet).
- ``"regime-chain"``: the synthetic task where more recursion steps provably help (``trm_env.synthetic``).
- ``"pointer"``, ``"pointer-extrapolate"``: the fixed-input thinking task (``trm_env.pointer``).

A ``Task`` (``trm_env.task``) holds plain numpy arrays plus the chronological train/val/test index arrays.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from trm_env import market, pointer, synthetic
from trm_env.task import SPLITS, Task, standardise

__all__ = ["SPLITS", "TASK_NAMES", "Task", "load_task", "overrides_from_args", "standardise"]

LOADERS: dict[str, Callable[..., Task]] = {
    "sp500": market.load_arch_task,
    "nasdaq": market.load_arch_task,
    "csv": market.load_csv_task,
    synthetic.NAME: synthetic.load_regime_chain,
    pointer.NAME: pointer.load_pointer,
    pointer.EXTRAPOLATE: pointer.load_pointer_extrapolate,
}
TASK_NAMES = tuple(LOADERS)


def _check_overrides(name: str, overrides: dict[str, Any]) -> None:
    """Unknown keyword overrides (or a csv task without ``path``) are a ``ValueError`` naming the valid ones."""
    targets = {synthetic.NAME: synthetic.load_regime_chain, pointer.NAME: pointer.load_pointer,
               pointer.EXTRAPOLATE: pointer.load_pointer}
    target = targets.get(name, market.build_market_task)
    valid = set(inspect.signature(target).parameters) - {"prices", "name", "source"}
    valid -= {"extrapolate"} if name.startswith(pointer.NAME) else set()  # the task's name says which split rule
    valid |= set(inspect.signature(market.load_csv_task).parameters) - {"overrides"} if name == "csv" else set()
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for task {name!r}; valid: {sorted(valid)}")
    if name == "csv" and "path" not in overrides:
        raise ValueError("task 'csv' needs path=<your prices .csv or .parquet>")


def _build(name: str, overrides: dict[str, Any]) -> Task:
    _check_overrides(name, overrides)
    loader = LOADERS[name]
    return loader(name, **overrides) if name in ("sp500", "nasdaq") else loader(**overrides)


@lru_cache(maxsize=16)
def _cached(name: str, items: tuple[tuple[str, Any], ...]) -> Task:
    return _build(name, dict(items))


def overrides_from_args(args: Sequence[str]) -> dict[str, Any]:
    """``load_task`` overrides given as command-line flags: ``["--path", "p.csv", "--train-end", "2016-12-31",
    "--horizon", "3"]`` gives ``{"path": "p.csv", "train_end": "2016-12-31", "horizon": 3}`` (values are read
    as Python literals where they parse, else kept as text). ``load_task`` checks the names.

    >>> overrides_from_args(["--path", "prices.csv", "--horizon", "3"])
    {'path': 'prices.csv', 'horizon': 3}
    """
    if len(args) % 2 or any(not flag.startswith("--") for flag in args[::2]):
        raise ValueError(f"task overrides must come as --name value pairs, got {list(args)}")
    overrides = {}
    for flag, text in zip(args[::2], args[1::2], strict=True):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        overrides[flag[2:].replace("-", "_")] = value
    return overrides


def load_task(name: str, **overrides: Any) -> Task:
    """Load a task by name; keyword overrides (horizon, cost, split dates, n, seed, ...) go to its loader.

    Built-in tasks are cached per process (their arrays are read-only), so repeated calls are free;
    ``"csv"`` is read afresh every time since the file may change.
    """
    if not isinstance(name, str) or name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; valid tasks: {list(TASK_NAMES)}")
    items = tuple(sorted(overrides.items()))
    try:
        hash(items)
    except TypeError:
        return _build(name, overrides)
    return _build(name, overrides) if name == "csv" else _cached(name, items)
