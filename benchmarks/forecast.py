"""exchange_rate_nips CRPS-sum benchmark: Diffusion Forcing vs naive, VAR, teacher forcing, full-sequence.

All methods use the same splits (train = first 6071 rows; the last 5 x 30 train steps held out for early
stopping; 5 rolling test windows of 30 steps) and are scored with the real GluonTS
``MultivariateEvaluator`` (``m_sum_mean_wQuantileLoss``, 100 samples). Also reported, as a reference
point: a Gaussian random walk whose step covariance is fitted on the training changes.

    PYTHONPATH=src python benchmarks/forecast.py                 # 5 seeds (paper protocol)
    PYTHONPATH=src python benchmarks/forecast.py --seeds 1 --quick
    PYTHONPATH=src python benchmarks/forecast.py --config forecast_small --set train.lr=3e-4

Writes ``benchmarks/results/forecast.json`` and ``.md`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dforce.recipes.forecast.exchange_rate import load_exchange_rate_nips
from dforce.engine.config import config_to_dict, load_config
from dforce.recipes.forecast.metrics import gluonts_forecast_metrics
from dforce.recipes.forecast.recipe import ForecastConfig, baseline_config, fit, forecast, forecast_targets
from dforce.recipes.forecast.baselines import BaselineConfig, naive_forecast, random_walk_forecast, var_forecast

ROOT = Path(__file__).resolve().parent
TRAINED = ("dforce", "teacher_forcing", "full_sequence")


def mean_std(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarize(per_seed: dict[str, list[dict]]) -> dict:
    summary = {}
    for m, recs in per_seed.items():
        if not recs:
            continue
        s = mean_std([r["crps_sum"] for r in recs])
        summary[m] = {"crps_sum_mean": s["mean"], "crps_sum_std": s["std"],
                      "crps_mean": mean_std([r["crps"] for r in recs])["mean"], "seeds": len(recs)}
        if m in TRAINED:
            summary[m]["train_seconds_mean"] = mean_std([r["train_seconds"] for r in recs])["mean"]
            summary[m]["sampling_seconds_mean"] = mean_std([r["sampling_seconds"] for r in recs])["mean"]
            summary[m]["num_params"] = recs[0]["num_params"]
    summary["sampling_seconds"] = summary.get("dforce", {}).get("sampling_seconds_mean", float("nan"))
    return summary


def run(cfg: ForecastConfig, seeds: int, methods: tuple[str, ...], progress: bool, on_seed=None) -> dict:
    """Every method for seeds ``0..seeds-1``; ``on_seed(partial_result)`` after each seed (incremental writes)."""
    ds = load_exchange_rate_nips()
    H = ds.prediction_length
    y = forecast_targets(ds.test, H)
    per_seed: dict[str, list[dict]] = {m: [] for m in (*methods, "naive", "var", "random_walk",
                                                        "random_walk_context")}
    for seed in range(seeds):
        naive = naive_forecast(ds.test, H, cfg.num_samples)
        per_seed["naive"].append({"seed": seed, **gluonts_forecast_metrics(naive, y)})
        var, orders = var_forecast(ds.train, ds.test, H, BaselineConfig(num_samples=cfg.num_samples, seed=seed))
        per_seed["var"].append({"seed": seed, "order": orders[0], **gluonts_forecast_metrics(var, y)})
        rw = random_walk_forecast(ds.test, H, cfg.num_samples, seed, train=ds.train.target)
        per_seed["random_walk"].append({"seed": seed, **gluonts_forecast_metrics(rw, y)})
        rwc = random_walk_forecast(ds.test, H, cfg.num_samples, seed, recent=cfg.data.context_length)
        per_seed["random_walk_context"].append({"seed": seed, **gluonts_forecast_metrics(rwc, y)})
        for method in methods:
            mcfg = replace(baseline_config(cfg, method), seed=seed)
            res = fit(mcfg, ds.train, progress=progress)
            t0 = time.time()
            smp = forecast(res.model, res.schedule, mcfg, ds.test, res.move_scale, seed=seed, spread=res.spread)
            sampling = time.time() - t0
            rec = {"seed": seed, **gluonts_forecast_metrics(smp, y), "train_seconds": round(res.seconds, 1),
                   "sampling_seconds": round(sampling, 2), "best_epoch": res.best_epoch, "epochs": res.epochs,
                   "val_crps_sum": res.best_val_crps_sum, "spread": res.spread, "num_params": res.num_params}
            per_seed[method].append(rec)
            print(f"seed {seed} {method}: crps_sum {rec['crps_sum']:.5f} (val {rec['val_crps_sum']:.5f}, "
                  f"epoch {rec['best_epoch']}/{rec['epochs']}, spread {rec['spread']}, train {rec['train_seconds']} s, "
                  f"sampling {rec['sampling_seconds']} s)", flush=True)
        if on_seed is not None:
            on_seed({"summary": summarize(per_seed), "per_seed": per_seed, "seeds_completed": seed + 1})
    return {"summary": summarize(per_seed), "per_seed": per_seed, "seeds_completed": seeds}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": sys.version.split()[0], "load_average_at_start": os.getloadavg()}


def markdown(report: dict) -> str:
    rows = ["| method | CRPS-sum (mean ± std) | CRPS | train s | sampling s | params |", "|---|---|---|---|---|---|"]
    for m, s in report["summary"].items():
        if not isinstance(s, dict):
            continue
        rows.append(f"| {m} | {s['crps_sum_mean']:.5f} ± {s['crps_sum_std']:.5f} | {s['crps_mean']:.5f} | "
                    f"{s.get('train_seconds_mean', 0):.0f} | {s.get('sampling_seconds_mean', 0):.1f} | "
                    f"{s.get('num_params', '-')} |")
    n = report["seeds_completed"]
    head = (f"# exchange_rate_nips CRPS-sum (GluonTS evaluator, {n} seed{'s' if n > 1 else ''}"
            f"{', quick' if report['quick'] else ''}; {report['seeds']} requested)\n\n"
            f"Paper Table 2: DF 0.003 ± 0.001, TimeGrad 0.006 ± 0.001, VAR 0.005 ± 0.000. "
            f"Sampling {report['summary']['sampling_seconds']:.1f} s for 100 paths x 5 windows x 30 steps "
            f"on {report['machine']['torch_threads']} torch threads.\n\n"
            f"Command: `{report['command']}`\n\n")
    notes = ("\n\nReference rows (not among the issue's baselines): `random_walk` = Gaussian random walk with the "
             "step covariance of all training changes; `random_walk_context` = the same with the covariance of "
             "the last context_length changes before each window (a volatility-adaptive random walk).\n")
    return head + "\n".join(rows) + notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="few short epochs (a smoke test, not a result)")
    ap.add_argument("--config", default="forecast_small")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--methods", default=",".join(TRAINED), help="trained methods to run (comma-separated)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a loaded 2-core machine 2 threads spin and run slower)")
    ap.add_argument("--out", default=str(ROOT / "results" / "forecast"), help="output path stem")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the existing .json")
    args = ap.parse_args()
    if args.render:
        stem = Path(args.out)
        stem.with_suffix(".md").write_text(markdown(json.loads(stem.with_suffix(".json").read_text())))
        return
    torch.set_num_threads(args.threads)
    cfg = load_config(ForecastConfig, args.config, args.set)
    if args.quick:
        cfg = replace(cfg, early_stop=replace(cfg.early_stop, max_epochs=3, patience=2, epoch_steps=50))
    report = {"command": " ".join(["python", *sys.argv]), "seeds": args.seeds, "quick": args.quick,
              "machine": machine(), "config": config_to_dict(cfg)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(result: dict) -> None:
        report.update(result)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))

    write(run(cfg, args.seeds, tuple(args.methods.split(",")), args.progress, on_seed=write))
    print(markdown(report))


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/forecast.py")  # user errors: one line, exit code 2
