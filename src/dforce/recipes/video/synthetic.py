"""Synthetic action-conditioned videos for fast tests: an action-driven digit plus bouncing balls.

A handwritten 8x8 digit (scikit-learn's bundled ``load_digits``, no download) sits on a black
``size x size`` canvas. Its velocity is set by a discrete action -- ``none / up / down / left / right``,
``speed`` pixels per step, clipped at the borders -- held for a random number of steps like the ViZDoom
agent. Optional balls bounce off the walls on their own (deterministic given their start), so a model
must learn both controlled and autonomous motion. Everything is deterministic per seed.

Conventions are those of :mod:`dforce.recipes.video.common`: ``frames (N, T, S, S, 3) uint8``,
``actions (N, T, 5) float32`` one-hot, ``actions[:, t]`` is applied after ``frames[:, t]`` and
produces ``frames[:, t + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dforce.recipes.video.common import VideoData, one_hot
from dforce.errors import ConfigError

ACTION_NAMES = ("none", "up", "down", "left", "right")
# (dy, dx) per action, rows grow downwards; indexed like ACTION_NAMES.
ACTION_DELTAS = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], np.int64)
DIGIT = 8  # side of a sklearn digit
# Saturated colours; each episode paints its digit with one and its balls with others.
_PALETTE = np.array([(255, 255, 255), (255, 80, 80), (80, 255, 80), (80, 160, 255),
                     (255, 220, 60), (255, 80, 255), (60, 255, 255)], np.float32)


@dataclass(frozen=True)
class MovingDigitsConfig:
    size: int = 32  # canvas side S (16 works too)
    speed: int = 2  # digit pixels per step under a move action
    n_balls: int = 1  # autonomous bouncing balls
    ball_radius: float = 2.0
    max_ball_speed: int = 2  # ball velocity components drawn from U{-max..max} \ {0}
    min_hold: int = 1  # an action is held for U{min_hold..max_hold} steps
    max_hold: int = 6

    def __post_init__(self):
        if self.size < DIGIT + 2 * self.speed:
            raise ConfigError(f"MovingDigitsConfig.size={self.size} is too small for an 8x8 digit moving by {self.speed}")
        if not (1 <= self.min_hold <= self.max_hold):
            raise ConfigError(f"MovingDigitsConfig needs 1 <= min_hold <= max_hold, got {self.min_hold}, {self.max_hold}")


@lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    """``(1797, 8, 8) float32`` in ``[0, 1]``."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


def _render(digit_img, color, pos, balls, ball_colors, cfg, yy, xx) -> np.ndarray:
    """One ``(S, S, 3) uint8`` frame: the digit at integer ``pos (y, x)`` and discs at ``balls (B, 2)``."""
    canvas = np.zeros((cfg.size, cfg.size, 3), np.float32)
    y, x = pos
    canvas[y:y + DIGIT, x:x + DIGIT] = digit_img[..., None] * color
    for (by, bx), c in zip(balls, ball_colors):
        disc = ((yy - by) ** 2 + (xx - bx) ** 2 <= cfg.ball_radius ** 2)[..., None] * c
        canvas = np.maximum(canvas, disc)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def generate_moving_digits(episodes: int, length: int, seed: int = 0,
                           config: MovingDigitsConfig = MovingDigitsConfig()) -> VideoData:
    """Generate ``episodes`` videos of ``length`` frames.

    Returns:
        :class:`VideoData` with ``frames (N, T, S, S, 3) uint8`` and ``actions (N, T, 5) float32``;
        identical for identical arguments.
    """
    if episodes < 1 or length < 2:
        raise ConfigError(f"generate_moving_digits needs episodes >= 1 and length >= 2, got {episodes}, {length}")
    cfg, S = config, config.size
    rng = np.random.default_rng(seed)
    digits = _digits()
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    frames = np.empty((episodes, length, S, S, 3), np.uint8)
    idx = np.empty((episodes, length), np.int64)
    hi = S - DIGIT  # largest top-left coordinate
    r = cfg.ball_radius
    for n in range(episodes):
        digit_img = digits[rng.integers(len(digits))]
        colors = _PALETTE[rng.permutation(len(_PALETTE))[: 1 + cfg.n_balls]]
        pos = rng.integers(0, hi + 1, size=2)
        balls = rng.uniform(r, S - 1 - r, size=(cfg.n_balls, 2))
        vel = rng.integers(1, cfg.max_ball_speed + 1, size=(cfg.n_balls, 2)) * rng.choice([-1, 1], size=(cfg.n_balls, 2))
        current, hold = 0, 0
        for t in range(length):
            frames[n, t] = _render(digit_img, colors[0], pos, balls, colors[1:], cfg, yy, xx)
            if hold <= 0:
                current = int(rng.integers(len(ACTION_NAMES)))
                hold = int(rng.integers(cfg.min_hold, cfg.max_hold + 1))
            hold -= 1
            idx[n, t] = current
            # state t -> t+1 under action t
            pos = np.clip(pos + cfg.speed * ACTION_DELTAS[current], 0, hi)
            balls = balls + vel
            low, high = balls < r, balls > S - 1 - r
            balls = np.where(low, 2 * r - balls, np.where(high, 2 * (S - 1 - r) - balls, balls))
            vel = np.where(low | high, -vel, vel)
    return VideoData(frames, one_hot(idx, len(ACTION_NAMES)), ACTION_NAMES)
