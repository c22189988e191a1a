"""Maze2D planning (``dforce plan``, ``dforce data maze2d``): the MuJoCo point-mass mazes, D4RL-style datasets, and the Diffusion Forcing MPC planner with guidance and MCG.

Public API (imported on first use, so ``import dforce.recipes.planning`` stays cheap and needs no extras):
    PlanningConfig, train_planner, load_planner, Planner, run_planner  (recipe.py)
    load_or_generate_maze2d, get_maze, parse_maze, Maze2DBatchEnv, plot_maze_paths  (maze2d.py)

Layout of this folder: ``maze2d/`` (env, layouts, controller, dataset, geodesic distance, plots), ``config.py`` (PlanningConfig and its sections), ``windows.py`` (normalization, data segments, training windows), ``planner.py`` (guidance, planner, MPC rollouts), ``recipe.py`` (training, loading; re-exports the others' public names), ``cli.py``, ``presets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['PlanningConfig', 'train_planner', 'load_planner', 'Planner', 'run_planner'],
    "maze2d": ["load_or_generate_maze2d", "get_maze", "parse_maze", "Maze2DBatchEnv", "plot_maze_paths"],
})
