"""Windows of a panel as tokens for the global forecaster: one series per window, one value per token.

A window of series ``n`` at forecast origin ``o`` holds the ``C`` context rows ``[o - C, o)`` and the ``H``
rows ``[o, o + H)`` to forecast (all gathered with one fancy index per batch, rows outside the data NaN).

- **Scaling per window and series** (``representation="revin"``, instance normalization as in RevIN /
  PatchTST): ``x = (y - mean) / s`` with the mean and spread ``s`` of the *observed context* values; ``s``
  is floored at ``scale_floor`` times the series' typical step ``g`` (mean |y_t - y_{t-1}| on the
  training data) so a flat context (a pegged currency, a sensor stuck at 0) does not blow up.
  ``representation="diff"`` (the #4 exchange recipe) tokenizes changes ``(y_t - y_{t-1}) / s`` with ``s``
  the context's mean |change|; a forecast is then a cumulative sum from the last context value.
- **Masking**: a missing value (gap, late start) is a token with ``mask = False``: the objective shows it
  as pure noise and never puts it in the loss, and the forecaster absorbs it the same way.
- **Conditioning** ``cond: (B, L, F)``: the token's observed flag; calendar features of its timestamp;
  seasonal lags ``(y_{t-l} - mean) / s`` with every ``l >= H`` (so a lag never reads the forecast window);
  the window's volatility (log mean|change| / s) and regime (log s / g); past-only covariates in the
  context rows (zero, with a zero "known" flag, in the forecast rows: their values there are never read);
  known-future covariates in every row; static features. Covariates are standardized with the context's
  own mean and spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dforce._utils import check_choice, exists
from dforce.errors import ConfigError, DataError
from dforce.recipes.forecast.frequency import calendar_features
from dforce.recipes.forecast.panel import Panel

REPRESENTATIONS = ("revin", "diff")
LOG_CLIP = 5.0  # the log-volatility channels are clipped to +-5 (e^5 = 150x): beyond that they carry no more signal


@dataclass(frozen=True)
class Layout:
    """Resolved window layout (from the config and the data's frequency).

    Attributes:
        context: C rows of history per window.
        horizon: H rows to forecast.
        lags: lag rows (all >= H).
        representation: revin | diff.
        scale_floor: floor of a window's scale, times the series' typical step.
        min_context_observed: a training / validation window needs this many observed context values.
    """

    context: int
    horizon: int
    lags: tuple[int, ...]
    representation: str = "revin"
    scale_floor: float = 0.1
    min_context_observed: int = 2

    def __post_init__(self):
        check_choice("data.representation", self.representation, REPRESENTATIONS)
        if self.context < 2 or self.horizon < 1:
            raise ConfigError(f"context ({self.context}) must be >= 2 and horizon ({self.horizon}) >= 1")
        short = [lag for lag in self.lags if lag < self.horizon]
        if short:
            raise ConfigError(f"data.lags {short} are shorter than the horizon {self.horizon}: they would read the "
                              "values being forecast")
        if not self.scale_floor > 0:
            raise ConfigError(f"data.scale_floor must be > 0, got {self.scale_floor}")


@dataclass(frozen=True)
class Tokens:
    """Encoded windows.

    Attributes:
        x: ``(B, L, 1)`` float32 tokens (0 where missing), L = C + H.
        cond: ``(B, L, F)`` float32.
        mask: ``(B, L)`` bool, True where the value is observed.
        loc: ``(B,)`` value the tokens are centred on (context mean; last value for diff).
        scale: ``(B,)`` token unit.
    """

    x: np.ndarray
    cond: np.ndarray
    mask: np.ndarray
    loc: np.ndarray
    scale: np.ndarray


def typical_step(values: np.ndarray) -> np.ndarray:
    """``(N,)`` mean |y_t - y_{t-1}| over consecutive observed pairs of ``values: (N, T)`` (fallbacks: 1e-3 of
    mean |y|, then 1), the unit the scale floor is measured in."""
    d = np.abs(np.diff(values, axis=1))
    ok = np.isfinite(d)
    cnt = ok.sum(1)
    step = np.where(cnt > 0, np.where(ok, d, 0).sum(1) / np.maximum(cnt, 1), np.nan)
    level = np.nanmean(np.abs(np.where(np.isfinite(values), values, np.nan)), axis=1) if values.size else step
    fallback = np.where(np.isfinite(level) & (level > 0), 1e-3 * level, 1.0)
    return np.where(np.isfinite(step) & (step > 0), step, fallback)


def _gather(a: np.ndarray, n: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[n, rows]`` with NaN where ``rows`` is outside ``[0, a.shape[1])``; ``a: (N, T, ...)``, ``rows: (B, L)``."""
    T = a.shape[1]
    inside = (rows >= 0) & (rows < T)
    out = a[n[:, None], np.clip(rows, 0, T - 1)].astype(np.float64)
    return np.where(inside.reshape(inside.shape + (1,) * (out.ndim - 2)), out, np.nan)


def _masked_stats(v: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # mean, std and count of the finite entries along ``axis`` (0 where none)
    ok = np.isfinite(v)
    cnt = ok.sum(axis)
    z = np.where(ok, v, 0.0)
    mean = z.sum(axis) / np.maximum(cnt, 1)
    var = (np.where(ok, (v - np.expand_dims(mean, axis)) ** 2, 0.0)).sum(axis) / np.maximum(cnt, 1)
    return mean, np.sqrt(var), cnt


class WindowEncoder:
    """Encodes windows of one panel (calendar features precomputed once).

    Args:
        panel: the data (values up to the last row that may be read; future covariates possibly longer).
        layout: the window layout.
        step: ``(N,)`` typical step per series (:func:`typical_step` of the training part).
    """

    def __init__(self, panel: Panel, layout: Layout, step: np.ndarray):
        self.panel, self.layout, self.step = panel, layout, np.asarray(step, dtype=np.float64)
        self.lead = layout.context + 1  # calendar rows kept before row 0 (windows may start before the data)
        extra = max(panel.future_rows, layout.horizon)
        self.calendar = calendar_features(self._calendar_index(panel.length + extra), panel.freq)

    def _calendar_index(self, rows: int):
        import pandas as pd

        before = pd.date_range(end=self.panel.index[0], periods=self.lead + 1, freq=self.panel.freq)[:-1]
        return before.append(self.panel.timestamps(rows))

    @property
    def cond_dim(self) -> int:
        p = self.panel
        n_past = len(p.past_names)
        return (1 + self.calendar.shape[1] + len(self.layout.lags) + 2 + (n_past + 1 if n_past else 0)
                + len(p.future_names) + (p.static.shape[1] if exists(p.static) else 0))

    def encode(self, series: np.ndarray, origins: np.ndarray) -> Tokens:
        """Tokens of the windows of ``series: (B,)`` at ``origins: (B,)``.

        The values of rows ``>= origin`` are read only as training / scoring targets (``x`` and ``mask`` of
        the forecast rows); the conditioning never reads them, nor past covariates at those rows.
        """
        lay, p = self.layout, self.panel
        C, H = lay.context, lay.horizon
        n, o = np.asarray(series, dtype=np.int64), np.asarray(origins, dtype=np.int64)
        rows = o[:, None] + np.arange(-C, H)[None]  # (B, L)
        y = _gather(p.values, n, rows)  # (B, L)
        ctx = y[:, :C]
        mean, std, cnt = _masked_stats(ctx)
        d = np.abs(np.diff(ctx, axis=1))
        vol, _, vcnt = _masked_stats(d)
        g = self.step[n]
        last = _last_observed(ctx)
        if lay.representation == "revin":
            loc, scale = mean, np.maximum(np.maximum(std, vol), lay.scale_floor * g)
            x = (y - loc[:, None]) / scale[:, None]
        else:
            prev = _gather(p.values, n, rows - 1)
            loc, scale = last, np.maximum(np.where(vcnt > 0, vol, 0.0), lay.scale_floor * g)
            x = (y - prev) / scale[:, None]
        mask = np.isfinite(x)
        feats = [mask.astype(np.float64)[..., None], self.calendar[rows + self.lead]]
        if lay.lags:
            lag_rows = rows[..., None] - np.asarray(lay.lags)[None, None]  # (B, L, nl), all < o for forecast rows
            lv = _gather(p.values, n, lag_rows.reshape(len(n), -1)).reshape(lag_rows.shape)
            feats.append(np.nan_to_num((lv - loc[:, None, None]) / scale[:, None, None], nan=0.0))
        logs = np.stack([np.log(np.maximum(vol, 1e-12) / scale), np.log(scale / g)], -1)  # (B, 2)
        feats.append(np.broadcast_to(np.clip(np.where(vcnt[:, None] > 0, logs, 0.0), -LOG_CLIP, LOG_CLIP)[:, None],
                                     (len(n), C + H, 2)))
        if exists(p.past):  # read only rows < origin: forecast rows point at the last context row, then are zeroed
            past = _gather(p.past, n, np.minimum(rows, o[:, None] - 1))  # (B, L, Fp)
            known = (rows < o[:, None])[..., None]
            feats += [np.where(known, _standardize(past, C), 0.0), known.astype(np.float64)]
        if exists(p.future):
            fut = _gather(p.future, n, rows)  # (B, L, Ff); a missing value (a gap in the history) reads as the mean
            feats.append(_standardize(fut, C))
        if exists(p.static):
            feats.append(np.broadcast_to(p.static[n][:, None].astype(np.float64), (len(n), C + H, p.static.shape[1])))
        cond = np.nan_to_num(np.concatenate(feats, axis=-1), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        return Tokens(np.nan_to_num(x, nan=0.0).astype(np.float32)[..., None], cond, mask, loc, scale)

    def decode(self, x: np.ndarray, tokens: Tokens) -> np.ndarray:
        """Generated tokens ``x: (B, S, H)`` of the forecast rows back to values ``(B, S, H)`` float64."""
        x = x.astype(np.float64) * tokens.scale[:, None, None]
        if self.layout.representation == "revin":
            return tokens.loc[:, None, None] + x
        return tokens.loc[:, None, None] + np.cumsum(x, axis=-1)


def _last_observed(v: np.ndarray) -> np.ndarray:
    # (B, L) -> (B,) last finite value per row (NaN when none)
    ok = np.isfinite(v)
    idx = v.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where(ok.any(1), v[np.arange(len(v)), idx], np.nan)


def _standardize(a: np.ndarray, C: int) -> np.ndarray:
    # (B, L, F) standardized with the mean / std of its first C rows (unit spread where constant)
    mean, std, _ = _masked_stats(a[:, :C], axis=1)  # (B, F)
    return (a - mean[:, None]) / np.where(std > 0, std, 1.0)[:, None]


def window_origins(observed: np.ndarray, layout: Layout, first: int, last: int) -> np.ndarray:
    """``(M, 2)`` int (series, origin) of every window with origin in ``[first, last]`` whose context has at
    least ``layout.min_context_observed`` values and whose forecast rows (all inside the data) have one.

    ``observed: (N, T)`` bool; rows ``>= T`` do not exist, so ``last <= T - H``.
    """
    C, H = layout.context, layout.horizon
    N, T = observed.shape
    last = min(last, T - H)
    if last < first:
        return np.zeros((0, 2), dtype=np.int64)
    cs = np.concatenate([np.zeros((N, 1), dtype=np.int64), np.cumsum(observed, axis=1)], axis=1)  # (N, T + 1)
    o = np.arange(first, last + 1)
    ctx = cs[:, o] - cs[:, np.maximum(o - C, 0)]  # (N, M) observed context values
    tgt = cs[:, o + H] - cs[:, o]
    ok = (ctx >= min(layout.min_context_observed, C)) & (tgt > 0)
    n, i = np.nonzero(ok)
    return np.stack([n, o[i]], axis=1).astype(np.int64)


class WindowDataset:
    """Training windows for the engine's trainer: ``get_batch(idx (B,)) -> {"x", "cond", "mask"}``."""

    def __init__(self, encoder: WindowEncoder, pairs: np.ndarray):
        if len(pairs) == 0:
            raise DataError(f"no training window: every series needs at least {encoder.layout.min_context_observed} "
                            f"observed values in a context of {encoder.layout.context} steps followed by "
                            f"{encoder.layout.horizon} steps (use less history with --context or a shorter --horizon)")
        self.encoder, self.pairs = encoder, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.pairs[idx.numpy()]
        t = self.encoder.encode(p[:, 0], p[:, 1])
        return {"x": torch.from_numpy(t.x), "cond": torch.from_numpy(t.cond), "mask": torch.from_numpy(t.mask)}
