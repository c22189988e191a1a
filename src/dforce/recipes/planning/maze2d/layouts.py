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
    """A maze and its D4RL maze2d-v1 task constants.

    walls: (H, W) bool, True on wall cells. goal_cell: the single-task goal (D4RL 'G' tile), or None for
    custom mazes without one (then the first free cell, as D4RL does). ref_min/ref_max: D4RL
    normalization constants (None for custom mazes).
    """

    name: str
    walls: np.ndarray = field(repr=False)
    goal_cell: tuple[int, int]
    max_episode_steps: int
    ref_min: float | None = None
    ref_max: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.walls.shape)  # type: ignore[return-value]

    @property
    def free_cells(self) -> np.ndarray:
        """(C, 2) int, free cells in row-major order (D4RL ``reset_locations`` + goal, sorted)."""
        return np.argwhere(~self.walls)

    @property
    def goal(self) -> np.ndarray:
        """(2,) single-task goal in the D4RL frame: the integer point of the goal cell (no jitter, as D4RL)."""
        return np.asarray(self.goal_cell, dtype=np.float64)

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

# ----------------------------------------------------------------------------- parsing


def parse_maze(layout: Sequence[str] | Sequence[Sequence[int]] | np.ndarray, where: str = "maze") -> tuple[np.ndarray, tuple[int, int] | None]:
    """Parse a string map ('#' wall; 'O', '0', '.', ' ' free; 'G' goal) or a 0/1 grid (1 = wall).

    Returns ``(walls (H, W) bool, goal_cell or None)``. Raises DataError naming the problem.
    """
    rows = list(layout) if not isinstance(layout, np.ndarray) else list(layout)
    if len(rows) < 3:
        raise DataError(f"{where}: a maze needs at least 3 rows, got {len(rows)}")
    goal = None
    if all(isinstance(r, str) for r in rows):
        width = len(rows[0])
        walls = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            if len(r) != width:
                raise DataError(f"{where}: row {i} has {len(r)} characters, expected {width}")
            for j, c in enumerate(r):
                if c == "#":
                    walls[i, j] = True
                elif c in "G":
                    if goal is not None:
                        raise DataError(f"{where}: more than one 'G' goal tile (row {i}, column {j})")
                    goal = (i, j)
                elif c not in "O0. ":
                    raise DataError(f"{where}: unknown tile {c!r} at row {i}, column {j} (use '#', 'O', 'G')")
    else:
        try:
            arr = np.asarray([list(r) for r in rows], dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{where}: a maze grid must be a rectangular list of 0/1 rows or of strings") from None
        if arr.ndim != 2 or not np.isin(arr, (0, 1)).all():
            raise DataError(f"{where}: a maze grid must be a rectangular 2-D array of 0 (free) and 1 (wall)")
        walls = arr.astype(bool)
    if min(walls.shape) < 3:
        raise DataError(f"{where}: a maze needs at least 3 rows and 3 columns, got {walls.shape}")
    if not (walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()):
        raise DataError(f"{where}: the border of the maze must be walls (the point mass would escape)")
    if walls.all():
        raise DataError(f"{where}: the maze has no free cell")
    if not _connected(walls):
        raise DataError(f"{where}: the free cells of the maze are not all connected")
    return walls, goal


def _connected(walls: np.ndarray) -> bool:
    free = np.argwhere(~walls)
    seen = {tuple(free[0])}
    stack = [tuple(free[0])]
    while stack:
        i, j = stack.pop()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (i + di, j + dj)
            if not walls[n] and n not in seen:
                seen.add(n)
                stack.append(n)
    return len(seen) == len(free)


def get_maze(maze: "str | MazeTask | Sequence[str] | Sequence[Sequence[int]] | np.ndarray", max_episode_steps: int | None = None) -> MazeTask:
    """A :class:`MazeTask` from a D4RL name ('umaze', 'medium', 'large'; 'maze2d-umaze-v1' works too),
    a custom string map / 0/1 grid, or an existing MazeTask (returned as is)."""
    if isinstance(maze, MazeTask):
        return maze
    if isinstance(maze, str):
        key = maze.lower().removeprefix("maze2d-").removesuffix("-v1")
        if key not in _D4RL:
            raise ConfigError(f"maze={maze!r} is not one of {', '.join(map(repr, MAZE_NAMES))} (or pass a map)")
        layout, steps, lo, hi = _D4RL[key]
        walls, goal = parse_maze(layout, where=key)
        return MazeTask(key, walls, goal, max_episode_steps or steps, lo, hi)
    walls, goal = parse_maze(maze)
    if goal is None:
        goal = tuple(int(v) for v in np.argwhere(~walls)[0])  # D4RL: no 'G' -> first empty tile
    # custom mazes: the episode length of the D4RL maze of the closest size (7 / 26 / 46 free cells)
    n_free = int((~walls).sum())
    steps = max_episode_steps or (300 if n_free <= 12 else 600 if n_free <= 35 else 800)
    return MazeTask("custom", walls, goal, steps)


def _reference_scores(maze: "str | MazeTask", what: str) -> tuple[float, float]:
    task = get_maze(maze)
    if task.ref_min is None or task.ref_max is None:
        raise ConfigError(f"maze {task.name!r} has no D4RL reference scores; {what} needs umaze/medium/large")
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
