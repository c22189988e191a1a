"""Do the known-future covariates help? One data set of ``benchmarks/forecast_suite.py``, with and without them.

Runs a method of the suite (``dforce`` or ``deepar``) on the suite's windows of one data set (default EPF_FR_BE, whose
``gen_forecast`` / ``system_load`` are declared known-future covariates), once as the suite declares the data set and
once with no covariate declared (the columns are then not read at all), and optionally with dforce config overrides.
Each run is one row of ``benchmarks/results/studies/forecast_covariates.{json,md}`` (rows merge across calls):

    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method dforce --seeds 0 1
    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method deepar --seeds 0 --covariates none
    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method dforce --seeds 0 --covariates declared \\
        --label "revin, width 128 depth 2" --set data.representation=revin model.width=128 model.depth=2
    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --period before --method dforce --seeds 0

``--period before`` scores a longer stretch instead of the suite's few test windows: windows every
:data:`BEFORE_STRIDE` rows over the :data:`BEFORE_ROWS` rows before the suite's first origin (the test rows are cut
off; the model trains on the rows before the first of these windows), 2 x 80 windows on EPF_FR_BE.

The suite's own cells (covariates declared, preset ``forecast``) are the "declared" rows of the suite; this script
reruns them only where asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "results" / "studies" / "forecast_covariates"
BEFORE_ROWS = 3000  # --period before: the rows scored before the suite's first origin (EPF: 125 days)
CONTEXT_ROWS = 72  # --context-stats: the rows before each origin described (EPF: the preset's context, 3 days)
BEFORE_STRIDE = 37  # rows between its windows (not a multiple of 24: the origins visit every hour of the day)


def run(args) -> dict:
    import forecast_suite as fs

    ds = fs.DATASETS[args.dataset]
    if args.covariates == "none":
        ds = dataclasses.replace(ds, future=())
    cells = Path(tempfile.mkdtemp(prefix="dforce_covariates_"))  # the suite cell's fan-chart file: scratch, not kept
    ns = argparse.Namespace(quick=False, set=list(args.set), config="forecast", progress=False, cells=cells)
    if args.period == "before":
        ns.windows = before_windows
    rows = {}
    for seed in args.seeds:
        t0 = time.time()
        ns.keep = []
        rec = fs.run_cell(ds, args.method, seed, ns)
        fit = (rec.get("fits") or [{}])[0]
        rows[str(seed)] = {"wql": rec["overall"]["wql"], "coverage90": rec["overall"]["coverage90"],
                           "window_wql": [w["wql"] for w in rec["windows"]], "val_wql": fit.get("val_wql"),
                           "best_epoch": fit.get("best_epoch"), "seconds": round(time.time() - t0, 1),
                           **({"centre_width": centre_width(ns.keep[0])} if args.period == "test" else {})}
        print(f"{args.label or args.method} covariates={args.covariates} seed {seed}: wQL {rows[str(seed)]['wql']:.4f}",
              flush=True)
    shutil.rmtree(cells, ignore_errors=True)
    return rows


def before_windows(panel, ds):
    """``(panel cut at the suite's first origin, origins)``: the ``--period before`` windows."""
    import numpy as np

    from dforce.recipes.forecast.backtest import rolling_origins

    first = int(rolling_origins(panel.length, ds.horizon, ds.windows, ds.stride)[0])
    return panel.head(first), np.arange(max(first - BEFORE_ROWS, 1), first - ds.horizon + 1, BEFORE_STRIDE)


def centre_width(bt) -> list[list[dict]]:
    """Per test window and series: the median forecast's mean error (bias) and the 80 % interval's mean width, in
    the data's units, beside the true values' standard deviation over the window."""
    import numpy as np

    from dforce.recipes.forecast.metrics import CRPS_QUANTILES

    qs = [round(float(q), 2) for q in CRPS_QUANTILES]
    med, lo, hi = (bt.quantiles[qs.index(q)] for q in (0.5, 0.1, 0.9))  # (W, N, H)
    y = bt.target
    return [[{"bias": round(float(np.nanmean(med[w, n] - y[w, n])), 2),
              "width80": round(float(np.nanmean(hi[w, n] - lo[w, n])), 2),
              "truth_std": round(float(np.nanstd(y[w, n])), 2)} for n in range(y.shape[1])] for w in range(y.shape[0])]


def context_stats(dataset: str) -> dict:
    """Per test window and series: the mean and standard deviation of the 72 rows before the origin and of the
    forecast rows, beside the series' mean and standard deviation over the rows before the first origin."""
    import numpy as np

    import forecast_suite as fs
    from dforce.recipes.forecast.backtest import rolling_origins

    ds = fs.DATASETS[dataset]
    p = fs.load(ds)
    origins = rolling_origins(p.length, ds.horizon, ds.windows, ds.stride)
    v, first = p.values, int(origins[0])
    r = lambda a: round(float(a), 1)  # noqa: E731
    out = {"series": {i: {"mean": r(np.nanmean(v[n, :first])), "std": r(np.nanstd(v[n, :first]))}
                      for n, i in enumerate(p.ids)}, "windows": []}
    for o in origins:
        ctx, tgt = v[:, o - CONTEXT_ROWS:o], v[:, o:o + ds.horizon]
        out["windows"].append({"origin": str(p.timestamps(int(o) + 1)[int(o)]), **{
            i: {"context_mean": r(np.nanmean(ctx[n])), "context_std": r(np.nanstd(ctx[n])),
                "target_mean": r(np.nanmean(tgt[n])), "target_std": r(np.nanstd(tgt[n]))} for n, i in enumerate(p.ids)}})
    return out


def correlations(dataset: str) -> dict:
    """Correlation, over windows every 37 rows of every series (72-row context, 24-row horizon, the suite's lags),
    between the standardized target of the forecast rows and each known-future covariate / seasonal lag as the model
    sees them (its conditioning channels)."""
    import numpy as np

    import forecast_suite as fs
    from dforce.recipes.forecast.frequency import default_context, seasonal_lags
    from dforce.recipes.forecast.tokens import Layout, WindowEncoder, typical_step

    ds = fs.DATASETS[dataset]
    p = fs.load(ds)
    season = p.calendar.season
    lay = Layout(default_context(season, ds.horizon), ds.horizon, tuple(seasonal_lags(season, ds.horizon)))
    enc = WindowEncoder(p, lay, typical_step(p.values))
    o = np.arange(lay.context + max(lay.lags), p.length - ds.horizon, 37)
    n = np.repeat(np.arange(p.n_series), len(o))
    t = enc.encode(n, np.tile(o, p.n_series))
    C, F = lay.context, len(p.future_names)
    x = t.x[:, C:, 0].ravel()
    out = {name: float(np.corrcoef(x, t.cond[:, C:, t.cond.shape[-1] - F + j].ravel())[0, 1])
           for j, name in enumerate(p.future_names)}
    first_lag = 1 + enc.calendar.shape[1]
    out.update({f"lag {lag}": float(np.corrcoef(x, t.cond[:, C:, first_lag + j].ravel())[0, 1])
                for j, lag in enumerate(lay.lags)})
    return out


def write(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Known-future covariates: with and without (benchmarks/studies/forecast_covariates.py)", "",
             "The suite's windows of the data set; mean wQL (lower is better) per seed, the validation wQL dforce "
             "selected on, and wQL per backtest window. `declared`: the covariates as the suite declares them; "
             "`none`: no covariate declared.", "",
             "| data set | method | covariates | seed | wQL | validation wQL | per-window wQL | command |",
             "|---|---|---|---|---|---|---|---|"]
    test = {k: r for k, r in results["rows"].items() if r.get("period", "test") == "test"}
    before = {k: r for k, r in results["rows"].items() if r.get("period") == "before"}
    for key, row in test.items():
        for seed, r in row["seeds"].items():
            val = f"{r['val_wql']:.4f}" if r.get("val_wql") is not None else "—"
            lines.append(f"| {row['dataset']} | {row['label']} | {row['covariates']} | {seed} | {r['wql']:.4f} | {val} | "
                         f"{', '.join(f'{w:.3f}' for w in r['window_wql'])} | `{row['command']}` |")
    if before:
        lines += ["", f"`--period before`: windows every {BEFORE_STRIDE} rows over the {BEFORE_ROWS} rows before the "
                  "suite's first origin (EPF_FR_BE: 2 series x 80 windows), trained on the rows before them; mean wQL "
                  "and 90 % interval coverage.", "",
                  "| data set | method | covariates | seed | wQL | coverage 90 % | command |", "|---|---|---|---|---|---|---|"]
        for key, row in before.items():
            for seed, r in row["seeds"].items():
                lines.append(f"| {row['dataset']} | {row['label']} | {row['covariates']} | {seed} | {r['wql']:.4f} | "
                             f"{r['coverage90']:.2f} | `{row['command']}` |")
    detail = [(row, seed, r) for row in test.values() for seed, r in row["seeds"].items() if r.get("centre_width")]
    if detail:
        lines += ["", "Test windows per series: the median forecast's mean error (bias) / the 80 % interval's mean "
                  "width / the true values' standard deviation, in the data's units.", "",
                  "| data set | method | covariates | seed | " + " | ".join(f"window {w + 1}" for w in
                                                                            range(len(detail[0][2]["centre_width"])))
                  + " |", "|---|---|---|---|" + "---|" * len(detail[0][2]["centre_width"])]
        for row, seed, r in detail:
            cells = ["<br>".join(f"{s['bias']:+.1f} / {s['width80']:.1f} / {s['truth_std']:.1f}" for s in w)
                     for w in r["centre_width"]]
            lines.append(f"| {row['dataset']} | {row['label']} | {row['covariates']} | {seed} | " + " | ".join(cells)
                         + " |")
    for dataset, st in results.get("context_stats", {}).items():
        lines += ["", f"{dataset}, the test windows (`--context-stats`): per series, the mean / standard deviation of "
                  f"the {CONTEXT_ROWS} rows before the origin -> of the forecast rows (over the rows before the first "
                  "origin: " + ", ".join(f"{i} {v['mean']} / {v['std']}" for i, v in st["series"].items()) + ")", "",
                  "| origin | " + " | ".join(st["series"]) + " |", "|---|" + "---|" * len(st["series"])]
        for w in st["windows"]:
            lines.append(f"| {w['origin']} | " + " | ".join(
                f"{w[i]['context_mean']} / {w[i]['context_std']} -> {w[i]['target_mean']} / {w[i]['target_std']}"
                for i in st["series"]) + " |")
    for dataset, corr in results.get("correlations", {}).items():
        lines += ["", f"{dataset}: correlation with the standardized target in the forecast rows (`--correlations`): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in corr.items())]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="EPF_FR_BE")
    ap.add_argument("--method", default="dforce", choices=("dforce", "deepar", "seasonal_naive", "auto_ets",
                                                               "auto_theta"))
    ap.add_argument("--period", default="test", choices=("test", "before"),
                    help="test: the suite's windows; before: windows over the rows before them (see the docstring)")
    ap.add_argument("--covariates", default="declared", choices=("declared", "none"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--label", default="", help="row name (default: the method)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dforce config overrides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--correlations", action="store_true", help="only the covariates' and lags' correlations")
    ap.add_argument("--context-stats", action="store_true",
                    help="only the test windows' context and target statistics per series")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.correlations or args.context_stats:
        key, value = (("correlations", correlations(args.dataset)) if args.correlations
                      else ("context_stats", context_stats(args.dataset)))
        results = json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").exists() else {"rows": {}}
        results.setdefault(key, {})[args.dataset] = value
        write(results)
        print(json.dumps(value, indent=1))
        return
    label = args.label or args.method
    seeds = run(args)
    with open(Path(tempfile.gettempdir()) / "dforce_forecast_covariates.lock", "a") as lock:  # "a": never truncates
        fcntl.flock(lock, fcntl.LOCK_EX)  # several calls may finish at once: read, merge and write one at a time
        path = OUT.with_suffix(".json")  # read after the runs: other calls may have added rows meanwhile
        results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
        key = f"{args.dataset}|{label}|{args.covariates}" + ("|before" if args.period == "before" else "")
        row = results["rows"].setdefault(key, {"dataset": args.dataset, "label": label, "covariates": args.covariates,
                                               "period": args.period, "seeds": {}})
        row["seeds"].update(seeds)
        argv = list(sys.argv[1:])  # the command of every seed of the row: --seeds becomes their union
        if "--seeds" in argv:
            i = argv.index("--seeds") + 1
            j = next((k for k in range(i, len(argv)) if argv[k].startswith("--")), len(argv))
            argv[i:j] = sorted(row["seeds"], key=int)
        row["command"] = shlex.join(["python", "benchmarks/studies/forecast_covariates.py", *argv])
        write(results)


if __name__ == "__main__":
    main()
