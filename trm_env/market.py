"""The market task: pick one of 8 net-long allocation strategies per trading day (see docs/market_task.md).

Entry points used by ``trm_env.tasks.load_task``: ``load_arch_task`` (S&P 500 / NASDAQ shipped inside
``arch``) and ``load_csv_task`` (the user's own CSV or Parquet). Both validate with ``prepare_prices``
(``trm_env.prices``: what is refused, and the options that accept it) and build with
``build_market_task`` on the causal features and positions of ``trm_env.features``.

Pnl of strategy i for decision day t over horizon h, with simple returns r(s) = P(s) / P(s-1) - 1:

    pnl_i(t) = sum_{j=1..h} pos_i(t+j-1) * r(t+j) - cost * sum_{j=1..h} |pos_i(t+j-1) - pos_i(t+j-2)|
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trm_env.checks import check_int
from trm_env.features import POSITION_BOUNDS, STRATEGY_NAMES, raw_features, strategy_positions
from trm_env.prices import MAX_GAP_DAYS, MAX_SPIKE, prepare_prices, read_price_file
from trm_env.task import SPLITS, Task, standardise

__all__ = [
    "STRATEGY_NAMES",
    "build_market_task",
    "load_arch_task",
    "load_csv_task",
    "prepare_prices",
    "raw_features",
    "read_price_file",
    "strategy_positions",
]

LONGEST_WINDOW = 252  # ret_252 / drawdown_252: the first sample is the 253rd row
DEFAULT_ENDS = {"train_end": "2010-12-31", "halt_end": "2012-12-31", "val_end": "2014-12-31"}
PROPORTIONS = (0.6, 0.1, 0.1, 0.2)  # train, halt, val, test: when the data do not cover DEFAULT_ENDS
ARCH_SOURCES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}


# ------------------------------------------------------------------------------------------------ task


def forward_pnl(price: pd.Series, positions: pd.DataFrame, horizon: int, cost: float) -> np.ndarray:
    """(T, 8) pnl of each strategy held from close t for ``horizon`` days (module docstring formula).

    Rows whose window leaves the data (the last ``horizon``) or starts before positions exist are NaN.
    """
    ret = price.pct_change().to_numpy()
    pos = positions.to_numpy()
    step = np.full_like(pos, np.nan)
    step[1:] = pos[:-1] * ret[1:, None]  # step[s] = pos(s-1) * r(s)
    step[2:] -= cost * np.abs(pos[1:-1] - pos[:-2])  # minus cost of the change made at close s-1
    windows = np.lib.stride_tricks.sliding_window_view(step, horizon, axis=0).sum(axis=-1)
    pnl = np.full_like(pos, np.nan)
    pnl[: len(windows) - 1] = windows[1:]  # pnl(t) = step(t+1) + ... + step(t+h)
    return pnl


def _timestamp(name: str, value: Any) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a date, got {value!r}") from error
    if stamp is pd.NaT:
        raise ValueError(f"{name} must be a date, got {value!r}")
    return stamp


def _covers(dates: np.ndarray, ends: dict[str, pd.Timestamp], embargo: int) -> bool:
    """Whether every split ending on ``ends`` (and the test split after them) keeps more than ``embargo`` samples."""
    cuts = [0, *(int(np.searchsorted(dates, end.to_datetime64(), side="right")) for end in ends.values()), len(dates)]
    return all(stop - start > embargo for start, stop in pairwise(cuts))


def _split_index(dates: np.ndarray, ends: dict[str, pd.Timestamp], embargo: int) -> dict[str, np.ndarray]:
    """Chronological split indices (each split ends on its date in ``ends``, the last runs to the end of
    the data); the last ``embargo`` samples before each boundary are dropped."""
    firsts = [0, *(int(np.searchsorted(dates, end.to_datetime64(), side="right")) for end in ends.values())]
    stops = [first - embargo for first in firsts[1:]] + [len(dates)]
    splits = {}
    for split, start, stop in zip(SPLITS, firsts, stops, strict=True):
        if stop <= start:
            dates_text = ", ".join(f"{name}={end.date()}" for name, end in ends.items())
            raise ValueError(f"split {split!r} is empty with {dates_text}, embargo={embargo}")
        splits[split] = np.arange(start, stop, dtype=np.int64)
    return splits


def build_market_task(
    prices: pd.DataFrame,
    name: str,
    horizon: int = 5,
    cost: float = 0.0005,
    train_end: Any = None,
    halt_end: Any = None,
    val_end: Any = None,
    embargo: int | None = None,
    source: str = "frame",
    dayfirst: bool | None = None,
    max_gap_days: int | None = MAX_GAP_DAYS,
    max_spike: float | None = MAX_SPIKE,
) -> Task:
    """Validate ``prices`` (any daily OHLCV frame, see ``prepare_prices``) and build the market Task.

    Split ends default to ``DEFAULT_ENDS``; when no end is given and the data do not cover those dates,
    the splits take ``PROPORTIONS`` of the samples in time order instead. Explicit dates always win.
    ``dayfirst``, ``max_gap_days`` (14 calendar days) and ``max_spike`` (3x out and back) are the date
    order and the limits of ``trm_env.prices``; ``None`` lifts a limit.
    """
    horizon = check_int("horizon", horizon)
    embargo = horizon if embargo is None else check_int("embargo", embargo)
    if embargo < horizon:
        raise ValueError(f"embargo must be >= horizon ({horizon}), got {embargo}")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < np.inf:
        raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
    given = {"train_end": train_end, "halt_end": halt_end, "val_end": val_end}
    ends = {name: _timestamp(name, DEFAULT_ENDS[name] if value is None else value) for name, value in given.items()}
    for (earlier, a), (later, b) in pairwise(ends.items()):
        if a >= b:
            raise ValueError(f"{earlier} ({a.date()}) must be before {later} ({b.date()})")

    canonical = prepare_prices(prices, source, LONGEST_WINDOW + horizon + 1, dayfirst, max_gap_days, max_spike)
    first, last = canonical.index[0], canonical.index[-1]
    explicit = any(value is not None for value in given.values())
    for arg, stamp in ends.items():
        if explicit and not first <= stamp < last:
            raise ValueError(f"{source}: {arg}={stamp.date()} lies outside the data "
                             f"({first.date()} .. {last.date()}, exclusive end)")

    features = raw_features(canonical)
    positions = strategy_positions(canonical["price"])
    pnl_matrix = forward_pnl(canonical["price"], positions, horizon, float(cost))
    keep = np.arange(LONGEST_WINDOW, len(canonical) - horizon)
    values = features.to_numpy()[keep]
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"{source}: feature {features.columns[col]!r} is not finite on "
                         f"{canonical.index[keep[row]].date()} (row {keep[row]})")
    pnl_matrix = pnl_matrix[keep].astype(np.float32)
    dates = canonical.index.to_numpy()[keep]
    rule = "dates"
    if not explicit and not _covers(dates, ends, embargo):
        edges = (np.cumsum(PROPORTIONS[:-1]) * len(dates)).astype(int) - 1
        ends, rule = {name: pd.Timestamp(dates[i]) for name, i in zip(DEFAULT_ENDS, edges, strict=True)}, "proportions"
    splits = _split_index(dates, ends, embargo)
    labels = pnl_matrix.argmax(axis=1).astype(np.int64)  # ties: lowest strategy index
    params = {
        "source": source, "horizon": horizon, "cost": float(cost), **{k: str(v.date()) for k, v in ends.items()},
        "embargo": embargo, "split_rule": rule,
        "rows_dropped": {"warmup": LONGEST_WINDOW, "last_horizon": horizon, "embargo": 3 * embargo},
        "position_bounds": dict(POSITION_BOUNDS),
    }
    return Task(
        name=name,
        features=standardise(values, splits["train"]),
        labels=labels,
        pnl=pnl_matrix[np.arange(len(labels)), labels],
        pnl_matrix=pnl_matrix,
        dates=dates,
        splits=splits,
        strategy_names=STRATEGY_NAMES,
        feature_names=tuple(features.columns),
        params=params,
    )


def load_arch_task(name: str, **overrides: Any) -> Task:
    """The market task on S&P 500 (``"sp500"``) or NASDAQ (``"nasdaq"``) daily prices shipped in ``arch``."""
    if name not in ARCH_SOURCES:
        raise ValueError(f"unknown arch data set {name!r}; valid: {list(ARCH_SOURCES)}")
    import arch.data.nasdaq
    import arch.data.sp500

    module = {"sp500": arch.data.sp500, "nasdaq": arch.data.nasdaq}[name]
    return build_market_task(module.load(), name, source=ARCH_SOURCES[name], **overrides)


def load_csv_task(path: str | Path, sep: str | None = None, **overrides: Any) -> Task:
    """The market task on the user's own daily prices (CSV or Parquet, see ``trm_env.prices``)."""
    return build_market_task(read_price_file(path, sep), "csv", source=str(path), **overrides)
