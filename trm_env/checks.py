"""Argument checks shared by every module: bad input is a ``ValueError`` that names the argument."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["check_actions", "check_int"]


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; bools, floats and out-of-range values are refused.

    >>> check_int("k", 3)
    3
    >>> check_int("k", 0)
    Traceback (most recent call last):
    ...
    ValueError: k must be an integer >= 1, got 0
    """
    bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_actions(actions: Any, count: int, source: str = "actions", steps: Any = None) -> np.ndarray:
    """``actions`` as an integer array of shape (count,) of 0 (continue) and 1 (halt), else ``ValueError``.

    One check for the envs, table evaluation and live halting: bools, floats (NaN, 0.9, 1.0), strings and
    other shapes are refused, naming ``source`` (the policy or env), the step of the first offending row
    (``steps``: one step or one per row) and its value.

    >>> check_actions([0, 1], 2).tolist()
    [0, 1]
    >>> check_actions([0, 2], 2, "my_rule", steps=3)
    Traceback (most recent call last):
    ...
    ValueError: my_rule gave action 2 at step 3 (row 1): actions must be integers 0 (continue) or 1 (halt)
    """
    array = np.asarray(actions)
    if array.shape != (count,):
        raise ValueError(f"{source} gave actions of shape {array.shape}; expected ({count},): one 0 (continue) "
                         f"or 1 (halt) per row")  # fmt: skip
    wrong = np.ones(count, dtype=bool) if array.dtype.kind not in "iu" else (array != 0) & (array != 1)
    if count and wrong.any():
        row = int(np.argmax(wrong))
        step = steps if steps is None or np.ndim(steps) == 0 else np.asarray(steps)[row]
        where = "" if step is None else f" at step {step}"
        raise ValueError(f"{source} gave action {array[row].item()!r}{where} (row {row}): actions must be integers 0 "
                         f"(continue) or 1 (halt)")  # fmt: skip
    return array
