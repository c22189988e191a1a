"""CRPS / CRPS-sum / ND / NRMSE against the real GluonTS evaluator, and the energy score."""

from __future__ import annotations

from math import lgamma

import numpy as np
import pytest
import torch

from dforce.errors import DataError
from dforce.recipes.forecast.metrics import (
    energy_score,
    forecast_metrics,
    gluonts_forecast_metrics,
    sample_quantiles,
)

KEYS = ("crps_sum", "crps", "nd", "nrmse", "nd_sum", "nrmse_sum")


def _random_forecast(seed, W=3, S=100, H=7, D=4, nan=False):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(W, H, D)) + rng.uniform(-1, 3, size=(1, 1, D))  # mixed-sign targets
    x = y[:, None] + rng.normal(size=(W, S, H, D)) * rng.uniform(0.1, 1.0) + rng.normal(size=(W, S, 1, 1)) * 0.3
    if nan:
        y[0, 1, 2] = np.nan  # one missing value
        y[1, :, 0] = np.nan  # a whole (window, series) row missing: GluonTS drops it from row means
        y[2, 3, :] = np.nan  # a step with every series missing: GluonTS's summed target is 0 there
    return x, y


@pytest.mark.parametrize("seed, S, nan", [(0, 100, False), (1, 37, False), (2, 100, True), (3, 8, True)])
def test_own_metrics_match_gluonts(seed, S, nan):
    x, y = _random_forecast(seed, S=S, nan=nan)
    ours, ref = forecast_metrics(x, y), gluonts_forecast_metrics(x, y)
    for k in KEYS:
        # both float64; only the summation order differs, so agreement is far below 1e-6
        assert abs(ours[k] - ref[k]) < 1e-6, (k, ours[k], ref[k])
    assert ours["crps_sum"] != ours["crps"]  # the aggregation over series is actually exercised


def test_own_metrics_match_gluonts_float32_and_torch():
    x, y = _random_forecast(4, W=2, H=5, D=3)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ref = gluonts_forecast_metrics(x32, y32)  # GluonTS computes in float32, we in float64: ~1e-8 apart
    ours = forecast_metrics(torch.from_numpy(x32), torch.from_numpy(y32))
    for k in KEYS:
        assert abs(ours[k] - ref[k]) < 1e-6, k


def test_sample_quantile_rule_is_gluonts_rounding():
    # 100 samples 0..99: GluonTS picks index round(99 q) with round-half-to-even (q = 0.5 -> 49.5 -> 50)
    s = torch.arange(100.0)[torch.randperm(100, generator=torch.Generator().manual_seed(0))].view(1, 100, 1, 1)
    q = sample_quantiles(s, (0.05, 0.15, 0.5, 0.95), dim=1).flatten().tolist()
    assert q == [5.0, 15.0, 50.0, 94.0]


def test_point_forecast_crps_equals_nd():
    # identical samples: every quantile is the point, and mean_q 2 q |e| or 2 (1 - q) |e| averages to |e|
    x, y = _random_forecast(5, S=1)
    x = np.repeat(x, 10, axis=1)
    m = forecast_metrics(x, y)
    assert m["crps"] == pytest.approx(m["nd"], rel=1e-12) and m["crps_sum"] == pytest.approx(m["nd_sum"], rel=1e-12)


def test_metric_shape_errors():
    with pytest.raises(DataError, match=r"\(W, S, H, D\)"):
        forecast_metrics(np.zeros((2, 10, 3, 4)), np.zeros((2, 3, 5)))


def test_energy_score_exact_small_cases():
    # two 1-D samples {1, 3}, y = 0: mean |x - y| = 2, pairwise term over ordered distinct pairs = 2 -> 2 - 1 = 1
    assert energy_score(np.array([[[1.0], [3.0]]]), np.array([[0.0]])).item() == pytest.approx(1.0)
    # identical samples: the spread term vanishes and the score is the Euclidean error of the trajectory
    x = np.ones((1, 5, 2, 2))
    y = np.array([[[1.0, 1.0], [4.0, 5.0]]])
    assert energy_score(x, y).item() == pytest.approx(5.0)
    # a masked coordinate is dropped from both terms
    y_nan = y.copy()
    y_nan[0, 1, 1] = np.nan
    assert energy_score(x, y_nan).item() == pytest.approx(3.0)


def test_energy_score_gaussian_known_value():
    # X ~ N(0, I_d), y = 0: E||X|| = m_d = sqrt(2) G((d+1)/2) / G(d/2), E||X - X'|| = sqrt(2) m_d,
    # so ES = m_d (1 - 1/sqrt(2)) = 0.62319 for d = 5
    d = 5
    m_d = np.sqrt(2) * np.exp(lgamma((d + 1) / 2) - lgamma(d / 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1000, 1, d, generator=g, dtype=torch.float64)
    es = energy_score(x, torch.zeros(8, 1, d)).mean().item()
    # one window's estimate has sd ~0.01 at S = 1000; the mean of 8 ~0.004, so 0.015 is > 3 sd
    assert es == pytest.approx(m_d * (1 - 1 / np.sqrt(2)), abs=0.015)
    # and it is a proper score: shifting the forecast away from y makes it worse
    assert energy_score(x + 1.0, torch.zeros(8, 1, d)).mean().item() > es + 0.3
