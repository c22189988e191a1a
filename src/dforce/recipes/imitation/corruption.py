"""Test-time observation corruption for the robustness recipes (paper Sec. 4.4: distractors, 76% vs 48%).

A corrupted or missing observation can be fed to a Diffusion Forcing model at a nonzero noise level so it
leans on its prior; a missing one at level K. This module only produces the corruption and says *where*
it happened; which level to feed is the policy's choice (:func:`observation_levels` is the default).

Kinds (``severity`` scales each; 1.0 is the default strength, 0 leaves the observation unchanged):

================  ==========================================================  ===========================
kind              image ``(..., H, W, 3)`` uint8                              state ``(..., S)`` float
================  ==========================================================  ===========================
``distractor``    ``round(3*severity)`` random discs (radius 1.5-3.5 px at 32    ``round(0.3*S*severity)``
                  px), half in the fruit colours red/green, half random         random entries get an
                                                                                offset U(+-0.3*severity)
``occlusion``     a grey square patch, side ``0.35*severity`` of the image,    a random contiguous block
                  at a random place                                             of ``0.35*severity*S``
                                                                                entries set to 0
``noise``         Gaussian sensor noise, std ``25*severity`` (uint8 units)     Gaussian, std
                                                                                ``0.05*severity``
``missing``       all zeros (no observation this step)                         all zeros
================  ==========================================================  ===========================

Everything is deterministic given the ``numpy.random.Generator`` passed in; inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dforce._utils import check_choice
from dforce.errors import DataError

KINDS = ("distractor", "occlusion", "noise", "missing")


@dataclass(frozen=True)
class CorruptionConfig:
    distractor_count: float = 3.0  # discs at severity 1 (a few "random objects on the table", as in the paper)
    distractor_radius: tuple[float, float] = (1.5, 3.5)  # px at 32 px, comparable to a fruit (2.5 px)
    distractor_state_frac: float = 0.3  # fraction of state entries offset at severity 1
    distractor_state_offset: float = 0.3  # max |offset| at severity 1 (world is the unit square)
    occlusion_frac: float = 0.35  # patch side / image side (and state block / S) at severity 1
    occlusion_value: int = 128  # grey patch
    noise_std_image: float = 25.0  # uint8 units at severity 1 (~10% of the range)
    noise_std_state: float = 0.05  # state units at severity 1


_FRUITISH = np.array([[220, 40, 40], [40, 200, 60]], np.uint8)  # the fruit colours, the hard distractors


# ---------------------------------------------------------------- per-observation corruption


def _draw_discs(img: np.ndarray, rng: np.random.Generator, n: int, cfg: CorruptionConfig) -> None:
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    scale = H / 32.0
    for _ in range(n):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        r = rng.uniform(*cfg.distractor_radius) * scale
        color = _FRUITISH[rng.integers(2)] if rng.random() < 0.5 else rng.integers(0, 256, 3, dtype=np.uint8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = color


def _corrupt_image(img: np.ndarray, kind: str, rng: np.random.Generator, sev: float, cfg: CorruptionConfig):
    """``img: (H, W, 3)`` uint8 -> a corrupted copy."""
    out = img.copy()
    H, W = img.shape[:2]
    if kind == "distractor":
        _draw_discs(out, rng, int(round(cfg.distractor_count * sev)), cfg)
    elif kind == "occlusion":
        side = int(round(cfg.occlusion_frac * sev * min(H, W)))
        if side > 0:
            y, x = rng.integers(0, H - side + 1), rng.integers(0, W - side + 1)
            out[y : y + side, x : x + side] = cfg.occlusion_value
    elif kind == "noise":
        noisy = img.astype(np.float32) + rng.normal(0, cfg.noise_std_image * sev, img.shape)
        out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    else:  # missing
        out[:] = 0
    return out


def _corrupt_state(st: np.ndarray, kind: str, rng: np.random.Generator, sev: float, cfg: CorruptionConfig):
    """``st: (S,)`` float -> a corrupted copy."""
    out = st.copy()
    S = st.shape[-1]
    if kind == "distractor":
        k = min(S, int(round(cfg.distractor_state_frac * sev * S)))
        idx = rng.choice(S, size=k, replace=False)
        out[idx] += rng.uniform(-1, 1, k) * cfg.distractor_state_offset * sev
    elif kind == "occlusion":
        k = min(S, int(round(cfg.occlusion_frac * sev * S)))
        start = rng.integers(0, S - k + 1)
        out[start : start + k] = 0
    elif kind == "noise":
        out = out + rng.normal(0, cfg.noise_std_state * sev, S).astype(st.dtype)
    else:  # missing
        out[:] = 0
    return out


def corrupt(obs: dict, kind: str, rng: np.random.Generator, severity: float = 1.0,
            config: CorruptionConfig | None = None) -> dict:
    """Corrupt an observation dict ``{'image': (..., H, W, 3) uint8, 'state': (..., S) float}`` (either key
    may be absent; leading batch dims are corrupted independently, item by item in C order).

    Returns a new dict with the same keys; other keys are passed through. See the module table for kinds.
    """
    check_choice("corrupt kind", kind, KINDS)
    if not np.isfinite(severity) or severity < 0:
        raise DataError(f"corrupt: severity={severity} must be a finite number >= 0")
    cfg = config or CorruptionConfig()
    out = dict(obs)
    if "image" in obs:
        img = np.asarray(obs["image"])
        if img.dtype != np.uint8 or img.ndim < 3 or img.shape[-1] != 3:
            raise DataError(f"corrupt: obs['image'] must be (..., H, W, 3) uint8, got {img.shape} {img.dtype}")
        flat = img.reshape(-1, *img.shape[-3:])  # (N, H, W, 3)
        out["image"] = np.stack([_corrupt_image(x, kind, rng, severity, cfg) for x in flat]).reshape(img.shape)
    if "state" in obs:
        st = np.asarray(obs["state"])
        if st.ndim < 1 or not np.issubdtype(st.dtype, np.floating):
            raise DataError(f"corrupt: obs['state'] must be a float (..., S) array, got {st.shape} {st.dtype}")
        flat = st.reshape(-1, st.shape[-1])  # (N, S)
        out["state"] = np.stack([_corrupt_state(x, kind, rng, severity, cfg) for x in flat]).reshape(st.shape)
    return out


# ---------------------------------------------------------------- schedules over time


def corruption_mask(T: int | tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which steps are corrupted: a bool array of shape ``T`` (int or tuple) with exactly
    ``round(fraction * T_last)`` True entries, at random positions, along the last axis of every row."""
    shape = (T,) if isinstance(T, (int, np.integer)) else tuple(T)
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"corruption_mask: fraction={fraction} must be in [0, 1]")
    if len(shape) == 0 or min(shape) < 0:
        raise DataError(f"corruption_mask: T={T} must be a non-negative length or shape")
    n = shape[-1]
    k = int(round(fraction * n))
    rows = int(np.prod(shape[:-1]))
    mask = np.zeros((rows, n), bool)
    for r in range(rows):
        mask[r, rng.choice(n, size=k, replace=False)] = True
    return mask.reshape(shape)


def corrupt_sequence(obs: dict, kind: str, fraction: float, rng: np.random.Generator, severity: float = 1.0,
                     config: CorruptionConfig | None = None) -> tuple[dict, np.ndarray]:
    """Corrupt a fraction of the steps of one episode ``{'image': (T, H, W, 3), 'state': (T, S)}``.

    Returns ``(corrupted copy, mask (T,) bool)``; mask True = corrupted (for ``missing``: no observation).
    """
    T = len(next(iter(v for k, v in obs.items() if k in ("image", "state"))))
    mask = corruption_mask(T, fraction, rng)
    out = {k: np.array(v, copy=True) if k in ("image", "state") else v for k, v in obs.items()}
    for t in np.flatnonzero(mask):
        step = corrupt({k: out[k][t] for k in ("image", "state") if k in out}, kind, rng, severity, config)
        for k, v in step.items():
            out[k][t] = v
    return out, mask


def observation_levels(mask: np.ndarray, K: int, level: int | None = None) -> np.ndarray:
    """Noise level to feed each observation token: ``level`` (default ``K``, i.e. "missing") where
    ``mask`` is True, 0 (clean, a posterior update) elsewhere. Returns an int64 array of ``mask.shape``."""
    lv = K if level is None else level
    if not 0 <= lv <= K:
        raise DataError(f"observation_levels: level={lv} must be in [0, K={K}]")
    return np.where(np.asarray(mask, bool), lv, 0).astype(np.int64)


class CorruptionHook:
    """An ``obs_hook`` for :func:`dforce.recipes.imitation.fruit_swap.evaluate`: at each step every env's observation is
    corrupted with probability ``fraction``; ``self.mask`` holds the last step's ``(N,)`` bool mask so the
    policy can read it (e.g. feed masked steps at level K). Step t uses ``default_rng([seed, t])``, so the
    corruption is deterministic and does not depend on the policy."""

    def __init__(self, kind: str, fraction: float, seed: int = 0, severity: float = 1.0,
                 config: CorruptionConfig | None = None):
        self.kind = check_choice("CorruptionHook kind", kind, KINDS)
        if not 0.0 <= fraction <= 1.0:
            raise DataError(f"CorruptionHook: fraction={fraction} must be in [0, 1]")
        self.fraction, self.seed, self.severity, self.config = fraction, seed, severity, config
        self.mask = np.zeros(0, bool)

    def __call__(self, images: np.ndarray, states: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, t])
        self.mask = rng.random(len(states)) < self.fraction
        images, states = images.copy(), states.copy()
        for i in np.flatnonzero(self.mask):
            o = corrupt({"image": images[i], "state": states[i]}, self.kind, rng, self.severity, self.config)
            images[i], states[i] = o["image"], o["state"]
        return images, states
