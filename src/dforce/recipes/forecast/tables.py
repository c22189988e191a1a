"""Read a user's CSV/Parquet file into a :class:`~dforce.recipes.forecast.panel.Panel`.

Two layouts:

- **long** (the Nixtla / GluonTS convention): one row per series and time step, ``unique_id, ds, y`` plus
  covariate columns; other names via ``id_cols`` (several columns form one id, e.g. tourism's
  ``Region, State, Purpose``), ``time_col``, ``target_col``. Chosen when ``id_cols`` is given or a
  ``unique_id`` column exists.
- **wide** (one time column, one column per series, as ``dforce forecast`` always read): covariate columns
  named with ``past``/``future`` are shared by every series.

Series may have different lengths and start dates; rows a series lacks (late start, gaps) are NaN and masked.
A UTF-8 byte-order mark is stripped from the header. Every problem is one :class:`DataError` line naming the
file and the column, series or line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dforce.errors import DataError
from dforce.recipes.forecast.csv_series import _numeric_column
from dforce.recipes.forecast.frequency import resolve_frequency
from dforce.recipes.forecast.panel import Panel

PARQUET = (".parquet", ".pq")
ID_SEP = "/"  # joins several id columns into one series name


@dataclass(frozen=True)
class TableSpec:
    """Which columns mean what (defaults follow the ``unique_id, ds, y`` convention).

    Attributes:
        time_col: timestamp column (default ``ds`` if present, else the first column).
        id_cols: series-id column(s) of a long table (default ``unique_id`` if present; none: wide).
        target_col: value column of a long table (default ``y``).
        targets: series columns of a wide table (default: every other column except covariates).
        past: past-only covariate columns.
        future: known-future covariate columns.
        static: static columns (long tables; constant within a series).
        freq: pandas frequency (default inferred).
    """

    time_col: str | None = None
    id_cols: tuple[str, ...] = ()
    target_col: str | None = None
    targets: tuple[str, ...] = ()
    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    freq: str | None = None


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (BOM stripped from CSV headers)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        if path.suffix.lower() in PARQUET:
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
                        ) from None
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    if df.empty:
        raise DataError(f"{path} holds no rows")
    return df


def _need(df: pd.DataFrame, cols, path: Path, what: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise DataError(f"{path}: column {c!r} ({what}) not found; the columns are {list(df.columns)}")


def _times(df: pd.DataFrame, col: str, path: Path) -> pd.DatetimeIndex:
    raw = df[col]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
        ts = pd.to_datetime(raw, errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: time column {col!r} holds {raw.iloc[row]!r} at line {row + 2}, not a date")
    ts = pd.DatetimeIndex(ts)
    if ts.tz is not None:  # one calendar: compare instants in UTC
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _numeric(df: pd.DataFrame, cols, path: Path) -> np.ndarray:
    if not cols:
        return np.zeros((len(df), 0))
    return np.stack([_numeric_column(df[c], c, path) for c in cols], axis=1)  # (rows, F)


def _static_features(df: pd.DataFrame, codes: np.ndarray, n: int, cols, path: Path, ids) -> tuple[np.ndarray, tuple]:
    """``(N, Fs)`` features: numeric columns z-scored over series, others one-hot; each constant within a series."""
    feats, names = [], []
    for c in cols:
        per = df.groupby(codes, sort=True)[c].nunique(dropna=False)
        if (per > 1).any():
            raise DataError(f"{path}: static column {c!r} changes within series {ids[int(per.index[per > 1][0])]!r}")
        first = df.groupby(codes, sort=True)[c].first().reindex(range(n))
        if pd.api.types.is_numeric_dtype(first) and not pd.api.types.is_bool_dtype(first):
            v = first.to_numpy(dtype=np.float64)
            sd = np.nanstd(v)
            feats.append(((v - np.nanmean(v)) / (sd if sd > 0 else 1.0))[:, None])
            names.append(c)
        else:
            cats = sorted(first.astype(str).unique())
            feats.append((first.astype(str).to_numpy()[:, None] == np.asarray(cats)[None]).astype(np.float64))
            names += [f"{c}={k}" for k in cats]
    return np.nan_to_num(np.concatenate(feats, axis=1)).astype(np.float32), tuple(names)


def load_panel(path: str | Path, spec: TableSpec = TableSpec()) -> Panel:
    """Read ``path`` (CSV or Parquet, long or wide) into a panel on one regular calendar.

    Raises:
        DataError: missing file or column, unparseable dates or numbers, duplicate (series, time) rows, a
            frequency that the timestamps contradict, a series without any value.
    """
    path = Path(path)
    df = read_table(path)
    time_col = spec.time_col or ("ds" if "ds" in df.columns else df.columns[0])
    _need(df, [time_col], path, "--time-col")
    id_cols = list(spec.id_cols) or (["unique_id"] if "unique_id" in df.columns else [])
    _need(df, id_cols, path, "--id-col")
    _need(df, spec.past, path, "--past-covariates")
    _need(df, spec.future, path, "--future-covariates")
    _need(df, spec.static, path, "--static-covariates")
    ts = _times(df, time_col, path)
    calendar, grid = resolve_frequency(ts, spec.freq, str(path))
    pos = grid.get_indexer(ts)
    covs = [*spec.past, *spec.future, *spec.static]
    if id_cols:  # long
        target_col = spec.target_col or "y"
        _need(df, [target_col], path, "--target-col")
        keys = df[id_cols].astype(str).agg(ID_SEP.join, axis=1) if len(id_cols) > 1 else df[id_cols[0]].astype(str)
        codes, uniq = pd.factorize(keys, sort=False)
        ids = tuple(str(u) for u in uniq)
        flat = codes.astype(np.int64) * len(grid) + pos
        dup = pd.Series(flat).duplicated().to_numpy()
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise DataError(f"{path}: series {ids[codes[row]]!r} has two rows for {ts[row]} (line {row + 2})")
        N, T = len(ids), len(grid)
        values = np.full((N, T), np.nan)
        values[codes, pos] = _numeric(df, [target_col], path)[:, 0]

        def per_series(cols):
            if not cols:
                return None
            out = np.full((N, T, len(cols)), np.nan)
            out[codes, pos] = _numeric(df, cols, path)
            return out

        past, future = per_series(list(spec.past)), per_series(list(spec.future))
        static, static_names = (None, ())
        if spec.static:
            static, static_names = _static_features(df, codes, N, list(spec.static), path, ids)
    else:  # wide
        if spec.static:
            raise DataError(f"{path}: --static-covariates need a long table (one row per series and time; "
                            "give --id-col)")
        if spec.target_col:
            raise DataError(f"{path}: --target-col is for long tables (give --id-col too); a wide table's series "
                            "are its columns")
        if (pd.Series(pos).duplicated()).any():
            row = int(np.flatnonzero(pd.Series(pos).duplicated().to_numpy())[0])
            raise DataError(f"{path}: timestamp {ts[row]} appears twice (line {row + 2}); a table without --id-col "
                            "is read as wide (one column per series)")
        targets = list(spec.targets) or [c for c in df.columns if c != time_col and c not in covs]
        _need(df, targets, path, "series")
        if not targets:
            raise DataError(f"{path}: no series column besides the time column and covariates")
        ids = tuple(targets)
        N, T = len(ids), len(grid)
        values = np.full((N, T), np.nan)
        values[:, pos] = _numeric(df, targets, path).T

        def shared(cols):
            if not cols:
                return None
            out = np.full((T, len(cols)), np.nan)
            out[pos] = _numeric(df, cols, path)
            return np.broadcast_to(out[None], (N, T, len(cols))).copy()

        past, future, static, static_names = shared(list(spec.past)), shared(list(spec.future)), None, ()
    values[~np.isfinite(values)] = np.nan  # inf counts as missing
    empty = np.flatnonzero(~np.isfinite(values).any(1))
    if empty.size:
        raise DataError(f"{path}: series {ids[int(empty[0])]!r} has no numeric value at all")
    return Panel(values, grid, calendar, ids, past, future, static, tuple(spec.past), tuple(spec.future),
                 static_names)


def load_future_file(path: str | Path, panel: Panel, horizon: int, spec: TableSpec = TableSpec()) -> Panel:
    """Extend the panel's known-future covariates over the ``horizon`` steps after its last row from a file
    in the ``..._futr.csv`` layout (long: id, time and covariate columns; wide: time and covariate columns).

    Raises:
        DataError: the file misses a covariate column or a series, or does not cover every horizon step.
    """
    path = Path(path)
    df = read_table(path)
    time_col = spec.time_col or ("ds" if "ds" in df.columns else df.columns[0])
    id_cols = list(spec.id_cols) or (["unique_id"] if "unique_id" in df.columns else [])
    _need(df, [time_col, *id_cols, *panel.future_names], path, "future covariates")
    ts = _times(df, time_col, path)
    want = panel.timestamps(panel.length + horizon)[panel.length:]  # the horizon's timestamps
    N, T, F = panel.n_series, panel.length, len(panel.future_names)
    fut = np.full((N, T + horizon, F), np.nan)
    fut[:, :T] = panel.future[:, :T]
    step = want.get_indexer(ts)
    vals = _numeric(df, list(panel.future_names), path)
    if id_cols:
        keys = df[id_cols].astype(str).agg(ID_SEP.join, axis=1) if len(id_cols) > 1 else df[id_cols[0]].astype(str)
        where = {k: i for i, k in enumerate(panel.ids)}
        rows = keys.map(where).to_numpy()
        ok = (step >= 0) & pd.notna(rows)
        fut[rows[ok].astype(int), T + step[ok]] = vals[ok]
    else:
        ok = step >= 0
        fut[:, T + step[ok]] = vals[ok][None]
    missing = ~np.isfinite(fut[:, T:]).all(-1)  # (N, H)
    if missing.any():
        n, h = np.argwhere(missing)[0]
        raise DataError(f"{path}: the future covariates do not cover the horizon: series {panel.ids[n]!r} has no "
                        f"value for {want[h]} ({horizon} steps after {panel.index[-1]} are needed)")
    return panel.with_future(fut)


def split_columns(text: str | None) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None or empty -> ``()``."""
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())
