"""Maze2D layouts, D4RL task semantics and the coordinate frames.

Coordinate frames (all lengths in metres; one maze cell is 1 x 1 in every frame):

* **cell (i, j)**: row ``i`` (top to bottom), column ``j`` of the string map, as in D4RL ``parse_maze``.
* **D4RL observation frame** (what dforce exposes everywhere): D4RL's ``qpos``. D4RL put wall (i, j) at
  world (i + 1, j + 1) and the particle body at (1.2, 1.2) (``maze_model.point_maze``), so ``qpos = (i, j)``
  lies 0.2 *past* the centre of cell (i, j) in both axes; the true centre of cell (i, j) is
  ``(i - 0.2, j - 0.2)`` (:data:`D4RL_QPOS_OFFSET`). Goals and resets of D4RL sit at the integer points
  ``(i, j)``, i.e. off-centre; dforce keeps that so returns match D4RL maze2d-v1.
* **gymnasium-robotics frame** (``PointMaze_*-v3``, ``maze_size_scaling=1``): maze centred at the origin,
  ``x`` along columns, ``y`` up (against rows): centre of cell (i, j) = ``(j + 0.5 - W/2, H/2 - 0.5 - i)``.

The two frames differ by a rotation of 90 degrees plus a translation, so distances, speeds and the
(isotropic) dynamics are identical; vectors (velocities, forces) map as ``v_gym = (v_d[1], -v_d[0])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dforce.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- constants

D4RL_QPOS_OFFSET = 0.2  # D4RL particle body at (1.2, 1.2), walls at (i + 1, j + 1): maze_model.point_maze
GOAL_RADIUS = 0.5  # D4RL sparse reward: 1 when ||qpos - target|| <= 0.5 (maze_model.MazeEnv.step)
RESET_POS_NOISE = 0.1  # D4RL reset_model / set_target: cell point + U(-0.1, 0.1)
RESET_VEL_STD = 0.1  # D4RL reset_model: qvel ~ N(0, 0.1^2)

# D4RL maze_model.py strings ('#' wall, 'O' empty, 'G' the single-task goal); same walls as
# gymnasium_robotics.envs.maze.maps.{U_MAZE, MEDIUM_MAZE, LARGE_MAZE}.
U_MAZE = ("#####", "#GOO#", "###O#", "#OOO#", "#####")
MEDIUM_MAZE = ("########", "#OO##OO#", "#OO#OOO#", "##OOO###", "#OO#OOO#", "#O#OO#O#", "#OOO#OG#", "########")
LARGE_MAZE = (
    "############", "#OOOO#OOOOO#", "#O##O#O#O#O#", "#OOOOOO#OOO#", "#O####O###O#",
    "#OO#O#OOOOO#", "##O#O#O#O###", "#OO#OOO#OGO#", "############",
)  # fmt: skip


@dataclass(frozen=True)
class MazeTask:
    """A maze and its task constants.

    walls: (H, W) bool, True on wall cells. goal_cell: the single-task goal (D4RL 'G' tile; a custom map without one:
    the first free cell, as D4RL does). goal_cells: every 'G' cell of a custom map (each single-task episode draws
    one; D4RL mazes: the one goal cell). start_cells: the 'S' cells episodes start in (empty: any free cell, as
    D4RL). ref_min/ref_max: D4RL normalization constants (None for custom mazes: their scores are normalized against
    random and oracle references computed on the maze, :mod:`~dforce.recipes.planning.maze2d.references`).
    """

    name: str
    walls: np.ndarray = field(repr=False)
    goal_cell: tuple[int, int]
    max_episode_steps: int
    ref_min: float | None = None
    ref_max: float | None = None
    goal_cells: tuple[tuple[int, int], ...] = ()
    start_cells: tuple[tuple[int, int], ...] = ()
    source: str | None = None  # the map file a custom maze was read from (None: a D4RL name or an inline map)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.walls.shape)  # type: ignore[return-value]

    @property
    def is_d4rl(self) -> bool:
        """Whether the maze is one of D4RL's (it has D4RL's reference scores)."""
        return self.ref_min is not None and self.ref_max is not None

    @property
    def free_cells(self) -> np.ndarray:
        """(C, 2) int, free cells in row-major order (D4RL ``reset_locations`` + goal, sorted)."""
        return np.argwhere(~self.walls)

    @property
    def reset_cells(self) -> np.ndarray:
        """(C', 2) int, the cells episodes start in: the map's 'S' cells, else every free cell (D4RL)."""
        return np.asarray(self.start_cells, dtype=np.int64).reshape(-1, 2) if self.start_cells else self.free_cells

    @property
    def single_goal_cells(self) -> np.ndarray:
        """(G, 2) int, the cells a single-task episode's goal is drawn from (D4RL: the one 'G' cell)."""
        return np.asarray(self.goal_cells or (self.goal_cell,), dtype=np.int64).reshape(-1, 2)

    @property
    def goal(self) -> np.ndarray:
        """(2,) single-task goal in the D4RL frame: the integer point of the goal cell (no jitter, as D4RL)."""
        return np.asarray(self.goal_cell, dtype=np.float64)

    def parsed_map(self):
        """The maze as a :class:`~dforce.recipes.planning.maze2d.maps.ParsedMap` (walls + marked cells)."""
        from dforce.recipes.planning.maze2d.maps import ParsedMap

        goals = self.goal_cells or (self.goal_cell,)
        return ParsedMap(self.walls, tuple(goals), tuple(self.start_cells))

    def to_gym_map(self) -> list[list[int]]:
        """0/1 map for ``gymnasium_robotics`` (``maze_map=``)."""
        return self.walls.astype(int).tolist()


# D4RL pointmaze/__init__.py, maze2d-{umaze,medium,large}-v1: max_episode_steps, ref_min/max_score
_D4RL = {
    "umaze": (U_MAZE, 300, 23.85, 161.86),
    "medium": (MEDIUM_MAZE, 600, 13.13, 277.39),
    "large": (LARGE_MAZE, 800, 6.7, 273.99),
}
MAZE_NAMES = tuple(_D4RL)
DATASET_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}  # D4RL maze2d-*-v1 sizes
# Custom mazes. Episode length: D4RL's Large gives 800 steps for its diameter of 19 cell moves (Medium 600 / 11,
# U-Maze 300 / 6): a custom maze gets as many steps per cell of its diameter as Large, rounded up to 100, at least
# U-Maze's 300. Dataset size: D4RL's 1M / 2M / 4M by free cells (7 / 26 / 46), 4M beyond (generation: ~15 s per 1M
# steps on one core).
STEPS_PER_DIAMETER_CELL = 800 / 19
MIN_EPISODE_STEPS = 300
CUSTOM_DATASET_STEPS = ((12, 1_000_000), (35, 2_000_000), (None, 4_000_000))  # (max free cells, steps)

# ----------------------------------------------------------------------------- parsing


def parse_maze(layout: Sequence[str] | Sequence[Sequence[int]] | np.ndarray, where: str = "maze") -> tuple[np.ndarray, tuple[int, int] | None]:
    """Parse a map (text rows: '#' or '1' wall; '.', 'O', '0', ' ' free; 'G' goal; 'S' start; or a 0/1 grid, 1 = wall).

    Returns ``(walls (H, W) bool, first goal cell or None)``. Raises DataError naming the row and column of the
    problem (:func:`dforce.recipes.planning.maze2d.maps.parse_maze_map` gives the marked cells too).
    """
    from dforce.recipes.planning.maze2d.maps import parse_maze_map

    parsed = parse_maze_map(layout, where)
    return parsed.walls, (parsed.goal_cells[0] if parsed.goal_cells else None)


def custom_episode_steps(walls: np.ndarray) -> int:
    """Episode length of a custom maze: :data:`STEPS_PER_DIAMETER_CELL` per cell of its diameter, rounded up to 100,
    at least :data:`MIN_EPISODE_STEPS`."""
    from dforce.recipes.planning.maze2d.maps import maze_diameter

    return max(MIN_EPISODE_STEPS, 100 * int(np.ceil(STEPS_PER_DIAMETER_CELL * maze_diameter(walls) / 100)))


def default_dataset_steps(task: "MazeTask") -> int:
    """D4RL's dataset size for its mazes; for a custom maze the size of the D4RL maze with as many free cells."""
    if task.name in DATASET_STEPS and task.is_d4rl:
        return DATASET_STEPS[task.name]
    n_free = len(task.free_cells)
    return next(steps for limit, steps in CUSTOM_DATASET_STEPS if limit is None or n_free <= limit)


def task_from_map(name: str, parsed, max_episode_steps: int | None = None, source: str | None = None) -> MazeTask:
    """A :class:`MazeTask` for a custom map (:class:`~dforce.recipes.planning.maze2d.maps.ParsedMap`)."""
    goal = parsed.goal_cells[0] if parsed.goal_cells else tuple(int(v) for v in np.argwhere(~parsed.walls)[0])
    steps = max_episode_steps or custom_episode_steps(parsed.walls)
    return MazeTask(name, parsed.walls, goal, steps, goal_cells=tuple(parsed.goal_cells),
                    start_cells=tuple(parsed.start_cells), source=source)


def get_maze(maze: "str | MazeTask | Sequence[str] | Sequence[Sequence[int]] | np.ndarray", max_episode_steps: int | None = None) -> MazeTask:
    """A :class:`MazeTask` from a D4RL name ('umaze', 'medium', 'large'; 'maze2d-umaze-v1' works too), a map file
    (``.txt`` text map, ``.json``/``.yaml`` list of rows), an inline map (rows separated by newlines, '/' or ';'), a
    list of rows / 0/1 grid, or an existing MazeTask (returned as is, or with ``max_episode_steps``).
    See :mod:`dforce.recipes.planning.maze2d.maps` for the formats."""
    import dataclasses

    from dforce.recipes.planning.maze2d.maps import resolve_map

    if isinstance(maze, MazeTask):
        return dataclasses.replace(maze, max_episode_steps=max_episode_steps) if max_episode_steps else maze
    if isinstance(maze, str):
        key = maze.lower().removeprefix("maze2d-").removesuffix("-v1")
        if key in _D4RL:
            layout, steps, lo, hi = _D4RL[key]
            walls, goal = parse_maze(layout, where=key)
            return MazeTask(key, walls, goal, max_episode_steps or steps, lo, hi, goal_cells=(goal,))
    found = resolve_map(maze)
    if found is None:
        raise ConfigError(f"maze={maze!r} is not one of {', '.join(map(repr, MAZE_NAMES))}, an existing map file or an "
                          "inline map (rows of '#'/'.' separated by '/', e.g. '#####/#G..#/#####')")
    name, parsed = found
    source = str(maze) if isinstance(maze, str) and name != f"custom-{parsed.digest()}" else None
    return task_from_map(name, parsed, max_episode_steps, source)


def _reference_scores(maze: "str | MazeTask", what: str) -> tuple[float, float]:
    task = get_maze(maze)
    if task.ref_min is None or task.ref_max is None:
        raise ConfigError(f"maze {task.name!r} has no D4RL reference scores; {what} needs umaze/medium/large (custom "
                          "mazes are scored against random and oracle references: maze2d.references.score_scale)")
    return task.ref_min, task.ref_max


def normalized_score(maze: "str | MazeTask", episode_return: float | np.ndarray) -> float | np.ndarray:
    """D4RL normalized score 100 * (R - ref_min) / (ref_max - ref_min) (``offline_env.get_normalized_score``)."""
    lo, hi = _reference_scores(maze, "normalized_score")
    return 100.0 * (np.asarray(episode_return, dtype=np.float64) - lo) / (hi - lo)


def episode_return(maze: "str | MazeTask", score: float | np.ndarray) -> float | np.ndarray:
    """Inverse of :func:`normalized_score`: the raw episode return R (steps within the goal radius) of a
    D4RL normalized ``score``. A standard error converts with the slope alone: ``se * (ref_max - ref_min) / 100``."""
    lo, hi = _reference_scores(maze, "episode_return")
    return lo + np.asarray(score, dtype=np.float64) * (hi - lo) / 100.0


# ----------------------------------------------------------------------------- frames


def cell_point(cells: np.ndarray) -> np.ndarray:
    """(..., 2) int cells -> D4RL integer points (where D4RL puts goals/resets), float."""
    return np.asarray(cells, dtype=np.float64)


def cell_center(cells: np.ndarray) -> np.ndarray:
    """(..., 2) int cells -> true cell centres in the D4RL frame (integer point - 0.2)."""
    return np.asarray(cells, dtype=np.float64) - D4RL_QPOS_OFFSET


def pos_to_cell(pos: np.ndarray) -> np.ndarray:
    """(..., 2) D4RL-frame positions -> (..., 2) int cell containing them (not D4RL's ``round``, which is
    off by the 0.2 offset; see module docstring)."""
    return np.floor(np.asarray(pos) + D4RL_QPOS_OFFSET + 0.5).astype(np.int64)


def d4rl_to_gym_pos(pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(..., 2) D4RL qpos -> gymnasium-robotics (x, y) for a maze of ``shape = (H, W)`` cells."""
    H, W = shape
    p = np.asarray(pos, dtype=np.float64)
    c = 0.5 + D4RL_QPOS_OFFSET
    return np.stack([p[..., 1] + c - W / 2, H / 2 - c - p[..., 0]], axis=-1)


def gym_to_d4rl_pos(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`d4rl_to_gym_pos`."""
    H, W = shape
    g = np.asarray(xy, dtype=np.float64)
    c = 0.5 + D4RL_QPOS_OFFSET
    return np.stack([H / 2 - c - g[..., 1], g[..., 0] - c + W / 2], axis=-1)


def d4rl_to_gym_vec(v: np.ndarray) -> np.ndarray:
    """(..., 2) velocity/force/action in the D4RL frame -> gymnasium-robotics frame (a rotation)."""
    v = np.asarray(v, dtype=np.float64)
    return np.stack([v[..., 1], -v[..., 0]], axis=-1)


def gym_to_d4rl_vec(v: np.ndarray) -> np.ndarray:
    """Inverse of :func:`d4rl_to_gym_vec`."""
    v = np.asarray(v, dtype=np.float64)
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)
