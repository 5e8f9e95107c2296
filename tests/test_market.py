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
