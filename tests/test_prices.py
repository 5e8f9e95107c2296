"""Price files: gaps, typo spikes, empty files, separators, BOMs and day-first dates, on small hand-made CSVs."""

from __future__ import annotations

from pathlib import Path

import arch.data.nasdaq
import arch.data.sp500
import numpy as np
import pandas as pd
import pytest

from trm_env.market import LONGEST_WINDOW
from trm_env.prices import prepare_prices, read_price_file
from trm_env.tasks import load_task, overrides_from_args


def _csv(folder: Path, text: str, name: str = "prices.csv", encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_text(text, encoding=encoding)
    return path


def _read(path: Path, **options) -> pd.DataFrame:
    return prepare_prices(read_price_file(path), str(path), **options)


def _long_file(folder: Path, edit=None, n: int = 400) -> Path:
    """``n`` business days of a random walk from 2015-01-01, long enough for a task; ``edit`` changes the frame."""
    close = 100 * np.exp(np.cumsum(0.01 * np.random.default_rng(0).standard_normal(n)))
    frame = pd.DataFrame({"Date": pd.bdate_range("2015-01-01", periods=n), "Close": close})
    path = folder / "long.csv"
    (frame if edit is None else edit(frame)).to_csv(path, index=False)
    return path


# ---- gaps ---------------------------------------------------------------------------------------------------


def test_a_gap_is_refused_naming_its_rows_and_dates(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Date,Close\n2015-01-01,10\n2015-01-02,11\n2015-01-16,12\n2015-02-01,13\n")
    with pytest.raises(ValueError, match="max_gap_days=None") as error:
        _read(path)
    message = str(error.value)
    assert str(path) in message and "column 'Date'" in message
    first = "1 gap(s) of more than 14 calendar days, the first 16 days between row 2 (2015-01-16) and row 3 (2015-02-01"
    assert first in message  # 14 days, rows 1 to 2, is allowed
    assert len(_read(path, max_gap_days=16)) == 4 and len(_read(path, max_gap_days=None)) == 4
    with pytest.raises(ValueError, match="max_gap_days must be an integer >= 1, got 0"):
        _read(path, max_gap_days=0)


def test_gap_rows_are_named_in_file_order(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Date,Close\n2015-03-01,13\n2015-01-01,10\n2015-01-02,11\n")
    with pytest.warns(UserWarning, match="not sorted"):
        with pytest.raises(ValueError, match=r"between row 2 \(2015-01-02\) and row 0 \(2015-03-01\)"):
            _read(path)


def test_an_accepted_gap_is_one_period(tmp_path: Path) -> None:
    """Two years missing: refused by default; with max_gap_days=None the return across it is one period."""

    def skip_two_years(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(Date=frame["Date"].where(frame.index < 300, frame["Date"] + pd.Timedelta(days=731)))

    path = _long_file(tmp_path, skip_two_years)
    with pytest.raises(ValueError, match=r"732 days between row 299 \(2016-02-24\) and row 300 \(2018-02-25\)"):
        load_task("csv", path=path)
    task = load_task("csv", path=path, horizon=1, **overrides_from_args(["--max-gap-days", "None"]))
    assert len(task.labels) == 400 - LONGEST_WINDOW - 1  # no row dropped
    close = pd.read_csv(path)["Close"].to_numpy()
    before_gap = 299 - LONGEST_WINDOW  # the sample decided on the last day before the gap
    buy_and_hold = task.strategy_names.index("buy_and_hold")
    np.testing.assert_allclose(task.pnl_matrix[before_gap, buy_and_hold], close[300] / close[299] - 1, rtol=1e-5)


# ---- spikes -------------------------------------------------------------------------------------------------


def test_a_typo_spike_is_refused_naming_its_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Date,Close,High\n2015-01-01,10,11\n2015-01-02,10.5,11\n2015-01-05,10500,11\n"
                          "2015-01-06,10.4,11\n")  # fmt: skip
    with pytest.raises(ValueError, match="max_spike=None") as error:
        _read(path)
    assert f"{path}: column 'Close', row 2: value 10500 on 2015-01-05 is more than 3x away from both the day " \
           "before (10.5) and the day after (10.4)" in str(error.value)  # fmt: skip
    assert _read(path, max_spike=None)["price"].iloc[2] == 10500
    low = _csv(tmp_path, "Date,Close,High\n2015-01-01,10,11\n2015-01-02,10,11\n2015-01-05,10,0.011\n"
                         "2015-01-06,10,11\n", "low.csv")  # fmt: skip
    with pytest.raises(ValueError, match=r"column 'High', row 2: value 0\.011 .* more than 3x away"):
        _read(low)
    with pytest.raises(ValueError, match="max_spike must be None or a number > 1, got 1"):
        _read(low, max_spike=1)


def test_real_moves_are_not_spikes(tmp_path: Path) -> None:
    """A move beyond 3x that does not reverse, and 2.9x out and back, pass."""
    path = _csv(tmp_path, "Date,Close\n2015-01-01,10\n2015-01-02,40\n2015-01-05,41\n2015-01-06,14.1\n"
                          "2015-01-07,41\n")  # fmt: skip
    np.testing.assert_array_equal(_read(path)["price"], [10, 40, 41, 14.1, 41])
    with pytest.raises(ValueError, match=r"row 3: value 14\.1"):
        _read(path, max_spike=2.5)


@pytest.mark.parametrize("module", [arch.data.sp500, arch.data.nasdaq], ids=["sp500", "nasdaq"])
def test_real_data_pass_the_limits_with_room(module) -> None:
    """1999-2018 with 2000, 2001 and 2008: gaps of 7 days at most, spikes of 1.12x at most (NASDAQ's Open)."""
    frame = module.load()
    assert len(prepare_prices(frame, "real")) == 5031
    assert len(prepare_prices(frame, "real", max_gap_days=7, max_spike=1.12)) == 5031
    with pytest.raises(ValueError, match="gap"):
        prepare_prices(frame, "real", max_gap_days=6)
    if module is arch.data.nasdaq:
        with pytest.raises(ValueError, match=r"column 'Open', row \d+: value .* on 2000-04-17"):
            prepare_prices(frame, "real", max_spike=1.1)


# ---- empty files, separators, BOMs --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_an_empty_file_is_named(tmp_path: Path, text: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(ValueError, match="the file is empty") as error:
        load_task("csv", path=path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["plain", "bom"])
def test_separators_are_detected_with_or_without_bom(tmp_path: Path, sep: str, encoding: str) -> None:
    rows = ["Date Stamp", "Adj Close", "Volume"], ["2015-01-02", "10.5", "100"], ["2015-01-05", "11", "200"]
    path = _csv(tmp_path, "\n".join(sep.join(row) for row in rows) + "\n", encoding=encoding)
    frame = read_price_file(path)
    assert list(frame.columns) == ["Date Stamp", "Adj Close", "Volume"]
    assert frame["Adj Close"].tolist() == [10.5, 11.0] and frame["Volume"].tolist() == [100, 200]


def test_a_bom_and_semicolons_build_the_task(tmp_path: Path) -> None:
    plain = _long_file(tmp_path)
    path = _csv(tmp_path, plain.read_text().replace(",", ";"), "bom.csv", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfDate;Close")
    np.testing.assert_array_equal(load_task("csv", path=path).pnl_matrix, load_task("csv", path=plain).pnl_matrix)


def test_a_wrong_separator_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Date;Close\n2015-01-02;10\n2015-01-05;11\n")
    with pytest.raises(ValueError, match=r"separator ',' gives one column 'Date;Close'; pass sep=';'"):
        read_price_file(path, sep=",")
    assert read_price_file(path, sep=";")["Close"].tolist() == [10, 11]
    with pytest.raises(ValueError, match="sep must be None"):
        read_price_file(path, sep=3)
    with pytest.raises(ValueError, match=r"separator ';' gives one column 'Date,Close'; pass sep=','"):
        read_price_file(_csv(tmp_path, "Date,Close\n2015-01-02,10\n", "commas.csv"), sep=";")
    with pytest.raises(ValueError, match=r"no date column .* columns read: \['When', 'Close'\]"):
        _read(_csv(tmp_path, "When,Close\n2015-01-02,10\n", "when.csv"))


# ---- day-first dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["30/12/2014", "31/12/2014", "02/01/2015", "13/01/2015"], ["2014-12-30", "2014-12-31", "2015-01-02",
                                                                      "2015-01-13"]),
        (["12/30/2014", "12/31/2014", "01/02/2015", "01/13/2015"], ["2014-12-30", "2014-12-31", "2015-01-02",
                                                                      "2015-01-13"]),
        (["02.01.15", "05.01.15", "13.01.15"], ["2015-01-02", "2015-01-05", "2015-01-13"]),
        (["2015-01-02", "2015-01-13"], ["2015-01-02", "2015-01-13"]),
    ],
    ids=["day-first", "month-first", "dots-short-year", "iso"],
)  # fmt: skip
def test_date_order_is_detected(tmp_path: Path, dates: list[str], expected: list[str]) -> None:
    path = _csv(tmp_path, "Date,Close\n" + "".join(f"{d},10\n" for d in dates))
    assert _read(path).index.strftime("%Y-%m-%d").tolist() == expected


def test_ambiguous_or_mixed_dates_need_dayfirst(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Date,Close\n01/02/2015,10\n02/02/2015,10\n03/02/2015,10\n")
    with pytest.raises(ValueError, match=r"'Date': dates like '01/02/2015' could be day-first or month-first .*"
                                         r"dayfirst=True \(31/01/2015\) or dayfirst=False"):  # fmt: skip
        _read(path)
    assert _read(path, dayfirst=True).index.strftime("%m-%d").tolist() == ["02-01", "02-02", "02-03"]
    month_first = _read(path, dayfirst=False, max_gap_days=None)  # a month apart: gaps, accepted here
    assert month_first.index.strftime("%m-%d").tolist() == ["01-02", "02-02", "03-02"]
    mixed = _csv(tmp_path, "Date,Close\n13/01/2015,10\n01/14/2015,10\n", "mixed.csv")
    with pytest.raises(ValueError, match=r"row 1: '01/14/2015' is month-first, but row 0 '13/01/2015' is day-first"):
        _read(mixed)
    with pytest.raises(ValueError, match=r"row 0: value '13/01/2015' is not a parseable date in the format "
                                         r"'%m/%d/%Y' \(set dayfirst="):  # fmt: skip
        _read(mixed, dayfirst=False)
    with pytest.raises(ValueError, match="dayfirst must be None"):
        _read(mixed, dayfirst="yes")


def test_every_option_passes_through_load_task_and_flags(tmp_path: Path) -> None:
    def european(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(Date=frame["Date"].dt.strftime("%d/%m/%Y"))
        frame.loc[350, "Close"] *= 1000
        return frame.drop(index=range(200, 215))  # three weeks missing

    path = _csv(tmp_path, _long_file(tmp_path, european).read_text().replace(",", "|"), "eu.csv")
    flags = ["--path", str(path), "--sep", "|", "--dayfirst", "True", "--max-gap-days", "None", "--max-spike", "None"]
    overrides = overrides_from_args(flags)
    assert overrides == {"path": str(path), "sep": "|", "dayfirst": True, "max_gap_days": None, "max_spike": None}
    task = load_task("csv", **overrides)
    assert len(task.labels) == 400 - 15 - LONGEST_WINDOW - 5 and task.pnl_matrix.max() > 100
    with pytest.raises(ValueError, match="gap"):
        load_task("csv", **{**overrides, "max_gap_days": 14})
    with pytest.raises(ValueError, match="max_spike=None"):
        load_task("csv", **{**overrides, "max_spike": 3})
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['sep'\] for task 'sp500'"):
        load_task("sp500", sep=";")
