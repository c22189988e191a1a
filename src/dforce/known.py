"""Known tokens: conditioning a rollout on any subset of its tokens (DFoT's "noise as masking").

A Diffusion Forcing model is trained with every token at its own level, so a token that is *given* is simply a
token whose level stays where it is for the whole sampling: level 0 for an observed token, a level k > 0 for a
noisy or partial observation (the model then leans on its prior). ``sample(..., known=(values, mask))`` fixes the
masked tokens at that level and generates the rest; a known *prefix* at level 0 is exactly prefix context (it is
committed as context), keyframes *after* generated tokens need a model that can look ahead (``model.causal=false``):
a causal model only carries them forward to the tokens after them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dforce.errors import ConfigError, DataError


class Known(NamedTuple):
    """Given tokens among the ``L`` generated positions (after any context).

    values: ``(B, L, *D)`` (entries at unmasked positions are ignored); mask: ``(L,)`` bool, the same for every
    batch row; level: the raw noise level the given tokens are shown at (0: observed exactly).
    """

    values: torch.Tensor
    mask: torch.Tensor
    level: int = 0

    def prefix_len(self) -> int:
        """Number of leading known tokens when they are clean (a known prefix at level 0 is prefix context)."""
        if self.level != 0:
            return 0
        return int(self.mask.long().cumprod(0).sum())

    def tail(self, n: int) -> "Known":
        return Known(self.values[:, n:], self.mask[n:], self.level)


def check_known(known, batch: int | None, length: int, token_shape, num_levels: int, device=None) -> Known:
    """Validate ``known = (values, mask)`` or ``(values, mask, level)`` for ``length`` generated tokens.

    ``mask`` may be ``(L,)`` or ``(B, L)`` with the same row for every batch row; returns a :class:`Known`
    with a ``(L,)`` bool mask on ``values``' device. One-line :class:`DataError`/:class:`ConfigError` otherwise."""
    if isinstance(known, Known):
        values, mask, level = known
    elif isinstance(known, (tuple, list)) and len(known) in (2, 3):
        values, mask, level = (*known, 0) if len(known) == 2 else known
    else:
        raise ConfigError("known must be (values, mask) or (values, mask, level)")
    values, mask = torch.as_tensor(values), torch.as_tensor(mask, device=getattr(values, "device", None))
    if not values.is_floating_point():
        raise DataError(f"known values must be floating point, got {values.dtype}")
    if values.ndim < 2 or values.shape[1] != length or (batch is not None and values.shape[0] != batch) or (
            token_shape is not None and tuple(values.shape[2:]) != tuple(token_shape)):
        raise DataError(f"known values must have shape (B={batch}, L={length}, *{tuple(token_shape or ())}), "
                        f"got {tuple(values.shape)}")
    if mask.dtype != torch.bool:
        raise DataError(f"known mask must be a bool tensor, got {mask.dtype}")
    if mask.ndim == 2:
        if mask.shape[0] != values.shape[0] or not bool((mask == mask[:1]).all()):
            raise DataError("known mask must be the same for every batch row (shape (L,) or (B, L) with equal rows)")
        mask = mask[0]
    if mask.shape != (length,):
        raise DataError(f"known mask must have shape (L={length},) or (B, L), got {tuple(mask.shape)}")
    if isinstance(level, bool) or int(level) != level or not 0 <= int(level) < num_levels:
        raise ConfigError(f"known level must be an integer in [0, {num_levels - 1}] (K={num_levels} is 'unknown'), "
                          f"got {level}")
    if bool(mask.any()) and not torch.isfinite(values[:, mask]).all():
        raise DataError("known values contain NaN or inf values at known positions")
    return Known(values.to(device) if device is not None else values, mask.to(values.device), int(level))


def chunk_levels(lv: torch.Tensor, fixed: torch.Tensor | None, level: int, k_stab: int):
    """A chunk's raw levels ``lv: (M, h)`` with the known tokens (``fixed: (h,)`` bool) held at ``level`` in every
    row, and the model-input levels: clean generated tokens shown at ``k_stab``, known ones at their level.
    Returns ``(lv, lv_in)``, both ``(M, h)``."""
    if fixed is not None:
        lv = torch.where(fixed, torch.full_like(lv, level), lv)
    clean = lv == 0 if fixed is None else (lv == 0) & ~fixed
    return lv, torch.where(clean, torch.full_like(lv, k_stab), lv)
