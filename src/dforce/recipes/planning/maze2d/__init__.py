"""Maze2D (D4RL maze2d-v1 on the gymnasium-robotics PointMaze MuJoCo model): layouts and task constants,
a batched environment, the Q-iteration waypoint controller, reference policies, the offline dataset
generator and a plotting helper. Coordinates are D4RL's (see :mod:`dforce.recipes.planning.maze2d.layouts`).

``python -m dforce.recipes.planning.maze2d --maze large`` generates/caches a dataset and prints its statistics.
"""

from dforce.recipes.planning.maze2d.controller import (
    D4RL_CONTROLLER,
    ORACLE_CONTROLLER,
    ControllerConfig,
    EvalResult,
    OraclePolicy,
    RandomPolicy,
    WaypointController,
    evaluate_policy,
    q_iteration,
)
from dforce.recipes.planning.maze2d.dataset import (
    Maze2DDataConfig,
    dataset_path,
    dataset_stats,
    generate_maze2d_dataset,
    load_maze2d_npz,
    load_or_generate_maze2d,
)
from dforce.recipes.planning.maze2d.env import Maze2DBatchEnv, PointMassBatch, StepInfo, build_point_maze_model
from dforce.recipes.planning.maze2d.layouts import (
    DATASET_STEPS,
    GOAL_RADIUS,
    MAZE_NAMES,
    MazeTask,
    cell_center,
    cell_point,
    d4rl_to_gym_pos,
    d4rl_to_gym_vec,
    episode_return,
    get_maze,
    gym_to_d4rl_pos,
    gym_to_d4rl_vec,
    normalized_score,
    parse_maze,
    pos_to_cell,
)
from dforce.recipes.planning.maze2d.plot import plot_distance_field, plot_maze_paths

__all__ = [n for n in dir() if not n.startswith("_")]
