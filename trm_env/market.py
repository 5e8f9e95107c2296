"""The market task: pick one of 8 net-long allocation strategies per trading day (see docs/market_task.md).

Entry points used by ``trm_env.tasks.load_task``: ``load_arch_task`` (S&P 500 / NASDAQ shipped inside
``arch``) and ``load_csv_task`` (the user's own CSV or Parquet). Both validate with ``prepare_prices`` and
build with ``build_market_task``. ``raw_features`` and ``strategy_positions`` are causal: the values of day
t use prices up to and including t only.

Pnl of strategy i for decision day t over horizon h, with simple returns r(s) = P(s) / P(s-1) - 1:

    pnl_i(t) = sum_{j=1..h} pos_i(t+j-1) * r(t+j) - cost * sum_{j=1..h} |pos_i(t+j-1) - pos_i(t+j-2)|
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trm_env.checks import check_int
from trm_env.task import Task, standardise

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

STRATEGY_NAMES = (
    "buy_and_hold",
    "defensive",
    "volatility_targeted",
    "momentum_scaled",
    "ma_trend",
    "mean_reversion",
    "breakout",
    "drawdown_scaled",
)
# (floor, cap) per strategy: distinct bounds keep two strategies from sitting on the same bound for a week.
POSITION_BOUNDS = {
    "buy_and_hold": (1.0, 1.0),
    "defensive": (0.5, 0.8),
    "volatility_targeted": (0.2, 1.6),
    "momentum_scaled": (0.1, 2.0),
    "ma_trend": (0.15, 1.8),
    "mean_reversion": (0.3, 1.75),
    "breakout": (0.1, 1.6),
    "drawdown_scaled": (0.25, 0.95),
}
LONGEST_WINDOW = 252  # ret_252 / drawdown_252: the first sample is the 253rd row
TRADING_DAYS = 252
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


# -------------------------------------------------------------------------------------------- features


def _log_returns(price: pd.Series) -> pd.Series:
    return np.log(price).diff()


def _safe_ratio(num: pd.Series, den: pd.Series, fill: float) -> pd.Series:
    """num / den, ``fill`` where den == 0 (NaN stays NaN)."""
    return (num / den.where(den != 0)).where(den != 0, fill).where(num.notna() & den.notna())


def _range_position(price: pd.Series, window: int) -> pd.Series:
    """Where the price sits in its ``window``-day min..max range: 0 at the low, 1 at the high."""
    low = price.rolling(window).min()
    high = price.rolling(window).max()
    return _safe_ratio(price - low, high - low, 0.5)


def _realized_vol(log_ret: pd.Series, window: int) -> pd.Series:
    """Annualised standard deviation of daily log returns over ``window`` days."""
    return log_ret.rolling(window).std() * np.sqrt(TRADING_DAYS)


def _drawdown(price: pd.Series, window: int) -> pd.Series:
    return price / price.rolling(window).max() - 1.0


def _rsi(log_ret: pd.Series, window: int) -> pd.Series:
    """Wilder RSI rescaled to [-1, 1]: (gain - loss) / (gain + loss) with EMA(alpha=1/window)."""
    gain = log_ret.clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    loss = (-log_ret).clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    return _safe_ratio(gain - loss, gain + loss, 0.0)


def strategy_positions(price: pd.Series) -> pd.DataFrame:
    """Positions (T, 8) decided at each close from prices up to that day, each clipped to its own bounds."""
    log_ret = _log_returns(price)
    daily_vol_21 = log_ret.rolling(21).std()
    momentum_z = np.log(price / price.shift(126)) / (log_ret.rolling(63).std() * np.sqrt(126))
    reversal_z = np.log(price / price.shift(5)) / (daily_vol_21 * np.sqrt(5))
    raw = {
        "buy_and_hold": pd.Series(1.0, index=price.index),
        "defensive": 0.5 + 0.3 * _range_position(price, TRADING_DAYS),
        "volatility_targeted": 0.10 / (daily_vol_21 * np.sqrt(TRADING_DAYS)),
        "momentum_scaled": 1.0 + 0.5 * momentum_z,
        "ma_trend": 1.0 + 15.0 * np.log(price / price.rolling(50).mean()),
        "mean_reversion": 1.0 - 0.25 * reversal_z,
        "breakout": 0.1 + 1.5 * _range_position(price, 20),
        "drawdown_scaled": 0.95 + 4.0 * _drawdown(price, TRADING_DAYS),
    }
    return pd.DataFrame({name: raw[name].clip(*POSITION_BOUNDS[name]) for name in STRATEGY_NAMES})


def raw_features(prices: pd.DataFrame) -> pd.DataFrame:
    """Unstandardised features (T, F) of a canonical price frame; NaN during the warm-up.

    Intraday features need open/high/low/close and volume features need volume; absent columns skip them.
    """
    price = prices["price"]
    log_ret = _log_returns(price)
    features: dict[str, pd.Series] = {}
    for lag in (1, 2, 5, 10, 21, 63, 126, 252):
        features[f"ret_{lag}"] = np.log(price / price.shift(lag))
    for window in (5, 10, 21, 63):
        features[f"vol_{window}"] = _realized_vol(log_ret, window)
    for window in (10, 21, 50, 200):
        features[f"ma_dist_{window}"] = np.log(price / price.rolling(window).mean())
    for window in (63, 252):
        features[f"drawdown_{window}"] = _drawdown(price, window)
    features["rsi_14"] = _rsi(log_ret, 14)
    for window in (20, 63):
        features[f"range_pos_{window}"] = _range_position(price, window)
    if {"high", "low"} <= set(prices.columns):
        high, low = prices["high"], prices["low"]
        features["hl_range_1"] = np.log(high / low)
        features["hl_range_10"] = features["hl_range_1"].rolling(10).mean()
        if "close" in prices.columns:
            features["close_loc"] = _safe_ratio(prices["close"] - low, high - low, 0.5)
    if {"open", "close"} <= set(prices.columns):
        features["gap"] = np.log(prices["open"] / prices["close"].shift(1))
    if "volume" in prices.columns:
        volume = prices["volume"]
        mean_21, std_21 = volume.rolling(21).mean(), volume.rolling(21).std()
        features["volume_z_21"] = _safe_ratio(volume - mean_21, std_21, 0.0)
        features["volume_ratio_63"] = _safe_ratio(volume, volume.rolling(63).mean(), 1.0)
    positions = strategy_positions(price).drop(columns="buy_and_hold")  # constant 1.0: no information
    return pd.concat([pd.DataFrame(features), positions.add_prefix("pos_")], axis=1)


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


def _split_index(
    dates: np.ndarray, train_end: pd.Timestamp, val_end: pd.Timestamp, embargo: int
) -> dict[str, np.ndarray]:
    """Chronological split indices; the last ``embargo`` samples before each boundary are dropped."""
    n = len(dates)
    first_val = int(np.searchsorted(dates, train_end.to_datetime64(), side="right"))
    first_test = int(np.searchsorted(dates, val_end.to_datetime64(), side="right"))
    bounds = {
        "train": (0, first_val - embargo),
        "val": (first_val, first_test - embargo),
        "test": (first_test, n),
    }
    splits = {}
    for split, (start, stop) in bounds.items():
        if stop <= start:
            raise ValueError(f"split {split!r} is empty with train_end={train_end.date()}, "
                             f"val_end={val_end.date()}, embargo={embargo}")
        splits[split] = np.arange(start, stop, dtype=np.int64)
    return splits


def build_market_task(
    prices: pd.DataFrame,
    name: str,
    horizon: int = 5,
    cost: float = 0.0005,
    train_end: Any = "2012-12-31",
    val_end: Any = "2014-12-31",
    embargo: int | None = None,
    source: str = "frame",
) -> Task:
    """Validate ``prices`` (any daily OHLCV frame, see ``prepare_prices``) and build the market Task."""
    horizon = check_int("horizon", horizon)
    embargo = horizon if embargo is None else check_int("embargo", embargo)
    if embargo < horizon:
        raise ValueError(f"embargo must be >= horizon ({horizon}), got {embargo}")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < np.inf:
        raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
    train_stamp, val_stamp = _timestamp("train_end", train_end), _timestamp("val_end", val_end)
    if train_stamp >= val_stamp:
        raise ValueError(f"train_end ({train_stamp.date()}) must be before val_end ({val_stamp.date()})")

    canonical = prepare_prices(prices, source, min_rows=LONGEST_WINDOW + horizon + 1)
    first, last = canonical.index[0], canonical.index[-1]
    for arg, stamp in (("train_end", train_stamp), ("val_end", val_stamp)):
        if not first <= stamp < last:
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
    splits = _split_index(dates, train_stamp, val_stamp, embargo)
    labels = pnl_matrix.argmax(axis=1).astype(np.int64)  # ties: lowest strategy index
    params = {
        "source": source, "horizon": horizon, "cost": float(cost), "train_end": str(train_stamp.date()),
        "val_end": str(val_stamp.date()), "embargo": embargo,
        "rows_dropped": {"warmup": LONGEST_WINDOW, "last_horizon": horizon, "embargo": 2 * embargo},
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
