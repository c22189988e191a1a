"""Forecasting suite (issue #32): dforce against the tools practitioners use, on the same rolling windows.

Five public data sets, all offline (the ``tsdata`` package and the vendored exchange rate):

| data set | freq | series | H | windows x stride | covariates |
|---|---|---|---|---|---|
| tourism | quarterly | 304 (long; id Region/State/Purpose) | 8 | 5 x 4 | static State, Purpose |
| EPF_FR_BE | hourly | 2 (long) | 24 | 5 x 24 | known-future gen_forecast, system_load |
| us_gasoline | weekly | 1 | 52 | 5 x 52 | - |
| us_employment | monthly | 148 (long, late starts) | 12 | 5 x 12 | - |
| exchange_rate_nips | business-daily | 8 | 30 | its 5 GluonTS test windows | - |

Methods: ``dforce`` (the ``forecast`` preset, the same for every data set: only the horizon and covariate
columns change; trained once on the rows before the first window; 3 seeds), statsforecast ``seasonal_naive``,
``auto_ets``, ``auto_theta`` (refitted at every origin; deterministic) and GluonTS torch ``deepar`` (trained
once, 3 seeds). Scores: mean weighted quantile loss over 19 quantiles (GluonTS ``mean_wQuantileLoss``), MASE,
50/80/90 % interval coverage, CRPS-sum on exchange_rate_nips (multi-step: nothing from a forecast window is
read), seconds (train + forecast, one torch thread).

Every (data set, method, seed) cell is cached as JSON under ``--cells`` and skipped when present (resumable;
delete a cell to rerun it; a worker claims a cell with a ``.running`` file, so several workers can share the
cells, and a killed worker's claim must be deleted); the summary and the tables are rebuilt from the cells::

    PYTHONPATH=src python benchmarks/forecast_suite.py                       # everything (hours on 2 cores)
    PYTHONPATH=src python benchmarks/forecast_suite.py --datasets tourism --methods dforce
    PYTHONPATH=src python benchmarks/forecast_suite.py --quick --out /tmp/suite   # smoke test (a minute)

Writes ``benchmarks/results/forecast_suite.{json,md}`` and fan charts ``benchmarks/results/forecast_suite/*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
METHODS = ("dforce", "seasonal_naive", "auto_ets", "auto_theta", "deepar")
BASELINES = METHODS[1:]
SEEDED = ("dforce", "deepar")


@dataclass(frozen=True)
class DataSet:
    name: str
    horizon: int
    windows: int
    stride: int
    file: str = ""  # tsdata file (relative to the package)
    id_cols: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    future: tuple[str, ...] = ()


DATASETS = {
    "tourism": DataSet("tourism", 8, 5, 4, "fpppy/tourism.csv", ("Region", "State", "Purpose"), ("State", "Purpose")),
    "EPF_FR_BE": DataSet("EPF_FR_BE", 24, 5, 24, "fpppy/EPF_FR_BE.csv", future=("gen_forecast", "system_load")),
    "us_gasoline": DataSet("us_gasoline", 52, 5, 52, "fpppy/us_gasoline.csv"),
    "us_employment": DataSet("us_employment", 12, 5, 12, "fpppy/us_employment.csv"),
    "exchange_rate_nips": DataSet("exchange_rate_nips", 30, 5, 30),
}


def load(ds: DataSet):
    """The data set's panel (exchange: the 6071 train rows plus the 5 x 30 test rows, GluonTS's windows)."""
    from dforce.recipes.forecast.panel import panel_from_array
    from dforce.recipes.forecast.tables import TableSpec, load_panel

    if ds.name == "exchange_rate_nips":
        from dforce.recipes.forecast.exchange_rate import ExchangeRateConfig, raw_exchange_rate

        c = ExchangeRateConfig()
        rows = c.training_length + c.prediction_length * c.rolling_evaluations
        return panel_from_array(raw_exchange_rate()[:rows], c.start, c.freq)
    import tsdata

    path = Path(tsdata.__file__).parent / ds.file
    return load_panel(path, TableSpec(id_cols=ds.id_cols, static=ds.static, future=ds.future))


# ----------------------------------------------------------------------------- cells


def run_cell(ds: DataSet, method: str, seed: int, args) -> dict:
    from dforce.engine.config import load_config
    from dforce.recipes.forecast.backtest import dforce_backtest, quantile_backtest, rolling_origins
    from dforce.recipes.forecast.global_model import PanelForecastConfig, describe
    from dforce.recipes.forecast.metrics import quantiles_from_samples
    from dforce.recipes.forecast.practitioner_baselines import DeepARConfig, deepar_samples, stat_quantiles

    panel = load(ds)
    if args.quick:
        panel = panel.select(np.arange(min(panel.n_series, 6)))
    windows = 2 if args.quick else ds.windows
    origins = rolling_origins(panel.length, ds.horizon, windows, ds.stride)
    if getattr(args, "windows", None) is not None:  # a study's own windows: (panel, ds) -> (panel, origins)
        panel, origins = args.windows(panel, ds)
    info: dict = {}
    if method == "dforce":
        overrides = [f"data.prediction_length={ds.horizon}", f"seed={seed}", *args.set]
        if args.quick:
            overrides += ["early_stop.max_epochs=2", "early_stop.epoch_steps=10", "num_samples=16",
                          "early_stop.val_samples=8", "early_stop.ensemble=1"]
        cfg = load_config(PanelForecastConfig, args.config, overrides)
        bt = dforce_backtest(cfg, panel, origins, progress=args.progress,
                             on_fit=lambda fc, w: info.update(defaults=describe(fc.layout, panel.calendar.season,
                                                                                fc.nonnegative)))
    elif method == "deepar":
        dcfg = DeepARConfig(max_epochs=1, num_batches_per_epoch=5, num_samples=16) if args.quick else DeepARConfig()
        smp, sec = deepar_samples(panel, origins, ds.horizon, seed, dcfg)
        bt = quantile_backtest(quantiles_from_samples(smp), panel, origins, ds.horizon, sec, smp)
    else:
        q, sec = stat_quantiles(panel, origins, ds.horizon, method)
        bt = quantile_backtest(q, panel, origins, ds.horizon, sec)
    scores = bt.scores()
    if getattr(args, "keep", None) is not None:  # a study's list of the backtests
        args.keep.append(bt)
    rec = {"dataset": ds.name, "method": method, "seed": seed, "seconds": round(bt.seconds, 1),
           "origins": [str(panel.timestamps(int(o) + 1)[int(o)]) for o in origins], **scores, **bt.info, **info,
           "series": panel.n_series, "freq": panel.freq}
    if method == "dforce" and seed == 0:  # last window's quantiles and history for the fan chart
        o = int(origins[-1])
        np.savez_compressed(args.cells / f"{ds.name}__dforce_fan.npz", quantiles=bt.quantiles[:, -1].astype(np.float32),
                            history=panel.values[:, max(0, o - 4 * ds.horizon):o].astype(np.float32),
                            target=bt.target[-1].astype(np.float32), origin=o, ids=np.asarray(panel.ids),
                            index=np.asarray(panel.timestamps(o + ds.horizon)[max(0, o - 4 * ds.horizon):], dtype="datetime64[s]"))
    return rec


def cell_path(cells: Path, ds: str, method: str, seed: int) -> Path:
    return cells / f"{ds}__{method}__s{seed}.json"


# ----------------------------------------------------------------------------- summary


def summarize(cells: Path, datasets, methods) -> dict:
    summary: dict = {}
    detail: dict = {}
    for ds in datasets:
        for m in methods:
            recs = [json.loads(p.read_text()) for p in sorted(cells.glob(f"{ds}__{m}__s*.json"))]
            if not recs:
                continue
            wql = np.array([r["overall"]["wql"] for r in recs])
            entry = {"wql": float(wql.mean()), "wql_std": float(wql.std(ddof=1)) if len(wql) > 1 else 0.0,
                     "mase": float(np.mean([r["overall"]["mase"] for r in recs])),
                     "coverage90": float(np.mean([r["overall"]["coverage90"] for r in recs])),
                     "seconds": float(np.mean([r["seconds"] for r in recs]))}
            summary.setdefault(ds, {})[m] = entry
            detail.setdefault(ds, {})[m] = {
                "runs": len(recs), "coverage50": float(np.mean([r["overall"]["coverage50"] for r in recs])),
                "coverage80": float(np.mean([r["overall"]["coverage80"] for r in recs])),
                "window_wql": np.mean([[w["wql"] for w in r["windows"]] for r in recs], 0).round(5).tolist(),
                **({"crps_sum": float(np.mean([r["overall"]["crps_sum"] for r in recs])),
                    "crps_sum_std": float(np.std([r["overall"]["crps_sum"] for r in recs], ddof=1)) if len(recs) > 1
                    else 0.0} if "crps_sum" in recs[0]["overall"] else {}),
                **({"defaults": recs[0].get("defaults"), "fits": [r.get("fits") for r in recs]} if m == "dforce" else {})}
    wins = beats = 0
    for ds, res in summary.items():
        if "dforce" not in res:
            continue
        base = [res[b]["wql"] for b in BASELINES if b in res]
        wins += bool(base) and res["dforce"]["wql"] <= min(base)
        beats += "seasonal_naive" in res and res["dforce"]["wql"] < res["seasonal_naive"]["wql"]
    summary["wins_vs_best_baseline"] = int(wins)
    summary["beats_seasonal_naive"] = int(beats)
    ex = detail.get("exchange_rate_nips", {}).get("dforce", {})
    summary["exchange_crps_sum"] = ex.get("crps_sum")
    cov = [abs(detail[d]["dforce"][f"coverage{c}"] - c / 100) if c != 90 else abs(summary[d]["dforce"]["coverage90"] - .9)
           for d in detail if "dforce" in detail[d] for c in (50, 80, 90)]
    coverage_error = float(100 * np.mean(cov)) if cov else None  # mean |coverage - nominal| in points
    return {"summary": summary, "detail": detail, "dforce_coverage_error_points": coverage_error}


def markdown(report: dict) -> str:
    s, d, cov_err = report["summary"], report["detail"], report["dforce_coverage_error_points"]
    lines = ["# Forecasting suite (issue #32): dforce vs practitioners' tools, same rolling windows", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}", "",
             "Mean weighted quantile loss (19 quantiles, GluonTS `mean_wQuantileLoss`; lower is better), mean ± std "
             "over seeds for the seeded methods; MASE of the median; coverage of the 90 % interval; seconds = "
             "train + forecast per run (one torch thread, shared 2-core machine).", "",
             "| data set | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for ds in DATASETS:
        if ds not in s:
            continue
        best = min((s[ds][m]["wql"] for m in METHODS if m in s[ds]), default=None)
        cells = []
        for m in METHODS:
            e = s[ds].get(m)
            if e is None:
                cells.append("-")
                continue
            txt = f"{e['wql']:.4f}" + (f" ± {e['wql_std']:.4f}" if m in SEEDED else "")
            cells.append(f"**{txt}**" if e["wql"] == best else txt)
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    lines += ["", "| data set | method | MASE | coverage 50 / 80 / 90 | seconds | per-window wQL |", "|---|---|---|---|---|---|"]
    for ds in DATASETS:
        for m in METHODS:
            if m in s.get(ds, {}):
                e, x = s[ds][m], d[ds][m]
                lines.append(f"| {ds} | {m} | {e['mase']:.3f} | {x['coverage50']:.2f} / {x['coverage80']:.2f} / "
                             f"{e['coverage90']:.2f} | {e['seconds']:.0f} | {', '.join(f'{v:.4f}' for v in x['window_wql'])} |")
    lines += ["", f"dforce wins (wQL <= best baseline): {s['wins_vs_best_baseline']} of {sum(1 for k in DATASETS if k in s)}; "
              f"below SeasonalNaive: {s['beats_seasonal_naive']}; mean |coverage - nominal| over 50/80/90 %: "
              f"{cov_err if cov_err is None else round(cov_err, 1)} points."]
    for m in ("dforce", "deepar"):
        x = d.get("exchange_rate_nips", {}).get(m, {})
        if "crps_sum" in x:
            lines.append(f"exchange_rate_nips CRPS-sum ({m}, multi-step): {x['crps_sum']:.5f} ± {x['crps_sum_std']:.5f}.")
    defaults = [f"{ds}: {d[ds]['dforce']['defaults']}" for ds in DATASETS if d.get(ds, {}).get("dforce", {}).get("defaults")]
    if defaults:
        lines += ["", "dforce defaults chosen from the frequency: " + "; ".join(defaults) + "."]
    chosen = [f"{ds}: {', '.join(picks)}" for ds in DATASETS if (picks := _representations(d.get(ds, {}).get("dforce")))]
    if chosen:
        lines += ["", "dforce representation chosen on the validation windows per seed (`data.representation: auto`, "
                  "of revin, diff and the two pooled): " + "; ".join(chosen) + "."]
    return "\n".join(lines) + "\n"


def _representations(detail: dict | None) -> list[str]:
    """What ``representation: auto`` chose in each seed's first fit (the lowest validation wQL of its candidates)."""
    picks = []
    for fits in (detail or {}).get("fits") or []:
        cand = (fits or [{}])[0].get("candidates") or {}
        if cand:
            picks.append(min(cand, key=cand.get))
    return picks


def fan_charts(cells: Path, out_dir: Path) -> list[Path]:
    from dforce.recipes.forecast.plots import plot_quantile_grid

    paths = []
    for f in sorted(cells.glob("*__dforce_fan.npz")):
        z = np.load(f, allow_pickle=False)
        ds = f.name.split("__")[0]
        paths.append(plot_quantile_grid(out_dir / f"{ds}.png", z["history"], z["quantiles"], z["target"],
                                        [str(i) for i in z["ids"]], z["index"],
                                        title=f"{ds}: dforce, last backtest window"))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds of dforce and DeepAR (default 3)")
    ap.add_argument("--config", default="forecast", help="dforce preset (one for every data set)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dforce config overrides (studies)")
    ap.add_argument("--quick", action="store_true", help="6 series, 2 windows, tiny training (a smoke test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "forecast_suite"), help="output stem (.json/.md, PNG folder)")
    ap.add_argument("--cells", default=None, help="cell cache folder (default: <out>/cells)")
    ap.add_argument("--render", action="store_true", help="only rebuild the summary, tables and charts from the cells")
    ap.add_argument("--reverse", action="store_true", help="run the cells in reverse order (a second worker)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    args.cells = Path(args.cells) if args.cells else out / "cells"
    args.cells.mkdir(parents=True, exist_ok=True)
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"forecast_suite.py: error: unknown data set {d!r} (choose from {', '.join(DATASETS)})")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"forecast_suite.py: error: unknown method {m!r} (choose from {', '.join(METHODS)})")
    if not args.render:
        # passes: first one run of every method on every data set (a complete table early), then the other seeds
        todo = [(d, m, 0) for d in datasets for m in methods]
        todo += [(d, m, s) for m in methods if m in SEEDED for s in range(1, args.seeds) for d in datasets]
        for d, m, seed in (todo[::-1] if args.reverse else todo):
            path = cell_path(args.cells, d, m, seed)
            claim = path.with_suffix(".running")  # several workers may share the cells (a killed one leaves its claim)
            if path.exists() or claim.exists():
                continue
            try:
                claim.open("x").close()
            except FileExistsError:
                continue
            t0 = time.time()
            try:
                rec = run_cell(DATASETS[d], m, seed, args)
                path.write_text(json.dumps(rec, indent=1) + "\n")
            finally:
                claim.unlink(missing_ok=True)
            o = rec["overall"]
            print(f"{d} {m} seed {seed}: wQL {o['wql']:.4f} MASE {o['mase']:.3f} cov90 {o['coverage90']:.2f}"
                  f"{' crps_sum %.5f' % o['crps_sum'] if 'crps_sum' in o else ''} ({time.time() - t0:.0f} s)",
                  flush=True)
    report = {"command": " ".join(["python", "benchmarks/forecast_suite.py", *sys.argv[1:]]), "quick": args.quick,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                         f"{args.threads}", **summarize(args.cells, list(DATASETS), list(METHODS))}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    fan_charts(args.cells, out)
    print(markdown(report))


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/forecast_suite.py")
