"""Old import paths (dforce 0.1) that moved in 0.2, kept importable for one release with a DeprecationWarning.

``import dforce.tasks.forecast`` gives the module ``dforce.recipes.forecast.recipe`` itself (same object, so
monkeypatching either name patches both) and warns once. Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old dotted name -> new dotted name (modules and packages); CHANGELOG.md lists the same table
MOVED: dict[str, str | None] = {
    "dforce.data.compositional": "dforce.recipes.compositional.data",
    "dforce.data.corruption": "dforce.recipes.imitation.corruption",
    "dforce.data.fruit_swap": "dforce.recipes.imitation.fruit_swap",
    "dforce.data.csv_series": "dforce.recipes.forecast.csv_series",
    "dforce.data.exchange_rate": "dforce.recipes.forecast.exchange_rate",
    "dforce.data.forecast_features": "dforce.recipes.forecast.features",
    "dforce.data.gluonts_format": "dforce.recipes.forecast.gluonts_format",
    "dforce.data.maze2d": "dforce.recipes.planning.maze2d",
    "dforce.data.synthetic_video": "dforce.recipes.video.synthetic",
    "dforce.data.video_common": "dforce.recipes.video.common",
    "dforce.data.video_files": "dforce.recipes.video.files",
    "dforce.data.video_viz": "dforce.recipes.video.viz",
    "dforce.data.vizdoom_video": "dforce.recipes.video.vizdoom",
    "dforce.metrics": None,  # None: an empty package now, only holding the moved names below
    "dforce.metrics.forecast": "dforce.recipes.forecast.metrics",
    "dforce.metrics.video": "dforce.recipes.video.metrics",
    "dforce.plotting.forecast": "dforce.recipes.forecast.plots",
    "dforce.models.conv_rnn": "dforce.recipes.video.conv_rnn",
    "dforce.models.video_codec": "dforce.recipes.video.codec",
    "dforce.tasks": None,
    "dforce.tasks.forecast": "dforce.recipes.forecast.recipe",
    "dforce.tasks.forecast_cli": "dforce.recipes.forecast.cli",
    "dforce.tasks.forecast_baselines": "dforce.recipes.forecast.baselines",
    "dforce.tasks.planning": "dforce.recipes.planning.recipe",
    "dforce.tasks.planning_cli": "dforce.recipes.planning.cli",
    "dforce.tasks.video": "dforce.recipes.video.recipe",
    "dforce.tasks.video_cli": "dforce.recipes.video.cli",
    "dforce.tasks.imitation": "dforce.recipes.imitation.recipe",
    "dforce.tasks.compositional": "dforce.recipes.compositional.recipe",
    "dforce.engine.sequence": "dforce.recipes.sequence.recipe",
    "dforce.engine.userdata": "dforce.recipes.sequence.userdata",
    "dforce.engine.run_config": "dforce.recipes.sequence.config",
    "dforce.demo": "dforce.recipes.sequence.demo",
}


def new_name(old: str) -> str | None:
    """The 0.2 name of an old dotted module name (also for submodules of a moved package), else None."""
    for prefix in sorted(MOVED, key=len, reverse=True):
        if MOVED[prefix] is not None and (old == prefix or old.startswith(prefix + ".")):
            return MOVED[prefix] + old[len(prefix):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        if self.new is None:  # an old package that is gone: an empty one, so its moved modules import
            module = types.ModuleType(self.old)
            module.__path__ = []
            return module
        warnings.warn(f"{self.old} moved to {self.new} in dforce 0.2; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module):  # the new module is already executed
        sys.modules[self.old] = module


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if MOVED.get(fullname, "") is None:
            return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, None), is_package=True)
        new = new_name(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, new))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once (called by ``import dforce``)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # first: the path finder would load a second copy
