"""Rolling-origin backtests: W forecast origins ``stride`` steps apart, the last one H steps before the end.

Train once on the rows before the first origin (default) or refit before every origin (``refit=True``);
either way a window's model never sees that window's rows (tested). Scores per window and overall
(pooled over windows, as GluonTS's evaluator pools its test dates): mean weighted quantile loss, MASE,
50/80/90 % interval coverage, and CRPS-sum of the series' total for multivariate sets (sample forecasts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dforce.errors import DataError
from dforce.recipes.forecast.metrics import (CRPS_QUANTILES, forecast_metrics, quantile_scores, quantiles_from_samples,
                                             seasonal_error)
from dforce.recipes.forecast.panel import Panel


def rolling_origins(length: int, horizon: int, windows: int, stride: int | None = None) -> np.ndarray:
    """``(W,)`` first forecast rows: ``length - H - (W - 1 - w) * stride`` (stride default H, non-overlapping).

    Raises:
        DataError: the windows do not fit in the data.
    """
    stride = stride or horizon
    if windows < 1 or stride < 1 or horizon < 1:
        raise DataError(f"--windows ({windows}), --stride ({stride}) and --horizon ({horizon}) must be >= 1")
    origins = length - horizon - stride * np.arange(windows - 1, -1, -1)
    if origins[0] < 2:
        raise DataError(f"{windows} windows of {horizon} steps, {stride} apart, need more than the "
                        f"{length} rows of the data (lower --windows, --stride or --horizon)")
    return origins.astype(np.int64)


@dataclass
class Backtest:
    """A method's forecasts over the windows.

    Attributes:
        origins: ``(W,)`` first forecast rows.
        quantiles: ``(Q, W, N, H)`` at :data:`CRPS_QUANTILES`.
        target: ``(W, N, H)`` truth (NaN = missing).
        scale: ``(W, N)`` MASE denominators.
        samples: ``(W, N, S, H)`` when the method samples (CRPS-sum needs them), else None.
        seconds: train + forecast time.
        info: method details (fit epochs, spread, ...).
    """

    origins: np.ndarray
    quantiles: np.ndarray
    target: np.ndarray
    scale: np.ndarray
    samples: np.ndarray | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def scores(self) -> dict:
        """``{"overall": {...}, "windows": [{...} per window]}`` (see :func:`quantile_scores`)."""
        overall = quantile_scores(self.quantiles, self.target, self.scale)
        windows = [quantile_scores(self.quantiles[:, w], self.target[w], self.scale[w])
                   for w in range(len(self.origins))]
        if self.samples is not None and self.target.shape[1] > 1:  # CRPS-sum: (W, S, H, N) layout of the metric
            s, y = self.samples.transpose(0, 2, 3, 1), self.target.transpose(0, 2, 1)
            overall["crps_sum"] = forecast_metrics(s, y)["crps_sum"]
            for w, rec in enumerate(windows):
                rec["crps_sum"] = forecast_metrics(s[w:w + 1], y[w:w + 1])["crps_sum"]
        return {"overall": overall, "windows": windows}


def truth(panel: Panel, origins: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``(target (W, N, H), scale (W, N))`` of the windows."""
    target = np.stack([panel.values[:, o:o + horizon] for o in origins])
    if target.shape[-1] != horizon:
        raise DataError(f"a window at row {int(origins[-1])} runs past the {panel.length} rows of the data")
    scale = np.stack([seasonal_error(panel.values, int(o), panel.calendar.season) for o in origins])
    return target, scale


def dforce_backtest(cfg, panel: Panel, origins: np.ndarray, refit: bool = False, device: str = "cpu",
                    progress: bool = False, run_dir=None, on_fit=None) -> Backtest:
    """Diffusion Forcing over the windows (``cfg``: a :class:`PanelForecastConfig` with the horizon set).

    ``on_fit(forecaster, window)`` is called after each training (e.g. to print what was chosen).
    """
    from dforce.recipes.forecast.global_model import fit, forecast

    H = cfg.data.prediction_length
    target, scale = truth(panel, origins, H)
    t0 = time.time()
    fits, parts = [], []
    groups = [[w] for w in range(len(origins))] if refit else [list(range(len(origins)))]
    for g in groups:
        o = int(origins[g[0]])
        fc = fit(cfg, panel.head(o), run_dir=run_dir if not refit else None, device=device, progress=progress)
        if on_fit is not None:
            on_fit(fc, g[0])
        fits.append({"origin": o, "best_epoch": fc.best_epoch, "epochs": len(fc.history), "spread": fc.spread,
                     "best_val_wql": fc.best_val_wql, "val_wql": fc.val_wql, "train_seconds": round(fc.seconds, 1),
                     "context": fc.layout.context, "lags": list(fc.layout.lags), "nonnegative": fc.nonnegative,
                     "representation": "pool" if fc.members else fc.layout.representation, "candidates": fc.candidates})
        parts.append(forecast(fc, panel, origins[g], seed=cfg.seed, device=device))
    samples = np.concatenate(parts)  # (W, N, S, H)
    return Backtest(origins, quantiles_from_samples(samples), target, scale, samples, time.time() - t0,
                    {"fits": fits})


def summary_line(panel: Panel, bt: Backtest, w: int, rec: dict, method: str = "dforce") -> str:
    """One line per window: origin date, horizon, wQL, MASE, coverage (and CRPS-sum)."""
    o = int(bt.origins[w])
    extra = f"  crps_sum {rec['crps_sum']:.5f}" if "crps_sum" in rec else ""
    return (f"window {w + 1}/{len(bt.origins)} {method}: {panel.timestamps(o + 1)[o]} + {bt.target.shape[-1]} steps  "
            f"wQL {rec['wql']:.4f}  MASE {rec.get('mase', float('nan')):.3f}  "
            f"coverage 50/80/90 {rec['coverage50']:.0%}/{rec['coverage80']:.0%}/{rec['coverage90']:.0%}{extra}")


def quantile_backtest(q: np.ndarray, panel: Panel, origins: np.ndarray, horizon: int, seconds: float,
                      samples: np.ndarray | None = None, info: dict | None = None) -> Backtest:
    """Wrap a baseline's quantiles ``(Q, W, N, H)`` (and samples) with the windows' truth."""
    target, scale = truth(panel, origins, horizon)
    if q.shape != (len(CRPS_QUANTILES), *target.shape):
        raise DataError(f"quantiles must be ({len(CRPS_QUANTILES)}, *{target.shape}), got {q.shape}")
    return Backtest(origins, q, target, scale, samples, seconds, info or {})

