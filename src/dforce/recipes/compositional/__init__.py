"""Compositional generation (``dforce compositional``): the cross dataset, one model sampled with full memory and with memoryless MPC.

Public API (imported on first use, so ``import dforce.recipes.compositional`` stays cheap and needs no extras):
    CompositionalConfig, train_model, load_run, sample_run  (recipe.py)
    make_cross_dataset, classify_paths  (data.py)

Layout of this folder: ``data.py`` (cross dataset, classifier, plots), ``recipe.py``, ``cli.py``, ``presets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['CompositionalConfig', 'train_model', 'load_run', 'sample_run'],
    "data": ['make_cross_dataset', 'classify_paths'],
})
