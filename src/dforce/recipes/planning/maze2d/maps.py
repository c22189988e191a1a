"""Your own maze: text maps, 0/1 grids, map files and inline maps, validated with one error line each.

A maze is given wherever a maze name is accepted (``dforce data maze2d --maze``, ``dforce plan train --maze``,
``dforce plan eval --maze``, YAML ``data.maze``, the Python API) as one of:

* a D4RL name: ``umaze``, ``medium``, ``large`` (also ``maze2d-umaze-v1``);
* a **map file**: ``.txt`` (or any other extension) holding a text map, ``.json`` / ``.yaml`` / ``.yml`` holding a
  list of rows (strings, or lists of 0/1 cells); the file's stem names the maze (``rooms.txt`` -> ``rooms``);
* an **inline map**: the rows of a text map in one string, separated by newlines, ``/`` or ``;``
  (``"#####/#G..#/###.#/#S..#/#####"``), or a list of rows (YAML ``data.maze: ["#####", ...]`` or a 0/1 grid).

Text maps: ``#`` or ``1`` wall; ``.``, ``O``, ``0`` or a space free; ``G`` a goal cell; ``S`` a start cell (both free).
Rows of digits may also be separated by commas or whitespace (``1 1 1`` / ``1,0,1``: numpy ``savetxt`` style).
Without ``G`` the single-task goal is the first free cell (as D4RL); with several, each episode draws one.
Without ``S`` episodes start in any free cell (as D4RL); with ``S`` cells, only there.

Validation (:func:`parse_maze`): rectangular, at least 3x3, enclosed by walls, every free cell connected to every
other; each failure is one :class:`~dforce.errors.DataError` naming the row and column (rows and columns count from 0,
row 0 at the top of the map, as the map is written).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dforce.errors import ConfigError, DataError

WALL_CHARS = "#1"  # wall tiles ('1' as in 0/1 grids)
FREE_CHARS = ".O0 "  # free tiles (D4RL writes 'O'; '0' as in 0/1 grids)
GOAL_CHAR, START_CHAR = "G", "S"
ROW_SEPARATORS = re.compile(r"\r?\n|/|;")  # inline maps: rows separated by newlines, '/' or ';'
MAP_CHARS = set(WALL_CHARS + FREE_CHARS + GOAL_CHAR + START_CHAR)
DIGIT_ROW = re.compile(r"^\s*[01GS](\s*[,\s]\s*[01GS])+\s*,?\s*$")  # "1 0 1", "1,0,1": separated cells
STRUCTURED_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class ParsedMap:
    """A validated map: ``walls (H, W) bool``; goal and start cells as ``((i, j), ...)`` (empty: none marked)."""

    walls: np.ndarray
    goal_cells: tuple[tuple[int, int], ...]
    start_cells: tuple[tuple[int, int], ...]

    def to_text(self) -> str:
        """The map as text rows (``#`` wall, ``.`` free, ``G``/``S`` marked cells), newline-separated."""
        grid = np.where(self.walls, "#", ".").astype("<U1")
        for i, j in self.start_cells:
            grid[i, j] = START_CHAR
        for i, j in self.goal_cells:
            grid[i, j] = GOAL_CHAR
        return "\n".join("".join(r) for r in grid)

    def digest(self) -> str:
        """8 hex digits identifying the walls and marked cells (cache keys, default names)."""
        return hashlib.sha1(self.to_text().encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- parsing


def _cell_char(v, where: str, i: int, j: int) -> str:
    """One cell of a grid row (0/1, bool, '#', '.', 'G', 'S', ...) as a map character."""
    if isinstance(v, (bool, np.bool_)):
        return "#" if v else "."
    if isinstance(v, (int, float, np.integer, np.floating)):
        if v in (0, 1):
            return "1" if v == 1 else "0"
        raise DataError(f"{where}: cell {v!r} at row {i}, column {j} is not 0 (free) or 1 (wall)")
    if isinstance(v, str) and len(v) == 1:
        return v
    raise DataError(f"{where}: cell {v!r} at row {i}, column {j} is not 0/1 or a map character ('#', '.', 'G', 'S')")


def _as_rows(layout, where: str) -> list[str]:
    """Any accepted layout -> a list of map strings (one character per cell)."""
    if isinstance(layout, np.ndarray):
        if layout.ndim != 2:
            raise DataError(f"{where}: a maze grid must be 2-D (rows x columns), got shape {layout.shape}")
        layout = layout.tolist()
    if isinstance(layout, str):
        layout = [r for r in ROW_SEPARATORS.split(layout.strip("\r\n"))]
    rows = list(layout)
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, str):
            r = r.rstrip("\r\n")
            if DIGIT_ROW.match(r):  # "1 0 1" / "1,0,1": separators between single-character cells
                r = "".join(re.split(r"[,\s]+", r.strip().rstrip(",")))
            out.append(r.rstrip())  # the border is wall, so trailing blanks are never cells
        elif isinstance(r, (list, tuple, np.ndarray)):
            out.append("".join(_cell_char(v, where, i, j) for j, v in enumerate(r)))
        else:
            raise DataError(f"{where}: row {i} is {r!r}; a maze is a list of rows (strings or lists of 0/1 cells)")
    return out


def parse_maze_map(layout, where: str = "maze") -> ParsedMap:
    """Parse and validate a map (text rows, one string with row separators, a 0/1 grid, or a 2-D array).

    Raises :class:`DataError` naming the row and column of the first problem: an unknown tile, a row of another
    length, a free cell on the border, a free cell not connected to the others.
    """
    rows = _as_rows(layout, where)
    while rows and not rows[-1].strip():  # a trailing empty line of a file
        rows.pop()
    if len(rows) < 3:
        raise DataError(f"{where}: a maze needs at least 3 rows, got {len(rows)}")
    width = len(rows[0])
    if width < 3:
        raise DataError(f"{where}: a maze needs at least 3 columns, row 0 has {width}")
    walls = np.zeros((len(rows), width), dtype=bool)
    goals, starts = [], []
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{where}: row {i} has {len(r)} cells, row 0 has {width} (a maze must be rectangular)")
        for j, c in enumerate(r):
            if c in WALL_CHARS:
                walls[i, j] = True
            elif c == GOAL_CHAR:
                goals.append((i, j))
            elif c == START_CHAR:
                starts.append((i, j))
            elif c not in FREE_CHARS:
                raise DataError(f"{where}: unknown tile {c!r} at row {i}, column {j} "
                                "(walls '#' or '1', free '.', 'O' or '0', goal 'G', start 'S')")
    H, W = walls.shape
    for i, j in np.argwhere(~walls):
        if i in (0, H - 1) or j in (0, W - 1):
            raise DataError(f"{where}: free cell at row {i}, column {j} is on the border; the maze must be enclosed "
                            "by walls (the point mass would leave it)")
    if walls.all():
        raise DataError(f"{where}: the maze has no free cell")
    cut = _unreachable_cell(walls)
    if cut is not None:
        first = tuple(int(v) for v in np.argwhere(~walls)[0])
        raise DataError(f"{where}: free cell at row {cut[0]}, column {cut[1]} is not connected to the free cell at "
                        f"row {first[0]}, column {first[1]} (every free cell must be reachable)")
    return ParsedMap(walls, tuple(goals), tuple(starts))


def _unreachable_cell(walls: np.ndarray) -> tuple[int, int] | None:
    """The first free cell (row-major) not reachable from the first free cell, or None (4-connectivity)."""
    free = [tuple(int(v) for v in c) for c in np.argwhere(~walls)]
    seen = {free[0]}
    queue = deque([free[0]])
    while queue:
        i, j = queue.popleft()
        for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if not walls[n] and n not in seen:
                seen.add(n)
                queue.append(n)
    return next((c for c in free if c not in seen), None)


def maze_diameter(walls: np.ndarray) -> int:
    """The longest shortest path between two free cells, in cell moves (BFS from every free cell)."""
    free = [tuple(int(v) for v in c) for c in np.argwhere(~walls)]
    best = 0
    for s in free:
        dist = {s: 0}
        queue = deque([s])
        while queue:
            c = queue.popleft()
            for n in ((c[0] + 1, c[1]), (c[0] - 1, c[1]), (c[0], c[1] + 1), (c[0], c[1] - 1)):
                if not walls[n] and n not in dist:
                    dist[n] = dist[c] + 1
                    queue.append(n)
        best = max(best, max(dist.values()))
    return best


# ----------------------------------------------------------------------------- files and inline maps


def looks_inline(spec: str) -> bool:
    """Whether a string is an inline map (only map characters and row separators, at least 3 rows)."""
    rows = [r for r in ROW_SEPARATORS.split(spec.strip("\r\n"))]
    return len(rows) >= 3 and all(set(r) <= MAP_CHARS | {",", "\t"} for r in rows)


def read_map_file(path: str | Path) -> ParsedMap:
    """Parse a map file: ``.json`` / ``.yaml`` / ``.yml`` hold a list of rows, anything else a text map."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the map file ({type(e).__name__}: {e})") from None
    if path.suffix.lower() in STRUCTURED_SUFFIXES:
        try:
            if path.suffix.lower() == ".json":
                rows = json.loads(text)
            else:
                import yaml

                rows = yaml.safe_load(text)
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
            raise DataError(f"{path}: not valid {path.suffix[1:].upper()} ({str(e).splitlines()[0]})") from None
        if isinstance(rows, dict):  # {"maze": [...]} / {"map": [...]}
            key = next((k for k in ("maze", "map", "grid") if k in rows), None)
            if key is None:
                raise DataError(f"{path}: expected a list of rows, or a mapping with a 'maze' list, got keys "
                                f"{', '.join(map(str, rows)) or 'none'}")
            rows = rows[key]
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a list of rows (strings or lists of 0/1), got {type(rows).__name__}")
        return parse_maze_map(rows, where=str(path))
    return parse_maze_map(text.splitlines(), where=str(path))


def resolve_map(spec, where: str = "maze") -> tuple[str, ParsedMap] | None:
    """``(name, ParsedMap)`` of a custom maze spec (file path, inline map string, list of rows, array), or None
    for a string that is neither an existing file nor an inline map (the caller then tries the D4RL names)."""
    if isinstance(spec, (list, tuple, np.ndarray)):
        parsed = parse_maze_map(spec, where)
        return f"custom-{parsed.digest()}", parsed
    if not isinstance(spec, str):
        raise ConfigError(f"{where} must be a maze name, a map file, an inline map or a list of rows, got {spec!r}")
    path = Path(spec).expanduser()
    if "\n" not in spec and path.is_file():
        return path.stem, read_map_file(path)
    if looks_inline(spec):
        parsed = parse_maze_map(spec, where)
        return f"custom-{parsed.digest()}", parsed
    return None


def write_map_file(parsed: ParsedMap, path: str | Path) -> Path:
    """Write a text map (``#``/``.``/``G``/``S``) atomically; returns the path."""
    from dforce.engine.checkpoint import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (parsed.to_text() + "\n").encode())
    return path



# ----------------------------------------------------------------------------- a run's copy of its map

RUN_MAZE_DIR = "maze"  # a planning run keeps its custom map as <run>/maze/<name>.txt (the file stem names the maze)


def save_run_maze(task, run_dir: str | Path) -> Path | None:
    """Copy a custom maze's map into ``run_dir/maze/<name>.txt`` (D4RL mazes: nothing, their name is enough), so the
    run evaluates on the same map after the user's file moved or changed. Returns the path written (or None)."""
    if task.is_d4rl:
        return None
    return write_map_file(task.parsed_map(), Path(run_dir) / RUN_MAZE_DIR / f"{task.name}.txt")


def run_maze_file(run_dir: str | Path) -> Path | None:
    """The map a run was trained on (:func:`save_run_maze`), or None (a D4RL maze, or a run made before the copy)."""
    found = sorted((Path(run_dir) / RUN_MAZE_DIR).glob("*.txt"))
    return found[0] if found else None
