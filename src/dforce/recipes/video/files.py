"""Your own videos: load ``.npy`` / ``.npz`` frame arrays, validate them, and serve random windows.

File format:
- ``.npy``: one ``(N, T, H, W, C) uint8`` array of frames (``C`` = 1 or 3), no actions;
- ``.npz``: key ``frames`` as above and optionally ``actions (N, T, A)`` float (``actions[:, t]`` is
  applied after ``frames[:, t]``; see :mod:`dforce.recipes.video.common`).

Every problem raises :class:`dforce.errors.DataError` with one sentence naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dforce.recipes.video.common import VideoData, to_model_frames
from dforce.errors import DataError


def validate_video_arrays(frames: np.ndarray, actions: np.ndarray | None, where: str,
                          min_length: int = 2) -> None:
    """Raise :class:`DataError` unless ``frames (N, T, H, W, C)`` uint8 (or integral floats in [0, 255])
    and ``actions (N, T, A)`` finite are consistent and sequences have at least ``min_length`` frames."""
    if frames.ndim != 5:
        raise DataError(f"{where}: frames must have 5 dims (N, T, H, W, C), got shape {tuple(frames.shape)}")
    if frames.shape[-1] not in (1, 3):
        raise DataError(f"{where}: frames must be channels-last with C in (1, 3), got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.number) or np.issubdtype(frames.dtype, np.complexfloating):
            raise DataError(f"{where}: frames must be uint8, got dtype {frames.dtype}")
        if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
            raise DataError(f"{where}: frames contain NaN or inf")
        lo, hi = float(frames.min()), float(frames.max())
        if lo < 0 or hi > 255 or (hi <= 1.0 and frames.size > 0):
            raise DataError(f"{where}: frames must be uint8 in [0, 255], got dtype {frames.dtype} with range "
                            f"[{lo:g}, {hi:g}] (convert with (x * 255).round().astype(np.uint8) if in [0, 1])")
        raise DataError(f"{where}: frames must be uint8, got dtype {frames.dtype} (values look like [0, 255]: "
                        "use .astype(np.uint8))")
    if frames.shape[0] < 1:
        raise DataError(f"{where}: frames contain no videos (N = 0)")
    if frames.shape[1] < min_length:
        raise DataError(f"{where}: sequences have {frames.shape[1]} frames, need at least {min_length}")
    if actions is None:
        return
    if actions.ndim != 3:
        raise DataError(f"{where}: actions must have 3 dims (N, T, A), got shape {tuple(actions.shape)}")
    if actions.shape[:2] != frames.shape[:2]:
        raise DataError(f"{where}: actions (N, T) = {actions.shape[:2]} do not match frames (N, T) = {frames.shape[:2]}")
    if not np.issubdtype(actions.dtype, np.number):
        raise DataError(f"{where}: actions must be numeric, got dtype {actions.dtype}")
    if not np.isfinite(actions).all():
        raise DataError(f"{where}: actions contain NaN or inf")


def load_video_file(path: str | Path, min_length: int = 2) -> VideoData:
    """Load and validate a ``.npy`` / ``.npz`` video file.

    Returns:
        :class:`VideoData` with ``frames (N, T, H, W, C) uint8`` and ``actions (N, T, A) float32``
        (``A = 0`` when the file has none).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        if path.suffix == ".npy":
            frames, actions = np.load(path, allow_pickle=False), None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "frames" not in z:
                    raise DataError(f"{path}: missing key 'frames' (found {', '.join(z.files) or 'no keys'})")
                frames = z["frames"]
                actions = z["actions"] if "actions" in z else None
        else:
            raise DataError(f"{path}: unsupported extension {path.suffix!r}, expected .npy or .npz")
    except DataError:
        raise
    except Exception as e:  # corrupt zip, pickled object arrays, truncated file
        raise DataError(f"{path}: cannot be read as a numpy array file ({type(e).__name__}: {e})") from e
    validate_video_arrays(frames, actions, str(path), min_length)
    if actions is None:
        actions = np.zeros((*frames.shape[:2], 0), np.float32)
    return VideoData(frames, actions.astype(np.float32), tuple(f"a{i}" for i in range(actions.shape[-1])))


class VideoWindowDataset(Dataset):
    """Windows of ``window`` consecutive frames from every video (start every ``stride`` frames).

    Shuffle with the DataLoader to get random windows. Item ``i`` is a dict
    ``{'frames': (T, C, H, W) float32 in [-1, 1], 'actions': (T, A) float32}`` where
    ``actions[t]`` follows ``frames[t]`` (the convention of :mod:`dforce.recipes.video.common`).

    Args:
        data: a :class:`VideoData` (``frames (N, L, H, W, C) uint8``, ``actions (N, L, A)``).
        window: ``T``, frames per item.
        stride: distance between consecutive window starts.
    """

    def __init__(self, data: VideoData, window: int, stride: int = 1):
        N, L = data.frames.shape[:2]
        if window < 1 or stride < 1:
            raise DataError(f"VideoWindowDataset needs window >= 1 and stride >= 1, got {window}, {stride}")
        if L < window:
            raise DataError(f"VideoWindowDataset: sequences have {L} frames, shorter than the window of {window}")
        self.frames = torch.from_numpy(np.ascontiguousarray(data.frames))  # (N, L, H, W, C) uint8, converted per item
        self.actions = torch.from_numpy(np.ascontiguousarray(data.actions, dtype=np.float32))
        self.window = window
        starts = torch.arange(0, L - window + 1, stride)
        self.index = torch.cartesian_prod(torch.arange(N), starts)  # (N * n_starts, 2): (video, start)

    @classmethod
    def from_file(cls, path: str | Path, window: int, stride: int = 1) -> "VideoWindowDataset":
        return cls(load_video_file(path, min_length=window), window, stride)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n, s = self.index[i].tolist()
        sl = slice(s, s + self.window)
        return {"frames": to_model_frames(self.frames[n, sl]), "actions": self.actions[n, sl]}
