"""The generic recipe: train, sample and evaluate Diffusion Forcing on your own sequences (``dforce train|sample|eval|info|demo``).

Public API (imported on first use, so ``import dforce.recipes.sequence`` stays cheap and needs no extras):
    run_train, run_sample, run_eval, run_info, load_run, Run  (recipe.py)
    RunConfig, DataConfig  (config.py)
    load_sequences, SequenceData, Normalizer  (userdata.py)
    run_demo  (demo.py)

Layout of this folder: ``config.py`` (RunConfig), ``userdata.py`` (your .npz/.npy/.csv, normalization), ``recipe.py`` (train/sample/eval), ``demo.py``, ``cli.py``, ``presets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['run_train', 'run_sample', 'run_eval', 'run_info', 'load_run', 'Run'],
    "config": ['RunConfig', 'DataConfig'],
    "userdata": ['load_sequences', 'SequenceData', 'Normalizer'],
    "demo": ['run_demo'],
})
