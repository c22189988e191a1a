"""The package layout (0.2): presets found by name from anywhere, old import paths still working with a warning,
layers that never import upward or sideways, and a wheel that carries its presets and data."""

import ast
import importlib
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from dforce import _moved
from dforce.engine.config import load_config, presets, resolve_preset
from dforce.errors import ConfigError
from dforce.recipes.sequence.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dforce"
RECIPES = ("sequence", "forecast", "planning", "video", "imitation", "compositional")


def test_every_recipe_ships_presets_and_a_cli():
    names = presets()
    for r in RECIPES:
        assert any(p.parent.parent.name == r for p in names.values()), f"recipe {r} has no preset"
        mod = importlib.import_module(f"dforce.recipes.{r}.cli")
        assert callable(mod.register)


def test_presets_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no repository here
    for spelling in ("sequence_small", "sequence_small.yaml", "configs/sequence_small.yaml"):
        assert resolve_preset(spelling) == presets()["sequence_small"]
    assert load_config(RunConfig, "sequence_small").data.window == load_config(RunConfig, presets()["sequence_small"]).data.window
    (tmp_path / "mine.yaml").write_text("train: {steps: 7}\n")  # a real file wins over a preset name
    assert load_config(RunConfig, "mine.yaml").train.steps == 7
    with pytest.raises(ConfigError, match="not found.*presets: "):
        resolve_preset("no_such_preset")
    with pytest.raises(ConfigError, match="not found"):
        resolve_preset("elsewhere/sequence_small.yaml")  # a path that is not the old configs/ folder is not guessed


def test_dforce_presets_lists_them():
    p = subprocess.run([sys.executable, "-m", "dforce.cli", "presets"], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "forecast_small" in p.stdout and "planning_umaze_small" in p.stdout


@pytest.mark.parametrize("old", sorted(k for k, v in _moved.MOVED.items() if v is not None))
def test_old_import_paths_alias_the_new_modules(old):
    """Each 0.1 module name imports the 0.2 module itself (same object), with a DeprecationWarning naming both."""
    new = _moved.MOVED[old]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
    assert any(issubclass(x.category, DeprecationWarning) and new in str(x.message) for x in w)


def test_old_submodule_of_a_moved_package_is_the_same_module():
    import dforce.recipes.planning.maze2d.layouts as new

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dforce.data.maze2d.layouts as old
        from dforce.tasks import planning
    assert old is new and planning is importlib.import_module("dforce.recipes.planning.recipe")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dforce"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dforce")}
    return out


def test_layers_never_import_upward_or_across_recipes():
    """core math → models → engine → recipes → CLI: the core and engine never import a recipe, and a recipe never
    imports another recipe (shared pieces live in the core)."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).parts
        mods = _imports(path)
        if rel[0] == "recipes" and len(rel) > 2:
            own = f"dforce.recipes.{rel[1]}"
            others = [m for m in mods if m.startswith("dforce.recipes.") and not m.startswith(own)
                      and m != "dforce.recipes._lazy"]
            assert not others, f"{path} imports another recipe: {others}"
        elif rel[0] not in ("recipes", "cli.py", "_moved.py"):
            assert not [m for m in mods if m.startswith("dforce.recipes")], f"{path} (core/engine) imports a recipe"


def test_wheel_carries_presets_assets_and_types(tmp_path):
    """`pip install .` builds a wheel whose presets, vendored data, kernel source and py.typed are package data."""
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0 and "No module named" in p.stderr:
        pytest.skip(f"cannot build a wheel here: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = tmp_path.glob("dforce-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for n in ("dforce/py.typed", "dforce/models/fused_pass.cpp", "dforce/recipes/forecast/assets/exchange_rate.txt.gz",
              "dforce/recipes/sequence/presets/sequence_small.yaml", "dforce/recipes/planning/presets/planning_umaze_small.yaml"):
        assert n in names, n
    assert len([n for n in names if "/presets/" in n]) == len(presets())
