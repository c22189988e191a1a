"""The joint exchange-rate model of #4 (recipe.py): tokens/de-scaling, an end-to-end run that beats naive."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dforce.recipes.forecast.gluonts_format import MultivariateSeries
from dforce.diffusion import NoiseScheduleConfig
from dforce.recipes.forecast.metrics import forecast_metrics
from dforce.models import ModelConfig
from dforce.sampler import SamplerConfig
from dforce.recipes.forecast.recipe import (EarlyStopConfig, ForecastConfig, ForecastDataConfig, baseline_config, decode,
                                   encode, fit, forecast, forecast_targets, load_run, relative_move)
from dforce.recipes.forecast.baselines import naive_forecast

H, C = 7, 14


def seasonal(length: int, seed: int = 0, dim: int = 2) -> MultivariateSeries:
    """Weekly sines (period 7 = the daily calendar's week, so time features carry the phase) + small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    y = 10 + np.array([3.0, 2.0])[:dim] * np.sin(2 * np.pi * t / 7 + np.array([0.0, 1.0])[:dim])
    return MultivariateSeries.from_array(y + 0.1 * rng.standard_normal(y.shape), "2020-01-06", "D")


def tiny_config(**data) -> ForecastConfig:
    return ForecastConfig(
        data=ForecastDataConfig(context_length=C, prediction_length=H, max_lag=30, val_windows=2, **data),
        diffusion=NoiseScheduleConfig(num_levels=100, beta_schedule="cosine", objective="v"),
        model=ModelConfig(backbone="rnn", width=32, depth=1),
        sampler=SamplerConfig(steps=5, schedule="pyramid", window=H, stabilization_level=1),
        early_stop=EarlyStopConfig(epoch_steps=30, max_epochs=3, patience=2, val_samples=16),
        train=replace(ForecastConfig().train, lr=3e-3, warmup_steps=10, ema_decay=0.9),  # short run: short warm-up, EMA
        num_samples=32,
    )


@pytest.mark.parametrize("representation,scaling", [("diff", "global"), ("diff", "context"), ("level", "global")])
def test_encode_decode_round_trip(representation, scaling):
    cfg = tiny_config(representation=representation, move_scaling=scaling).data
    s = seasonal(120)
    move = relative_move(s)
    starts = np.array([40, 60, 90])
    e = encode(s, starts, cfg, move)
    T = C + H
    assert e.x.shape == (3, T, 2) and e.mask.shape == (3, T) and e.mask.all()
    assert e.cond.shape[:2] == (3, T) and np.isfinite(e.cond).all()
    # decoding the true future tokens gives back the true future values (de-scaling is exact)
    back = decode(e.x[:, None, C:], e.anchor, e.scale, representation)[:, 0]  # (3, H, 2)
    truth = np.stack([s.target[b + 1 + C: b + 1 + C + H] for b in starts])
    np.testing.assert_allclose(back, truth, rtol=1e-5)
    np.testing.assert_allclose(e.anchor, np.stack([s.target[b + C] for b in starts]))
    if representation == "diff":  # tokens are O(1): changes / (mean level * typical relative move)
        assert 0.3 < np.abs(e.x).mean() < 3


@pytest.mark.parametrize("scaling", ["global", "context"])
def test_pegged_series_gets_finite_tokens(scaling):
    y = np.stack([np.full(80, 8.28), 1 + 0.01 * np.arange(80)], 1)  # a pegged currency next to a moving one
    s = MultivariateSeries.from_array(y, "2020-01-06", "D")
    e = encode(s, np.array([10]), tiny_config(move_scaling=scaling).data, relative_move(s))
    assert np.isfinite(e.x).all() and np.abs(e.x).max() < 10


def test_context_scaling_follows_the_context_volatility():
    rng = np.random.default_rng(0)
    steps = rng.standard_normal((200, 1)) * np.where(np.arange(200) < 100, 0.1, 0.01)[:, None]  # calm 2nd half
    s = MultivariateSeries.from_array(10 + np.cumsum(steps, 0), "2020-01-06", "D")
    cfg = tiny_config(move_scaling="context").data
    e = encode(s, np.array([20, 150]), cfg, relative_move(s))
    assert 5 < e.scale[0, 0] / e.scale[1, 0] < 20  # ~10x calmer context -> ~10x smaller scale
    assert 0.5 < np.abs(e.x[1, :C]).mean() < 2  # tokens O(1) in both regimes
    g = encode(s, np.array([150]), tiny_config().data, relative_move(s))
    assert np.abs(g.x[0, :C]).mean() < 0.5  # the global scale makes calm-period tokens small


def test_apply_spread_keeps_the_mean_and_scales_deviations():
    from dforce.recipes.forecast.recipe import apply_spread
    x = np.random.default_rng(0).standard_normal((2, 50, 3, 4))
    y = apply_spread(x, 1.5)
    np.testing.assert_allclose(y.mean(1), x.mean(1), atol=1e-12)
    np.testing.assert_allclose(y.std(1), 1.5 * x.std(1), rtol=1e-12)
    assert apply_spread(x, 1.0) is x


def test_validation_windows_strided_origins():
    from dforce.recipes.forecast.recipe import validation_windows
    s = seasonal(200)
    fit_part, val = validation_windows(s, tiny_config().data)  # test layout: 2 windows, origins H apart
    assert fit_part.length == 200 - 2 * H and [v.length for v in val] == [200 - H, 200]
    fit_part, val = validation_windows(s, tiny_config(val_stride=2).data)
    assert fit_part.length == 200 - 2 * H and [v.length for v in val] == list(range(200 - H, 201, 2))


@pytest.mark.parametrize("bad", [{"move_scaling": "x"}, {"move_floor": 0.0}, {"val_stride": -1},
                                 {"short_lags": (0,)}, {"short_lags": (H,)}])
def test_bad_forecast_data_config(bad):
    from dforce.errors import ConfigError
    with pytest.raises(ConfigError):
        tiny_config(**bad)


@pytest.mark.parametrize("bad", [{"select": "x"}, {"spread_grid": ()}, {"spread_grid": (0.0, 1.0)}])
def test_bad_early_stop_config(bad):
    from dforce.errors import ConfigError
    with pytest.raises(ConfigError):
        EarlyStopConfig(**bad)


def test_future_rows_are_never_read():
    cfg = tiny_config()
    s = seasonal(100)
    cut = MultivariateSeries.from_array(np.concatenate([s.target[:-H], np.full((H, 2), np.nan)]), s.start, "D")
    torch.manual_seed(0)
    from dforce.recipes.forecast.recipe import build, cond_dim
    model, sched = build(cfg, 2, cond_dim(s, cfg.data))
    a = forecast(model, sched, cfg, [s], relative_move(s), num_samples=4, seed=3)
    b = forecast(model, sched, cfg, [cut], relative_move(s), num_samples=4, seed=3)
    assert a.shape == (1, 4, H, 2)
    np.testing.assert_allclose(a, b)


def test_short_lags_read_the_forecast_window_and_refuse_real_forecasts():
    """data.short_lags reproduces the reference code's covariates: in the GluonTS test layout the lag-1 feature
    of a forecast row is the true previous value (so the forecast depends on the rows it forecasts), and
    forecasting past the end of the data is refused with a clear error."""
    from dforce.errors import ConfigError
    from dforce.recipes.forecast.recipe import build, cond_dim, encode, lag_indices

    cfg = tiny_config(short_lags=(1,))
    s = seasonal(100)
    assert lag_indices("D", cfg.data)[0] == 1 and lag_indices("D", tiny_config().data)[0] >= H
    e = encode(s, np.array([s.length - C - 1 - H]), cfg.data)
    lags = lag_indices("D", cfg.data)
    lag1 = e.cond[0, :, 3:].reshape(-1, 2, len(lags))[..., 0]  # after 3 time features: (D, lags); (y_{t-1} - anchor) / scale
    np.testing.assert_allclose(lag1[C:], ((s.target[-H - 1:-1] - e.anchor[0]) / e.level_scale[0]), rtol=1e-5)
    torch.manual_seed(0)
    model, sched = build(cfg, 2, cond_dim(s, cfg.data))
    with torch.no_grad():  # untrained: give the zero-initialized output layer weights so inputs matter
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.1)
    cut = MultivariateSeries.from_array(np.concatenate([s.target[:-H], np.full((H, 2), np.nan)]), s.start, "D")
    a = forecast(model, sched, cfg, [s], relative_move(s), num_samples=4, seed=3)
    b = forecast(model, sched, cfg, [cut], relative_move(s), num_samples=4, seed=3)
    assert not np.allclose(a, b)  # unlike test_future_rows_are_never_read: the leak is reproduced, not hidden
    with pytest.raises(ConfigError, match="short_lags"):
        forecast(model, sched, cfg, [s], relative_move(s), future=True, num_samples=4)


def test_end_to_end_beats_naive_on_seasonal_data(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(val_stride=3)
    cfg = replace(cfg, early_stop=replace(cfg.early_stop, spread_grid=(0.8, 1.0, 1.25)))  # calibrated spread
    train = seasonal(400, seed=1)
    res = fit(cfg, train, run_dir=tmp_path / "run", progress=False)
    full = seasonal(400 + 3 * H, seed=1)
    test = [full.head(400 + H * k) for k in (1, 2, 3)]
    y = forecast_targets(test, H)
    assert res.spread in (0.8, 1.0, 1.25)
    smp = forecast(res.model, res.schedule, cfg, test, res.move_scale, seed=0, spread=res.spread)
    assert smp.shape == (3, 32, H, 2) and np.isfinite(smp).all()
    df = forecast_metrics(smp, y)["crps_sum"]
    naive = forecast_metrics(naive_forecast(test, H, 32), y)["crps_sum"]
    # naive misses the +-3 weekly swing (CRPS-sum ~0.1); a model that learned the phase from the time
    # features is far better even after 90 steps. Half of naive leaves a wide margin for seed noise.
    assert df < 0.5 * naive, (df, naive)
    # the saved run reproduces the same forecast
    model, sched, cfg2, meta = load_run(tmp_path / "run")
    assert meta["spread"] == res.spread
    again = forecast(model, sched, cfg2, test, np.asarray(meta["move_scale"]), seed=0, spread=meta["spread"])
    np.testing.assert_allclose(again, smp, rtol=1e-5, atol=1e-6)


def test_baseline_configs():
    cfg = tiny_config()
    tf = baseline_config(cfg, "teacher_forcing")
    assert tf.objective.level_strategy == "teacher_forcing" and tf.sampler.schedule == "autoregressive"
    assert tf.sampler.stabilization_level == 0
    fs = baseline_config(cfg, "full_sequence")
    assert fs.objective.level_strategy == "full_sequence" and fs.sampler.schedule == "full_sequence"
    assert fs.sampler.window == H
    assert baseline_config(cfg, "dforce") is cfg


# The `dforce forecast` command runs the global forecaster since issue #32: tests/test_forecast_cli.py.
