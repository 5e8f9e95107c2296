"""Daily prices in: read a CSV or Parquet file and validate it for the market task (``trm_env.market``).

Every refusal is a ``ValueError`` naming the source (the file), the column and the rows (0-based data
rows in file order). Besides missing columns, bad numbers and duplicate dates, two likely data errors
are refused, each with an option to accept it (``load_task("csv", path=..., <option>=...)``, or
``--max-gap-days None`` on the scripts' command lines):

- ``max_gap_days`` (default 14): two consecutive dates more than 14 calendar days apart. No regular
  exchange closure is that long (S&P 500 1999-2018: 7 days, after 11 September 2001; Chinese New
  Year: 11). ``None`` (or a larger limit) keeps the gap, and the return across it counts as one period.
- ``max_spike`` (default 3): a price more than 3x, or under 1/3, of both the day before and the day
  after, such as a close typed 1000x too large. Real moves are far smaller (S&P 500 and NASDAQ
  1999-2018, crashes included: at most 1.12x out and back). ``None`` accepts it.

Dates written d/m/y or m/d/y (digits only, without a time) are read in the order the data prove: a
first field above 12 means day-first, a second above 12 month-first. If every field is at most 12,
the order is ambiguous and must be set with ``dayfirst=True`` or ``False``. Other formats (ISO and the
rest) are parsed as pandas infers them. A CSV may start with a UTF-8 BOM; its separator is the one of
``, ; tab |`` that occurs most often in the header line, unless ``sep`` is given.
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from trm_env.checks import check_int

__all__ = ["MAX_GAP_DAYS", "MAX_SPIKE", "prepare_prices", "read_price_file"]

MAX_GAP_DAYS = 14
MAX_SPIKE = 3.0
PRICE_COLUMNS = ("open", "high", "low", "close")
DATE_NAMES = ("date", "datetime", "timestamp")
SEPARATORS = (",", ";", "\t", "|")
_NUMERIC_DATE = r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})\s*$"


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


def _parse_dates(raw: pd.Series, source: str, column: str, dayfirst: bool | None) -> tuple[pd.Series, str]:
    """The dates and the format read: d/m/y or m/d/y in the order the data prove (module docstring)."""
    if dayfirst is not None and not isinstance(dayfirst, bool):
        raise ValueError(f"dayfirst must be None (detect), True or False, got {dayfirst!r}")
    text = pd.Series(raw, dtype=object).astype(str)
    parts = text.str.extract(_NUMERIC_DATE) if raw.dtype == object or pd.api.types.is_string_dtype(raw) else None
    if parts is None or parts[0].isna().all():
        return pd.to_datetime(raw, errors="coerce"), "inferred"
    days, months = (np.flatnonzero(parts[i].astype(float).to_numpy() > 12) for i in (0, 2))
    if dayfirst is None and len(days) and len(months):
        raise _fail(source, column, int(months[0]), f"{text.iloc[months[0]]!r} is month-first, but row "
                    f"{days[0]} {text.iloc[days[0]]!r} is day-first; make them agree")  # fmt: skip
    if dayfirst is None and not len(days) and not len(months):
        raise ValueError(f"{source}: column {column!r}: dates like {text.iloc[0]!r} could be day-first or "
                         "month-first (no field above 12); pass dayfirst=True (31/01/2015) or "
                         "dayfirst=False (01/31/2015)")  # fmt: skip
    dayfirst = bool(len(days)) if dayfirst is None else dayfirst
    first = parts.dropna().iloc[0]
    order = ("%d", "%m") if dayfirst else ("%m", "%d")
    form = first[1].join((*order, "%Y" if len(first[3]) == 4 else "%y"))
    return pd.to_datetime(text.str.strip(), format=form, errors="coerce"), form


def _dates(frame: pd.DataFrame, source: str, dayfirst: bool | None) -> tuple[pd.DatetimeIndex, str]:
    """The parsed date column (date/datetime/timestamp, case-insensitive, or a former unnamed index), its name."""
    column = _find_column(frame, DATE_NAMES)
    if column is None and len(frame.columns) and str(frame.columns[0]).lower() in ("index", "unnamed: 0"):
        column = frame.columns[0]
    if column is None:
        raise ValueError(f"{source}: no date column (named one of {DATE_NAMES}, any case) and no date index; "
                         f"columns read: {[str(c) for c in frame.columns]}")  # fmt: skip
    raw = frame[column]
    parsed, form = _parse_dates(raw, source, str(column), dayfirst)
    if parsed.isna().any():
        row = int(np.argmax(parsed.isna().to_numpy()))
        hint = "" if form == "inferred" else f" in the format {form!r} (set dayfirst= to read the other order)"
        raise _fail(source, str(column), row, f"value {raw.iloc[row]!r} is not a parseable date{hint}")
    dup = parsed.duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise _fail(source, str(column), row, f"duplicate date {parsed.iloc[row].date()}")
    index = pd.DatetimeIndex(parsed).tz_localize(None).as_unit("ns")
    return index.rename("date"), str(column)


def _check_gaps(dates: pd.DatetimeIndex, rows: np.ndarray, source: str, column: str, limit: int | None) -> None:
    """Refuse consecutive (sorted) dates more than ``limit`` calendar days apart (``None``: accept)."""
    if limit is None:
        return
    days = np.diff(dates.to_numpy()) / np.timedelta64(1, "D")
    long = np.flatnonzero(days > check_int("max_gap_days", limit))
    if len(long):
        i = long[0]
        raise ValueError(f"{source}: column {column!r}: {len(long)} gap(s) of more than {limit} calendar days, the "
                         f"first {days[i]:.0f} days between row {rows[i]} ({dates[i].date()}) and row {rows[i + 1]} "
                         f"({dates[i + 1].date()}); fill the data, or pass max_gap_days=None to keep gaps "
                         "(the return across one then counts as one period)")  # fmt: skip


def _check_spikes(
    prices: pd.DataFrame, rows: np.ndarray, source: str, names: dict[str, str], limit: float | None
) -> None:
    """Refuse a price more than ``limit`` times away from both neighbours, the same way (``None``: accept)."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not 1 < limit < np.inf:
        raise ValueError(f"max_spike must be None or a number > 1, got {limit!r}")
    for name, column in names.items():
        logs = np.log(prices[name].to_numpy())
        before, after = logs[1:-1] - logs[:-2], logs[1:-1] - logs[2:]
        out = (np.minimum(before, after) > np.log(limit)) | (np.maximum(before, after) < -np.log(limit))
        if out.any():
            t = int(np.argmax(out)) + 1
            value, neighbours = prices[name].iloc[t], (prices[name].iloc[t - 1], prices[name].iloc[t + 1])
            raise _fail(source, column, int(rows[t]), f"value {value:g} on {prices.index[t].date()} is more than "
                        f"{limit:g}x away from both the day before ({neighbours[0]:g}) and the day after "
                        f"({neighbours[1]:g}), a likely typo; fix it, or pass max_spike=None to accept it")  # fmt: skip


def prepare_prices(
    frame: pd.DataFrame,
    source: str,
    min_rows: int = 0,
    dayfirst: bool | None = None,
    max_gap_days: int | None = MAX_GAP_DAYS,
    max_spike: float | None = MAX_SPIKE,
) -> pd.DataFrame:
    """Validate a daily price frame and return it in canonical form, sorted by date.

    Canonical columns: ``price`` (Adj Close when present, else Close: drives returns and strategies),
    and whichever of ``open``/``high``/``low``/``close`` (raw) and ``volume`` exist. Errors name ``source``,
    the column and the first offending row; fewer than ``min_rows`` rows is an error too. ``dayfirst``,
    ``max_gap_days`` and ``max_spike``: see the module docstring.
    """
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    dates, date_column = _dates(frame, source, dayfirst)
    price_column = _find_column(frame, ("adj close", "adj_close", "adjclose", "close"))
    if price_column is None:
        raise ValueError(f"{source}: column 'Close' (or 'Adj Close', any case) is missing; "
                         f"columns read: {[str(c) for c in frame.columns]}")  # fmt: skip
    if len(frame) < min_rows:
        raise _fail(source, str(price_column), len(frame), f"data end after {len(frame)} rows, need at least "
                    f"{min_rows} (the longest feature window + horizon + 1)")  # fmt: skip
    names = {"price": str(price_column)}
    names.update({name: str(c) for name in PRICE_COLUMNS if (c := _find_column(frame, (name,))) is not None})
    out = {name: _numeric(frame, column, source, positive=True) for name, column in names.items()}
    volume = _find_column(frame, ("volume",))
    if volume is not None:
        out["volume"] = _numeric(frame, volume, source, positive=False)
    prices = pd.DataFrame(out, index=dates)
    rows = np.argsort(dates.to_numpy(), kind="stable")
    if not prices.index.is_monotonic_increasing:
        row = int(np.argmax(np.diff(prices.index.to_numpy()) < np.timedelta64(0)) + 1)
        warnings.warn(f"{source}: dates are not sorted (first out of order at row {row}); sorted them",
                      UserWarning, stacklevel=3)  # fmt: skip
        prices = prices.iloc[rows]
    _check_gaps(prices.index, rows, source, date_column, max_gap_days)
    _check_spikes(prices, rows, source, names, max_spike)
    return prices


def read_price_file(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV (UTF-8, a BOM allowed; separator detected unless ``sep``) or Parquet file, unvalidated."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if suffix != ".csv":
        return pd.read_parquet(path)
    if sep is not None and (not isinstance(sep, str) or not sep):
        raise ValueError(f"sep must be None (detect) or a separator such as ';', got {sep!r}")
    try:
        with path.open(encoding="utf-8-sig") as handle:
            header = next((line for line in handle if line.strip()), "")
        if not header:
            raise ValueError(f"{path}: the file is empty (no header line)")
        sep = sep or max(SEPARATORS, key=header.count)
        frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: does not read as a UTF-8 CSV with separator {sep!r} ({error})") from error
    others = [other for other in SEPARATORS if other != sep and other in header]
    if len(frame.columns) == 1 and others:
        column = str(frame.columns[0])
        raise ValueError(f"{path}: separator {sep!r} gives one column {column!r}; pass sep={others[0]!r}")
    return frame
