"""Forecast fan charts: history tail, median, 50% / 90% bands and (when known) the actual future."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dforce.errors import DataError
from dforce.plotting import save_figure


def plot_forecast_fan(path: str | Path, history: np.ndarray, samples: np.ndarray, actual: np.ndarray | None = None,
                      names: list[str] | None = None, history_tail: int = 60, max_series: int = 8,
                      title: str | None = None) -> Path:
    """Write a PNG with one panel per series.

    Args:
        path: output ``.png`` file (parent folders are created).
        history: ``(T, D)`` observed values before the forecast (NaN = missing); the last
            ``history_tail`` rows are drawn.
        samples: ``(S, H, D)`` forecast samples for the H steps after ``history``.
        actual: optional ``(H, D)`` true future values.
        names: D series names for the panel titles.
        history_tail: history rows to show.
        max_series: draw at most this many series (the first ones).
        title: figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    history, samples = np.asarray(history, dtype=float), np.asarray(samples, dtype=float)
    S, H, D = samples.shape
    if history.ndim != 2 or history.shape[1] != D or (actual is not None and np.shape(actual) != (H, D)):
        raise DataError(f"history must be (T, {D}) and actual ({H}, {D}); got {history.shape} and "
                         f"{None if actual is None else np.shape(actual)}")
    tail = history[-history_tail:]
    t_hist = np.arange(-len(tail), 0)
    t_fut = np.arange(H)
    q05, q25, q50, q75, q95 = np.nanquantile(samples, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)  # each (H, D)
    n = min(D, max_series)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.4 * rows), squeeze=False)
    for d, ax in enumerate(axes.flat):
        if d >= n:
            ax.axis("off")
            continue
        ax.plot(t_hist, tail[:, d], color="black", lw=1, label="history")
        ax.fill_between(t_fut, q05[:, d], q95[:, d], color="C0", alpha=0.2, lw=0, label="90%")
        ax.fill_between(t_fut, q25[:, d], q75[:, d], color="C0", alpha=0.4, lw=0, label="50%")
        ax.plot(t_fut, q50[:, d], color="C0", lw=1.2, label="median")
        if actual is not None:
            ax.plot(t_fut, np.asarray(actual, dtype=float)[:, d], color="C3", lw=1, label="actual")
        ax.axvline(-0.5, color="grey", lw=0.5, ls=":")
        ax.set_title(names[d] if names else f"series {d}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def pick_series(history: np.ndarray, max_panels: int = 6) -> list[int]:
    """Series to draw when there are many: the first two, then the most volatile (mean |change| / mean |y|)."""
    N = history.shape[0]
    if N <= max_panels:
        return list(range(N))
    with np.errstate(all="ignore"):
        vol = np.nanmean(np.abs(np.diff(history, axis=1)), 1) / np.nanmean(np.abs(history), 1)
    vol = np.where(np.isfinite(vol), vol, -np.inf)
    rest = [int(i) for i in np.argsort(-vol) if i >= 2][: max_panels - 2]
    return [0, 1, *rest]


def plot_quantile_grid(path: str | Path, history: np.ndarray, quantiles: np.ndarray, actual: np.ndarray | None,
                       names: list[str], dates, max_panels: int = 6, title: str | None = None,
                       levels=None) -> Path:
    """Fan charts with dates on the x-axis, one panel per series (a grid of the first / most volatile series).

    Args:
        history: ``(N, P)`` values before the forecast (NaN = missing).
        quantiles: ``(Q, N, H)`` forecast quantiles at ``levels`` (default 0.05..0.95, step 0.05).
        actual: ``(N, H)`` true values or None.
        names: N series names.
        dates: ``P + H`` timestamps of the history and forecast rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dforce.recipes.forecast.metrics import CRPS_QUANTILES

    levels = np.round(np.asarray(levels if levels is not None else CRPS_QUANTILES), 6).tolist()
    Q, N, H = quantiles.shape
    P = history.shape[1]
    dates = np.asarray(dates, dtype="datetime64[ns]")
    if len(dates) != P + H or history.shape[0] != N or len(levels) != Q:
        raise DataError(f"history ({history.shape}), quantiles ({quantiles.shape}) and {len(dates)} dates disagree")
    at = {v: i for i, v in enumerate(levels)}
    pick = pick_series(history, max_panels)
    cols = min(len(pick), 2)
    rows = (len(pick) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 2.6 * rows), squeeze=False)
    for ax, d in zip(axes.flat, pick):
        fut = dates[P:]
        ax.plot(dates[:P], history[d], color="black", lw=1, label="history")
        for lo, hi, a in ((0.05, 0.95, 0.2), (0.25, 0.75, 0.4)):
            if lo in at and hi in at:
                ax.fill_between(fut, quantiles[at[lo], d], quantiles[at[hi], d], color="C0", alpha=a, lw=0,
                                label=f"{round((hi - lo) * 100)}%")
        ax.plot(fut, quantiles[at[0.5], d], color="C0", lw=1.2, label="median")
        if actual is not None:
            ax.plot(fut, actual[d], color="C3", lw=1, label="actual")
        ax.set_title(str(names[d]), fontsize=9)
        ax.tick_params(labelsize=7)
        for lab in ax.get_xticklabels():
            lab.set_rotation(20)
    for ax in list(axes.flat)[len(pick):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
