"""The market task: pick one of 8 net-long allocation strategies per trading day (see docs/market_task.md).

Entry points used by ``trm_env.tasks.load_task``: ``load_arch_task`` (S&P 500 / NASDAQ shipped inside
``arch``) and ``load_csv_task`` (the user's own CSV or Parquet). Both validate with ``prepare_prices`` and
build with ``build_market_task`` on the causal features and positions of ``trm_env.features``.

Pnl of strategy i for decision day t over horizon h, with simple returns r(s) = P(s) / P(s-1) - 1:

    pnl_i(t) = sum_{j=1..h} pos_i(t+j-1) * r(t+j) - cost * sum_{j=1..h} |pos_i(t+j-1) - pos_i(t+j-2)|
"""

from __future__ import annotations

import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trm_env.checks import check_int
from trm_env.features import POSITION_BOUNDS, STRATEGY_NAMES, raw_features, strategy_positions
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
PRICE_COLUMNS = ("open", "high", "low", "close")
DATE_NAMES = ("date", "datetime", "timestamp")
ARCH_SOURCES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}


# ----------------------------------------------------------------------------------------------- input


def _find_column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    """The first column of ``frame`` whose lower-cased name is in ``names`` (in the order of ``names``)."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    return next((lower[n] for n in names if n in lower), None)


def _fail(source: str, column: str, row: int, problem: str) -> ValueError:
    return ValueError(f"{source}: column {column!r}, row {row}: {problem}")


def _numeric(frame: pd.DataFrame, column: str, source: str, positive: bool) -> np.ndarray:
    """Column as float64; ValueError at the first non-numeric, non-finite or non-positive (negative) value."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | ((values <= 0) if positive else (values < 0))
    if bad.any():
        row = int(np.argmax(bad))
        need = "a finite price > 0" if positive else "a finite volume >= 0"
        raise _fail(source, column, row, f"value {raw.iloc[row]!r} is not {need}")
    return values


def _dates(frame: pd.DataFrame, source: str) -> pd.DatetimeIndex:
    """The parsed date column (date/datetime/timestamp, case-insensitive, or a former unnamed index)."""
    column = _find_column(frame, DATE_NAMES)
    if column is None and len(frame.columns) and str(frame.columns[0]).lower() in ("index", "unnamed: 0"):
        column = frame.columns[0]
    if column is None:
        raise ValueError(f"{source}: no date column (named one of {DATE_NAMES}, any case) and no date index")
    raw = frame[column]
    parsed = pd.to_datetime(raw, errors="coerce")
    if parsed.isna().any():
        row = int(np.argmax(parsed.isna().to_numpy()))
        raise _fail(source, str(column), row, f"value {raw.iloc[row]!r} is not a parseable date")
    dup = parsed.duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise _fail(source, str(column), row, f"duplicate date {parsed.iloc[row].date()}")
    index = pd.DatetimeIndex(parsed).tz_localize(None).as_unit("ns")
    return index.rename("date")


def prepare_prices(frame: pd.DataFrame, source: str, min_rows: int = 0) -> pd.DataFrame:
    """Validate a daily price frame and return it in canonical form, sorted by date.

    Canonical columns: ``price`` (Adj Close when present, else Close: drives returns and strategies),
    and whichever of ``open``/``high``/``low``/``close`` (raw) and ``volume`` exist. Errors name ``source``,
    the column and the first offending row (0-based data row in input order); fewer than ``min_rows`` rows
    is an error too.
    """
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    dates = _dates(frame, source)
    price_column = _find_column(frame, ("adj close", "adj_close", "adjclose", "close"))
    if price_column is None:
        raise ValueError(f"{source}: column 'Close' (or 'Adj Close', any case) is missing")
    if len(frame) < min_rows:
        raise _fail(source, str(price_column), len(frame), f"data end after {len(frame)} rows, need at least "
                    f"{min_rows} (longest feature window {LONGEST_WINDOW} + horizon + 1)")
    out = {"price": _numeric(frame, price_column, source, positive=True)}
    for name in PRICE_COLUMNS:
        column = _find_column(frame, (name,))
        if column is not None:
            out[name] = _numeric(frame, column, source, positive=True)
    volume = _find_column(frame, ("volume",))
    if volume is not None:
        out["volume"] = _numeric(frame, volume, source, positive=False)
    prices = pd.DataFrame(out, index=dates)
    if not prices.index.is_monotonic_increasing:
        row = int(np.argmax(np.diff(prices.index.to_numpy()) < np.timedelta64(0)) + 1)
        warnings.warn(f"{source}: dates are not sorted (first out of order at row {row}); sorted them",
                      UserWarning, stacklevel=3)
        prices = prices.sort_index()
    return prices


def read_price_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file of daily prices, unvalidated."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


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
) -> Task:
    """Validate ``prices`` (any daily OHLCV frame, see ``prepare_prices``) and build the market Task.

    Split ends default to ``DEFAULT_ENDS``; when no end is given and the data do not cover those dates,
    the splits take ``PROPORTIONS`` of the samples in time order instead. Explicit dates always win.
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

    canonical = prepare_prices(prices, source, min_rows=LONGEST_WINDOW + horizon + 1)
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


def load_csv_task(path: str | Path, **overrides: Any) -> Task:
    """The market task on the user's own daily prices (CSV or Parquet, see ``prepare_prices``)."""
    return build_market_task(read_price_file(path), "csv", source=str(path), **overrides)
