"""The docs site: mkdocs (material) with the API reference rendered from the docstrings by mkdocstrings builds with
--strict, so a missing page, a broken link or an unrenderable docstring fails the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: every page in the nav exists, links resolve, and mkdocstrings renders the API
    reference from the docstrings without warnings."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install dforce[docs])")
    p = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "core" / "index.html").exists()
