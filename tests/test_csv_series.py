"""User CSV loading: the happy path and one test per bad-CSV case (each a one-sentence DataError)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dforce.recipes.forecast.csv_series import load_csv_series
from dforce.errors import DataError


def _csv(tmp_path, name="data.csv", n=12, edit=None):
    ts = pd.bdate_range("2020-01-06", periods=n)
    df = pd.DataFrame({"date": ts.strftime("%Y-%m-%d"), "aud": np.arange(n, dtype=float),
                       "gbp": np.arange(n, dtype=float) * 2}).astype(object)
    if edit:
        df = edit(df)
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_loads_business_daily_with_missing_values_masked(tmp_path):
    def edit(df):
        df.loc[3, "gbp"] = np.nan
        df.loc[5, "aud"] = ""
        return df

    r = load_csv_series(_csv(tmp_path, edit=edit), context_length=6, prediction_length=4)
    assert r.freq == "B" and r.columns == ["aud", "gbp"] and r.series.target.shape == (12, 2)
    assert r.timestamps[0] == pd.Timestamp("2020-01-06") and r.series.start == r.timestamps[0]
    assert not r.series.observed[3, 1] and not r.series.observed[5, 0] and r.series.observed.sum() == 22
    assert np.isnan(r.series.target[3, 1])  # masked, not imputed
    np.testing.assert_array_equal(r.series.index(), r.timestamps)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"CSV file .*nope.csv does not exist"):
        load_csv_series(tmp_path / "nope.csv")


def test_too_short(tmp_path):
    with pytest.raises(DataError, match=r"data.csv: series has 12 rows, shorter than .* = 15"):
        load_csv_series(_csv(tmp_path), context_length=10, prediction_length=5)


def test_non_numeric_column_is_named(tmp_path):
    def edit(df):
        df.loc[4, "gbp"] = "n/a?"
        return df

    with pytest.raises(DataError, match=r"column 'gbp' is not numeric \(line 6 holds 'n/a\?'\)"):
        load_csv_series(_csv(tmp_path, edit=edit))


def test_irregular_timestamps_name_first_bad_row(tmp_path):
    path = _csv(tmp_path, edit=lambda df: df.drop(index=7))  # 2020-01-15 missing
    with pytest.raises(DataError, match=r"irregular from line 9 \(2020-01-16"):
        load_csv_series(path)
    with pytest.raises(DataError, match=r"do not follow freq='B' from line 9"):
        load_csv_series(path, freq="B")


def test_unsorted_timestamps(tmp_path):
    path = _csv(tmp_path, edit=lambda df: df.iloc[[0, 1, 3, 2, 4, 5]])
    with pytest.raises(DataError, match=r"not strictly increasing at line 5 \(2020-01-08"):
        load_csv_series(path)


def test_all_nan_column_is_an_error(tmp_path):
    def edit(df):
        df["gbp"] = np.nan
        return df

    with pytest.raises(DataError, match=r"column 'gbp' has no numeric value at all"):
        load_csv_series(_csv(tmp_path, edit=edit))


def test_bad_time_column(tmp_path):
    with pytest.raises(DataError, match=r"time column 'when' not found"):
        load_csv_series(_csv(tmp_path), time_column="when")
    with pytest.raises(DataError, match=r"time column 'date' is not parseable"):
        load_csv_series(_csv(tmp_path, edit=lambda df: df.assign(date=["x"] * len(df))))
