"""Side-by-side timing for ``benchmark.py``: alternate the runs, keep each one's best rate, report ratios."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def best_rates(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Alternate the timed runs (each returns items per second) and keep each one's best rate."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


def ratio_result(rates: dict[str, float], unit: str, target: float) -> dict[str, Any]:
    ratio = rates["ours"] / rates["baseline"]
    return {**rates, "unit": unit, "ratio": ratio, "target": target, "met": ratio >= target}
