"""Draw a maze and 2-D paths (e.g. planned vs executed) to a PNG (D4RL frame, rows downward)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dforce.recipes.planning.maze2d.layouts import D4RL_QPOS_OFFSET, get_maze
from dforce.plotting import save_figure


def plot_maze_paths(maze, paths: Mapping[str, np.ndarray] | Sequence[np.ndarray], path: str | Path,
                    goal: np.ndarray | None = None, title: str | None = None, clip: bool = False) -> Path:
    """Save a PNG of the maze walls with ``paths`` (each (T, 2+) D4RL-frame positions; a dict names them
    in the legend). The image shows column j to the right and row i downward, like the string map. ``clip``: points
    outside the maze's free-space box (a plan through or past the outer wall) are drawn on its edge and the axes
    stay on the maze."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = get_maze(maze)
    H, W = task.shape
    o = D4RL_QPOS_OFFSET
    fig, ax = plt.subplots(figsize=(0.5 * W + 1, 0.5 * H + 1))
    # cell (i, j) spans [i - 0.5 - o, i + 0.5 - o] x [j - 0.5 - o, j + 0.5 - o] in the D4RL frame
    ax.imshow(task.walls, cmap="Greys", vmin=0, vmax=1.4, origin="upper",
              extent=(-0.5 - o, W - 0.5 - o, H - 0.5 - o, -0.5 - o))
    items = paths.items() if isinstance(paths, Mapping) else ((None, p) for p in paths)
    lo, hi = np.array([0.5 - o, 0.5 - o]), np.array([H - 1.5 - o, W - 1.5 - o])  # inside the outer wall ring
    for name, p in items:
        p = np.asarray(p)[:, :2]
        if clip:
            p = np.clip(p, lo, hi)
        ax.plot(p[:, 1], p[:, 0], lw=1.5, label=name)
        ax.scatter(p[:1, 1], p[:1, 0], s=20, marker="o")
    if goal is not None:
        g = np.asarray(goal).reshape(-1, 2)
        ax.scatter(g[:, 1], g[:, 0], s=80, marker="*", c="red", zorder=5, label="goal")
    if isinstance(paths, Mapping) or goal is not None:
        ax.legend(fontsize=7, loc="best")
    if clip:
        ax.set_xlim(-0.5 - o, W - 0.5 - o)
        ax.set_ylim(H - 0.5 - o, -0.5 - o)
    return _finish(fig, ax, path, title)


def plot_distance_field(field, goal: np.ndarray, path: str | Path, maze=None, title: str | None = None) -> Path:
    """Save a PNG of a :class:`~dforce.recipes.planning.maze2d.geodesic.GeodesicField`'s distance to ``goal: (2,)`` (D4RL
    frame): colour and contours every 0.5 on the cells the dataset visits, the others dark, ``maze``'s walls in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = field.distances(np.asarray(goal, dtype=np.float64)[None])[0]  # (nx, ny): axis 0 = row coordinate
    nx, ny = d.shape
    x0, y0 = field.origin
    extent = (y0 - field.cell / 2, y0 + (ny - 0.5) * field.cell, x0 + (nx - 0.5) * field.cell, x0 - field.cell / 2)
    fig, ax = plt.subplots(figsize=(0.5 * ny * field.cell + 2, 0.5 * nx * field.cell + 1))
    shown = np.where(field.visited, d, np.nan)
    im = ax.imshow(shown, origin="upper", extent=extent, cmap="viridis")
    ax.imshow(np.where(field.visited, np.nan, 1.0), origin="upper", extent=extent, cmap="Greys", vmin=0, vmax=1.4)
    ys, xs = y0 + field.cell * np.arange(ny), x0 + field.cell * np.arange(nx)
    ax.contour(ys, xs, shown, levels=np.arange(0.5, np.nanmax(shown), 0.5), colors="white", linewidths=0.5)
    if maze is not None:  # wall cell (i, j) spans [i - 0.5 - o, i + 0.5 - o] x [j - 0.5 - o, j + 0.5 - o]
        from matplotlib.patches import Rectangle

        o = D4RL_QPOS_OFFSET
        for i, j in np.argwhere(get_maze(maze).walls):
            ax.add_patch(Rectangle((j - 0.5 - o, i - 0.5 - o), 1, 1, fc=(0.8, 0.2, 0.2, 0.3), ec="red", lw=0.6))
    ax.scatter([goal[1]], [goal[0]], s=80, marker="*", c="red", zorder=5)
    fig.colorbar(im, ax=ax, label="shortest path through the data to the goal")
    return _finish(fig, ax, path, title)


def _finish(fig, ax, path: str | Path, title: str | None) -> Path:
    """Axis labels of the D4RL frame (rows downward), the title, and the PNG."""
    ax.set_xlabel("y (column)")
    ax.set_ylabel("x (row)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
