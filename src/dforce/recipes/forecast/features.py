"""TimeGrad-style covariates and windowing for multivariate forecasting.

Follows the TimeGrad / GluonTS recipe (Rasul et al. 2021, ``pytorch-ts``; ``gluonts.transform``):

- time features from the frequency: ``gluonts.time_feature.time_features_from_frequency_str``
  (business-daily: day-of-week, day-of-month, day-of-year, each scaled to [-0.5, 0.5]);
- lag indices: ``gluonts.time_feature.get_lags_for_frequency`` (the model looks up ``x[t - lag]``);
- per-series mean-absolute scaling computed on the *context* part of each window only
  (TimeGrad's ``MeanScaler``: ``scale = sum |x| * observed / max(#observed, 1)``; a series with no
  non-zero observation gets the batch's per-dimension scale; clamped at ``minimum_scale``);
- windows of ``context_length + prediction_length`` rows gathered with one fancy-index (no Python loop
  over time). Rows outside the series (before 0, after T) are NaN and unobserved; their time features
  are still computed because calendars extend both ways.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dforce._utils import exists
from dforce.recipes.forecast.gluonts_format import MultivariateSeries
from dforce.errors import DataError

MINIMUM_SCALE = 1e-10  # TimeGrad / GluonTS MeanScaler default minimum_scale


# ----------------------------------------------------------------------------- calendar features


def time_features(start: pd.Timestamp, freq: str, offset: int, length: int) -> np.ndarray:
    """GluonTS time features of ``length`` consecutive periods beginning ``offset`` steps after ``start``.

    Args:
        start: timestamp of series row 0.
        freq: pandas frequency string.
        offset: first row (may be negative, or past the end of the series).
        length: number of rows.

    Returns:
        ``(length, C)`` float32, C = number of features for ``freq`` (3 for ``"B"``).
    """
    from gluonts.time_feature import time_features_from_frequency_str

    with warnings.catch_warnings():  # Period with BDay freq is deprecated in pandas >= 2.2, still what GluonTS uses
        warnings.simplefilter("ignore", FutureWarning)
        first = pd.Period(start, freq=freq) + offset
        index = pd.period_range(first, periods=length, freq=freq)
        feats = [f(index) for f in time_features_from_frequency_str(freq)]
    return np.stack(feats, axis=-1).astype(np.float32)  # (length, C)


def lags_for_frequency(freq: str, max_lag: int | None = None) -> list[int]:
    """GluonTS default lag indices for ``freq`` (``get_lags_for_frequency``), e.g. 29 lags up to 780 for ``"B"``."""
    from gluonts.time_feature import get_lags_for_frequency

    return list(get_lags_for_frequency(freq, lag_ub=max_lag or 1200))


# ----------------------------------------------------------------------------- scaling


def mean_abs_scale(target, observed, minimum_scale: float = MINIMUM_SCALE):
    """TimeGrad ``MeanScaler``: mean |x| over observed steps, per window and series.

    Args:
        target: ``(N, L, D)`` numpy array or torch tensor (NaN allowed where unobserved); pass the
            context part only.
        observed: ``(N, L, D)`` bool/0-1 mask.
        minimum_scale: lower clamp.

    Returns:
        ``(N, D)`` scale of the same kind as ``target``. Windows whose series has no non-zero observation
        get the batch mean over the other windows of that dimension (TimeGrad's ``default_scale``).
    """
    if isinstance(target, torch.Tensor):
        obs = observed.to(target.dtype)
        x = torch.where(observed.bool(), target, torch.zeros_like(target)).abs() * obs
        num, tot = obs.sum(1), x.sum(1)  # (N, D)
        default = tot.sum(0) / num.sum(0).clamp(min=1)  # (D,)
        scale = torch.where(tot > 0, tot / num.clamp(min=1), default.expand_as(tot))
        return scale.clamp(min=minimum_scale)
    observed = np.asarray(observed).astype(bool)
    x = np.abs(np.where(observed, target, 0.0))
    num, tot = observed.sum(1), x.sum(1)  # (N, D)
    default = tot.sum(0) / np.maximum(num.sum(0), 1)  # (D,)
    scale = np.where(tot > 0, tot / np.maximum(num, 1), default[None])
    return np.maximum(scale, minimum_scale)


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class ForecastWindows:
    """A batch of forecasting windows, L = context_length + prediction_length rows each.

    Attributes:
        target: ``(N, L, D)`` float64 unscaled values; NaN where unobserved or outside the series.
        observed: ``(N, L, D)`` bool.
        covariates: ``(N, L, C)`` float32 time features.
        scale: ``(N, D)`` mean-absolute scale of the context rows (divide ``target`` by ``scale[:, None]``).
        start: ``(N,)`` int64 series row of each window's first row.
        lags: ``(N, L, D, n_lags)`` float64 unscaled ``x[t - lag]`` (NaN outside the series), or None.
        lags_observed: ``(N, L, D, n_lags)`` bool, or None.
        context_length: rows of context.
        prediction_length: rows to forecast (the last rows of each window).
    """

    target: np.ndarray
    observed: np.ndarray
    covariates: np.ndarray
    scale: np.ndarray
    start: np.ndarray
    lags: np.ndarray | None
    lags_observed: np.ndarray | None
    context_length: int
    prediction_length: int

    def __len__(self) -> int:
        return self.target.shape[0]

    @staticmethod
    def concat(parts: list["ForecastWindows"]) -> "ForecastWindows":
        """Stack windows from several series (same D, C, lags and lengths) along N."""
        def cat(name):
            first = getattr(parts[0], name)
            return None if first is None else np.concatenate([getattr(p, name) for p in parts])

        arrays = ("target", "observed", "covariates", "scale", "start", "lags", "lags_observed")
        return ForecastWindows(*(cat(n) for n in arrays), parts[0].context_length, parts[0].prediction_length)


def _gather(values: np.ndarray, observed: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # values (T, D), idx (...) int -> (..., D) with NaN / False outside [0, T)
    T = values.shape[0]
    inside = (idx >= 0) & (idx < T)
    safe = np.clip(idx, 0, T - 1)
    out = np.where(inside[..., None], values[safe], np.nan)
    obs = inside[..., None] & observed[safe]
    return out, obs


def make_windows(series: MultivariateSeries, context_length: int, prediction_length: int,
                 starts: np.ndarray | None = None, stride: int = 1, lags_seq: list[int] | None = None,
                 minimum_scale: float = MINIMUM_SCALE) -> ForecastWindows:
    """Cut a ``(T, D)`` series into windows of ``context_length + prediction_length`` rows.

    Args:
        series: the series, ``target: (T, D)``.
        context_length: rows of conditioning history per window.
        prediction_length: rows to forecast per window.
        starts: ``(N,)`` first-row indices; may run outside ``[0, T - L]`` (those rows come back NaN and
            unobserved). Default: every ``stride``-th start such that the window lies inside the series.
        stride: step between default starts.
        lags_seq: lag indices (e.g. :func:`lags_for_frequency`); None skips the (memory-heavy) lag tensor.
        minimum_scale: lower clamp of the scale.

    Returns:
        :class:`ForecastWindows` with N windows.
    """
    L = context_length + prediction_length
    if context_length <= 0 or prediction_length <= 0:
        raise DataError(f"context_length={context_length} and prediction_length={prediction_length} must be positive")
    if starts is None:
        if series.length < L:
            raise DataError(f"series of length {series.length} is shorter than context_length + "
                            f"prediction_length = {L}")
        starts = np.arange(0, series.length - L + 1, stride)
    starts = np.asarray(starts, dtype=np.int64)
    idx = starts[:, None] + np.arange(L)[None, :]  # (N, L)
    target, observed = _gather(series.target, series.observed, idx)  # (N, L, D)
    lo, hi = int(idx.min()), int(idx.max())
    feats = time_features(series.start, series.freq, lo, hi - lo + 1)  # (hi - lo + 1, C)
    covariates = feats[idx - lo]  # (N, L, C)
    scale = mean_abs_scale(target[:, :context_length], observed[:, :context_length], minimum_scale)  # (N, D)
    lags = lags_obs = None
    if exists(lags_seq) and len(lags_seq):
        lag_idx = idx[..., None] - np.asarray(lags_seq, dtype=np.int64)  # (N, L, n_lags)
        lags, lags_obs = _gather(series.target, series.observed, lag_idx)  # (N, L, n_lags, D)
        lags, lags_obs = lags.transpose(0, 1, 3, 2), lags_obs.transpose(0, 1, 3, 2)  # (N, L, D, n_lags)
    return ForecastWindows(target, observed, covariates, scale, starts, lags, lags_obs, context_length,
                           prediction_length)


def last_windows(series_list: list[MultivariateSeries], context_length: int, prediction_length: int,
                 lags_seq: list[int] | None = None, future: bool = False) -> ForecastWindows:
    """One window per series ending at its last row (test/validation), or past it (``future=True``).

    With ``future=False`` the last ``prediction_length`` rows of each series are the forecast targets
    (GluonTS test layout). With ``future=True`` the context is the last ``context_length`` rows and the
    ``prediction_length`` future rows are NaN/unobserved (a real forecast; covariates still known).

    Returns:
        :class:`ForecastWindows` with ``N = len(series_list)``.
    """
    parts = []
    for s in series_list:  # one gather per series (lengths differ), never per time step
        start = s.length - context_length - (0 if future else prediction_length)
        parts.append(make_windows(s, context_length, prediction_length, starts=np.array([start]), lags_seq=lags_seq))
    return ForecastWindows.concat(parts)
