"""Reading users' tables (issue #32): frequencies, long vs wide, gaps and late starts, covariates, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dforce.errors import DataError
from dforce.recipes.forecast.frequency import calendar_features, resolve_frequency, season_length, seasonal_lags
from dforce.recipes.forecast.tables import TableSpec, load_future_file, load_panel

FREQS = {  # --freq as a user writes it -> (pandas grid of the data, canonical frequency, season)
    "M": ("ME", "ME", 12), "MS": ("MS", "MS", 12), "Q": ("QE", "QE-DEC", 4), "QS": ("QS", "QS-JAN", 4),
    "W": ("W-SUN", "W-SUN", 52), "B": ("B", "B", 5), "D": ("D", "D", 7), "H": ("h", "h", 24),
    "15min": ("15min", "15min", 96),
}


@pytest.mark.parametrize("freq", list(FREQS))
def test_frequency_inferred_and_given(freq):
    grid_freq, canonical, season = FREQS[freq]
    ts = pd.date_range("2020-01-01", periods=40, freq=grid_freq)
    inferred, grid = resolve_frequency(ts)
    assert season_length(inferred.freq) == season and len(grid) == 40
    given, grid2 = resolve_frequency(ts, freq)
    assert given.freq == canonical and given.season == season and grid2.equals(grid)
    assert calendar_features(grid, given.freq).shape[0] == 40
    # with gaps (and shuffled, repeated: several series) the frequency is still found
    holes = ts.delete([3, 4, 5, 17]).append(ts[:10])
    cal, g = resolve_frequency(holes)
    assert cal.season == season and len(g) == 40


def test_period_alias_follows_the_data_anchor():
    months = pd.date_range("2001-01-01", periods=30, freq="MS")
    assert resolve_frequency(months, "M")[0].freq == "MS"  # --freq M on month starts: monthly, as pd.Period reads it
    mondays = pd.date_range("1991-02-04", periods=30, freq="W-MON")
    assert resolve_frequency(mondays, "W")[0].freq == "W-MON"


@pytest.mark.parametrize("data_freq,given,needle", [("D", "MS", "not on the MS calendar"),
                                                    ("15min", "h", "not on the h calendar"),
                                                    ("MS", "D", "contradicts")])
def test_frequency_contradicting_timestamps_is_an_error(data_freq, given, needle):
    with pytest.raises(DataError, match=needle):
        resolve_frequency(pd.date_range("2020-01-01", periods=40, freq=data_freq), given)


def test_seasonal_lags_never_reach_into_the_horizon():
    for m, H in [(4, 8), (12, 12), (52, 52), (24, 24), (5, 30), (7, 3)]:
        lags = seasonal_lags(m, H)
        assert lags and min(lags) >= H and all(lag % m == 0 for lag in lags)


def _long_frame(rows=30):
    idx = pd.date_range("2000-01-01", periods=rows, freq="MS")
    a = pd.DataFrame({"unique_id": "a", "ds": idx, "y": np.arange(rows, dtype=float)})
    b = pd.DataFrame({"unique_id": "b", "ds": idx[5:], "y": 100 + np.arange(rows - 5, dtype=float)})  # late start
    b = b.drop(index=b.index[[3, 4]])  # a gap
    return pd.concat([a, b], ignore_index=True).sample(frac=1.0, random_state=0)  # any row order


def test_long_and_wide_give_the_same_panel(tmp_path):
    long = _long_frame()
    long.to_csv(tmp_path / "long.csv", index=False)
    long.to_parquet(tmp_path / "long.parquet", index=False)
    wide = long.pivot(index="ds", columns="unique_id", values="y").reset_index()
    wide.to_csv(tmp_path / "wide.csv", index=False)
    p_long = load_panel(tmp_path / "long.csv")
    p_parq = load_panel(tmp_path / "long.parquet")
    p_wide = load_panel(tmp_path / "wide.csv")
    assert p_long.freq == p_wide.freq == "MS"
    by_id = {i: k for k, i in enumerate(p_long.ids)}
    order = [by_id[i] for i in p_wide.ids]
    np.testing.assert_array_equal(p_long.values[order], p_wide.values)
    np.testing.assert_array_equal(p_long.values, p_parq.values)
    b = p_long.values[by_id["b"]]
    assert np.isnan(b[:5]).all() and np.isnan(b[8:10]).all() and np.isfinite(b[5:8]).all()  # late start + gap: NaN
    # and back: the long rows of the panel are the observed input rows
    back = p_long.to_long().sort_values(["unique_id", "ds"]).reset_index(drop=True)
    ref = long.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    np.testing.assert_array_equal(back["y"].to_numpy(), ref["y"].to_numpy())


def test_bom_header_custom_columns_and_several_id_columns(tmp_path):
    df = _long_frame().rename(columns={"unique_id": "store", "ds": "month", "y": "sales"})
    df["region"] = "north"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    p = load_panel(path, TableSpec(time_col="month", id_cols=("region", "store"), target_col="sales"))
    assert sorted(p.ids) == ["north/a", "north/b"] and p.freq == "MS"


def test_covariates_static_and_future_file(tmp_path):
    df = _long_frame()
    df["temp"] = np.sin(np.arange(len(df)))
    df["promo"] = (np.arange(len(df)) % 3 == 0).astype(float)
    df["kind"] = np.where(df["unique_id"] == "a", "shop", "web")
    df.to_csv(tmp_path / "d.csv", index=False)
    p = load_panel(tmp_path / "d.csv", TableSpec(past=("temp",), future=("promo",), static=("kind",)))
    assert p.past.shape == (2, 30, 1) and p.future.shape == (2, 30, 1) and p.static_names == ("kind=shop", "kind=web")
    futr = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 3), "ds": list(pd.date_range("2002-07-01", periods=3,
                                                                                     freq="MS")) * 2,
                         "promo": [1.0, 0, 1, 0, 0, 1]})
    futr.to_csv(tmp_path / "futr.csv", index=False)
    q = load_future_file(tmp_path / "futr.csv", p, 3)
    assert q.future.shape == (2, 33, 1) and q.future[p.ids.index("a"), 30:, 0].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(DataError, match="do not cover the horizon"):  # 4 steps asked, 3 given
        load_future_file(tmp_path / "futr.csv", p, 4)


@pytest.mark.parametrize("spec,needle", [
    (TableSpec(past=("nope",)), "column 'nope' (--past-covariates) not found"),
    (TableSpec(id_cols=("shop",)), "column 'shop' (--id-col) not found"),
    (TableSpec(freq="D"), "contradicts"),
    (TableSpec(freq="W"), "not on the W-SUN calendar"),
])
def test_bad_inputs_name_what_is_wrong(tmp_path, spec, needle):
    _long_frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_panel(tmp_path / "d.csv", spec)


def test_duplicate_rows_and_empty_series_are_errors(tmp_path):
    df = _long_frame()
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="two rows"):
        load_panel(tmp_path / "dup.csv")
    df.loc[df.unique_id == "b", "y"] = np.nan
    df.to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DataError, match="no numeric value"):
        load_panel(tmp_path / "empty.csv")
