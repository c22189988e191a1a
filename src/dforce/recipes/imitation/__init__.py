"""Imitation with memory (``dforce imitation``): the fruit-swap environment, corrupted observations, and the Diffusion Forcing policy against Markovian and next-frame baselines.

Public API (imported on first use, so ``import dforce.recipes.imitation`` stays cheap and needs no extras):
    ImitationConfig, train_policy, load_run, evaluate_run, DiffusionPolicy  (recipe.py)
    FruitSwapEnv, make_demos  (fruit_swap.py)
    CorruptionConfig, corrupt  (corruption.py)

Layout of this folder: ``fruit_swap.py`` (env + expert), ``corruption.py``, ``recipe.py`` (policy, training, evaluation), ``cli.py``, ``presets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['ImitationConfig', 'train_policy', 'load_run', 'evaluate_run', 'DiffusionPolicy'],
    "fruit_swap": ['FruitSwapEnv', 'make_demos'],
    "corruption": ['CorruptionConfig', 'corrupt'],
})
