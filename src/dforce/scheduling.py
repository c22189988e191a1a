"""Scheduling matrices 𝒦 (Diffusion Forcing, Algorithm 2): pure functions returning ``(M, T)`` long tensors.

Conventions (differ from the paper's bottom-up row index only in direction, not content):
    * rows are in *execution order*: row 0 is the start (every token pure noise, level S), row M-1 is the
      end (every token clean, level 0); the sampler moves each token from ``mat[m, t]`` to ``mat[m+1, t]``;
    * entries are in *sampling-step units* 0..S; :func:`dforce.diffusion.sampling_levels` maps step s to a
      raw noise level in 0..K (S < K gives DDIM-style strided sampling);
    * a token's level never increases from one row to the next.

Named schedules (S = steps, T = tokens):
    full_sequence   every token at the same level (full-sequence diffusion), M = S + 1
    autoregressive  token t starts only once t-1 is clean (next-token diffusion), M = T·S + 1
    pyramid(u)      𝒦[m, t] = clip(S + ⌊t·u⌋ − m, 0, S), M = S + ⌊(T−1)u⌋ + 1 ("causal uncertainty":
                    the near future is less noisy than the far future); u = 0 is full_sequence, u = S is
                    autoregressive
    trapezoid(u)    the same ramp from both ends; the middle token is denoised last
"""

from __future__ import annotations

import math

import torch

from dforce._utils import check_choice
from dforce.errors import ScheduleError

SCHEDULES = ("full_sequence", "autoregressive", "pyramid", "trapezoid")


def _check_ts(num_tokens: int, num_steps: int) -> None:
    if num_tokens < 1:
        raise ScheduleError(f"a scheduling matrix needs at least one token, got T={num_tokens}")
    if num_steps < 1:
        raise ScheduleError(f"a scheduling matrix needs at least one sampling step, got S={num_steps}")


def _ramp(offsets: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Rows m = 0..S+max(offsets): level(m, t) = clip(S + offsets[t] − m, 0, S). ``offsets: (T,) long``."""
    height = num_steps + int(offsets.max()) + 1
    m = torch.arange(height).unsqueeze(1)  # (M, 1)
    return (num_steps + offsets.unsqueeze(0) - m).clamp(0, num_steps)  # (M, T)


def full_sequence(num_tokens: int, num_steps: int) -> torch.Tensor:
    """All tokens share one level: rows S, S-1, ..., 0. Shape ``(S + 1, T)``."""
    _check_ts(num_tokens, num_steps)
    return _ramp(torch.zeros(num_tokens, dtype=torch.long), num_steps)


def pyramid(num_tokens: int, num_steps: int, uncertainty_scale: float = 1.0) -> torch.Tensor:
    """𝒦[m, t] = clip(S + ⌊t·u⌋ − m, 0, S). Shape ``(S + ⌊(T−1)u⌋ + 1, T)``."""
    _check_ts(num_tokens, num_steps)
    if not (uncertainty_scale >= 0 and math.isfinite(uncertainty_scale)):
        raise ScheduleError(f"sampler.uncertainty_scale must be a finite number >= 0, got {uncertainty_scale}")
    offsets = torch.floor(torch.arange(num_tokens, dtype=torch.float64) * uncertainty_scale).long()
    return _ramp(offsets, num_steps)


def autoregressive(num_tokens: int, num_steps: int) -> torch.Tensor:
    """Next-token diffusion: token t is fully denoised before t+1 starts. Shape ``(T·S + 1, T)``."""
    return pyramid(num_tokens, num_steps, float(num_steps))


def trapezoid(num_tokens: int, num_steps: int, uncertainty_scale: float = 1.0) -> torch.Tensor:
    """Ramp from both ends: level depends on the distance to the nearer end; the middle finishes last."""
    _check_ts(num_tokens, num_steps)
    t = torch.arange(num_tokens)
    dist = torch.minimum(t, num_tokens - 1 - t).to(torch.float64)
    offsets = torch.floor(dist * uncertainty_scale).long()
    return _ramp(offsets, num_steps)


def make_schedule(name: str, num_tokens: int, num_steps: int, uncertainty_scale: float = 1.0) -> torch.Tensor:
    """Build a named scheduling matrix (see module docstring)."""
    check_choice("sampler.schedule", name, SCHEDULES)
    if name == "full_sequence":
        return full_sequence(num_tokens, num_steps)
    if name == "autoregressive":
        return autoregressive(num_tokens, num_steps)
    if name == "pyramid":
        return pyramid(num_tokens, num_steps, uncertainty_scale)
    return trapezoid(num_tokens, num_steps, uncertainty_scale)


def validate_schedule(matrix, num_tokens: int | None, num_steps: int, name: str = "scheduling matrix") -> torch.Tensor:
    """Check a (possibly user-supplied) matrix and return it as a ``(M, T)`` long tensor.

    Rules: 2-D with at least 2 rows; integer entries in [0, S]; ``T`` columns if ``num_tokens`` is given;
    first row all S (tokens start as pure noise); last row all 0 (tokens end clean); no token's level
    increases from one row to the next. Raises :class:`ScheduleError` naming the first violation.
    """
    mat = torch.as_tensor(matrix)
    if mat.ndim != 2:
        raise ScheduleError(f"{name} must be 2-D (rows x tokens), got shape {tuple(mat.shape)}")
    if mat.dtype.is_floating_point:
        if not torch.isfinite(mat).all() or not torch.equal(mat, mat.round()):
            raise ScheduleError(f"{name} must hold integer levels, found non-integer values")
        mat = mat.long()
    elif mat.dtype == torch.bool:
        raise ScheduleError(f"{name} must hold integer levels, got a boolean matrix")
    mat = mat.long()
    M, T = mat.shape
    if M < 2:
        raise ScheduleError(f"{name} needs at least 2 rows (start and end), got {M}")
    if num_tokens is not None and T != num_tokens:
        raise ScheduleError(f"{name} has {T} columns but {num_tokens} tokens are being sampled")
    lo, hi = int(mat.min()), int(mat.max())
    if lo < 0 or hi > num_steps:
        raise ScheduleError(f"{name} levels must lie in [0, {num_steps}] (sampling steps), got [{lo}, {hi}]")
    if not (mat[0] == num_steps).all():
        t = int((mat[0] != num_steps).nonzero()[0])
        raise ScheduleError(f"{name} row 0 must be all {num_steps} (pure noise); token {t} starts at {int(mat[0, t])}")
    if not (mat[-1] == 0).all():
        t = int((mat[-1] != 0).nonzero()[0])
        raise ScheduleError(f"{name} last row must be all 0 (clean); token {t} ends at {int(mat[-1, t])}")
    up = mat[1:] > mat[:-1]
    if up.any():
        m, t = (int(i) for i in up.nonzero()[0])
        raise ScheduleError(
            f"{name} increases token {t}'s level from {int(mat[m, t])} (row {m}) to {int(mat[m + 1, t])} (row {m + 1})"
        )
    return mat
