"""benchmarks/forecast_suite.py --quick: the summary has the issue's keys and finished cells are skipped (resumable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_suite_writes_the_summary_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "forecast_suite.py"), "--quick", "--datasets",
           "us_gasoline,exchange_rate_nips", "--methods", "dforce,seasonal_naive", "--seeds", "1", "--out",
           str(tmp_path / "suite")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((tmp_path / "suite.json").read_text())
    s = report["summary"]
    assert set(s) == {"us_gasoline", "exchange_rate_nips", "wins_vs_best_baseline", "beats_seasonal_naive",
                      "exchange_crps_sum"}
    for ds in ("us_gasoline", "exchange_rate_nips"):
        for m in ("dforce", "seasonal_naive"):
            assert set(s[ds][m]) == {"wql", "wql_std", "mase", "coverage90", "seconds"} and s[ds][m]["wql"] > 0
    assert s["exchange_crps_sum"] > 0 and (tmp_path / "suite.md").is_file() and (tmp_path / "suite" / "us_gasoline.png").is_file()
    cells = sorted((tmp_path / "suite" / "cells").glob("*.json"))
    assert len(cells) == 4
    stamp = [c.stat().st_mtime_ns for c in cells]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)  # every cell done: nothing reruns
    assert p.returncode == 0 and [c.stat().st_mtime_ns for c in cells] == stamp and " seed " not in p.stdout
