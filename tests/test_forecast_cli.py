"""``dforce forecast`` end to end (issue #32): long/wide files, gaps, covariates, backtests, outputs, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["model.width=16", "diffusion.num_levels=50", "sampler.steps=3", "early_stop.epoch_steps=5",
        "early_stop.max_epochs=2", "early_stop.val_samples=4", "early_stop.ensemble=1", "data.val_max_windows=16"]


def long_csv(path, T=48, with_cov=False):
    """Three monthly series (month starts): one starts late, one has a gap; optional covariates."""
    idx = pd.date_range("2015-01-01", periods=T, freq="MS")
    rng = np.random.default_rng(0)
    frames = []
    for k, name in enumerate(["north", "south", "west"]):
        y = 50 + 10 * np.sin(2 * np.pi * np.arange(T) / 12 + k) + rng.normal(0, 1, T)
        f = pd.DataFrame({"store": name, "month": idx, "sales": y.round(2)})
        if with_cov:
            f["promo"] = (np.arange(T) % 4 == 0).astype(float)
            f["weather"] = rng.normal(size=T).round(3)
        frames.append(f.iloc[10:] if name == "south" else f.drop(index=[20, 21]) if name == "west" else f)
    pd.concat(frames).to_csv(path, index=False)
    return path


def run_cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dforce.cli", "forecast", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_forecast_long_file_writes_dated_quantiles_and_reloads(tmp_path):
    from dforce.cli import main

    data = long_csv(tmp_path / "sales.csv")
    out = tmp_path / "out"
    common = ["--data", str(data), "--id-col", "store", "--time-col", "month", "--target-col", "sales",
              "--horizon", "6", "--samples", "16", "--quiet"]
    assert main(["forecast", *common, "--out", str(out), "--set", *TINY]) == 0
    q = pd.read_csv(out / "quantiles.csv", parse_dates=["ds"])
    assert len(q) == 3 * 6 and set(q["unique_id"]) == {"north", "south", "west"}
    assert q["ds"].min() == pd.Timestamp("2019-01-01") and q["ds"].max() == pd.Timestamp("2019-06-01")  # MS steps
    cols = ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]
    assert (np.diff(q[cols].to_numpy(), axis=1) >= 0).all() and (q[cols] >= 0).all().all()  # sales: non-negative
    assert (out / "forecast.png").stat().st_size > 10_000 and (out / "run" / "forecast_meta.json").is_file()
    # the same run, reloaded, gives the same forecast; Parquet output round-trips
    out2 = tmp_path / "out2"
    assert main(["forecast", *common, "--out", str(out2), "--run", str(out / "run"), "--format", "parquet"]) == 0
    q2 = pd.read_parquet(out2 / "quantiles.parquet")
    np.testing.assert_allclose(q2[cols].to_numpy(), q[cols].to_numpy(), rtol=1e-9)  # CSV's decimals vs binary


def test_backtest_prints_one_line_per_window_and_scores(tmp_path):
    data = long_csv(tmp_path / "sales.csv")
    out = tmp_path / "bt"
    p = run_cli("--data", data, "--id-col", "store", "--time-col", "month", "--target-col", "sales", "--horizon", "3",
                "--backtest", "--windows", "3", "--stride", "2", "--samples", "16", "--out", out, "--quiet",
                "--set", *TINY)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("window ") and "dforce: " in ln]  # one per window
    assert len(lines) == 3 and "2018-" in lines[0]
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["windows"]) == 3 and 0 < m["overall"]["wql"] < 1 and 0 <= m["overall"]["coverage90"] <= 1
    q = pd.read_csv(out / "quantiles.csv")
    assert {"cutoff", "y"} <= set(q.columns) and len(q) == 3 * 3 * 3


def test_future_covariate_file_is_used_for_the_horizon(tmp_path):
    from dforce.cli import main

    data = long_csv(tmp_path / "d.csv", with_cov=True)
    fut = pd.DataFrame({"store": np.repeat(["north", "south", "west"], 4),
                        "month": list(pd.date_range("2019-01-01", periods=4, freq="MS")) * 3, "promo": 1.0})
    fut.to_csv(tmp_path / "futr.csv", index=False)
    common = ["--data", str(data), "--id-col", "store", "--time-col", "month", "--target-col", "sales",
              "--past-covariates", "weather", "--future-covariates", str(tmp_path / "futr.csv"), "--quiet",
              "--samples", "8"]
    assert main(["forecast", *common, "--horizon", "4", "--out", str(tmp_path / "o"), "--set", *TINY]) == 0
    q = pd.read_csv(tmp_path / "o" / "quantiles.csv")
    assert len(q) == 12 and q["q50"].notna().all()


@pytest.mark.parametrize("args,needle", [
    (["--past-covariates", "nope"], "column 'nope' (--past-covariates) not found"),
    (["--freq", "D"], "contradicts the timestamps"),
    (["--freq", "W"], "is not on the W-SUN calendar"),
    (["--future-covariates", "FUTR", "--horizon", "5"], "do not cover the horizon"),
    (["--future-covariates", "promo"], "--future-covariates FILE"),
    (["--set", "data.short_lags=[1]"], "unknown config key data.short_lags"),
    (["--set", "data.lags=[1]"], "would read the values being forecast"),
    (["--horizon", "40"], "too few to train"),
])
def test_bad_input_fails_in_one_line(tmp_path, capsys, args, needle):
    from dforce.cli import main

    data = long_csv(tmp_path / "d.csv", with_cov=True)
    pd.DataFrame({"store": ["north", "south", "west"], "month": ["2019-01-01"] * 3, "promo": [1.0] * 3}).to_csv(
        tmp_path / "futr.csv", index=False)
    args = [str(tmp_path / "futr.csv") if a == "FUTR" else a for a in args]
    base = ["--data", data, "--id-col", "store", "--time-col", "month", "--target-col", "sales", "--out",
            tmp_path / "out", "--quiet"]
    if "--horizon" not in args:
        base += ["--horizon", "3"]
    rc = main(["forecast", *map(str, base), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "out" / "run" / "forecast_meta.json").exists()


def test_bad_numbers_and_missing_file_fail_in_one_line(tmp_path):
    df = pd.read_csv(long_csv(tmp_path / "d.csv"))
    df["sales"] = df["sales"].astype(object)
    df.loc[7, "sales"] = "oops"
    df.to_csv(tmp_path / "bad.csv", index=False)
    for data, needle in ((tmp_path / "bad.csv", "not numeric"), (tmp_path / "none.csv", "does not exist")):
        # a real process: exit code 2 and one line, no traceback
        p = run_cli("--data", data, "--id-col", "store", "--time-col", "month", "--target-col", "sales",
                    "--out", tmp_path / "o", "--quiet")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
