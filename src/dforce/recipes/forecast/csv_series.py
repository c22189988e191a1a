"""Load a user's multivariate time series from a CSV file.

Expected layout: one time column (default: the first column) and one numeric column per series::

    date,AUD,GBP
    2020-01-06,0.69,1.31
    2020-01-07,0.70,

Timestamps must be strictly increasing on a regular calendar (the frequency is inferred with
``pandas.infer_freq`` unless given). Empty cells / ``NaN`` are allowed and masked (never imputed); a column
with no value at all is an error. Every problem is a :class:`dforce.errors.DataError` naming the file and
the column or line (1-based file line, the header being line 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dforce.recipes.forecast.gluonts_format import MultivariateSeries
from dforce.errors import DataError


@dataclass(frozen=True)
class CSVSeries:
    """A CSV file as one multivariate series.

    Attributes:
        series: ``target: (T, D)`` float64 (NaN = missing), ``observed: (T, D)`` bool, start, freq.
        timestamps: the ``(T,)`` parsed timestamps.
        columns: the D series names, in file order.
        freq: the (inferred or given) pandas frequency string.
    """

    series: MultivariateSeries
    timestamps: pd.DatetimeIndex
    columns: list[str]
    freq: str


def _line(row: int) -> int:
    return row + 2  # 0-based data row -> 1-based file line (header is line 1)


def _first_irregular_row(ts: pd.DatetimeIndex) -> int:
    # the longest prefix with an inferable frequency; a prefix of a regular index is regular, so this is monotone
    lo, hi = 3, len(ts)  # infer_freq needs >= 3 points; invariant: ts[:lo] regular, ts[:hi + 1] not
    if pd.infer_freq(ts[:3]) is None:
        return 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pd.infer_freq(ts[:mid]) is None:
            hi = mid - 1
        else:
            lo = mid
    return lo  # ts[lo] is the first row that breaks the calendar


def _numeric_column(raw: pd.Series, name: str, path: Path) -> np.ndarray:
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"{path}: column {name!r} is boolean, not numeric")
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64)
    values = pd.to_numeric(raw, errors="coerce")
    blank = raw.astype(str).str.strip().str.lower().isin(["", "nan", "na", "null"])
    bad = values.isna() & raw.notna() & ~blank
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {name!r} is not numeric (line {_line(row)} holds {raw.iloc[row]!r})")
    return values.to_numpy(dtype=np.float64)


def load_csv_series(path: str | Path, time_column: str | None = None, freq: str | None = None,
                    context_length: int | None = None, prediction_length: int | None = None) -> CSVSeries:
    """Read a CSV of time-indexed series into a ``(T, D)`` array with an observed mask.

    Args:
        path: the CSV file.
        time_column: name of the timestamp column (default: the first column).
        freq: pandas frequency string; default inferred from the timestamps.
        context_length: with ``prediction_length``, the series must have at least
            ``context_length + prediction_length`` rows.
        prediction_length: forecast horizon H.

    Returns:
        :class:`CSVSeries` with ``series.target: (T, D)``.

    Raises:
        DataError: missing/unreadable file, bad time column, non-numeric or all-empty column, irregular or
            non-increasing timestamps, or a series shorter than ``context_length + prediction_length``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse CSV file {path} ({str(e).strip().splitlines()[0]})") from None
    if df.shape[1] < 2:
        raise DataError(f"{path}: needs a time column and at least one series column, found {list(df.columns)}")
    time_column = df.columns[0] if time_column is None else time_column
    if time_column not in df.columns:
        raise DataError(f"{path}: time column {time_column!r} not found in {list(df.columns)}")
    try:
        with warnings.catch_warnings():  # pandas' "could not infer format" note: the checks below name bad rows
            warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
            ts = pd.DatetimeIndex(pd.to_datetime(df[time_column]))
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: time column {time_column!r} is not parseable as dates ({e})") from None
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna())[0])
        raise DataError(f"{path}: time column {time_column!r} is empty at line {_line(row)}")

    steps = np.diff(ts.asi8)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(f"{path}: timestamps are not strictly increasing at line {_line(row)} ({ts[row]})")
    if freq is None:
        if len(ts) < 3:
            raise DataError(f"{path}: at least 3 rows are needed to infer the frequency; pass freq=")
        freq = pd.infer_freq(ts)
        if freq is None:
            row = _first_irregular_row(ts)
            raise DataError(f"{path}: timestamps are irregular from line {_line(row)} ({ts[row]}); "
                            "fill the gaps (empty cells are fine) or pass freq=")
    else:
        expected = pd.date_range(ts[0], periods=len(ts), freq=freq)
        bad = np.flatnonzero(expected != ts)
        if bad.size:
            raise DataError(f"{path}: timestamps do not follow freq={freq!r} from line {_line(int(bad[0]))} "
                            f"({ts[int(bad[0])]}, expected {expected[int(bad[0])]})")

    columns = [c for c in df.columns if c != time_column]
    target = np.stack([_numeric_column(df[c], str(c), path) for c in columns], axis=1)  # (T, D)
    observed = np.isfinite(target)
    empty = [str(c) for c, ok in zip(columns, observed.any(0)) if not ok]
    if empty:
        raise DataError(f"{path}: column {empty[0]!r} has no numeric value at all")
    target = np.where(observed, target, np.nan)  # inf counts as missing too
    if context_length is not None and prediction_length is not None and len(ts) < context_length + prediction_length:
        raise DataError(f"{path}: series has {len(ts)} rows, shorter than context_length + prediction_length = "
                        f"{context_length + prediction_length}")
    series = MultivariateSeries(target, observed, ts[0], freq)
    return CSVSeries(series, ts, [str(c) for c in columns], freq)
