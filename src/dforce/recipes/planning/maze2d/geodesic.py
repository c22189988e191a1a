"""Shortest-path distances through the positions an offline dataset visits (a guidance distance that knows walls).

The paper's planning guidance is the Euclidean distance to the goal. Where a wall stands between the ball and
the goal, a plan pressed against that wall minimizes it (docs/planning.md, "Where the failed episodes end").
:class:`GeodesicField` replaces it with the length of the shortest path to the goal *through the places the
offline data has been* — the idea of search on the replay buffer (Eysenbach et al. 2019), on a grid:

    1. ``visited``: the cells of a square grid (side ``cell``) that contain at least one dataset position. The
       data never enters a wall, so these are free space; nothing else about the maze is used (no map);
    2. per goal, Dijkstra over the visited cells (8-connected, edge length = the distance between cell
       centres), started from the grid points around the goal at their Euclidean distances, gives the
       shortest-path length from the goal to every visited cell;
    3. an unvisited cell (a wall, or outside) takes the value of its *nearest visited cell* plus
       ``outside_slope`` × the distance to it: the field rises into a wall from each side up to the wall's
       middle, where the two sides meet, so the gradient at a wall points back to the free space nearest to it.
       A position past the middle of a wall (e.g. where planned velocities lead through it) is drawn on to the
       far side; a steeper slope raises that barrier but makes the field steep next to every wall (the planner
       then wanders: ``outside_slope=10`` scored lower on Large than 2, docs/planning.md);
    4. the field is read at any position by bilinear interpolation (:meth:`GeodesicField.distance_fn`), which
       torch differentiates: the guidance gradient follows corridors round walls.

Step 3 (``walls="nearest"``) makes the field jump at a wall's middle wherever its two sides are far apart along the
corridors, and a guided position past the middle is drawn on through the wall. Two alternatives give a wall to one
side: ``entry_side`` (the default) to the side each path of positions entered it from (a position inside a wall is
worth the path's last position outside it plus the slope × the distance from there, in
:meth:`GeodesicField.distance_fn`), ``higher_side`` to the side farther from the goal (the field rises across the
whole wall and drops at its far edge, :meth:`GeodesicField._own_walls`). ``entry_side`` planned best
(docs/planning.md, "Who owns a wall").

Inside one open region it equals the Euclidean distance up to the 8-connected grid's error (at most 8 %,
on directions between the axes and the diagonals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dforce.errors import ConfigError, DataError

WALLS = ("nearest", "higher_side", "entry_side")  # GeodesicField.walls
NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]  # 8-connected grid


@dataclass
class GeodesicField:
    """A grid over the dataset's positions. ``origin``: world position of grid point (0, 0) (a cell centre);
    ``visited: (nx, ny)`` bool, axis 0 along the first coordinate; ``cell``: grid spacing (world units)."""

    origin: np.ndarray
    cell: float
    visited: np.ndarray
    outside_slope: float = 2.0  # rise per unit of distance into unvisited space (walls); 2 beat 10 on Large
    # which visited cell an unvisited point's value starts from: "nearest" (step 3 of the module docstring),
    # "higher_side" (the wall belongs to the side farther from the goal; see _own_walls) or "entry_side" (the side
    # a path of positions entered it from; see distance_fn)
    walls: str = "entry_side"
    wall_depth: float = 0.2  # entry_side: a position this far from any visited cell is inside a wall
    wall_radius: float = 1.5  # higher_side: visited cells this close may own a wall point (a maze wall is 1 thick)
    side_lipschitz: float = 1.5  # higher_side: an owner's value counts minus this × its distance (> 1: see _own_walls)
    _cache: dict = field(default_factory=dict, repr=False)  # goal bytes -> (nx, ny) float32 field

    @classmethod
    def from_positions(cls, positions: np.ndarray, cell: float = 0.1, margin: float = 0.5,
                       outside_slope: float = 2.0, walls: str = "entry_side") -> "GeodesicField":
        """``positions: (N, 2)`` world positions of a dataset; ``margin``: grid beyond their bounding box."""
        if cell <= 0:
            raise ConfigError(f"plan.geodesic_cell must be > 0, got {cell}")
        if outside_slope <= 0:
            raise ConfigError(f"plan.geodesic_outside_slope must be > 0, got {outside_slope}")
        if walls not in WALLS:
            raise ConfigError(f"plan.geodesic_walls must be one of {', '.join(WALLS)}, got {walls!r}")
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        if len(pos) == 0 or not np.isfinite(pos).all():
            raise DataError("geodesic field: dataset positions must be a non-empty finite (N, 2) array")
        lo = pos.min(0) - margin
        n = np.ceil((pos.max(0) + margin - lo) / cell).astype(int) + 1  # grid points per axis
        idx = np.rint((pos - lo) / cell).astype(int)  # nearest grid point = the cell (centred on it) holding each
        visited = np.zeros(tuple(n), dtype=bool)
        visited[idx[:, 0], idx[:, 1]] = True
        return cls(lo, float(cell), visited, float(outside_slope), walls)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.visited.shape)  # type: ignore[return-value]

    def _graph(self):
        """Sparse graph over visited cells (8-connected), built once; returns (matrix, node id per cell)."""
        if "graph" not in self._cache:
            from scipy.sparse import coo_matrix

            nx, ny = self.shape
            node = -np.ones(self.shape, dtype=np.int64)
            node[self.visited] = np.arange(int(self.visited.sum()))
            rows, cols, w = [], [], []
            for di, dj in NEIGHBOURS:
                a = node[max(0, -di): nx - max(0, di), max(0, -dj): ny - max(0, dj)]
                b = node[max(0, di): nx - max(0, -di), max(0, dj): ny - max(0, -dj)]
                ok = (a >= 0) & (b >= 0)
                rows.append(a[ok])
                cols.append(b[ok])
                w.append(np.full(int(ok.sum()), self.cell * np.hypot(di, dj)))
            m = int(self.visited.sum())
            graph = coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)).tocsr()
            self._cache["graph"] = (graph, node)
        return self._cache["graph"]

    def distances(self, goals: np.ndarray) -> np.ndarray:
        """``(G, nx, ny)`` float32: the shortest-path length from each goal ``goals: (G, 2)`` (world) to every
        grid point (see the module docstring; cached per goal)."""
        goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)
        missing = [g for g in goals if g.tobytes() not in self._cache]
        if missing:
            for g, f in zip(missing, self._solve(np.stack(missing))):
                self._cache[g.tobytes()] = f
        return np.stack([self._cache[g.tobytes()] for g in goals])

    def _solve(self, goals: np.ndarray) -> np.ndarray:
        from scipy.sparse import csr_matrix, hstack, vstack
        from scipy.sparse.csgraph import dijkstra

        graph, node = self._graph()
        m, G = graph.shape[0], len(goals)
        # one extra source node per goal, linked (one way) to the visited grid points of the goal's cell and its
        # neighbours at their Euclidean distances, so the field starts exact around the goal
        u = (goals - self.origin) / self.cell  # (G, 2) continuous grid coordinates
        src_rows, src_cols, src_w = [], [], []
        for k, (x, y) in enumerate(u):
            i0, j0 = int(np.floor(x)), int(np.floor(y))
            for i in range(i0 - 1, i0 + 3):
                for j in range(j0 - 1, j0 + 3):
                    if 0 <= i < self.shape[0] and 0 <= j < self.shape[1] and node[i, j] >= 0:
                        src_rows.append(k)
                        src_cols.append(node[i, j])
                        src_w.append(self.cell * np.hypot(i - x, j - y))
            if not src_rows or src_rows[-1] != k:
                raise DataError(f"goal {goals[k].tolist()} is not next to any position of the dataset "
                                "(the geodesic distance needs a goal in space the data visits)")
        src = csr_matrix((src_w, (src_rows, src_cols)), shape=(G, m))
        full = vstack([hstack([graph, csr_matrix((m, G))]), hstack([src, csr_matrix((G, G))])]).tocsr()
        d = dijkstra(full, directed=True, indices=np.arange(m, m + G))[:, :m]  # (G, m)
        reach = np.isfinite(d)
        # visited cells the goal cannot reach (separate islands of data): as far as the farthest reachable one
        far = np.where(reach.any(1), np.where(reach, d, -np.inf).max(1), 0.0)
        d = np.where(reach, d, far[:, None] + self.cell)
        # unvisited grid points: nearest visited cell's value + slope × the distance to it
        gap, (ni, nj) = self._nearest_visited()
        out = d[:, node[ni, nj]] + self.outside_slope * self.cell * gap  # (G, nx, ny)
        if self.walls == "higher_side":
            out = self._own_walls(d[:, node.clip(min=0)], out)
        return out.astype(np.float32)

    def _nearest_visited(self):
        """(gap ``(nx, ny)``: grid points to the nearest visited cell, 0 on visited ones; its indices ``(2, nx, ny)``),
        computed once."""
        if "nearest" not in self._cache:
            from scipy.ndimage import distance_transform_edt

            self._cache["nearest"] = distance_transform_edt(~self.visited, return_indices=True)
        return self._cache["nearest"]

    def _own_walls(self, on_grid: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """``walls="higher_side"``: each unvisited grid point ``u`` within ``wall_radius`` of the data takes its value
        from the visited cell ``v`` that maximizes ``value(v) - side_lipschitz · |u - v|`` (its *owner*), plus
        ``outside_slope · |u - v|``. ``on_grid: (G, nx, ny)`` the visited cells' values (anything elsewhere);
        ``nearest: (G, nx, ny)`` the "nearest" field (kept where no visited cell is within the radius).

        The field grows by at most 1 per unit along free space, so with ``side_lipschitz`` λ > 1 the owner on a wall's
        own side is near the nearest cell and the point rises into the wall from that side, more steeply than with
        "nearest" (beside a straight wall along which the field grows by 1 per unit, the owner sits off the
        perpendicular and the rise is (1 + slope·λ)/√(λ² − 1) per unit: 3.6 at the defaults against 2). Across a wall
        whose far side is nearer the goal by more than λ × the wall's thickness, the near (higher) side owns the whole
        wall: the field keeps rising up to the far edge and drops there, so no point inside the wall is drawn
        through it (with "nearest", a point past the middle is). The drop is a cliff for positions that enter the
        wall from the far side."""
        G, nx, ny = nearest.shape
        rc = int(np.floor(self.wall_radius / self.cell))
        vals = np.where(self.visited, on_grid, -np.inf)  # (G, nx, ny)
        pad = np.pad(vals, ((0, 0), (rc, rc), (rc, rc)), constant_values=-np.inf)
        best = np.full(nearest.shape, -np.inf)
        best_len = np.zeros(nearest.shape)
        for di in range(-rc, rc + 1):
            for dj in range(-rc, rc + 1):
                length = self.cell * np.hypot(di, dj)
                if length > self.wall_radius:
                    continue
                cand = pad[:, rc + di: rc + di + nx, rc + dj: rc + dj + ny]  # value of the cell at u + (di, dj)
                score = cand - self.side_lipschitz * length
                better = score > best
                best = np.where(better, score, best)
                best_len = np.where(better, length, best_len)
        owned = np.isfinite(best) & ~self.visited
        value = best + (self.side_lipschitz + self.outside_slope) * best_len  # value(owner) + slope · |u - owner|
        return np.where(owned, value, nearest)

    def distance_fn(self, goals: np.ndarray, device=None):
        """``f(p: (R, L, 2) world) -> (R, L)``: the distance to goal ``r // (R / G)`` of each row's positions
        (rows are the G goals' episodes, each repeated R / G times in a row: MCG futures, candidates), by
        bilinear interpolation of :meth:`distances` (differentiable in ``p``; clamped at the grid's edge).

        With ``walls="entry_side"`` each row's L positions are read as a path: a position more than ``wall_depth``
        from the data is worth the row's last position before it that is not, plus ``outside_slope`` × the distance
        from there (a row that starts inside a wall keeps the field's values until it leaves)."""
        fields = torch.as_tensor(self.distances(goals), device=device)  # (G, nx, ny)
        G, nx, ny = fields.shape
        inside = None
        if self.walls == "entry_side":  # (nx·ny,) bool: grid points inside a wall
            inside = torch.as_tensor(self._nearest_visited()[0] * self.cell > self.wall_depth, device=device).reshape(-1)
        flat = fields.reshape(-1)  # (G·nx·ny,): goal g's field starts at g·nx·ny
        origin = torch.as_tensor(self.origin, dtype=torch.float32, device=device)
        top = torch.tensor([nx - 1, ny - 1], dtype=torch.float32, device=device)

        def f(p: torch.Tensor) -> torch.Tensor:
            R = p.shape[0]
            if R % G:
                raise ValueError(f"positions have {R} rows, not a multiple of the {G} goals")
            u = ((p - origin.to(p)) / self.cell).clamp(min=torch.zeros_like(top).to(p), max=top.to(p))  # (R, L, 2)
            i0 = u.detach().floor().clamp(max=top.to(p) - 1).long()  # lower grid point
            w = u - i0.to(p)  # (R, L, 2) in [0, 1], carries the gradient
            base = (torch.arange(R, device=p.device) // (R // G) * (nx * ny)).unsqueeze(1)  # (R, 1): the row's goal
            values = flat.to(p)
            at = lambda di, dj: values[base + (i0[..., 0] + di) * ny + i0[..., 1] + dj]  # noqa: E731
            wx, wy = w[..., 0], w[..., 1]
            d = ((1 - wx) * (1 - wy) * at(0, 0) + (1 - wx) * wy * at(0, 1)
                 + wx * (1 - wy) * at(1, 0) + wx * wy * at(1, 1))
            if inside is None:
                return d
            # entry_side: a position inside a wall is worth the last position before it (along L) that was not,
            # plus outside_slope × the distance from there: the wall belongs to the side the path came from
            near = u.detach().round().long()  # (R, L, 2) nearest grid point
            wall = inside[near[..., 0] * ny + near[..., 1]]  # (R, L)
            t = torch.arange(p.shape[1], device=p.device).expand_as(wall)
            last = torch.where(wall, -1, t).cummax(1).values  # (R, L): index of the last free position so far
            entered = wall & (last >= 0)
            j = last.clamp(min=0)
            p_in = p.gather(1, j.unsqueeze(-1).expand_as(p))  # (R, L, 2) where the path entered the wall
            from_entry = d.gather(1, j) + self.outside_slope * ((p - p_in).pow(2).sum(-1) + 1e-12).sqrt()
            return torch.where(entered, from_entry, d)

        return f
