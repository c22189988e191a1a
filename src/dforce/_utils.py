"""Tiny helpers used across dforce (defined once here, imported everywhere)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

import torch

T = TypeVar("T")


def exists(x: Any) -> bool:
    return x is not None


def default(x: T | None, d: T) -> T:
    return x if x is not None else d


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Validate a string enum when it arrives; the error lists the valid options."""
    choices = tuple(choices)
    if value not in choices:
        from dforce.errors import ConfigError

        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def right_pad_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dims so ``t`` (e.g. per-token ``(B, T)``) broadcasts against an ``ndim`` tensor."""
    return t.reshape(*t.shape, *((1,) * (ndim - t.ndim)))


def gather_levels(table: torch.Tensor, levels: torch.Tensor, ndim: int) -> torch.Tensor:
    """Look up ``table[levels]`` for per-token integer levels and broadcast to ``ndim`` dims.

    Args:
        table: ``(K+1,)`` float buffer indexed by noise level.
        levels: ``(B, T)`` (or any shape) integer levels.
        ndim: number of dims of the tensor the result multiplies (e.g. ``x.ndim`` for ``x: (B, T, *D)``).
    Returns:
        ``levels.shape + (1,) * (ndim - levels.ndim)``.
    """
    return right_pad_dims(table[levels], ndim)


def cache_dir(*parts: str) -> Path:
    """Where generated data is cached: ``$DFORCE_CACHE`` or ``~/.cache/dforce``."""
    root = Path(os.environ.get("DFORCE_CACHE", Path.home() / ".cache" / "dforce"))
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository when it exists (developer machines, CI), else None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and cand.is_dir():
            return cand
    return None
