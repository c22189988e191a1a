"""Action-conditioned video world models (``dforce video``, ``dforce data vizdoom``): data (your files, ViZDoom, moving digits), the spatial ConvGRU model and codec, rollouts, PSNR/SSIM/Fréchet metrics, strips and GIFs.

Public API (imported on first use, so ``import dforce.recipes.video`` stays cheap and needs no extras):
    VideoRunConfig, train_video, load_run, rollout, load_video_data  (recipe.py)
    psnr, ssim, frechet_distance, horizon_metrics  (metrics.py)
    load_video_file  (files.py)
    generate_vizdoom  (vizdoom.py)
    generate_moving_digits  (synthetic.py)
    write_rollout_video, write_rollout_strip  (viz.py)

Layout of this folder: ``common.py``/``files.py``/``vizdoom.py``/``synthetic.py`` (data), ``codec.py`` + ``conv_rnn.py`` (model), ``recipe.py``, ``metrics.py``, ``viz.py``, ``cli.py``, ``presets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['VideoRunConfig', 'train_video', 'load_run', 'rollout', 'load_video_data'],
    "metrics": ['psnr', 'ssim', 'frechet_distance', 'horizon_metrics'],
    "files": ['load_video_file'],
    "vizdoom": ['generate_vizdoom'],
    "synthetic": ['generate_moving_digits'],
    "viz": ['write_rollout_video', 'write_rollout_strip'],
})
