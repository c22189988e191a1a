"""The global forecaster (issue #32): masking, the honest rule for covariates and windows, non-negativity, outputs.

Tiny models and a few optimizer steps (seconds each): these tests check what the code may and may not read,
not forecast quality (that is benchmarks/forecast_suite.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from dforce.engine.config import load_config
from dforce.errors import ConfigError
from dforce.objective import diffusion_forcing_loss
from dforce.recipes.forecast import global_model as gm
from dforce.recipes.forecast.backtest import dforce_backtest, rolling_origins
from dforce.recipes.forecast.frequency import Calendar
from dforce.recipes.forecast.panel import Panel
from dforce.recipes.forecast.tokens import Layout, WindowDataset, WindowEncoder, typical_step, window_origins

TINY = ["model.width=16", "diffusion.num_levels=50", "sampler.steps=3", "early_stop.epoch_steps=5",
        "early_stop.max_epochs=2", "early_stop.val_samples=4", "early_stop.ensemble=1", "early_stop.spread_grid=[1.0]",
        "num_samples=8", "data.val_max_windows=16"]


def tiny(H=4, *more) -> gm.PanelForecastConfig:
    return load_config(gm.PanelForecastConfig, "forecast", [*TINY, f"data.prediction_length={H}", *more])


def make_panel(N=3, T=60, past=False, future=False, seed=0) -> Panel:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    values = 10 + np.sin(2 * np.pi * t / 7)[None] * np.arange(1, N + 1)[:, None] + rng.normal(0, 0.3, (N, T))
    index = pd.date_range("2022-01-03", periods=T, freq="D")
    kw = {}
    if past:
        kw.update(past=rng.normal(size=(N, T, 1)), past_names=("p",))
    if future:
        kw.update(future=rng.normal(size=(N, T + 10, 1)), future_names=("f",))
    return Panel(values, index, Calendar("D", 7), tuple(f"s{i}" for i in range(N)), **kw)


def test_masked_values_never_reach_the_loss():
    """Gaps and a late start: loss and gradients are finite and do not change whatever the masked values are."""
    p = make_panel()
    v = p.values.copy()
    v[0, :20] = np.nan  # late start
    v[1, 30:34] = np.nan  # gap
    p = replace(p, values=v)
    lay = Layout(14, 4, (7,))
    enc = WindowEncoder(p, lay, typical_step(v))
    pairs = window_origins(p.observed, lay, 1, p.length - 4)
    assert (pairs[pairs[:, 0] == 0, 1] >= 20 - 14 + 2).all()  # windows need 2 observed context values
    batch = WindowDataset(enc, pairs).get_batch(torch.arange(len(pairs)))
    assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["cond"]).all() and not batch["mask"].all()
    from dforce.models import ModelConfig, build_model
    from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig

    cfg = tiny()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="rnn", width=16, depth=1), (1,), 50, enc.cond_dim)
    sched = NoiseSchedule(NoiseScheduleConfig(num_levels=50, objective="v"))
    grads = []
    for fill in (0.0, 1e6):  # whatever sits in the masked tokens
        x = torch.where(batch["mask"][..., None], batch["x"], torch.full_like(batch["x"], fill))
        model.zero_grad()
        out = diffusion_forcing_loss(model, sched, x, cfg.objective, batch["cond"], batch["mask"],
                                     generator=torch.Generator().manual_seed(1))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        grads.append(torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None]))
    # masked tokens are fed as pure noise at level K (their value is multiplied by sqrt(alpha_bar_K) ~ 0): the loss
    # excludes them and the gradient does not depend on them beyond that float factor
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def test_gappy_late_panel_trains_and_forecasts_without_nan():
    p = make_panel(T=80)
    v = p.values.copy()
    v[0, :30] = np.nan
    v[2, 40:52] = np.nan
    p = replace(p, values=v)
    fc = gm.fit(tiny(), p, progress=False)
    smp = gm.forecast(fc, p, [p.length])
    assert smp.shape == (1, 3, 8, 4) and np.isfinite(smp).all()


def _rows_read_by_forecast(fc, panel, origin, attr):
    """Does the forecast at ``origin`` change when ``panel.<attr>`` changes at rows >= origin? (same seed)"""
    a = gm.forecast(fc, panel, [origin], seed=3)
    arr = getattr(panel, attr).copy()
    if arr.ndim == 2:
        arr[:, origin:] = np.nan  # NaN: reading them would also poison the numbers
    else:
        arr[:, origin:] = 1e6 * np.random.default_rng(1).normal(size=arr[:, origin:].shape)
    b = gm.forecast(fc, replace(panel, **{attr: arr}), [origin], seed=3)
    return not np.array_equal(a, b)


def test_past_covariates_and_future_values_are_not_read_future_covariates_are():
    p = make_panel(T=70, past=True, future=True)
    fc = gm.fit(tiny(), p.head(60), progress=False)
    origin = 60
    assert not _rows_read_by_forecast(fc, p, origin, "values")  # the values being forecast
    assert not _rows_read_by_forecast(fc, p, origin, "past")  # past-only covariates in the window
    assert _rows_read_by_forecast(fc, p, origin, "future")  # a declared known-future covariate changes the forecast


def test_windows_never_train_on_their_own_test_rows():
    """Perturbing the rows from a window's origin on leaves that window's forecast bit-identical."""
    p = make_panel(T=70)
    cfg = tiny()
    origins = rolling_origins(p.length, 4, 3, 4)
    base = dforce_backtest(cfg, p, origins)
    for w, o in enumerate(origins):
        v = p.values.copy()
        v[:, o:] += 50.0
        moved = dforce_backtest(cfg, replace(p, values=v), origins)  # train once on rows < origins[0]
        np.testing.assert_array_equal(base.samples[w], moved.samples[w])
    refit = dforce_backtest(cfg, p, origins[-2:], refit=True)
    v = p.values.copy()
    v[:, origins[-1]:] = -7.0
    refit2 = dforce_backtest(cfg, replace(p, values=v), origins[-2:], refit=True)
    np.testing.assert_array_equal(refit.samples[1], refit2.samples[1])  # the refit before the last window


def test_nonnegative_auto_clips_counts_only():
    p = make_panel(T=60)
    counts = replace(p, values=np.maximum(p.values - 10.5, 0.0))  # many zeros, never negative
    fc = gm.fit(tiny(4, "num_samples=64"), counts, progress=False)
    assert fc.nonnegative and (gm.forecast(fc, counts, [60]) >= 0).all()
    signed = replace(p, values=p.values - 10.5)
    assert not gm.fit(tiny(), signed, progress=False).nonnegative
    assert gm.fit(tiny(4, "data.nonnegative=on"), signed, progress=False).nonnegative


def test_lags_shorter_than_the_horizon_are_refused():
    with pytest.raises(ConfigError, match="would read the values being forecast"):
        Layout(14, 7, (1, 7))


def test_saved_run_reloads_to_the_same_forecast(tmp_path):
    p = make_panel(T=60, future=True)
    fc = gm.fit(tiny(), p, run_dir=tmp_path / "run", progress=False)
    back = gm.load(tmp_path / "run")
    np.testing.assert_array_equal(gm.forecast(fc, p, [60], seed=1), gm.forecast(back, p, [60], seed=1))


def test_auto_representation_keeps_the_candidate_with_the_better_validation_wql(tmp_path):
    """``data.representation=auto`` trains revin and diff models and keeps the lowest validation wQL of them and
    their pool; the run reloads as the chosen one, and each candidate trained in its own folder."""
    p = make_panel(T=60)
    fc = gm.fit(tiny(4, "data.representation=auto"), p, run_dir=tmp_path / "run", progress=False)
    assert set(fc.candidates) == {"revin", "diff", "pool"}
    best = min(fc.candidates, key=fc.candidates.get)
    assert (bool(fc.members) if best == "pool" else fc.layout.representation == best and not fc.members)
    assert fc.candidates[best] == round(fc.val_wql, 6) and fc.cfg.data.representation == "auto"
    assert all((tmp_path / "run" / "candidates" / r / "config.yaml").is_file() for r in ("revin", "diff"))
    for r in ("revin", "diff"):  # the same seed and data with a fixed representation: the same validation score
        assert round(gm.fit(tiny(4, f"data.representation={r}"), p, progress=False).val_wql, 6) == fc.candidates[r]
    back = gm.load(tmp_path / "run")
    assert back.layout.representation == fc.layout.representation and back.candidates == fc.candidates
    np.testing.assert_array_equal(gm.forecast(fc, p, [60], seed=1), gm.forecast(back, p, [60], seed=1))
    assert "auto representation -> " in gm.chosen(fc) and gm.chosen(back) == gm.chosen(fc)


def test_pooled_representations_split_the_paths_and_reload(tmp_path):
    """``data.representation=pool``: a revin and a diff forecaster, each drawing half of the paths, one spread
    calibrated on the pooled validation samples; saved with its members and reloaded to the same forecast."""
    p = make_panel(T=60)
    fc = gm.fit(tiny(4, "data.representation=pool", "early_stop.spread_grid=[1.0,2.0]"), p,
                run_dir=tmp_path / "run", progress=False)
    assert [m.layout.representation for m in fc.members] == ["revin", "diff"]
    assert set(fc.candidates) == {"revin", "diff", "pool"} and fc.candidates["pool"] == round(fc.val_wql, 6)
    raw = [gm.forecast(replace(m, spread=1.0), p, [60], num_samples=4, seed=1 + 101 * i)
           for i, m in enumerate(fc.members)]
    pooled = gm.apply_spread(np.concatenate(raw, axis=2).reshape(3, 8, 4), fc.spread).reshape(1, 3, 8, 4)
    np.testing.assert_allclose(gm.forecast(fc, p, [60], num_samples=8, seed=1), pooled, rtol=1e-12)
    back = gm.load(tmp_path / "run")
    assert [m.layout.representation for m in back.members] == ["revin", "diff"] and back.spread == fc.spread
    np.testing.assert_array_equal(gm.forecast(fc, p, [60], seed=1), gm.forecast(back, p, [60], seed=1))
    assert "pooled" in gm.chosen(back)


def test_unknown_representation_is_one_config_error():
    with pytest.raises(ConfigError, match="data.representation"):
        tiny(4, "data.representation=both")


def test_a_known_future_covariate_is_learned():
    """A learning test: y = 3 c + small noise with c an AR(1) known-future covariate. Declared, the forecaster must
    forecast from c (median error a small fraction of the one without it); the EPF study
    (benchmarks/studies/forecast_covariates.py) asks why real covariates help less."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    N, T, H = 4, 1200, 12
    c = np.zeros((N, T + H))
    for t in range(1, T + H):
        c[:, t] = 0.9 * c[:, t - 1] + rng.normal(size=N)
    y = 3 * c + 0.1 * rng.normal(size=c.shape)
    index = pd.date_range("2020-01-01", periods=T, freq="h")
    base = Panel(y[:, :T].copy(), index, Calendar("h", 24, "frequency h"), tuple("abcd"))
    cfg = load_config(gm.PanelForecastConfig, "forecast", [
        f"data.prediction_length={H}", "data.representation=revin", "early_stop.max_epochs=3", "early_stop.patience=10",
        "early_stop.ensemble=1", "early_stop.val_samples=8", "num_samples=16", "sampler.steps=5"])
    origins = np.arange(T - 4 * H, T, H)
    truth = np.stack([y[:, o:o + H] for o in origins])  # (W, N, H)
    err = {}
    for name, p in (("none", base), ("declared", replace(base, future=c[:, :, None], future_names=("c",)))):
        fc = gm.fit(cfg, p.head(int(origins[0])), progress=False)
        err[name] = np.abs(np.median(gm.forecast(fc, p, origins, seed=0), 2) - truth).mean()
    assert err["declared"] < 0.25 * err["none"], err


def test_coverage_calibration_widens_too_narrow_samples_to_nominal():
    """Samples N(0, 1) of values drawn N(0, 1.5²): the coverage rule finds the factor 1.5 (its intervals then cover
    the values at their nominal rates); the wQL rule picks from its grid only; a bad rule name is one config error."""
    rng = np.random.default_rng(0)
    smp = rng.normal(size=(400, 200, 4))
    target = 1.5 * rng.normal(size=(400, 4))
    c, score = gm.calibrate_spread(smp, target, (0.8, 2.5), False, "coverage")
    assert abs(c - 1.5) <= 0.1 and gm.coverage_error(gm.apply_spread(smp, c), target) < 0.02
    assert gm.coverage_error(smp, target) > 0.1  # as drawn, far too narrow
    assert score == pytest.approx(gm.calibrate_spread(smp, target, (c,), False)[1])
    assert gm.calibrate_spread(smp, target, (1.0, 2.5), False)[0] in (1.0, 2.5)
    with pytest.raises(ConfigError, match="early_stop.calibrate"):
        tiny(4, "early_stop.calibrate=median")
