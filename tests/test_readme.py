"""The README stays short and its quick shell blocks run as written (from a fresh directory, as a user would)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = re.compile(r"<!-- quick -->\s*\n```bash\n(.*?)```", re.S)


def quick_blocks(text: str) -> list[str]:
    """The ```bash blocks right after a ``<!-- quick -->`` marker (commands a test may run as written)."""
    return QUICK.findall(text)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_quick_blocks_are_found():
    text = "intro\n<!-- quick -->\n```bash\necho a\n```\n\n```bash\necho not quick\n```\n"
    assert quick_blocks(text) == ["echo a\n"]


@pytest.mark.parametrize("doc", ["README.md"])
def test_quick_blocks_run_as_written(doc, tmp_path):
    """Every quick block of the README runs from a fresh directory with the installed `dforce` and `python` on PATH
    (as after `make demo` + `source .venv/bin/activate`), in bash with -e, so any failing command fails the test."""
    blocks = quick_blocks((ROOT / doc).read_text())
    assert blocks, f"{doc} has no <!-- quick --> block"
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT / "src"),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    if not (bindir / "dforce").exists():  # not installed as a console script here: call the module
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "dforce").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dforce.cli "$@"\n')
        (shim / "dforce").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    for block in blocks:
        p = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, f"{doc} block failed:\n{block}\n{p.stderr[-2000:]}"

