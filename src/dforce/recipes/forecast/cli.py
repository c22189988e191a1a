"""``dforce forecast``: forecast a CSV/Parquet file (long or wide), or backtest it on rolling windows.

    dforce forecast --data sales.csv --horizon 12                          # wide: a time column + one per series
    dforce forecast --data tourism.csv --id-col Region,State,Purpose --horizon 8   # long: id(s), ds, y
    dforce forecast --data prices.parquet --horizon 24 --future-covariates prices_futr.csv
    dforce forecast --data tourism.csv --id-col Region,State,Purpose --horizon 8 --backtest --windows 5 --stride 4
    dforce forecast --dataset exchange_rate                                # GluonTS's 5 test windows, CRPS-sum

Writes to ``--out``: ``quantiles.csv`` (or ``.parquet``; one row per series and timestamp: ``unique_id, ds,
[cutoff,] step, q05 .. q95, [y]``), ``forecast.png`` (fan charts with dates; a grid of the first and the most
volatile series), ``metrics.json`` (backtests: per-window and overall scores) and the trained run (``--run``,
default ``OUT/run``; a run that holds a model is loaded instead of trained). One summary line per window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dforce._cli import add_threads_argument, set_threads

CONFIG = "forecast"
OUT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)  # columns of the quantile file
FUTURE_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".txt")


def quantile_table(samples, panel, origins, target=None, backtest: bool = False):
    """Long table of ``samples: (W, N, S, H)``: one row per window, series and step (``q05 .. q95``, ``y``)."""
    import numpy as np
    import pandas as pd

    W, N, S, H = samples.shape
    q = np.nanquantile(samples, OUT_QUANTILES, axis=2) if S > 1 else np.repeat(samples[None, :, :, 0], 7, 0)
    stamps = panel.timestamps(int(max(origins)) + H)
    w, n, h = np.meshgrid(np.arange(W), np.arange(N), np.arange(H), indexing="ij")
    rows = np.asarray(origins)[w.ravel()] + h.ravel()
    table = {"unique_id": np.asarray(panel.ids, dtype=object)[n.ravel()], "ds": stamps[rows]}
    if backtest:
        table["cutoff"] = stamps[np.asarray(origins)[w.ravel()] - 1]
    table["step"] = h.ravel() + 1
    for level, values in zip(OUT_QUANTILES, q):
        table[f"q{round(level * 100):02d}"] = values.ravel()
    if target is not None:
        table["y"] = np.asarray(target).ravel()
    return pd.DataFrame(table)


def write_table(df, path: Path) -> Path:
    """CSV or Parquet by suffix, written atomically."""
    import io

    from dforce.engine.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    if path.suffix == ".parquet":
        df.to_parquet(buf, index=False)
    else:
        df.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _spec(args, future_cols):
    from dforce.recipes.forecast.tables import TableSpec, split_columns

    return TableSpec(time_col=args.time_col, id_cols=split_columns(args.id_col), target_col=args.target_col,
                     targets=split_columns(args.targets), past=split_columns(args.past_covariates),
                     future=future_cols, static=split_columns(args.static_covariates), freq=args.freq)


def _future_option(args):
    """``(columns, file)`` from ``--future-covariates`` (column names, or a ``..._futr`` file whose columns count)."""
    from dforce.errors import DataError
    from dforce.recipes.forecast.tables import read_table, split_columns

    value = args.future_covariates
    if not value:
        return (), None
    path = Path(value)
    if path.suffix.lower() in FUTURE_FILE_SUFFIXES or path.is_file():
        df = read_table(path)
        keys = {args.time_col or "ds", *split_columns(args.id_col), "unique_id"}
        cols = tuple(c for c in df.columns if c not in keys)
        if not cols:
            raise DataError(f"{path}: no covariate column besides the id and time columns")
        return cols, path
    return split_columns(value), None


def load_user_panel(args):
    """The panel of ``--data`` or ``--dataset`` and the future-covariate file (or None)."""
    if args.dataset is not None:
        import numpy as np  # noqa: F401

        from dforce.recipes.forecast.exchange_rate import ExchangeRateConfig, raw_exchange_rate
        from dforce.recipes.forecast.panel import panel_from_array

        c = ExchangeRateConfig()
        rows = c.training_length + c.prediction_length * c.rolling_evaluations
        names = ("AUD", "GBP", "CAD", "CHF", "CNY", "JPY", "NZD", "SGD")  # LSTNet's column order
        return panel_from_array(raw_exchange_rate()[:rows], c.start, c.freq, names), None
    from dforce.recipes.forecast.tables import load_panel

    cols, future_file = _future_option(args)
    return load_panel(args.data, _spec(args, cols)), future_file


def cmd_forecast(args) -> int:
    import numpy as np

    from dforce.engine.config import load_config
    from dforce.errors import ConfigError
    from dforce.recipes.forecast import global_model as gm
    from dforce.recipes.forecast.backtest import dforce_backtest, rolling_origins, summary_line
    from dforce.recipes.forecast.plots import plot_quantile_grid
    from dforce.recipes.forecast.tables import load_future_file

    if (args.data is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --data FILE or --dataset exchange_rate")
    if args.dataset is not None:  # GluonTS's protocol: 5 windows of 30 business days
        args.horizon, args.backtest, args.windows, args.stride = 30, True, 5, 30
    from dforce._cli import at_least
    from dforce.engine import rundir

    at_least("--horizon", args.horizon)
    at_least("--samples", args.samples, 2)
    at_least("--seed", args.seed, 0)
    set_threads(args.threads)
    panel, future_file = load_user_panel(args)
    out = Path(args.out)
    run_dir = Path(args.run) if args.run else out / "run"
    trained = (run_dir / gm.META_FILE).is_file()
    if trained:
        rundir.expect_kind(run_dir, "forecast")
    overrides = [f"data.prediction_length={args.horizon}", f"data.nonnegative={args.nonnegative}",
                 *([f"data.context_length={args.context}"] if args.context else []), f"seed={args.seed}", *args.set]
    cfg = load_config(gm.PanelForecastConfig, args.config, overrides)
    print(f"{panel.n_series} series x {panel.length} steps, {panel.calendar.note}, season {panel.calendar.season}"
          + (f"; past covariates {list(panel.past_names)}" if panel.past_names else "")
          + (f"; known-future covariates {list(panel.future_names)}" if panel.future_names else "")
          + (f"; {len(panel.static_names)} static features" if panel.static_names else ""))
    fmt = ".parquet" if args.format == "parquet" else ".csv"
    # checked before training: the result files (never a file dforce did not write) and the run directory
    rundir.prepare_outputs(out, [f"quantiles{fmt}", "forecast.png", *(["metrics.json"] if args.backtest else [])])
    if not trained and not (args.backtest and args.refit):
        rundir.claim(run_dir, "forecast", overwrite=True)  # new, or an unfinished forecast run; never your folder

    if args.backtest:
        if trained:
            raise ConfigError(f"--backtest trains its own models; {run_dir} already holds one (give another --run)")
        origins = rolling_origins(panel.length, args.horizon, args.windows, args.stride)
        gm.resolve_layout(cfg.data, panel.calendar.season, panel.freq, int(origins[0]))  # refuse bad configs early

        def said(fc, w):
            print(f"window {w + 1}: trained in {fc.seconds:.0f} s (best epoch {fc.best_epoch}, spread {fc.spread}); "
                  f"{gm.describe(fc.layout, panel.calendar.season, fc.nonnegative)}{gm.chosen(fc)}", flush=True)

        bt = dforce_backtest(cfg, panel, origins, refit=args.refit, device=args.device, progress=not args.quiet,
                             run_dir=None if args.refit else run_dir, on_fit=said)
        scores = bt.scores()
        for w, rec in enumerate(scores["windows"]):
            print(summary_line(panel, bt, w, rec))
        o = scores["overall"]
        print(f"overall: wQL {o['wql']:.4f}  MASE {o['mase']:.3f}  coverage 50/80/90 {o['coverage50']:.0%}/"
              f"{o['coverage80']:.0%}/{o['coverage90']:.0%}" + (f"  CRPS-sum {o['crps_sum']:.5f}" if "crps_sum" in o else ""))
        samples, target = bt.samples, bt.target
        from dforce.engine.checkpoint import atomic_write_bytes

        report = {**scores, "origins": [str(panel.index[i]) for i in origins], **bt.info}
        atomic_write_bytes(out / "metrics.json", (json.dumps(report, indent=2) + "\n").encode())
    else:
        H = args.horizon
        if future_file is not None:
            panel = load_future_file(future_file, panel, H, _spec(args, panel.future_names))
        elif panel.future_names:
            raise ConfigError(f"forecasting past the end of the data needs the values of the known-future covariates "
                              f"{list(panel.future_names)} over the next {H} steps: pass --future-covariates FILE "
                              "(a table of id, time and those columns), or use --backtest")
        if trained:
            fc = gm.load(run_dir, args.device)
            if fc.layout.horizon != H:
                raise ConfigError(f"run {run_dir} was trained for --horizon {fc.layout.horizon}, not {H}")
            if fc.cond_dim != gm.WindowEncoder(panel, fc.layout, fc.steps_for(panel)).cond_dim:
                raise ConfigError(f"run {run_dir} was trained with other covariates than this data has")
            print(f"loaded {run_dir}")
        else:
            fc = gm.fit(cfg, panel, run_dir=run_dir, device=args.device, progress=not args.quiet)
            print(f"trained in {fc.seconds:.0f} s (best epoch {fc.best_epoch}, validation wQL {fc.best_val_wql:.4f}, "
                  f"spread {fc.spread}){gm.chosen(fc)}; run saved to {run_dir}")
        print(gm.describe(fc.layout, panel.calendar.season, fc.nonnegative))
        origins = np.array([panel.length])
        samples = gm.forecast(fc, panel, origins, args.samples, args.seed, args.device)  # (1, N, S, H)
        target = None
        out.mkdir(parents=True, exist_ok=True)
        stamps = panel.timestamps(panel.length + H)
        print(f"forecast {stamps[panel.length]} .. {stamps[-1]} for {panel.n_series} series")
    H = args.horizon
    table = quantile_table(samples, panel, origins, target, backtest=args.backtest)
    qpath = write_table(table, out / f"quantiles{fmt}")
    o = int(origins[-1])
    P = min(o, 4 * H)
    qs = np.nanquantile(samples[-1], [v / 100 for v in range(5, 100, 5)], axis=1)  # (19, N, H)
    plot_quantile_grid(out / "forecast.png", panel.values[:, o - P:o], qs, None if target is None else target[-1],
                       list(panel.ids), panel.timestamps(o + H)[o - P:],
                       title=f"dforce forecast, {H} steps, {samples.shape[2]} samples")
    print(f"wrote {qpath}, {out / 'forecast.png'}" + (f", {out / 'metrics.json'}" if args.backtest else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="probabilistic forecasting of CSV/Parquet series (long or wide)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", help="CSV or Parquet file: long (id, time, value rows) or wide (time + one column per series)")
    d.add_argument("--dataset", choices=["exchange_rate"], help="backtest a built-in data set (GluonTS test windows)")
    d.add_argument("--id-col", default=None, help="series id column(s) of a long table, comma-separated "
                                                  "(default: unique_id if present; none: the table is wide)")
    d.add_argument("--time-col", "--time-column", dest="time_col", default=None,
                   help="timestamp column (default: ds if present, else the first column)")
    d.add_argument("--target-col", default=None, help="value column of a long table (default: y)")
    d.add_argument("--targets", default=None, help="series columns of a wide table (default: all other columns)")
    d.add_argument("--freq", default=None, help="pandas frequency (M, MS, Q, QS, W, W-MON, B, D, h, 15min, ...; "
                                                "default: inferred)")
    d.add_argument("--past-covariates", default=None, help="columns known only up to the forecast origin")
    d.add_argument("--future-covariates", default=None,
                   help="known-future columns: names (backtests) or a file with their values over the horizon "
                        "(id, time and the columns, like EPF_FR_BE_futr.csv)")
    d.add_argument("--static-covariates", default=None, help="columns constant within each series (long tables)")
    m = p.add_argument_group("forecast")
    m.add_argument("--horizon", type=int, default=12, help="steps to forecast (default: 12)")
    m.add_argument("--context", type=int, default=0, help="context steps (default: one season of the frequency, >= horizon)")
    m.add_argument("--nonnegative", choices=["auto", "on", "off"], default="auto",
                   help="clip forecasts at 0 (auto: when every value in the data is >= 0)")
    m.add_argument("--backtest", action="store_true", help="score rolling windows at the end of the data")
    m.add_argument("--windows", type=int, default=5, help="backtest windows (default: 5)")
    m.add_argument("--stride", type=int, default=0, help="steps between backtest origins (default: the horizon)")
    m.add_argument("--refit", action="store_true", help="retrain before every backtest window (default: train once)")
    m.add_argument("--samples", type=int, default=100, help="sample paths per series and window (default: 100)")
    m.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    o = p.add_argument_group("run and outputs")
    o.add_argument("--run", default=None, help="run directory: loaded if it holds a model, else trained into")
    o.add_argument("--out", default="runs/forecast", help="output directory (default: runs/forecast)")
    o.add_argument("--format", choices=["csv", "parquet"], default="csv", help="quantile file format")
    o.add_argument("--config", default=CONFIG, help=f"preset name or YAML file (default: {CONFIG})")
    o.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4")
    add_threads_argument(o)
    o.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_forecast)
