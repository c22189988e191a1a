"""Built-in synthetic sequence data for the demo and tests (no files, deterministic per seed)."""

from __future__ import annotations

import math

import torch


def noisy_sines(
    n: int,
    length: int,
    seed: int = 0,
    freq_range: tuple[float, float] = (0.15, 0.45),  # radians per step: 14 to 42 steps per period
    amp_range: tuple[float, float] = (0.5, 1.0),
    noise_std: float = 0.05,
) -> torch.Tensor:
    """2-D oscillations ``x_t = a·[sin(ωt + φ), cos(ωt + φ)] + noise``: ``(n, length, 2)`` float32.

    Each sequence has its own frequency ω, amplitude a and phase φ, so a model must infer them from the
    past to continue a sequence — a small test of causal memory, with a known data distribution.
    """
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, generator=g)  # noqa: E731
    w, a, phi = u(*freq_range), u(*amp_range), u(0.0, 2 * math.pi)
    t = torch.arange(length, dtype=torch.float32).unsqueeze(0)
    ang = w * t + phi  # (n, length)
    x = a.unsqueeze(-1) * torch.stack([ang.sin(), ang.cos()], dim=-1)
    return (x + noise_std * torch.randn(x.shape, generator=g)).float()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance between two sample sets of sequences (flattened): 2E|X-Y| − E|X-X'| − E|Y-Y'| ≥ 0.

    ``x: (N, *S)``, ``y: (M, *S)``. Zero iff the distributions agree; used as the demo/test statistic.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    dxy = torch.cdist(x, y).mean()
    dxx = torch.cdist(x, x).sum() / max(1, x.shape[0] * (x.shape[0] - 1))
    dyy = torch.cdist(y, y).sum() / max(1, y.shape[0] * (y.shape[0] - 1))
    return float(2 * dxy - dxx - dyy)
