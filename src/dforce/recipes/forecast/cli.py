"""``dforce forecast``: train (or load) a Diffusion Forcing forecaster and forecast a CSV or exchange_rate.

    dforce forecast --data my.csv --horizon 30 [--time-column date] [--run RUN_DIR] [--out DIR]
    dforce forecast --data my.csv --horizon 30 --backtest      # hold out the last 30 rows as actuals
    dforce forecast --dataset exchange_rate                   # the 5 GluonTS test windows, CRPS-sum

Writes ``forecast.png`` (median, 50%/90% bands per series, actuals when known), ``samples.npz``
(``samples (W, S, H, D)``, ``target`` when known, ``names``), ``quantiles.csv`` (one row per window,
step and series with the 5/25/50/75/95% quantiles and the actual) and, with ``--dataset``,
``metrics.json``. The run directory (``--run``, default ``OUT/run``) holds the trained model; passing an
existing run skips training.
"""

from __future__ import annotations

import argparse
import json
import sys

from dforce._cli import add_threads_argument, set_threads

CONFIGS = "forecast_small"
FORECAST_OUTPUTS = ("samples.npz", "quantiles.csv", "forecast.png", "metrics.json")  # written into --out
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _quantile_table(samples, target, index, names):
    """Long table: window, step, timestamp, series, q05..q95, actual. ``samples: (W, S, H, D)``."""
    import numpy as np
    import pandas as pd

    W, S, H, D = samples.shape
    q = np.quantile(samples, QUANTILES, axis=1)  # (Q, W, H, D)
    w, h, d = np.meshgrid(np.arange(W), np.arange(H), np.arange(D), indexing="ij")
    table = {"window": w.ravel(), "step": h.ravel() + 1,
             "timestamp": np.asarray([index[i][j] for i, j in zip(w.ravel(), h.ravel())]),
             "series": np.asarray(names)[d.ravel()]}
    for level, values in zip(QUANTILES, q):
        table[f"q{int(round(level * 100)):02d}"] = values.ravel()
    table["actual"] = target.ravel() if target is not None else np.nan
    return pd.DataFrame(table)


def cmd_forecast(args) -> int:
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import torch

    from dforce.recipes.forecast.gluonts_format import split_validation
    from dforce.engine.config import load_config
    from dforce.errors import ConfigError, DataError
    from dforce.recipes.forecast.metrics import forecast_metrics
    from dforce.recipes.forecast.plots import plot_forecast_fan
    from dforce.recipes.forecast.recipe import ForecastConfig, fit, forecast, forecast_targets, load_run

    if (args.data is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --data CSV or --dataset exchange_rate")
    from dforce._cli import at_least
    from dforce.engine import rundir

    set_threads(args.threads)
    at_least("--samples", args.samples)
    at_least("--seed", args.seed, 0)
    out = Path(args.out)
    run_dir = Path(args.run) if args.run else out / "run"
    trained = (run_dir / "best.safetensors").is_file()
    if trained:
        rundir.expect_kind(run_dir, "forecast")
    cfg = load_run(run_dir)[2] if trained else load_config(ForecastConfig, args.config, args.set)

    if args.dataset is not None:
        from dforce.recipes.forecast.exchange_rate import load_exchange_rate_nips

        ds = load_exchange_rate_nips()
        train_series, names, H = ds.train, ds.item_ids, ds.prediction_length
        eval_series, future = ds.test, False
    else:
        from dforce.recipes.forecast.csv_series import load_csv_series

        if args.horizon < 1:
            raise ConfigError(f"--horizon must be >= 1, got {args.horizon}")
        H = args.horizon if not trained else cfg.data.prediction_length
        if trained and args.horizon != H:
            raise ConfigError(f"run {run_dir} was trained for horizon {H}, not --horizon {args.horizon}")
        cfg = cfg if trained else load_config(ForecastConfig, args.config,
                                              [f"data.prediction_length={H}", *args.set])
        C = cfg.data.context_length
        # one training window (1 + C + H rows) plus one validation window of H rows; a backtest holds out H more
        need = 1 + C + 2 * H + (H if args.backtest else 0)
        csv = load_csv_series(args.data, time_column=args.time_column)
        if csv.series.length < need:
            raise DataError(f"{args.data}: series has {csv.series.length} rows; forecasting {H} steps with a "
                            f"context of {C} needs at least {need} (lower --horizon or data.context_length)")
        names = csv.columns
        if args.backtest:
            train_series, eval_series = split_validation(csv.series, H, 1)
            eval_series, future = eval_series, False
        else:
            train_series, eval_series, future = csv.series, [csv.series], True
        if future:
            cfg.data.check_future_forecast()  # fail before training, not after it
        if not trained:
            cfg = _fit_user_sized(cfg, train_series)

    if trained:
        model, schedule, cfg, meta = load_run(run_dir, args.device)
        if meta["dim"] != train_series.dim:
            raise DataError(f"run {run_dir} was trained on {meta['dim']} series, the data has {train_series.dim}")
        move, spread = np.asarray(meta["move_scale"]), float(meta.get("spread", 1.0))
        print(f"loaded {run_dir}")
    else:
        # checked before training: the run directory (new, or an unfinished forecast run) and the result files
        rundir.prepare_outputs(out, FORECAST_OUTPUTS)
        rundir.claim(run_dir, "forecast", overwrite=True)
        res = fit(cfg, train_series, run_dir=run_dir, device=args.device, progress=not args.quiet,
                  meta={"names": list(names)})
        model, schedule, move, spread = res.model, res.schedule, res.move_scale, res.spread
        print(f"trained in {res.seconds:.0f} s (best validation CRPS-sum {res.best_val_crps_sum:.5f} "
              f"at epoch {res.best_epoch}); run saved to {run_dir}")

    if trained:
        rundir.prepare_outputs(out, FORECAST_OUTPUTS)
    samples = forecast(model, schedule, cfg, eval_series, move, future=future, num_samples=args.samples,
                       seed=args.seed, device=args.device, spread=spread)  # (W, S, H, D)
    target = None if future else forecast_targets(eval_series, H)
    out.mkdir(parents=True, exist_ok=True)
    freq = train_series.freq
    index = []
    for s in eval_series:
        first = s.index()[-1] + pd.tseries.frequencies.to_offset(freq) if future else s.index()[-H]
        index.append(pd.date_range(first, periods=H, freq=freq))
    arrays = {"samples": samples, "names": np.asarray(names)}
    if target is not None:
        arrays["target"] = target
    np.savez_compressed(out / "samples.npz", **arrays)
    _quantile_table(samples, target, index, names).to_csv(out / "quantiles.csv", index=False)
    last = eval_series[-1]
    hist = last.target if future else last.target[:-H]
    plot_forecast_fan(out / "forecast.png", hist, samples[-1], None if target is None else target[-1], names,
                      title=f"Diffusion Forcing forecast, {H} steps, {samples.shape[1]} samples")
    print(f"wrote {out / 'forecast.png'}, {out / 'samples.npz'}, {out / 'quantiles.csv'}")
    if target is not None:
        metrics = forecast_metrics(samples, target)
        if cfg.data.reads_forecast_window:  # say so wherever the score goes: it is not a forecast score
            metrics["reads_forecast_window"] = True
            print(f"note: data.short_lags={list(cfg.data.short_lags)} fed the true values of the forecast window to "
                  "the model (the reference code's protocol): these scores are one-step-ahead, not forecasts",
                  file=sys.stderr)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics, indent=2))
    return 0


def _fit_user_sized(cfg, series):
    """Shrink the validation windows so a short CSV keeps at least one training window."""
    from dataclasses import replace

    C, H = cfg.data.context_length, cfg.data.prediction_length
    max_val = max(1, (series.length - (1 + C + H)) // H)
    return replace(cfg, data=replace(cfg.data, val_windows=min(cfg.data.val_windows, max_val)))


def register(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="probabilistic multivariate forecasting (CSV or exchange_rate)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="CSV: a time column and one numeric column per series")
    p.add_argument("--dataset", choices=["exchange_rate"], help="evaluate on a built-in dataset's test windows")
    p.add_argument("--horizon", type=int, default=30, help="steps to forecast (default: 30)")
    p.add_argument("--time-column", default=None, help="name of the timestamp column (default: the first)")
    p.add_argument("--backtest", action="store_true", help="hold out the last --horizon rows and plot against them")
    p.add_argument("--run", default=None, help="run directory: loaded if it holds a model, else trained into")
    p.add_argument("--out", default="runs/forecast", help="output directory (default: runs/forecast)")
    p.add_argument("--config", default=CONFIGS, help=f"preset name or YAML file (default: {CONFIGS})")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4")
    p.add_argument("--samples", type=int, default=100, help="forecast paths per window (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_threads_argument(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_forecast)
