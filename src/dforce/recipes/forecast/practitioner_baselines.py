"""The tools a practitioner would use instead, on the same panel and forecast origins as dforce (all CPU).

- statsforecast (Nixtla): ``SeasonalNaive``, ``AutoETS``, ``AutoTheta``, ``AutoARIMA``, each refitted on the
  history before every origin (how statsforecast's own cross-validation runs them), prediction intervals at
  the levels that give the 19 quantiles 0.05..0.95 (the median is the point forecast);
- GluonTS's torch ``DeepAREstimator`` (a global probabilistic RNN, the deep baseline of TimeGrad and of
  the Diffusion Forcing paper), trained once on the rows before the first origin, as dforce's train-once
  backtest, with the known-future covariates as ``feat_dynamic_real`` and static features as
  ``feat_static_real``; 100 sample paths per window.

Statistical models need gap-free series: for them only, a series starts at its first value and internal
gaps are forward-filled (DeepAR and dforce mask them instead).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries import offsets as pdo
from pandas.tseries.frequencies import to_offset

from dforce._utils import check_choice
from dforce.errors import DataError
from dforce.recipes.forecast.metrics import CRPS_QUANTILES
from dforce.recipes.forecast.panel import Panel

STAT_METHODS = ("seasonal_naive", "auto_ets", "auto_theta", "auto_arima")
LEVELS = tuple(range(10, 100, 10))  # central interval levels: their ends are the quantiles 0.05..0.45, 0.55..0.95


@dataclass(frozen=True)
class DeepARConfig:
    """GluonTS DeepAR settings: the library's defaults except the training length (CPU budget)."""

    max_epochs: int = 30  # GluonTS default 100; 30 x 50 batches converges on these data sets in a few minutes
    num_batches_per_epoch: int = 50  # GluonTS default
    context_seasons: int = 3  # context = max(3 seasons, H), dforce's default until 2026-12-08 (GluonTS default: H)
    num_samples: int = 100


def _history_frame(panel: Panel, origin: int) -> pd.DataFrame:
    """``unique_id, ds, y`` of the rows before ``origin``: each series from its first value, gaps forward-filled."""
    v = pd.DataFrame(panel.values[:, :origin].T).ffill().to_numpy().T  # (N, origin)
    started = np.maximum.accumulate(np.isfinite(panel.values[:, :origin]), axis=1)
    n, t = np.nonzero(started & np.isfinite(v))
    return pd.DataFrame({"unique_id": np.asarray(panel.ids, dtype=object)[n], "ds": panel.index[t], "y": v[n, t]})


def _stat_model(method: str, season: int):
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta, SeasonalNaive

    check_choice("method", method, STAT_METHODS)
    return {"seasonal_naive": SeasonalNaive, "auto_ets": AutoETS, "auto_theta": AutoTheta,
            "auto_arima": AutoARIMA}[method](season_length=season)


def stat_quantiles(panel: Panel, origins, horizon: int, method: str) -> tuple[np.ndarray, float]:
    """Quantile forecasts of a statsforecast model refitted at every origin.

    Returns:
        ``(q (19, W, N, H), seconds)`` at :data:`CRPS_QUANTILES`; NaN for a series with no history.
    """
    from statsforecast import StatsForecast

    origins = np.asarray(origins, dtype=np.int64)
    Q = len(CRPS_QUANTILES)
    out = np.full((Q, len(origins), panel.n_series, horizon), np.nan)
    where = {k: i for i, k in enumerate(panel.ids)}
    t0 = time.time()
    for w, o in enumerate(origins):
        df = _history_frame(panel, int(o))
        sf = StatsForecast(models=[_stat_model(method, panel.calendar.season)], freq=panel.freq, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = sf.forecast(df=df, h=horizon, level=list(LEVELS))
        fc = fc.reset_index() if "unique_id" not in fc.columns else fc
        name = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        rows = fc["unique_id"].map(where).to_numpy()
        step = fc.groupby("unique_id", sort=False).cumcount().to_numpy()
        cols = [f"{name}-lo-{lv}" for lv in reversed(LEVELS)] + [name] + [f"{name}-hi-{lv}" for lv in LEVELS]
        for i, c in enumerate(cols):  # lo-90 = q0.05, ..., lo-10 = q0.45, point = q0.5, hi-10 = q0.55, ...
            out[i, w, rows, step] = fc[c].to_numpy()
    out = np.sort(out, axis=0)  # intervals are nested; sorting only guards against a point outside its intervals
    return out, time.time() - t0


# ----------------------------------------------------------------------------- DeepAR


def period_freq(freq: str) -> str:
    """The ``pd.Period`` frequency GluonTS needs for a pandas offset (``MS`` -> ``M``, ``QS-OCT`` -> ``Q``)."""
    off = to_offset(freq)
    n = getattr(off, "n", 1)
    pre = "" if n == 1 else str(n)
    if isinstance(off, (pdo.MonthBegin, pdo.MonthEnd)):
        return f"{pre}M"
    if isinstance(off, (pdo.QuarterBegin, pdo.QuarterEnd)):
        return f"{pre}Q"
    if isinstance(off, (pdo.YearBegin, pdo.YearEnd)):
        return f"{pre}Y"
    return off.freqstr


def _entries(panel: Panel, origin: int, horizon: int, train: bool) -> list[dict]:
    pf = period_freq(panel.freq)
    out = []
    for i in range(panel.n_series):
        y = panel.values[i, :origin]
        ok = np.flatnonzero(np.isfinite(y))
        if ok.size == 0:
            continue
        first = int(ok[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            e = {"start": pd.Period(panel.index[first], freq=pf), "target": y[first:].astype(np.float32),
                 "item_id": panel.ids[i]}
        if panel.future is not None:
            end = origin if train else origin + horizon
            f = np.nan_to_num(panel.future[i, first:end].T.astype(np.float32))
            mu, sd = f[:, : origin - first].mean(1, keepdims=True), f[:, : origin - first].std(1, keepdims=True)
            e["feat_dynamic_real"] = (f - mu) / np.where(sd > 0, sd, 1.0)
        if panel.static is not None:
            e["feat_static_real"] = panel.static[i].astype(np.float32)
        out.append(e)
    return out


def deepar_samples(panel: Panel, origins, horizon: int, seed: int = 0,
                   cfg: DeepARConfig = DeepARConfig()) -> tuple[np.ndarray, float]:
    """DeepAR trained on the rows before the first origin, forecasting every origin.

    Returns:
        ``(samples (W, N, S, H), seconds)``.
    """
    import lightning.pytorch as pl
    import torch
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.deepar import DeepAREstimator

    from dforce.recipes.forecast.frequency import default_context

    origins = np.asarray(origins, dtype=np.int64)
    pf = period_freq(panel.freq)
    t0 = time.time()
    pl.seed_everything(seed, verbose=False)
    torch.manual_seed(seed)
    n_dyn = 0 if panel.future is None else panel.future.shape[2]
    n_stat = 0 if panel.static is None else panel.static.shape[1]
    est = DeepAREstimator(
        freq=pf, prediction_length=horizon,
        context_length=min(default_context(panel.calendar.season, horizon, cfg.context_seasons, 0), int(origins[0]) - 1),
        num_feat_dynamic_real=n_dyn, num_feat_static_real=n_stat, num_batches_per_epoch=cfg.num_batches_per_epoch,
        trainer_kwargs={"max_epochs": cfg.max_epochs, "enable_progress_bar": False, "enable_model_summary": False,
                        "logger": False, "accelerator": "cpu", "devices": 1,
                        "default_root_dir": tempfile.mkdtemp(prefix="dforce_deepar_")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ListDataset(_entries(panel, int(origins[0]), horizon, True), freq=pf)
        predictor = est.train(train, cache_data=True)
        out = np.full((len(origins), panel.n_series, cfg.num_samples, horizon), np.nan)
        where = {k: i for i, k in enumerate(panel.ids)}
        for w, o in enumerate(origins):
            entries = _entries(panel, int(o), horizon, False)
            ds = ListDataset(entries, freq=pf)
            for e, f in zip(entries, predictor.predict(ds, num_samples=cfg.num_samples)):
                out[w, where[e["item_id"]]] = f.samples
    if not np.isfinite(out).any():
        raise DataError("DeepAR produced no finite forecast")
    return out, time.time() - t0
