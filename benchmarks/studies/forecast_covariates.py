"""Do the known-future covariates help? One data set of ``benchmarks/forecast_suite.py``, with and without them.

Runs a method of the suite (``dforce`` or ``deepar``) on the suite's windows of one data set (default EPF_FR_BE, whose
``gen_forecast`` / ``system_load`` are declared known-future covariates), once as the suite declares the data set and
once with no covariate declared (the columns are then not read at all), and optionally with dforce config overrides.
Each run is one row of ``benchmarks/results/studies/forecast_covariates.{json,md}`` (rows merge across calls):

    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method dforce --seeds 0 1
    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method deepar --seeds 0 --covariates none
    PYTHONPATH=src python benchmarks/studies/forecast_covariates.py --method dforce --seeds 0 --covariates declared \\
        --label "revin, width 128 depth 2" --set data.representation=revin model.width=128 model.depth=2

The suite's own cells (covariates declared, preset ``forecast``) are the "declared" rows of the suite; this script
reruns them only where asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "results" / "studies" / "forecast_covariates"


def run(args) -> dict:
    import forecast_suite as fs

    ds = fs.DATASETS[args.dataset]
    if args.covariates == "none":
        ds = dataclasses.replace(ds, future=())
    cells = Path(tempfile.mkdtemp(prefix="dforce_covariates_"))  # the suite cell's fan-chart file: scratch, not kept
    ns = argparse.Namespace(quick=False, set=list(args.set), config="forecast", progress=False, cells=cells)
    rows = {}
    for seed in args.seeds:
        t0 = time.time()
        rec = fs.run_cell(ds, args.method, seed, ns)
        fit = (rec.get("fits") or [{}])[0]
        rows[str(seed)] = {"wql": rec["overall"]["wql"], "coverage90": rec["overall"]["coverage90"],
                           "window_wql": [w["wql"] for w in rec["windows"]], "val_wql": fit.get("val_wql"),
                           "best_epoch": fit.get("best_epoch"), "seconds": round(time.time() - t0, 1)}
        print(f"{args.label or args.method} covariates={args.covariates} seed {seed}: wQL {rows[str(seed)]['wql']:.4f}",
              flush=True)
    shutil.rmtree(cells, ignore_errors=True)
    return rows


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
    for key, row in results["rows"].items():
        for seed, r in row["seeds"].items():
            val = f"{r['val_wql']:.4f}" if r.get("val_wql") is not None else "—"
            lines.append(f"| {row['dataset']} | {row['label']} | {row['covariates']} | {seed} | {r['wql']:.4f} | {val} | "
                         f"{', '.join(f'{w:.3f}' for w in r['window_wql'])} | `{row['command']}` |")
    for dataset, corr in results.get("correlations", {}).items():
        lines += ["", f"{dataset}: correlation with the standardized target in the forecast rows (`--correlations`): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in corr.items())]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="EPF_FR_BE")
    ap.add_argument("--method", default="dforce", choices=("dforce", "deepar"))
    ap.add_argument("--covariates", default="declared", choices=("declared", "none"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--label", default="", help="row name (default: the method)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dforce config overrides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--correlations", action="store_true", help="only the covariates' and lags' correlations")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.correlations:
        corr = correlations(args.dataset)
        results = json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").exists() else {"rows": {}}
        results.setdefault("correlations", {})[args.dataset] = corr
        write(results)
        print(corr)
        return
    label = args.label or args.method
    seeds = run(args)
    path = OUT.with_suffix(".json")  # read after the runs: other calls may have added rows meanwhile
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    key = f"{args.dataset}|{label}|{args.covariates}"
    row = results["rows"].setdefault(key, {"dataset": args.dataset, "label": label, "covariates": args.covariates,
                                           "seeds": {}})
    row["command"] = " ".join(["python", "benchmarks/studies/forecast_covariates.py", *sys.argv[1:]])
    row["seeds"].update(seeds)
    write(results)


if __name__ == "__main__":
    main()
