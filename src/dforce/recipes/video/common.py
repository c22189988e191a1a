"""Array conventions shared by the video datasets (ViZDoom, synthetic digits, your own files).

Every video source in dforce returns a :class:`VideoData` with

- ``frames``: ``(N, T, H, W, 3) uint8`` RGB, channels-last (what files and GIFs use);
- ``actions``: ``(N, T, A) float32`` one-hot.

**Alignment convention** (the same for every source): ``actions[:, t]`` is the action taken *after*
observing ``frames[:, t]``; applying it to the environment produces ``frames[:, t + 1]``. A world
model therefore predicts frame ``t + 1`` from frames ``<= t`` and actions ``<= t``. The last action
``actions[:, T - 1]`` was executed too but its resulting frame is not stored. When a model wants, for
every frame token, the action that *led into* it, use :func:`actions_into_frames` (action ``t - 1``,
and zeros for ``t = 0``).

Models consume frames as float ``(B, T, C, H, W)`` in ``[-1, 1]``: see :func:`to_model_frames` and
:func:`to_uint8_frames`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class VideoData:
    """A set of action-conditioned videos.

    Attributes:
        frames: ``(N, T, H, W, 3) uint8``.
        actions: ``(N, T, A) float32`` one-hot; ``actions[:, t]`` follows ``frames[:, t]``.
        action_names: ``A`` names, one per action index.
        episode_seeds: ``(N,) int64`` environment seed of each episode (replays it), or None.
    """

    frames: np.ndarray
    actions: np.ndarray
    action_names: tuple[str, ...]
    episode_seeds: np.ndarray | None = None

    def save(self, path) -> None:
        extra = {} if self.episode_seeds is None else {"episode_seeds": self.episode_seeds}
        np.savez_compressed(path, frames=self.frames, actions=self.actions,
                            action_names=np.array(self.action_names), **extra)

    @classmethod
    def load(cls, path) -> "VideoData":
        with np.load(path) as z:
            seeds = z["episode_seeds"] if "episode_seeds" in z else None
            return cls(z["frames"], z["actions"], tuple(str(s) for s in z["action_names"]), seeds)


def one_hot(indices: np.ndarray, num: int) -> np.ndarray:
    """``indices: (...) int`` -> ``(..., num) float32`` one-hot."""
    return np.eye(num, dtype=np.float32)[indices]


def actions_into_frames(actions: torch.Tensor) -> torch.Tensor:
    """Shift ``actions: (B, T, A)`` right by one: row ``t`` becomes the action that produced frame ``t``.

    Returns ``(B, T, A)`` with zeros at ``t = 0`` (no action led into the first frame).
    """
    return F.pad(actions, (0, 0, 1, 0))[:, :-1]


def to_model_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(..., H, W, C) uint8`` -> ``(..., C, H, W) float32`` in ``[-1, 1]``."""
    x = torch.as_tensor(np.asarray(frames))
    return (x.float() / 127.5 - 1.0).movedim(-1, -3).contiguous()


def to_uint8_frames(x: torch.Tensor) -> np.ndarray:
    """``(..., C, H, W)`` float in ``[-1, 1]`` (clipped) -> ``(..., H, W, C) uint8``."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def area_downsample(frames: np.ndarray, size: int) -> np.ndarray:
    """Area (box-filter) downsampling of ``(..., H, W, C) uint8`` frames to ``(..., size, size, C) uint8``.

    torch's ``area`` interpolation is adaptive average pooling: when ``size`` divides ``H`` and ``W``
    every output pixel is the exact mean of its ``H/size x W/size`` block (the aspect ratio is squashed,
    the field of view kept); otherwise the blocks are the nearest integer spans.
    """
    *lead, H, W, C = frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames).reshape(-1, H, W, C)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="area").round_().clamp_(0, 255)  # (M, C, size, size)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy().reshape(*lead, size, size, C)
