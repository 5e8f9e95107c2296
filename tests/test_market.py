"""The market task: shapes, labels, balance, no look-ahead, embargo, train-only scaling, CSV input."""

from __future__ import annotations

from pathlib import Path

import arch.data.sp500
import numpy as np
import pandas as pd
import pytest

from trm_env import market
from trm_env.tasks import Task, load_task

HORIZON = 5


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return arch.data.sp500.load()


@pytest.fixture(scope="module")
def sp500() -> Task:
    return load_task("sp500")


def _perturb_after(frame: pd.DataFrame, day: int, seed: int = 0) -> pd.DataFrame:
    """A copy with every price and volume after row ``day`` multiplied by a random factor per row."""
    out = frame.copy()
    factors = np.random.default_rng(seed).uniform(0.8, 1.25, size=len(frame) - day - 1)
    for column in out.columns:
        scaled = out[column].to_numpy(dtype=np.float64)[day + 1 :] * factors
        out[column] = out[column].astype(np.float64)
        out.iloc[day + 1 :, out.columns.get_loc(column)] = scaled
    return out


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_shapes_and_dtypes(name: str) -> None:
    task = load_task(name)
    n = len(task.labels)
    assert n == 5031 - market.LONGEST_WINDOW - HORIZON
    assert task.features.dtype == np.float32 and task.features.shape == (n, len(task.feature_names))
    assert 25 <= task.num_features <= 40 and np.isfinite(task.features).all()
    assert task.labels.dtype == np.int64 and task.labels.min() >= 0 and task.labels.max() < 8
    assert task.pnl.dtype == np.float32 and task.pnl_matrix.dtype == np.float32
    assert task.pnl_matrix.shape == (n, 8) and task.strategy_names == market.STRATEGY_NAMES
    assert np.issubdtype(task.dates.dtype, np.datetime64) and (np.diff(task.dates) > np.timedelta64(0)).all()
    assert {"horizon", "cost", "train_end", "val_end", "embargo", "source"} <= set(task.params)
    assert task.params["source"] == f"arch.data.{name}"


def test_labels_are_argmax_and_pnl_is_the_labelled_column(sp500: Task) -> None:
    np.testing.assert_array_equal(sp500.labels, sp500.pnl_matrix.argmax(axis=1))
    np.testing.assert_array_equal(sp500.pnl, sp500.pnl_matrix[np.arange(len(sp500.labels)), sp500.labels])


def test_pnl_formula_on_one_sample(sp500: Task, frame: pd.DataFrame) -> None:
    price = frame["Adj Close"].to_numpy()
    pos = market.strategy_positions(frame["Adj Close"]).to_numpy()
    t = market.LONGEST_WINDOW + 100  # raw row of sample 100
    ret = price[t + 1 : t + 1 + HORIZON] / price[t : t + HORIZON] - 1
    held = pos[t : t + HORIZON]
    changes = np.abs(pos[t : t + HORIZON] - pos[t - 1 : t - 1 + HORIZON]).sum(axis=0)
    expected = (held * ret[:, None]).sum(axis=0) - 0.0005 * changes
    np.testing.assert_allclose(sp500.pnl_matrix[100], expected, rtol=1e-5, atol=1e-7)


def test_class_balance_ties_and_losing_labels(sp500: Task) -> None:
    share = sp500.class_table("train")["share"]
    assert share.max() <= 0.40 and share.min() >= 0.03
    best = sp500.pnl_matrix.max(axis=1, keepdims=True)
    tie_rate = ((sp500.pnl_matrix >= best - 1e-12).sum(axis=1) >= 2).mean()
    assert tie_rate < 0.01
    assert (sp500.pnl < 0).mean() >= 0.10


def test_positions_are_net_long_and_bounded(frame: pd.DataFrame) -> None:
    pos = market.strategy_positions(frame["Adj Close"]).iloc[market.LONGEST_WINDOW :]
    assert pos.notna().all().all() and (pos >= 0.1).all().all() and (pos <= 2.0).all().all()
    assert pos.drop(columns="buy_and_hold").nunique().min() > 100  # continuous, not 0/1 switches


def test_no_look_ahead(frame: pd.DataFrame) -> None:
    day = 3000
    before = market.prepare_prices(frame, "original")
    after = market.prepare_prices(_perturb_after(frame, day), "perturbed")
    assert not np.allclose(before["price"].to_numpy()[day + 1 :], after["price"].to_numpy()[day + 1 :])
    f_before, f_after = market.raw_features(before), market.raw_features(after)
    pd.testing.assert_frame_equal(f_before.iloc[: day + 1], f_after.iloc[: day + 1])
    assert not f_before.iloc[day + 1 :].equals(f_after.iloc[day + 1 :])
    pd.testing.assert_frame_equal(
        market.strategy_positions(before["price"]).iloc[: day + 1],
        market.strategy_positions(after["price"]).iloc[: day + 1],
    )


def test_embargo_and_split_order(sp500: Task) -> None:
    train, val, test = (sp500.split(s) for s in ("train", "val", "test"))
    dates = sp500.dates
    assert dates[train[-1]] <= np.datetime64("2012-12-31") < dates[val[0]]
    assert dates[val[-1]] <= np.datetime64("2014-12-31") < dates[test[0]]
    assert dates[train[0]] < dates[train[-1]] < dates[val[0]] < dates[val[-1]] < dates[test[0]]
    # samples are consecutive trading days: a label window of sample i covers rows i+1..i+horizon
    embargo = sp500.params["embargo"]
    assert embargo >= HORIZON
    assert val[0] - train[-1] - 1 >= embargo and test[0] - val[-1] - 1 >= embargo
    assert train[-1] + HORIZON < val[0] and val[-1] + HORIZON < test[0]
    # the first val sample's date lies after every train sample's label window
    assert dates[val[0]] > dates[train[-1] + HORIZON] and dates[test[0]] > dates[val[-1] + HORIZON]
    assert test[-1] == len(dates) - 1


def test_standardisation_uses_train_only(sp500: Task, frame: pd.DataFrame) -> None:
    train = sp500.features[sp500.split("train")]
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    first_test_row = int(np.searchsorted(frame.index.to_numpy(), np.datetime64("2015-01-01")))
    changed = market.build_market_task(_perturb_after(frame, first_test_row - 1), "sp500")
    for split in ("train", "val"):
        index = sp500.split(split)
        np.testing.assert_array_equal(changed.features[index], sp500.features[index])
        np.testing.assert_array_equal(changed.labels[index], sp500.labels[index])
    assert not np.array_equal(changed.features[sp500.split("test")], sp500.features[sp500.split("test")])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip(sp500: Task, frame: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prices{suffix}"
    frame.to_csv(path) if suffix == ".csv" else frame.to_parquet(path)
    task = load_task("csv", path=str(path))
    assert task.name == "csv" and task.params["source"] == str(path)
    np.testing.assert_array_equal(task.features, sp500.features)
    np.testing.assert_array_equal(task.labels, sp500.labels)
    np.testing.assert_array_equal(task.pnl_matrix, sp500.pnl_matrix)
    np.testing.assert_array_equal(task.dates, sp500.dates)
    assert task.feature_names == sp500.feature_names


def test_csv_without_optional_columns_skips_their_features(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "close_only.csv"
    frame[["Close"]].rename_axis("timestamp").rename(columns={"Close": "close"}).to_csv(path)
    task = load_task("csv", path=path)
    skipped = {"hl_range_1", "hl_range_10", "close_loc", "gap", "volume_z_21", "volume_ratio_63"}
    assert not skipped & set(task.feature_names)
    assert len(task.feature_names) == len(load_task("sp500").feature_names) - len(skipped)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reset_index().astype({"Volume": np.float64})


@pytest.mark.parametrize(
    ("edit", "column", "row"),
    [
        (lambda f: f.drop(columns=["Close", "Adj Close"]), "Close", None),
        (lambda f: f.assign(Date=f["Date"].astype(str).where(f.index != 7, "not a date")), "Date", 7),
        (lambda f: f.assign(Date=f["Date"].where(f.index != 9, f["Date"].iloc[8])), "Date", 9),
        (lambda f: f.assign(**{"Adj Close": f["Adj Close"].where(f.index != 11, np.nan)}), "Adj Close", 11),
        (lambda f: f.assign(**{"Adj Close": f["Adj Close"].where(f.index != 12, np.inf)}), "Adj Close", 12),
        (lambda f: f.assign(High=f["High"].where(f.index != 13, 0.0)), "High", 13),
        (lambda f: f.assign(Low=f["Low"].where(f.index != 14, -1.0)), "Low", 14),
        (lambda f: f.assign(Volume=f["Volume"].where(f.index != 15, -5.0)), "Volume", 15),
        (lambda f: f.iloc[: market.LONGEST_WINDOW + HORIZON], "Adj Close", market.LONGEST_WINDOW + HORIZON),
    ],
    ids=["missing-close", "bad-date", "duplicate-date", "nan", "inf", "zero", "negative", "volume", "short"],
)
def test_bad_csv_raises(frame: pd.DataFrame, tmp_path: Path, edit, column: str, row: int | None) -> None:
    path = _write(edit(_flat(frame)), tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=repr(column)) as error:
        load_task("csv", path=path)
    assert str(path) in str(error.value)
    if row is not None:
        assert f"row {row}:" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"train_end": "1990-01-01"}, "train_end"),
        ({"val_end": "2030-01-01"}, "val_end"),
        ({"train_end": "2015-01-01", "val_end": "2014-01-01"}, "train_end"),
        ({"train_end": "1999-06-01"}, "train"),
        ({"train_end": "soon"}, "train_end"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"embargo": 3}, "embargo"),
        ({"cost": -0.1}, "cost"),
    ],
)
def test_bad_overrides_raise(frame: pd.DataFrame, tmp_path: Path, overrides: dict, argument: str) -> None:
    path = _write(_flat(frame), tmp_path / "prices.csv")
    with pytest.raises(ValueError, match=argument):
        load_task("csv", path=path, **overrides)
    with pytest.raises(ValueError, match=argument):
        load_task("sp500", **overrides)


def test_unsorted_dates_are_sorted_with_a_warning(sp500: Task, frame: pd.DataFrame, tmp_path: Path) -> None:
    shuffled = _flat(frame).sample(frac=1.0, random_state=0)
    path = _write(shuffled, tmp_path / "shuffled.csv")
    with pytest.warns(UserWarning, match="not sorted"):
        task = load_task("csv", path=path)
    np.testing.assert_array_equal(task.labels, sp500.labels)
    np.testing.assert_array_equal(task.features, sp500.features)


def test_overrides_are_recorded() -> None:
    task = load_task("sp500", horizon=3, cost=0.001, embargo=10, train_end="2010-12-31", val_end="2013-12-31")
    assert task.params["source"] == "arch.data.sp500"
    assert {k: task.params[k] for k in ("horizon", "cost", "embargo", "train_end", "val_end")} == {
        "horizon": 3, "cost": 0.001, "embargo": 10, "train_end": "2010-12-31", "val_end": "2013-12-31"}
    assert len(task.labels) == 5031 - market.LONGEST_WINDOW - 3


# ---- timing on hand-made prices: features of day t from days <= t, labels from days t+1 .. t+horizon ----------------


def _ohlcv(n: int = 700, seed: int = 0) -> pd.DataFrame:
    """A random daily OHLCV frame on business days from 2000 (Close is the price)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.005, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, n)))
    volume = rng.uniform(1e6, 2e6, n)
    index = pd.bdate_range("2000-01-03", periods=n, name="Date")
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}, index=index)


def _reference_features(prices: pd.DataFrame, t: int) -> dict[str, float]:
    """Every feature of day t from docs/market_task.md's definitions, window by window (windows end at t)."""
    p, o, h, lo, c, v = (prices[k].to_numpy() for k in ("price", "open", "high", "low", "close", "volume"))
    lr = np.diff(np.log(p), prepend=np.nan)

    def last(x: np.ndarray, n: int) -> np.ndarray:
        return x[t - n + 1 : t + 1]

    def sd(n: int) -> float:
        return float(np.std(last(lr, n), ddof=1))

    def rangepos(n: int) -> float:
        window = last(p, n)
        return float((p[t] - window.min()) / (window.max() - window.min()))

    def ema(x: np.ndarray) -> float:
        value = x[1]
        for item in x[2 : t + 1]:
            value = (1 - 1 / 14) * value + item / 14
        return value

    gain, loss = ema(np.maximum(lr, 0.0)), ema(np.maximum(-lr, 0.0))
    if t < 252:  # the warm-up: the short windows only
        return {"rsi_14": (gain - loss) / (gain + loss)}
    out = {f"ret_{k}": np.log(p[t] / p[t - k]) for k in (1, 2, 5, 10, 21, 63, 126, 252)}
    out.update({f"vol_{n}": sd(n) * np.sqrt(252) for n in (5, 10, 21, 63)})
    out.update({f"ma_dist_{n}": np.log(p[t] / last(p, n).mean()) for n in (10, 21, 50, 200)})
    out.update({f"drawdown_{n}": p[t] / last(p, n).max() - 1 for n in (63, 252)})
    out.update({"rsi_14": (gain - loss) / (gain + loss), "range_pos_20": rangepos(20), "range_pos_63": rangepos(63)})
    out.update({"hl_range_1": np.log(h[t] / lo[t]), "hl_range_10": np.log(last(h, 10) / last(lo, 10)).mean(),
                "close_loc": (c[t] - lo[t]) / (h[t] - lo[t]), "gap": np.log(o[t] / c[t - 1]),
                "volume_z_21": (v[t] - last(v, 21).mean()) / np.std(last(v, 21), ddof=1),
                "volume_ratio_63": v[t] / last(v, 63).mean()})  # fmt: skip
    raw = {"defensive": 0.5 + 0.3 * rangepos(252), "volatility_targeted": 0.10 / (sd(21) * np.sqrt(252)),
           "momentum_scaled": 1 + 0.5 * np.log(p[t] / p[t - 126]) / (sd(63) * np.sqrt(126)),
           "ma_trend": 1 + 15 * np.log(p[t] / last(p, 50).mean()),
           "mean_reversion": 1 - 0.25 * np.log(p[t] / p[t - 5]) / (sd(21) * np.sqrt(5)),
           "breakout": 0.1 + 1.5 * rangepos(20), "drawdown_scaled": 0.95 + 4 * (p[t] / last(p, 252).max() - 1)}
    out.update({f"pos_{name}": float(np.clip(value, *market.POSITION_BOUNDS[name])) for name, value in raw.items()})
    return out


def _with_extremes(frame: pd.DataFrame) -> pd.DataFrame:
    """Day 451 closes 5% under the lowest close of the 300 days before it, day 699 5% over the highest: the ends of
    every price window sit on those days."""
    out = frame.copy()
    close = out["Close"].to_numpy()
    for day, target in ((451, 0.95 * close[151:451].min()), (699, 1.05 * close[399:699].max())):
        out.iloc[day, :4] *= target / close[day]  # open, high, low, close
    return out


@pytest.mark.parametrize("day", [300, 451, 699])
def test_every_feature_is_its_definition_on_the_window_ending_that_day(day: int) -> None:
    """On random days and on days that set a new low (451) and a new high (699)."""
    prices = market.prepare_prices(_with_extremes(_ohlcv()), "synthetic")
    features = market.raw_features(prices).iloc[day]
    expected = _reference_features(prices, day)
    assert set(features.index) == set(expected)
    for name, value in expected.items():
        assert features[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_rsi_is_wilder_s_recursive_average_from_its_first_days() -> None:
    """Early on, where the recursive (adjust=False) and the weighted (adjust=True) averages still differ."""
    prices = market.prepare_prices(_ohlcv(), "synthetic")
    rsi = market.raw_features(prices)["rsi_14"]
    assert rsi.iloc[:14].isna().all() and rsi.iloc[14:].notna().all()  # 14 returns before the first value
    for day in (14, 20, 40):
        assert rsi.iloc[day] == pytest.approx(_reference_features(prices, day)["rsi_14"], rel=1e-12)


def test_each_day_s_features_move_with_that_day_s_prices() -> None:
    """Changing only day t's prices changes day t's features (none is a day stale), but none before t."""
    frame, day = _ohlcv(), 500
    moved = frame.copy()
    moved.iloc[day] *= [1.03, 1.05, 1.02, 1.03, 1.5]  # open, high, low, close and volume up, each its own way
    before, after = (market.raw_features(market.prepare_prices(f, "synthetic")) for f in (frame, moved))
    pd.testing.assert_frame_equal(before.iloc[:day], after.iloc[:day])
    clipped = [name for name in before.columns if name.startswith("pos_") and before[name].iloc[day] in
               market.POSITION_BOUNDS[name[4:]] and after[name].iloc[day] == before[name].iloc[day]]  # fmt: skip
    unchanged = [name for name in before.columns if np.isclose(before[name].iloc[day], after[name].iloc[day])]
    assert sorted(unchanged) == sorted(clipped) and len(clipped) <= 2, (unchanged, clipped)


def test_labels_sum_the_next_horizon_days() -> None:
    """pnl(t) = sum_{j=1..h} pos(t+j-1) r(t+j) - cost sum_{j=1..h} |pos(t+j-1) - pos(t+j-2)|; NaN where the window
    leaves the data or starts before the positions."""
    price = pd.Series([100.0, 110.0, 99.0, 99.0, 108.9, 100.188, 120.0, 96.0])
    positions = pd.DataFrame({"a": [1.0, 1.0, 0.5, 2.0, 0.0, 1.0, 1.0, 1.0], "b": [0.2] * 8})
    pnl = market.forward_pnl(price, positions, horizon=2, cost=0.01)
    r, pos = price.pct_change().to_numpy(), positions.to_numpy()
    for t in range(1, 6):
        expected = sum(pos[t + j - 1] * r[t + j] - 0.01 * np.abs(pos[t + j - 1] - pos[t + j - 2]) for j in (1, 2))
        np.testing.assert_allclose(pnl[t], expected, rtol=1e-12, err_msg=str(t))
    assert np.isnan(pnl[6:]).all()  # windows past the data
    np.testing.assert_allclose(pnl[2, 0], 0.5 * 0.0 + 2.0 * 0.1 - 0.01 * (0.5 + 1.5), rtol=1e-12)  # r(3) = 0


def test_splits_end_on_their_dates_with_an_embargo() -> None:
    """Each split holds the samples dated up to its end (inclusive) after the previous end, less its last
    ``embargo`` samples; test runs to the last sample with a full label window."""
    frame, horizon, embargo = _ohlcv(), 2, 4
    task = market.build_market_task(frame, "synthetic", horizon=horizon, embargo=embargo, train_end="2001-03-01",
                                    halt_end="2001-06-01", val_end="2001-09-03")  # fmt: skip
    dates = frame.index.to_numpy()[market.LONGEST_WINDOW : len(frame) - horizon]
    np.testing.assert_array_equal(task.dates, dates)
    edges = [np.datetime64(d) for d in ("2001-03-01", "2001-06-01", "2001-09-03")]
    assert all(edge in dates for edge in edges)  # each end is a trading day: "up to and including"
    bounds = [dates[0] - np.timedelta64(1, "D"), *edges, dates[-1]]
    for i, split in enumerate(("train", "halt", "val", "test")):
        inside = np.flatnonzero((dates > bounds[i]) & (dates <= bounds[i + 1]))
        expected = inside if split == "test" else inside[:-embargo]
        np.testing.assert_array_equal(task.split(split), expected, err_msg=split)
    for earlier, later in (("train", "halt"), ("halt", "val"), ("val", "test")):
        assert task.split(earlier)[-1] + horizon < task.split(later)[0]  # no label window reaches the next split


def test_splits_take_proportions_when_the_data_miss_the_default_dates() -> None:
    """Data of 2000-2002 (the default ends are in 2010-2014): 60/10/10/20% of the samples in time order, each split
    but test less its last ``embargo`` samples."""
    task = market.build_market_task(_ohlcv(), "synthetic", horizon=2, embargo=3)
    n = len(task.dates)
    ends = [int(fraction * n) for fraction in np.cumsum(market.PROPORTIONS[:-1])]  # first sample after each split
    assert task.params["split_rule"] == "proportions"
    for split, start, stop in zip(("train", "halt", "val"), [0, *ends[:2]], ends, strict=True):
        np.testing.assert_array_equal(task.split(split), np.arange(start, stop - 3), err_msg=split)
    np.testing.assert_array_equal(task.split("test"), np.arange(ends[-1], n))
