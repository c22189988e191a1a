"""Side-by-side rollout animations (GIF, MP4 when ``imageio-ffmpeg`` is installed) and metric plots.

:func:`write_rollout_video` tiles several rollouts into one animation: one row per rollout, columns
``truth | method A | method B | ...`` with the method names on a header and the frame index (marked
``ctx`` while frames are given context) on every frame. :func:`plot_horizon_curves` draws PSNR /
Fréchet (or any metric) against the rollout horizon, one line per method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dforce.recipes.video.common import to_uint8_frames
from dforce.errors import ConfigError
from dforce.plotting import save_figure

_PAD = 2  # pixels between tiles
_HEADER = 26  # two label lines (method names, time step) of the ~11 px PIL default font


def _as_uint8(video) -> np.ndarray:
    """``(N, L, C, H, W)`` float in [-1, 1] tensor or ``(N, L, H, W, C)`` uint8 array -> ``(N, L, H, W, 3) uint8``."""
    if torch.is_tensor(video):
        video = to_uint8_frames(video)
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 5:
        raise ConfigError(f"rollout videos must be (N, L, C, H, W) float tensors or (N, L, H, W, C) uint8, got {video.dtype} {video.shape}")
    return np.repeat(video, 3, axis=-1) if video.shape[-1] == 1 else video


def _text(img: np.ndarray, xy: tuple[int, int], text: str, fill=(255, 255, 255)) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    ImageDraw.Draw(im).text(xy, text, fill=fill)
    return np.array(im)


def tile_rollouts(videos: dict[str, object], context: int = 0, scale: int = 2,
                  max_rows: int = 4) -> np.ndarray:
    """Tile videos into labelled animation frames.

    Args:
        videos: ordered ``{label: video}``, e.g. ``{'truth': x, 'DF': a, 'teacher forcing': b}``; each
            ``(N, L, C, H, W)`` float in [-1, 1] or ``(N, L, H, W, C)`` uint8, same ``N, L, H, W``.
        context: number of leading frames that were given to the models (labelled ``ctx``).
        scale: nearest-neighbour upscaling of each tile.
        max_rows: at most this many rollouts (rows).
    Returns:
        ``(L, H_out, W_out, 3) uint8``.
    """
    if not videos:
        raise ConfigError("tile_rollouts needs at least one video")
    vids = {k: _as_uint8(v)[:max_rows] for k, v in videos.items()}
    shapes = {v.shape for v in vids.values()}
    if len(shapes) != 1:
        raise ConfigError(f"tile_rollouts needs videos of one shape, got {sorted(shapes)}")
    N, L, H, W, _ = shapes.pop()
    h, w = H * scale, W * scale
    col_w = max(w, 6 * max(len(k) for k in vids) + 4)  # room for the label
    cols = len(vids)
    out = np.zeros((L, _HEADER + N * (h + _PAD), cols * (col_w + _PAD), 3), np.uint8)
    header = np.zeros((_HEADER, out.shape[2], 3), np.uint8)
    for j, name in enumerate(vids):
        header = _text(header, (j * (col_w + _PAD) + 2, 1), name)
    out[:, :_HEADER] = header
    for j, v in enumerate(vids.values()):
        up = v.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, L, h, w, 3)
        x0 = j * (col_w + _PAD) + (col_w - w) // 2
        for i in range(N):
            y0 = _HEADER + i * (h + _PAD)
            out[:, y0:y0 + h, x0:x0 + w] = up[i]
    for t in range(L):
        label = f"t={t}" + (" ctx" if t < context else "")
        out[t] = _text(out[t], (2, 13), label, fill=(255, 220, 60))
    return out


def write_rollout_video(path: str | Path, videos: dict[str, object], context: int = 0, fps: int = 10,
                        scale: int = 2, max_rows: int = 4) -> Path:
    """Write :func:`tile_rollouts` to ``path`` (``.gif`` always works; ``.mp4`` needs ``imageio-ffmpeg``).

    Returns the path written.
    """
    import imageio.v2 as imageio

    path = Path(path)
    frames = tile_rollouts(videos, context, scale, max_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    elif path.suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"{path}: writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg); use .gif") from e
        pad = [(0, 0), (0, (-frames.shape[1]) % 16), (0, (-frames.shape[2]) % 16), (0, 0)]  # codec block size
        imageio.mimsave(path, list(np.pad(frames, pad)), fps=fps, macro_block_size=16)
    else:
        raise ConfigError(f"{path}: unsupported animation extension {path.suffix!r}, expected .gif or .mp4")
    return path


def plot_horizon_curves(path: str | Path, curves: dict[str, dict[str, np.ndarray]], train_length: int | None = None,
                        title: str = "") -> Path:
    """Metric-vs-horizon line plots, one panel per metric, one line per method.

    Args:
        curves: ``{method: {metric: (L,) values per rollout step}}``, e.g. from ``per_frame_metrics``
            (or ``{metric: (x, y)}`` tuples for sparse points such as horizon buckets).
        train_length: draws dotted lines at 1x, 5x, 10x, 30x this length (within the plotted range).
        Metrics whose name contains "frechet" get a log y axis.
    Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(m for c in curves.values() for m in c))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for method, c in curves.items():
            if metric not in c:
                continue
            val = c[metric]
            x, y = val if isinstance(val, tuple) else (np.arange(len(val)), val)
            y = y.cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
            ax.plot(np.asarray(x), y, label=method, marker="o" if len(y) < 12 else None)
        if train_length:
            xmax = ax.get_xlim()[1]
            for m in (1, 5, 10, 30):
                if m * train_length <= xmax:
                    ax.axvline(m * train_length, color="grey", ls=":", lw=0.8)
        if "frechet" in metric.lower():
            ax.set_yscale("log")  # blow-ups span orders of magnitude
        ax.set_xlabel("rollout step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_rollout_strip(path: str | Path, videos: dict[str, object], times: list[int], episode: int = 0,
                        scale: int = 3) -> Path:
    """A still PNG of one rollout: one row per video (``truth``, methods), one column per frame index.

    Args:
        videos: ordered ``{label: video}`` as in :func:`tile_rollouts`.
        times: frame indices to show (e.g. the last context frame, the first generated ones, 5T, 10T, 30T).
        episode: which rollout (row ``episode`` of every video).
    """
    vids = {k: _as_uint8(v)[episode] for k, v in videos.items()}  # (L, H, W, 3)
    L, H, W, _ = next(iter(vids.values())).shape
    times = [t for t in times if 0 <= t < L]
    if not times:
        raise ConfigError(f"write_rollout_strip: no frame index in {times} is inside the {L}-frame videos")
    h, w = H * scale, W * scale
    label_w = 6 * max(len(k) for k in vids) + 6
    col_w = max(w, 6 * len(f"t={max(times)}") + 4)
    out = np.zeros((14 + len(vids) * (h + _PAD), label_w + len(times) * (col_w + _PAD), 3), np.uint8)
    for j, t in enumerate(times):
        out = _text(out, (label_w + j * (col_w + _PAD) + 2, 1), f"t={t}", fill=(255, 220, 60))
    for i, (name, v) in enumerate(vids.items()):
        y0 = 14 + i * (h + _PAD)
        out = _text(out, (2, y0 + h // 2 - 6), name)
        for j, t in enumerate(times):
            x0 = label_w + j * (col_w + _PAD)
            out[y0:y0 + h, x0:x0 + w] = v[t].repeat(scale, 0).repeat(scale, 1)
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path)
    return path


def write_rollout_outputs(stem: str | Path, videos: dict[str, object], context: int, fps: int = 10,
                          strip_times: list[int] | None = None, strips: int = 2, max_rows: int = 4) -> dict[str, Path]:
    """Every output of one evaluation: ``<stem>.gif`` and ``<stem>.mp4`` (rows = rollouts, columns = ``videos``, e.g.
    truth / model / copy last) and ``<stem>_strip<i>.png`` for the first ``strips`` rollouts (rows = ``videos``,
    columns = ``strip_times``). The MP4 needs ``imageio-ffmpeg`` (the ``video`` extra); without it only the GIF and
    PNGs are written. Returns ``{"gif", "mp4", "strip0", ...}`` paths."""
    stem = Path(stem)
    files = {"gif": write_rollout_video(stem.parent / f"{stem.name}.gif", videos, context, fps, max_rows=max_rows)}
    try:
        files["mp4"] = write_rollout_video(stem.parent / f"{stem.name}.mp4", videos, context, fps, max_rows=max_rows)
    except ConfigError:  # imageio-ffmpeg missing: the GIF carries the same frames
        pass
    n = next(iter(videos.values())).shape[0]
    L = next(iter(videos.values())).shape[1]
    times = strip_times or [context - 1, context, context + 1, L - 1]
    for i in range(min(strips, n)):
        files[f"strip{i}"] = write_rollout_strip(stem.parent / f"{stem.name}_strip{i}.png", videos, times, episode=i)
    return files
