"""Benchmark scripts treat a user's mistake like the CLI does: one ``error:`` line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("argv,message", [
    (["benchmarks/studies/maze2d_diagnose.py", "no/such/run", "--maze", "large"], "not a planning run directory"),
    (["benchmarks/maze2d.py", "--mazes", "nowhere"], "is not one of"),
    (["benchmarks/sampling.py", "--from-json", "--out", "no/such/results"], "does not exist"),
])
def test_benchmark_user_errors_are_one_line(argv, message):
    pytest.importorskip("mujoco")  # the maze scripts import the environments
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and message in r.stderr and "Traceback" not in r.stderr
