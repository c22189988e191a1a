"""Helpers for tests of the scripts in ``benchmarks/``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` or ``benchmarks/studies/<name>.py`` imported as a module (the scripts are
    not a package)."""
    root = Path(__file__).parents[1] / "benchmarks"
    path = root / f"{name}.py" if (root / f"{name}.py").exists() else root / "studies" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up
    spec.loader.exec_module(module)
    return module
