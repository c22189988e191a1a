"""Calendars: the frequency of a set of timestamps, its season, the default context and lags, calendar features.

Any pandas frequency works (``MS``, ``QS-OCT``, ``W-MON``, ``B``, ``D``, ``h``, ``15min``, ...). Nothing here
goes through ``pd.Period`` (``MS``/``QS`` have no period frequency: the crash of issue #32), so every
anchored offset is handled the same way: a regular grid of timestamps from the first to the last one.

- :func:`resolve_frequency` infers the frequency (``pandas.infer_freq`` on the timestamps, or on short
  regular runs when the data have gaps) or checks a given one against the timestamps. A period-style
  alias given for anchored data follows the data's anchor (``--freq M`` on month-start dates means ``MS``,
  ``--freq W`` on Mondays means ``W-MON``), as ``pd.Period`` would read it; a frequency the timestamps
  do not lie on is an error naming the first such timestamp.
- :func:`season_length`: periods per natural cycle (12 monthly, 4 quarterly, 52 weekly, 5 business-daily,
  7 daily, 24 hourly, a day of sub-hourly steps), the ``m`` of seasonal naive / MASE.
- :func:`calendar_features`: GluonTS-style features in [-0.5, 0.5] read from the timestamps themselves.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries import offsets as pdo
from pandas.tseries.frequencies import to_offset

from dforce.errors import DataError

# pandas >= 2.2 deprecated these aliases; users (and the issue) still write them
OLD_ALIASES = {"M": "ME", "Q": "QE", "Y": "YE", "A": "YE", "H": "h", "T": "min", "S": "s", "L": "ms", "U": "us",
               "BM": "BME", "BQ": "BQE", "BA": "BYE", "BY": "BYE", "AS": "YS"}
MAX_GRID_FACTOR = 20  # a given frequency whose grid is > 20x the number of timestamps contradicts them (e.g. D on
#                       monthly data: 97% of the grid would be "missing")
INFER_RUN = 7  # timestamps per run when inferring the frequency of data with gaps


@dataclass(frozen=True)
class Calendar:
    """A regular calendar.

    Attributes:
        freq: pandas frequency string (``offset.freqstr``), e.g. ``"MS"``, ``"QS-OCT"``, ``"W-MON"``, ``"h"``.
        season: periods per cycle (``m``; 1 = none).
        note: how the frequency was found (printed by the CLI).
    """

    freq: str
    season: int
    note: str = ""

    @property
    def offset(self) -> pd.DateOffset:
        return to_offset(self.freq)


def normalize_alias(freq: str) -> str:
    """``"M"`` -> ``"ME"``, ``"15T"`` -> ``"15min"``, ``"H"`` -> ``"h"`` ...: today's pandas spelling.

    Raises:
        DataError: not a pandas frequency.
    """
    m = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)(-[A-Za-z]+)?\s*", str(freq))
    if not m:
        raise DataError(f"--freq {freq!r} is not a pandas frequency (e.g. MS, QS, W-MON, B, D, h, 15min)")
    n, base, anchor = m.group(1), m.group(2), m.group(3) or ""
    base = OLD_ALIASES.get(base, base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return to_offset(f"{n}{base}{anchor}").freqstr
    except (ValueError, TypeError):
        raise DataError(f"--freq {freq!r} is not a pandas frequency (e.g. MS, QS, W-MON, B, D, h, 15min)") from None


def season_length(freq: str) -> int:
    """Periods per natural cycle of ``freq`` (the seasonal-naive / MASE ``m``)."""
    off = to_offset(freq)
    n = max(int(getattr(off, "n", 1)), 1)
    if isinstance(off, (pdo.MonthBegin, pdo.MonthEnd, pdo.BusinessMonthBegin, pdo.BusinessMonthEnd)):
        per = 12
    elif isinstance(off, (pdo.QuarterBegin, pdo.QuarterEnd, pdo.BQuarterBegin, pdo.BQuarterEnd)):
        per = 4
    elif isinstance(off, (pdo.YearBegin, pdo.YearEnd, pdo.BYearBegin, pdo.BYearEnd)):
        return 1
    elif isinstance(off, pdo.Week):
        per = 52
    elif isinstance(off, pdo.BusinessDay):
        per = 5
    elif isinstance(off, pdo.Day):
        per = 7
    elif isinstance(off, pdo.Tick):  # hours, minutes, seconds: one day
        per = int(round(pd.Timedelta(days=1) / pd.Timedelta(off)))
        return max(per, 1)
    else:
        return 1
    return max(per // n, 1)


def secondary_season(freq: str) -> int:
    """A longer cycle where one dominates real data: a week of hourly / sub-hourly steps (0 = none)."""
    off = to_offset(freq)
    if isinstance(off, pdo.Tick) and pd.Timedelta(off) < pd.Timedelta(days=1):
        return int(round(pd.Timedelta(days=7) / pd.Timedelta(off)))
    return 0


def _on_grid(ts: pd.DatetimeIndex, off) -> tuple[pd.DatetimeIndex, np.ndarray]:
    # the grid from the first to the last timestamp and each timestamp's position in it (-1 = off the grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        grid = pd.date_range(ts[0], ts[-1], freq=off)
    if len(grid) == 0 or grid[0] != ts[0]:
        return grid, np.full(len(ts), -1)
    return grid, grid.get_indexer(ts)


def _follow_anchor(off, ts: pd.DatetimeIndex):
    """The same period with the data's anchor (M on month starts -> MS, W on Mondays -> W-MON), else None."""
    t0 = ts[0]
    n = getattr(off, "n", 1)
    if isinstance(off, pdo.MonthEnd) and (ts.day == 1).all():
        return pdo.MonthBegin(n)
    if isinstance(off, pdo.MonthBegin) and ts.is_month_end.all():
        return pdo.MonthEnd(n)
    if isinstance(off, (pdo.QuarterEnd, pdo.QuarterBegin)):
        if (ts.day == 1).all():  # any month of the data's quarterly cycle anchors the same grid
            return pdo.QuarterBegin(n, startingMonth=int(t0.month))
        if ts.is_month_end.all():
            return pdo.QuarterEnd(n, startingMonth=int(t0.month))
    if isinstance(off, (pdo.YearEnd, pdo.YearBegin)):
        if (ts.day == 1).all():
            return pdo.YearBegin(n, month=t0.month)
        if ts.is_month_end.all():
            return pdo.YearEnd(n, month=t0.month)
    if isinstance(off, pdo.Week) and len(set(ts.weekday)) == 1:
        return pdo.Week(n, weekday=int(t0.weekday()))
    return None


def _infer(ts: pd.DatetimeIndex) -> str | None:
    freq = pd.infer_freq(ts) if len(ts) >= 3 else None
    if freq is not None:
        return freq
    # gaps: the most common frequency of short regular runs, checked against every timestamp by the caller
    votes: dict[str, int] = {}
    starts = np.unique(np.linspace(0, max(len(ts) - INFER_RUN, 0), 60).astype(int))
    for s in starts:
        run = ts[s:s + INFER_RUN]
        f = pd.infer_freq(run) if len(run) >= 3 else None
        if f is not None:
            votes[f] = votes.get(f, 0) + 1
    return max(votes, key=votes.get) if votes else None


def resolve_frequency(timestamps, freq: str | None = None, where: str = "the data") -> tuple[Calendar, pd.DatetimeIndex]:
    """The calendar of ``timestamps`` and its regular grid from the first to the last one.

    Args:
        timestamps: every timestamp of the data (any order, repeats allowed: several series).
        freq: a pandas frequency to use (checked against the timestamps); None infers it.
        where: file name for the error messages.

    Returns:
        ``(calendar, grid)``, ``grid: (T,)`` covering all timestamps (gaps = grid rows no series has).

    Raises:
        DataError: fewer than 3 distinct timestamps without ``freq``, no inferable frequency, a frequency
            the timestamps do not lie on, or one that would leave most of the grid empty.
    """
    ts = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(timestamps))).sort_values()
    if len(ts) == 0:
        raise DataError(f"{where}: no timestamps")
    note = ""
    if freq is None:
        if len(ts) < 3:
            raise DataError(f"{where}: at least 3 distinct timestamps are needed to infer the frequency; pass --freq")
        inferred = _infer(ts)
        if inferred is None:
            raise DataError(f"{where}: cannot infer a frequency from the timestamps (irregular from {ts[1]}); "
                            "pass --freq")
        off = to_offset(inferred)
        note = f"frequency {off.freqstr} (inferred)"
    else:
        off = to_offset(normalize_alias(freq))
        note = f"frequency {off.freqstr} (--freq {freq})"
    grid, pos = _on_grid(ts, off)
    if (pos < 0).any() and freq is not None:
        alt = _follow_anchor(off, ts)
        if alt is not None:
            g2, p2 = _on_grid(ts, alt)
            if (p2 >= 0).all():
                note = f"frequency {alt.freqstr} (--freq {freq}, anchored as the timestamps)"
                off, grid, pos = alt, g2, p2
    if (pos < 0).any():
        bad = ts[int(np.flatnonzero(pos < 0)[0])]
        hint = ""
        if freq is not None and len(ts) >= 3:
            guess = _infer(ts)
            hint = f"; the timestamps look like {to_offset(guess).freqstr}" if guess else ""
        raise DataError(f"{where}: timestamp {bad} is not on the {off.freqstr} calendar starting {ts[0]}"
                        f"{hint} (pass the right --freq)")
    if freq is not None and len(grid) > MAX_GRID_FACTOR * len(ts):
        guess = _infer(ts)
        raise DataError(f"{where}: --freq {freq} contradicts the timestamps: {len(ts)} of them span {len(grid)} "
                        f"{off.freqstr} steps{f' (they look like {to_offset(guess).freqstr})' if guess else ''}")
    return Calendar(off.freqstr, season_length(off.freqstr), note), grid


def extend(grid: pd.DatetimeIndex, freq: str, steps: int) -> pd.DatetimeIndex:
    """``grid`` followed by the next ``steps`` timestamps of ``freq``."""
    if steps <= 0:
        return grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        more = pd.date_range(grid[-1], periods=steps + 1, freq=freq)[1:]
    return grid.append(more)


# ----------------------------------------------------------------------------- calendar features


def _scaled(values, period: float) -> np.ndarray:
    # GluonTS convention: position in the cycle mapped to [-0.5, 0.5]
    return np.asarray(values, dtype=np.float64) / max(period - 1.0, 1.0) - 0.5


def calendar_features(index: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """Calendar features of the timestamps, chosen by the frequency (GluonTS's sets, from timestamps).

    Sub-hourly: minute of hour, hour of day, day of week; hourly: hour of day, day of week, day of year;
    (business) daily: day of week, day of month, day of year; weekly: week of year; monthly: month of
    year; quarterly: quarter of year; yearly and others: none.

    Returns:
        ``(T, F)`` float32 in [-0.5, 0.5].
    """
    off = to_offset(freq)
    feats = []
    if isinstance(off, pdo.Tick) and pd.Timedelta(off) < pd.Timedelta(hours=1):
        feats = [_scaled(index.minute, 60), _scaled(index.hour, 24), _scaled(index.dayofweek, 7)]
    elif isinstance(off, pdo.Tick) and pd.Timedelta(off) < pd.Timedelta(days=1):
        feats = [_scaled(index.hour, 24), _scaled(index.dayofweek, 7), _scaled(index.dayofyear - 1, 366)]
    elif isinstance(off, (pdo.Day, pdo.BusinessDay)):
        feats = [_scaled(index.dayofweek, 7), _scaled(index.day - 1, 31), _scaled(index.dayofyear - 1, 366)]
    elif isinstance(off, pdo.Week):
        feats = [_scaled(index.isocalendar().week.to_numpy() - 1, 53)]
    elif isinstance(off, (pdo.MonthBegin, pdo.MonthEnd, pdo.BusinessMonthBegin, pdo.BusinessMonthEnd)):
        feats = [_scaled(index.month - 1, 12)]
    elif isinstance(off, (pdo.QuarterBegin, pdo.QuarterEnd, pdo.BQuarterBegin, pdo.BQuarterEnd)):
        feats = [_scaled(index.quarter - 1, 4)]
    if not feats:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack(feats, axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- defaults from the season


def default_context(season: int, horizon: int, seasons: int = 3, minimum: int = 30) -> int:
    """Context length: ``seasons`` cycles, at least the horizon and ``minimum`` steps."""
    return max(seasons * season, horizon, minimum)


def seasonal_lags(season: int, horizon: int, count: int = 3, secondary: int = 0) -> list[int]:
    """Lags ``l >= horizon`` at multiples of the season (and of a secondary one): every lag of a forecast step
    falls before the forecast origin, so no lag ever reads the window being forecast.

    Returns:
        Sorted distinct lags, e.g. quarterly with H = 8: ``[8, 12, 16]``; hourly with H = 24: ``[24, 48, 72, 168]``.
    """
    lags = set()
    if season > 1:
        first = -(-horizon // season)  # ceil(H / m)
        lags.update(season * k for k in range(max(first, 1), max(first, 1) + count))
    if secondary > 0:
        first = -(-horizon // secondary)
        lags.add(secondary * max(first, 1))
    return sorted(lags)
