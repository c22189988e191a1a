"""Compositional-generalization toy data (paper Sec. 4.3): corner-to-corner diagonals forming an X.

The data holds only the four straight diagonal trajectories BL->TR, TR->BL, TL->BR, BR->TL. A sequence
model that samples whole sequences reproduces them ("cross"); one that can compose sub-trajectories
(memoryless / short-memory sampling) can also produce paths that switch diagonals at the centre, e.g.
BL->centre->TL, a V shape ("stitched"). :func:`classify_paths` tells them apart.

Classifier rules (defaults in :class:`ClassifierConfig`; world = unit square, corners at
``margin``/``1 - margin`` = 0.1/0.9, so the X's arms have length ~0.57 from the centre):

1. ``other`` unless the path starts *and* ends within ``corner_radius`` (0.15) of a corner and every point
   lies within ``tube`` (0.08, perpendicular distance) of one of the two diagonals (the X).
2. Of those, ``cross`` if the end corner is opposite the start corner and every point is within ``tube``
   of that one diagonal (a straight diagonal of the data).
3. Otherwise ``stitched`` if the path passes within ``centre_radius`` (0.12) of the centre (it must, to
   change arms of the X): V shapes to an adjacent corner, and returns to the start corner.
4. Anything else is ``other``.
Dataset paths deviate from their diagonal by < 0.04 at the 99th percentile (max ~0.053 over 5000 paths,
endpoint jitter included; see :class:`CrossConfig`), inside ``tube``: 5000/5000 classify as cross.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dforce.errors import DataError
from dforce.plotting import save_figure

LABELS = ("cross", "stitched", "other")
DIRECTIONS = ("BL->TR", "TR->BL", "TL->BR", "BR->TL")
_CORNER_UNIT = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], float)  # BL, TR, TL, BR
_DIR_CORNERS = ((0, 1), (1, 0), (2, 3), (3, 2))  # direction -> (start corner, end corner)
_OPPOSITE = (1, 0, 3, 2)


def _corners(margin: float) -> np.ndarray:
    return margin + (1 - 2 * margin) * _CORNER_UNIT  # (4, 2)


@dataclass(frozen=True)
class CrossConfig:
    T: int = 32  # steps per trajectory
    margin: float = 0.1  # corners at (margin, margin) ... (1 - margin, 1 - margin)
    endpoint_jitter: float = 0.02  # uniform +- jitter of start and end points
    path_noise: float = 0.01  # std of a smooth sideways bend (sin bump), world units
    step_noise: float = 0.004  # std of i.i.d. per-step jitter, world units
    speed_noise: float = 0.3  # relative std of per-step progress (speed varies along the path)


def make_cross_dataset(n: int = 1000, seed: int = 0, config: CrossConfig | None = None,
                       with_actions: bool = False):
    """``n`` diagonal trajectories, directions balanced (``i % 4``).

    Returns ``(paths (n, T, 2) float32, directions (n,) int)``, plus ``actions (n, T, 2)`` when
    ``with_actions``: velocities ``a_t = x_{t+1} - x_t`` with ``a_{T-1} = 0`` (stop at the goal), so that
    ``x_{t+1} = x_t + a_t``.
    """
    cfg = config or CrossConfig()
    if n < 1 or cfg.T < 2:
        raise DataError(f"make_cross_dataset: need n >= 1 and T >= 2, got n={n}, T={cfg.T}")
    rng = np.random.default_rng(seed)
    corners = _corners(cfg.margin)
    dirs = np.arange(n) % 4
    se = np.array(_DIR_CORNERS)[dirs]  # (n, 2)
    start = corners[se[:, 0]] + rng.uniform(-cfg.endpoint_jitter, cfg.endpoint_jitter, (n, 2))
    end = corners[se[:, 1]] + rng.uniform(-cfg.endpoint_jitter, cfg.endpoint_jitter, (n, 2))
    inc = np.clip(1 + cfg.speed_noise * rng.standard_normal((n, cfg.T - 1)), 0.1, None)
    s = np.concatenate([np.zeros((n, 1)), np.cumsum(inc, 1)], 1)
    s /= s[:, -1:]  # (n, T) progress 0 -> 1, monotone
    d = end - start
    perp = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)  # (n, 2)
    bend = cfg.path_noise * rng.standard_normal((n, 1)) * np.sin(np.pi * s)  # (n, T), 0 at both ends
    x = start[:, None] + s[..., None] * d[:, None] + bend[..., None] * perp[:, None]
    x[:, 1:-1] += cfg.step_noise * rng.standard_normal((n, cfg.T - 2, 2))
    paths = np.clip(x, 0.0, 1.0).astype(np.float32)  # (n, T, 2)
    if not with_actions:
        return paths, dirs
    actions = np.zeros_like(paths)
    actions[:, :-1] = paths[:, 1:] - paths[:, :-1]
    return paths, dirs, actions


@dataclass(frozen=True)
class ClassifierConfig:
    margin: float = 0.1  # corner positions, as in CrossConfig
    corner_radius: float = 0.15  # start/end must be this close to a corner
    tube: float = 0.08  # max perpendicular distance from the diagonal(s)
    centre_radius: float = 0.12  # a stitched path must pass this close to the centre


def classify_paths(paths: np.ndarray, config: ClassifierConfig | None = None) -> np.ndarray:
    """Label each path ``'cross'``, ``'stitched'`` or ``'other'`` (rules in the module docstring).

    Args:
        paths: ``(N, T, 2)`` positions in the unit square.
    Returns:
        ``(N,)`` array of str labels.
    """
    cfg = config or ClassifierConfig()
    p = np.asarray(paths, np.float64)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape[1] < 2:
        raise DataError(f"classify_paths: paths must be (N, T>=2, 2), got {p.shape}")
    if not np.isfinite(p).all():
        raise DataError("classify_paths: paths contain NaN or inf")
    corners = _corners(cfg.margin)
    d_main = np.abs(p[..., 1] - p[..., 0]) / np.sqrt(2)  # (N, T) distance to y = x  (BL-TR)
    d_anti = np.abs(p[..., 0] + p[..., 1] - 1) / np.sqrt(2)  # (N, T) distance to y = 1 - x  (TL-BR)

    def nearest_corner(q):  # (N, 2) -> (N,) index or -1
        d = np.linalg.norm(q[:, None] - corners[None], axis=-1)
        return np.where(d.min(1) <= cfg.corner_radius, d.argmin(1), -1)

    c0, c1 = nearest_corner(p[:, 0]), nearest_corner(p[:, -1])
    on_x = (np.minimum(d_main, d_anti) <= cfg.tube).all(1)
    valid = (c0 >= 0) & (c1 >= 0) & on_x
    opposite = valid & (c1 == np.array(_OPPOSITE)[np.maximum(c0, 0)])
    one_diag = np.where((c0 <= 1)[:, None], d_main, d_anti).max(1) <= cfg.tube  # BL/TR lie on y=x, TL/BR on y=1-x
    via_centre = (np.linalg.norm(p - 0.5, axis=-1) <= cfg.centre_radius).any(1)
    labels = np.full(len(p), "other", dtype=object)
    labels[valid & via_centre] = "stitched"
    labels[opposite & one_diag] = "cross"
    return labels.astype(str)


def plot_paths(paths: np.ndarray, path_png: str | Path, labels: np.ndarray | None = None,
               max_paths: int = 300, title: str | None = None) -> Path:
    """Draw up to ``max_paths`` paths ``(N, T, 2)`` over the unit square, coloured by label
    (cross blue, stitched orange, other grey; default: classified with :func:`classify_paths`), with the
    label counts in the legend. Writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = np.asarray(paths)
    labels = classify_paths(paths) if labels is None else np.asarray(labels).astype(str)
    colors = {"cross": "tab:blue", "stitched": "tab:orange", "other": "0.6"}
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    for q, lab in zip(paths[:max_paths], labels[:max_paths]):
        ax.plot(q[:, 0], q[:, 1], color=colors.get(lab, "k"), lw=0.7, alpha=0.6)
        ax.plot(q[0, 0], q[0, 1], "o", color=colors.get(lab, "k"), ms=2)
    for lab, c in colors.items():
        ax.plot([], [], color=c, label=f"{lab} ({int((labels == lab).sum())})")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=title or f"{len(paths)} paths")
    ax.legend(loc="upper center", fontsize=7, ncol=3, frameon=False)
    return save_figure(fig, path_png, dpi=100, bbox_inches="tight")
