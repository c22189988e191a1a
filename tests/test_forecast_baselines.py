"""Naive and VAR baselines: the naive CRPS-sum on exchange_rate_nips and the VAR recursion."""

from __future__ import annotations

import numpy as np

from dforce.data.exchange_rate import load_exchange_rate_nips
from dforce.metrics.forecast import gluonts_forecast_metrics
from dforce.tasks.forecast_baselines import fit_var, naive_forecast, simulate_var, forecast_targets


def test_naive_crps_sum_on_exchange_rate_nips(tmp_path):
    ds = load_exchange_rate_nips(tmp_path)
    samples = naive_forecast(ds.test, ds.prediction_length)
    assert samples.shape == (5, 100, 30, 8)
    y = forecast_targets(ds.test, ds.prediction_length)
    np.testing.assert_array_equal(samples[:, 0, 0], np.stack([t.target[-31] for t in ds.test]))
    m = gluonts_forecast_metrics(samples, y)
    # measured 0.006205 (REFERENCE quotes "about 0.0055"); the band allows either figure
    assert 0.004 <= m["crps_sum"] <= 0.007


def test_var_recursion_matches_statsmodels_forecast():
    from statsmodels.tsa.api import VAR

    rng = np.random.default_rng(0)
    T, D = 400, 3
    A = np.array([[0.5, 0.1, 0.0], [0.0, 0.4, 0.2], [0.1, 0.0, 0.3]])
    x = np.zeros((T, D))
    for t in range(1, T):
        x[t] = 0.2 + A @ x[t - 1] + rng.normal(scale=0.1, size=D)
    fit = fit_var(x, max_lags=4)
    res = VAR(x).fit(fit.order, trend="c")
    # with zero innovations the sampled path is the conditional mean = statsmodels' point forecast
    zero = type(fit)(fit.intercept, fit.coefs, np.zeros((D, D)))
    path = simulate_var(zero, x[None, -fit.order:], 6, 2, np.random.default_rng(0))
    np.testing.assert_allclose(path[0, 0], res.forecast(x[-fit.order:], 6), atol=1e-5)  # jitter 1e-12 -> ~1e-6 noise
    # with the fitted covariance the one-step spread matches sigma_u: with 20000 samples an entry's
    # sampling sd is about sigma^2 / sqrt(20000) ~ 7e-5 (sigma^2 ~ 0.01), so atol 3e-4 is > 4 sd
    s = simulate_var(fit, x[None, -fit.order:], 1, 20000, np.random.default_rng(1))[0, :, 0]
    np.testing.assert_allclose(np.cov(s.T), fit.sigma_u, rtol=0, atol=3e-4)
