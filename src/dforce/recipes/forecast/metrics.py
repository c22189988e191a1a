"""Probabilistic forecast metrics: CRPS / CRPS-sum (GluonTS-exact), ND, NRMSE, energy score.

CRPS-sum is the number every multivariate-forecasting paper since TimeGrad (Rasul et al. 2021) reports,
including Diffusion Forcing's Table 2: GluonTS ``MultivariateEvaluator(quantiles=(np.arange(20)/20)[1:],
target_agg_funcs={'sum': np.sum})``, metric ``m_sum_mean_wQuantileLoss``; "CRPS" is ``mean_wQuantileLoss``.
Both approximate CRPS by the mean over 19 quantile levels q of the weighted quantile loss

    wQL_q = 2 * sum |(Q_q - y) * (1[y <= Q_q] - q)| / sum |y|,

summed over all windows, steps (and series, for CRPS) before dividing. Details that matter to match it:

- ``SampleForecast.quantile(q)`` is *not* an interpolated quantile: it is the sorted sample at index
  ``int(np.round((S - 1) * q))`` (numpy rounds half to even: with S = 100, q = 0.5 picks index 50);
- missing targets (NaN) are masked out of every sum (``ignore_invalid_values=True``);
- for CRPS-sum the target is summed over series with pandas (NaN counts as 0, so a step where every
  series is missing is scored against a truth of 0), the samples with ``np.sum``;
- ND = sum |y - median| / sum |y|; NRMSE = sqrt(mean over rows of MSE(mean forecast)) / mean over rows
  of mean |y|, where a row is one (window, series) pair.

:func:`gluonts_forecast_metrics` calls the real GluonTS evaluator (reference, slow: one pandas frame per
row); :func:`forecast_metrics` is our vectorized torch version of the same numbers (tested to agree to
1e-6). :func:`energy_score` is the multivariate proper score of Gneiting & Raftery (2007).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from dforce.errors import DataError

EXACT = "donot_use_mm_for_euclid_dist"  # cdist's matmul shortcut loses ~1e-7 relative accuracy
CRPS_QUANTILES = tuple((np.arange(20) / 20.0)[1:].tolist())  # 0.05..0.95, TimeGrad / GluonTS evaluation


# ----------------------------------------------------------------------------- helpers


def _check_shapes(samples, target) -> None:
    if samples.ndim != 4 or target.ndim != 3 or samples.shape[:1] + samples.shape[2:] != target.shape:
        raise DataError(f"forecast samples must be (W, S, H, D) and target (W, H, D); got samples "
                        f"{tuple(samples.shape)} and target {tuple(target.shape)}")


def _as_tensor(x, dtype=torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    a = np.asarray(x)
    # a read-only view (e.g. np.broadcast_to of a point forecast): copy, as torch cannot share it
    return torch.as_tensor(a if a.flags.writeable else a.copy(), dtype=dtype)


def sample_quantiles(samples: torch.Tensor, quantiles=CRPS_QUANTILES, dim: int = 1) -> torch.Tensor:
    """GluonTS ``SampleForecast.quantile``: sorted samples at index ``round((S - 1) q)`` (half to even).

    Args:
        samples: ``(..., S, ...)`` tensor, samples along ``dim``.
        quantiles: Q levels in [0, 1].
        dim: sample axis.

    Returns:
        ``(Q, ...)`` with the sample axis removed.
    """
    S = samples.shape[dim]
    idx = np.round((S - 1) * np.asarray(quantiles, dtype=np.float64)).astype(np.int64)  # same floats as GluonTS
    ordered = samples.sort(dim=dim).values
    return ordered.index_select(dim, torch.as_tensor(idx, device=samples.device)).movedim(dim, 0)


# ----------------------------------------------------------------------------- our implementation


def _scores(samples: torch.Tensor, target: torch.Tensor, quantiles) -> dict[str, float]:
    # samples (W, S, H, D), target (W, H, D); a "row" is one (window, series) pair as in GluonTS
    mask = ~torch.isnan(target)
    y = torch.nan_to_num(target)
    q = torch.as_tensor(quantiles, dtype=samples.dtype, device=samples.device).view(-1, 1, 1, 1)
    qf = sample_quantiles(samples, quantiles, dim=1)  # (Q, W, H, D)
    ql = 2 * ((qf - y) * ((y <= qf).to(qf.dtype) - q)).abs()  # (Q, W, H, D)
    abs_target_sum = (y.abs() * mask).sum()
    wql = (ql * mask).sum(dim=(1, 2, 3)) / abs_target_sum  # (Q,)

    median = sample_quantiles(samples, (0.5,), dim=1)[0]  # (W, H, D)
    nd = ((y - median).abs() * mask).sum() / abs_target_sum
    n_obs = mask.sum(1)  # (W, D) observed steps per row
    row_ok = n_obs > 0  # rows with no observation are NaN in GluonTS and dropped by aggregate_no_nan
    mse = (((y - samples.mean(1)) ** 2) * mask).sum(1)[row_ok] / n_obs[row_ok]  # (rows,)
    abs_mean = (y.abs() * mask).sum(1)[row_ok] / n_obs[row_ok]
    nrmse = mse.mean().sqrt() / abs_mean.mean()
    return {"crps": wql.mean().item(), "nd": nd.item(), "nrmse": nrmse.item()}


def forecast_metrics(samples, target, quantiles=CRPS_QUANTILES) -> dict[str, float]:
    """Vectorized GluonTS-equivalent CRPS, CRPS-sum, ND and NRMSE (torch; CPU or GPU, float64 by default).

    Args:
        samples: ``(W, S, H, D)`` forecast samples (W windows, S samples, H steps, D series), numpy or torch.
        target: ``(W, H, D)`` ground truth; NaN = missing (masked).
        quantiles: quantile levels of the CRPS approximation.

    Returns:
        ``{"crps", "crps_sum", "nd", "nrmse", "nd_sum", "nrmse_sum"}`` as floats; the ``*_sum`` metrics are
        computed on the series summed over D (GluonTS ``m_sum_*``).
    """
    _check_shapes(samples, target)
    samples = _as_tensor(samples)  # float64 (GluonTS-level agreement needs it; float32 sums drift ~1e-7)
    target = _as_tensor(target).to(samples.device)
    out = _scores(samples, target, quantiles)
    # GluonTS sums the target over series with pandas: NaN is skipped, so a step with *no* observed
    # series sums to 0 and is scored against the summed samples as if the truth were 0.
    tsum = torch.nansum(target, -1)  # (W, H)
    agg = _scores(samples.sum(-1, keepdim=True), tsum.unsqueeze(-1), quantiles)
    out.update({f"{k}_sum": v for k, v in agg.items()})
    return out


def crps_sum(samples, target, quantiles=CRPS_QUANTILES) -> float:
    """CRPS-sum (GluonTS ``m_sum_mean_wQuantileLoss``) of ``samples: (W, S, H, D)`` against ``target: (W, H, D)``."""
    return forecast_metrics(samples, target, quantiles)["crps_sum"]


# ----------------------------------------------------------------------------- GluonTS reference


def gluonts_agg_metrics(samples: np.ndarray, target: np.ndarray, past: np.ndarray | None = None,
                        freq: str = "B", start: str = "2000-01-03",
                        quantiles=CRPS_QUANTILES) -> dict[str, float]:
    """Run the real GluonTS ``MultivariateEvaluator`` and return its full aggregate-metrics dict.

    Args:
        samples: ``(W, S, H, D)`` forecast samples.
        target: ``(W, H, D)`` ground truth (NaN = missing).
        past: optional ``(W, P, D)`` history before each window (only used by MASE/MSIS/seasonal error);
            without it those metrics are NaN. CRPS/ND/NRMSE do not depend on it.
        freq: pandas frequency of the time index given to GluonTS.
        start: timestamp of each window's first row (windows are scored independently; dates only index).
        quantiles: quantile levels.

    Returns:
        GluonTS's ``agg_metrics`` (``m_sum_mean_wQuantileLoss``, ``mean_wQuantileLoss``, ``ND``, ...).
    """
    from gluonts.evaluation import MultivariateEvaluator
    from gluonts.model.forecast import SampleForecast

    samples, target = np.asarray(samples), np.asarray(target)
    _check_shapes(samples, target)
    W, S, H, D = samples.shape
    P = 0 if past is None else np.asarray(past).shape[1]
    with warnings.catch_warnings():
        # pandas deprecates Period with BDay freq (GluonTS still uses it); an empty past gives a
        # harmless "mean of empty slice" in GluonTS's seasonal error.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", "Warning: converting a masked element to nan")
        first = pd.Period(start, freq=freq)
        index = pd.period_range(first, periods=P + H, freq=freq)
        full = target if past is None else np.concatenate([np.asarray(past, dtype=target.dtype), target], axis=1)
        tss = [pd.DataFrame(full[w], index=index) for w in range(W)]
        fcsts = [SampleForecast(samples=samples[w], start_date=first + P) for w in range(W)]
        evaluator = MultivariateEvaluator(quantiles=quantiles, target_agg_funcs={"sum": np.sum})
        agg, _ = evaluator(tss, fcsts, num_series=W)
    return {k: float(v) for k, v in agg.items() if np.ndim(v) == 0 and not isinstance(v, str)}


def gluonts_forecast_metrics(samples: np.ndarray, target: np.ndarray, past: np.ndarray | None = None,
                             freq: str = "B", quantiles=CRPS_QUANTILES) -> dict[str, float]:
    """The GluonTS reference numbers under our names.

    Returns:
        ``{"crps_sum": m_sum_mean_wQuantileLoss, "crps": mean_wQuantileLoss, "nd": ND, "nrmse": NRMSE,
        "nd_sum": m_sum_ND, "nrmse_sum": m_sum_NRMSE}``; shapes as in :func:`gluonts_agg_metrics`.
    """
    agg = gluonts_agg_metrics(samples, target, past, freq=freq, quantiles=quantiles)
    return {"crps_sum": agg["m_sum_mean_wQuantileLoss"], "crps": agg["mean_wQuantileLoss"], "nd": agg["ND"],
            "nrmse": agg["NRMSE"], "nd_sum": agg["m_sum_ND"], "nrmse_sum": agg["m_sum_NRMSE"]}


# ----------------------------------------------------------------------------- energy score


def energy_score(samples, target, mask=None) -> torch.Tensor:
    """Unbiased sample energy score ``E||X - y|| - 1/2 E||X - X'||`` per window (Gneiting & Raftery 2007).

    Each window's whole ``(H, D)`` trajectory is one vector; the pairwise term averages over the
    ``S (S - 1)`` distinct ordered pairs (unbiased, so it is exact in expectation for any S >= 2).

    Args:
        samples: ``(W, S, H, D)`` (or ``(W, S, M)``) forecast samples, numpy or torch.
        target: ``(W, H, D)`` (or ``(W, M)``) ground truth.
        mask: optional bool like ``target``; unobserved coordinates are dropped from both terms
            (default: ``~isnan(target)``).

    Returns:
        ``(W,)`` float64 tensor; lower is better.
    """
    samples = _as_tensor(samples)
    target = _as_tensor(target).to(samples.device)
    W, S = samples.shape[:2]
    if S < 2 or samples.shape[:1] + samples.shape[2:] != target.shape:
        raise DataError(f"energy_score needs samples (W, S>=2, ...) matching target (W, ...); got "
                        f"{tuple(samples.shape)} and {tuple(target.shape)}")
    mask = ~torch.isnan(target) if mask is None else _as_tensor(mask, torch.bool).to(target.device)
    x = (samples * mask.unsqueeze(1)).reshape(W, S, -1).nan_to_num()  # (W, S, M)
    y = torch.nan_to_num(target * mask).reshape(W, 1, -1)  # (W, 1, M)
    term1 = torch.cdist(x, y, compute_mode=EXACT).squeeze(-1).mean(1)  # (W,)
    term2 = torch.cdist(x, x, compute_mode=EXACT).sum((1, 2)) / (S * (S - 1))  # diagonal is 0
    return term1 - 0.5 * term2


# ----------------------------------------------------------------------------- quantile forecasts (backtests)

INTERVALS = (50, 80, 90)  # central intervals whose coverage is reported (issue #32)


def quantiles_from_samples(samples, quantiles=CRPS_QUANTILES) -> np.ndarray:
    """GluonTS sample quantiles of ``samples: (..., S, H)`` -> ``(Q, ..., H)`` float64 (NaN samples stay NaN)."""
    x = _as_tensor(samples)
    return sample_quantiles(x, quantiles, dim=x.ndim - 2).numpy()


def seasonal_error(values: np.ndarray, origin: int, season: int) -> np.ndarray:
    """``(N,)`` MASE denominator: mean |y_t - y_{t-m}| over the observed pairs of rows ``< origin`` (GluonTS's
    seasonal error; ``m = 1`` where a series has no pair a season apart). NaN where a series has no pair at all."""
    def err(m):
        past = values[:, :origin]
        d = np.abs(past[:, m:] - past[:, :-m]) if past.shape[1] > m else np.zeros((len(values), 0))
        ok = np.isfinite(d)
        return np.where(ok.any(1), np.where(ok, d, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)
    e = err(max(season, 1))
    return np.where(np.isfinite(e), e, err(1))


def quantile_scores(q: np.ndarray, y: np.ndarray, scale: np.ndarray | None = None,
                    quantiles=CRPS_QUANTILES) -> dict[str, float]:
    """Mean weighted quantile loss, MASE and interval coverage of quantile forecasts.

    Args:
        q: ``(Q, ..., H)`` forecast quantiles at ``quantiles`` (must include 0.5 and each interval's ends).
        y: ``(..., H)`` truth; NaN = missing (left out of every sum).
        scale: ``(...)`` MASE denominators (:func:`seasonal_error`); None skips MASE.

    Returns:
        ``{"wql": GluonTS mean_wQuantileLoss, "mase": mean over series-windows of MAE(median) / scale,
        "coverage50", "coverage80", "coverage90": fraction of values inside the central intervals}``.
    """
    qs = np.round(np.asarray(quantiles, dtype=np.float64), 6)
    q, y = np.asarray(q, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if q.shape[0] != len(qs) or q.shape[1:] != y.shape:
        raise DataError(f"quantile forecasts must be (Q={len(qs)}, *{y.shape}), got {q.shape}")
    ok = np.isfinite(y) & np.isfinite(q).all(0)
    yz = np.where(ok, y, 0.0)
    level = qs.reshape((-1,) + (1,) * y.ndim)
    loss = 2 * np.abs((q - yz) * ((yz <= q) - level)) * ok  # (Q, ..., H)
    denom = np.abs(yz).sum()
    out = {"wql": float(loss.reshape(len(qs), -1).sum(1).mean() / denom) if denom > 0 else float("nan")}
    at = {v: i for i, v in enumerate(qs.tolist())}
    med = q[at[0.5]]
    if scale is not None:
        mae = (np.abs(yz - med) * ok).sum(-1) / np.maximum(ok.sum(-1), 1)  # (...)
        good = (ok.sum(-1) > 0) & np.isfinite(scale) & (scale > 0)
        out["mase"] = float((mae[good] / scale[good]).mean()) if good.any() else float("nan")
    for c in INTERVALS:
        lo, hi = at[round((1 - c / 100) / 2, 6)], at[round(1 - (1 - c / 100) / 2, 6)]
        inside = (yz >= q[lo]) & (yz <= q[hi]) & ok
        out[f"coverage{c}"] = float(inside.sum() / max(ok.sum(), 1))
    return out
