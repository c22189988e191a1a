"""Forecasting baselines for the GluonTS rolling test windows: naive last value, Gaussian random walk, VAR.

Each returns forecast samples ``(W, S, H, D)`` for the W rolling test series (the last H rows of each test
series are the values to forecast), ready for :func:`dforce.recipes.forecast.metrics.forecast_metrics`.

:func:`one_step_forecasts` re-scores any forecaster under a *one-step-ahead* protocol: step h of a window
is forecast from every true value before it. That is not a multi-step forecast (the issue's protocol);
it is the information the Diffusion Forcing reference code's test pipeline gives its model (its lag-1
covariate is filled from the true series inside the forecast window), measured so the two can be told apart
(``benchmarks/studies/forecast_exchange_protocol.py``).

Reproduce the exchange_rate_nips numbers (CRPS-sum via the real GluonTS evaluator)::

    PYTHONPATH=src python -m dforce.recipes.forecast.baselines
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from dforce.recipes.forecast.gluonts_format import MultivariateSeries
from dforce.errors import DataError


@dataclass(frozen=True)
class BaselineConfig:
    """Settings shared by the baselines."""

    num_samples: int = 100  # TimeGrad / Diffusion Forcing evaluate CRPS-sum on 100 samples
    var_max_lags: int = 20  # AIC picks the VAR order in 1..20 (about four business weeks)
    var_refit: bool = False  # False: fit once on train; True: refit on each window's full history
    seed: int = 0  # VAR innovation noise


# ----------------------------------------------------------------------------- helpers


def forecast_targets(test: list[MultivariateSeries], prediction_length: int) -> np.ndarray:
    """The values to forecast: last ``prediction_length`` rows of each test series, ``(W, H, D)`` (NaN = missing)."""
    return np.stack([s.target[-prediction_length:] for s in test])


def _history(s: MultivariateSeries, prediction_length: int) -> np.ndarray:
    # rows before the forecast, missing values forward-filled (then back-filled) for the baselines only
    hist = s.target[:-prediction_length]
    if np.isnan(hist).all(0).any():
        raise DataError("a series has no observed value before the forecast start; cannot run a baseline")
    return pd.DataFrame(hist).ffill().bfill().to_numpy()


# ----------------------------------------------------------------------------- naive


def naive_forecast(test: list[MultivariateSeries], prediction_length: int,
                   num_samples: int = BaselineConfig.num_samples) -> np.ndarray:
    """Repeat each series' last observation over the horizon (a point forecast as identical samples).

    Args:
        test: W test series ``(T_k, D)``; the last ``prediction_length`` rows are the future.
        prediction_length: H.
        num_samples: S copies.

    Returns:
        ``(W, S, H, D)`` samples.
    """
    last = np.stack([_history(s, prediction_length)[-1] for s in test])  # (W, D)
    W, D = last.shape
    return np.broadcast_to(last[:, None, None, :], (W, num_samples, prediction_length, D)).copy()


def random_walk_forecast(test: list[MultivariateSeries], prediction_length: int,
                         num_samples: int = BaselineConfig.num_samples, seed: int = 0, recent: int | None = None,
                         train: np.ndarray | None = None, spread: float = 1.0) -> np.ndarray:
    """Gaussian random walk from each series' last observation.

    The step covariance is that of the changes of ``train: (T, D)`` (``recent=None``) or, per window, of
    the last ``recent`` changes before the forecast start (a volatility-adaptive random walk); ``spread``
    multiplies the step standard deviations.

    Returns:
        ``(W, S, H, D)`` samples.
    """
    if recent is None and train is None:
        raise DataError("random_walk_forecast needs the train series or recent=N")
    rng = np.random.default_rng(seed)
    out = []
    for s in test:
        hist = _history(s, prediction_length)
        d = np.diff(train if recent is None else hist[-recent - 1:], axis=0)
        d = d[np.isfinite(d).all(1)]
        if len(d) < 2:
            raise DataError(f"random walk: need at least 2 observed changes for the step covariance, got {len(d)}")
        chol = np.linalg.cholesky(np.cov(d.T).reshape(d.shape[1], d.shape[1]) + 1e-12 * np.eye(d.shape[1]))
        steps = spread * rng.standard_normal((num_samples, prediction_length, d.shape[1])) @ chol.T
        out.append(hist[-1] + np.cumsum(steps, axis=1))
    return np.stack(out)


def one_step_forecasts(forecaster, test: list[MultivariateSeries], prediction_length: int) -> np.ndarray:
    """One-step-ahead forecasts of the last ``prediction_length`` rows of each test series.

    Step h of window w is forecast from the true rows before it: ``forecaster`` receives, for each window
    and step, the series cut just after the row to forecast (the GluonTS layout with a horizon of one:
    its last row is the value to forecast, never read) and returns ``(N, S, >=1, D)`` samples whose first
    step is kept. A forecaster that needs a longer horizon for its own reasons may forecast more steps.

    Args:
        forecaster: ``f(series_list) -> (N, S, H', D)``, H' >= 1.
        test: W series whose last ``prediction_length`` rows are the values to forecast.
        prediction_length: H.

    Returns:
        ``(W, S, H, D)``: the same layout as a multi-step forecast, so the same evaluator scores both.
    """
    H = prediction_length
    cut = [s.head(s.length - H + h + 1) for s in test for h in range(H)]  # W * H series, window-major
    first = np.asarray(forecaster(cut))[:, :, 0]  # (W * H, S, D)
    W = len(test)
    return first.reshape(W, H, *first.shape[1:]).transpose(0, 2, 1, 3)  # (W, S, H, D)


# ----------------------------------------------------------------------------- VAR


@dataclass(frozen=True)
class VARFit:
    """A fitted VAR(p): ``x_t = intercept + sum_i coefs[i] x_{t-1-i} + u_t``, ``u_t ~ N(0, sigma_u)``.

    Attributes:
        intercept: ``(D,)``.
        coefs: ``(p, D, D)``.
        sigma_u: ``(D, D)`` residual covariance (degrees-of-freedom adjusted, statsmodels default).
    """

    intercept: np.ndarray
    coefs: np.ndarray
    sigma_u: np.ndarray

    @property
    def order(self) -> int:
        return self.coefs.shape[0]


def fit_var(history: np.ndarray, max_lags: int = BaselineConfig.var_max_lags) -> VARFit:
    """Fit a VAR with a constant by OLS (statsmodels), order chosen by AIC in ``1..max_lags``.

    Args:
        history: ``(T, D)`` fully observed values.
        max_lags: order cap.
    """
    from statsmodels.tsa.api import VAR

    if history.shape[0] <= max_lags * (history.shape[1] + 1):
        raise DataError(f"VAR needs more than {max_lags * (history.shape[1] + 1)} rows for max_lags={max_lags}; "
                        f"got {history.shape[0]}")
    res = VAR(history).fit(maxlags=max_lags, ic="aic", trend="c")
    if res.k_ar == 0:  # AIC chose no lag: keep a VAR(1) so the recursion has a state
        res = VAR(history).fit(1, trend="c")
    return VARFit(np.asarray(res.intercept), np.asarray(res.coefs), np.asarray(res.sigma_u))


def simulate_var(fit: VARFit, context: np.ndarray, prediction_length: int, num_samples: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Sample futures by running the VAR recursion with Gaussian innovations.

    Args:
        fit: the VAR.
        context: ``(W, p', D)`` last rows before each forecast start (``p' >= p``).
        prediction_length: H.
        num_samples: S.
        rng: numpy generator for the innovations.

    Returns:
        ``(W, S, H, D)`` samples.
    """
    W, _, D = context.shape
    p = fit.order
    chol = np.linalg.cholesky(fit.sigma_u + 1e-12 * np.eye(D))  # jitter: sigma_u may be near-singular
    state = np.broadcast_to(context[:, None, -p:][:, :, ::-1], (W, num_samples, p, D)).copy()  # newest first
    out = np.empty((W, num_samples, prediction_length, D))
    noise = rng.standard_normal((prediction_length, W, num_samples, D)) @ chol.T  # (H, W, S, D)
    for h in range(prediction_length):  # the recursion is sequential in h; vectorized over W, S, D
        mean = fit.intercept + np.einsum("wspd,ped->wse", state, fit.coefs)  # (W, S, D)
        x = mean + noise[h]  # (W, S, D)
        out[:, :, h] = x
        state = np.concatenate([x[:, :, None], state[:, :, :-1]], axis=2)
    return out


def var_forecast(train: MultivariateSeries, test: list[MultivariateSeries], prediction_length: int,
                 cfg: BaselineConfig = BaselineConfig()) -> tuple[np.ndarray, list[int]]:
    """Probabilistic VAR forecast for every test window.

    Fits on the train series (or, with ``cfg.var_refit``, on each window's history), then samples
    ``cfg.num_samples`` futures from the fitted residual covariance through the VAR recursion.

    Returns:
        ``(samples (W, S, H, D), orders)`` with the AIC-selected order of each fit.
    """
    rng = np.random.default_rng(cfg.seed)
    histories = [_history(s, prediction_length) for s in test]
    if cfg.var_refit:
        fits = [fit_var(h, cfg.var_max_lags) for h in histories]
    else:
        fits = [fit_var(pd.DataFrame(train.target).ffill().bfill().to_numpy(), cfg.var_max_lags)] * len(test)
    samples = [simulate_var(f, h[None, -f.order:], prediction_length, cfg.num_samples, rng)[0]
               for f, h in zip(fits, histories)]
    return np.stack(samples), [f.order for f in fits]


# ----------------------------------------------------------------------------- script


def main() -> None:
    """Score the baselines on exchange_rate_nips with the real GluonTS evaluator and print JSON."""
    from dforce.recipes.forecast.exchange_rate import load_exchange_rate_nips
    from dforce.recipes.forecast.metrics import forecast_metrics, gluonts_forecast_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit", action="store_true", help="refit the VAR on each window's history")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = BaselineConfig(var_refit=args.refit, seed=args.seed)
    ds = load_exchange_rate_nips()
    H = ds.prediction_length
    y = forecast_targets(ds.test, H)
    var_samples, orders = var_forecast(ds.train, ds.test, H, cfg)
    report = {"config": asdict(cfg), "var_orders": orders}
    for name, samples in (("naive", naive_forecast(ds.test, H, cfg.num_samples)), ("var", var_samples)):
        report[name] = {"gluonts": gluonts_forecast_metrics(samples, y), "dforce": forecast_metrics(samples, y)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
