"""A panel: many series on one regular calendar, with their covariates (what the global forecaster reads).

Series may start late, end early and have gaps: those rows are NaN in ``values`` and never imputed (the
model masks them). Covariates:

- ``past``: observed only up to the forecast origin (never read inside a forecast window);
- ``future``: known ahead (a load forecast, holidays, prices set in advance); the array may extend past
  the last data row (a ``..._futr.csv`` file gives the horizon's values);
- ``static``: one vector per series (numeric columns standardized, categories one-hot).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dforce._utils import exists
from dforce.errors import DataError
from dforce.recipes.forecast.frequency import Calendar, extend, season_length


@dataclass(frozen=True)
class Panel:
    """N series on a calendar of T rows.

    Attributes:
        values: ``(N, T)`` float64; NaN where a series has no value (gap, late start, early end).
        index: ``(T,)`` timestamps of the rows.
        calendar: frequency and season.
        ids: N series names.
        past: ``(N, T, Fp)`` float64 past-only covariates (NaN = missing) or None.
        future: ``(N, T + E, Ff)`` float64 known-future covariates (E >= 0 rows past the data) or None.
        static: ``(N, Fs)`` float32 static features or None.
        past_names, future_names, static_names: the covariate names.
    """

    values: np.ndarray
    index: pd.DatetimeIndex
    calendar: Calendar
    ids: tuple[str, ...]
    past: np.ndarray | None = None
    future: np.ndarray | None = None
    static: np.ndarray | None = None
    past_names: tuple[str, ...] = ()
    future_names: tuple[str, ...] = ()
    static_names: tuple[str, ...] = ()

    def __post_init__(self):
        N, T = self.values.shape
        if len(self.index) != T or len(self.ids) != N:
            raise DataError(f"panel of {N} x {T} values has {len(self.ids)} ids and {len(self.index)} timestamps")
        if exists(self.past) and self.past.shape[:2] != (N, T):
            raise DataError(f"past covariates must be ({N}, {T}, F), got {self.past.shape}")
        if exists(self.future) and (self.future.shape[0] != N or self.future.shape[1] < T):
            raise DataError(f"future covariates must be ({N}, >= {T}, F), got {self.future.shape}")

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def freq(self) -> str:
        return self.calendar.freq

    @property
    def observed(self) -> np.ndarray:
        """``(N, T)`` bool."""
        return np.isfinite(self.values)

    @property
    def future_rows(self) -> int:
        """Rows of known-future covariates past the last data row (0 without future covariates: unlimited)."""
        return self.future.shape[1] - self.length if exists(self.future) else 0

    def timestamps(self, rows: int) -> pd.DatetimeIndex:
        """The calendar extended to ``rows`` rows (``rows`` may exceed T)."""
        return extend(self.index, self.freq, rows - self.length)[:rows]

    def head(self, rows: int) -> "Panel":
        """The first ``rows`` rows of the data (future covariates keep every row: they are known ahead)."""
        if not 0 < rows <= self.length:
            raise DataError(f"cannot cut a panel of {self.length} rows at row {rows}")
        past = self.past[:, :rows] if exists(self.past) else None
        return replace(self, values=self.values[:, :rows], index=self.index[:rows], past=past)

    def select(self, rows: np.ndarray) -> "Panel":
        """Only the series ``rows`` (int indices)."""
        rows = np.asarray(rows)
        pick = lambda a: a[rows] if exists(a) else None  # noqa: E731
        return replace(self, values=self.values[rows], ids=tuple(self.ids[i] for i in rows), past=pick(self.past),
                       future=pick(self.future), static=pick(self.static))

    def with_future(self, future: np.ndarray) -> "Panel":
        """The same panel with ``future: (N, T + E, Ff)`` covariate values (e.g. extended by a future file)."""
        return replace(self, future=future)

    def nonnegative(self) -> bool:
        """True when every observed value is >= 0 (counts, sales, prices that cannot go negative)."""
        v = self.values[np.isfinite(self.values)]
        return bool(v.size) and bool((v >= 0).all())

    def to_long(self) -> pd.DataFrame:
        """``unique_id, ds, y`` rows of the observed values (series-major)."""
        n, t = np.nonzero(self.observed)
        return pd.DataFrame({"unique_id": np.asarray(self.ids, dtype=object)[n], "ds": self.index[t],
                             "y": self.values[n, t]})


def panel_from_array(values: np.ndarray, start, freq: str, ids=None) -> Panel:
    """A panel from a ``(T, N)`` array (rows = time, NaN = missing), e.g. a GluonTS multivariate series."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise DataError(f"a panel needs a (T, N) array, got shape {values.shape}")
    index = pd.date_range(start, periods=values.shape[0], freq=freq)
    ids = tuple(str(i) for i in (ids if ids is not None else range(values.shape[1])))
    cal = Calendar(index.freqstr, season_length(index.freqstr), f"frequency {index.freqstr}")
    return Panel(values.T.copy(), index, cal, ids)
