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


def check_regular_file(path: str | Path, expected: str = "a data file", error=None, label: str | None = None) -> Path:
    """``path`` as a :class:`Path` when it is a regular file; else one ``error`` line (default :class:`DataError`)
    starting with ``label`` (default: the path). Devices (``/dev/zero``) and FIFOs are refused without being
    opened: reading them would never end."""
    import stat

    from dforce.errors import DataError

    path, error = Path(path), error or DataError
    label = label or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{label}: file not found") from None
    except OSError as e:
        raise error(f"{label}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{label}: is a directory, expected {expected}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{label}: is not a regular file (a device or pipe); expected {expected}")
    return path


NUMPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}  # first bytes of a .npy file and of a .npz (zip) archive


def check_numpy_file(path: str | Path) -> Path:
    """A ``.npy``/``.npz`` path must start like one: a text file named ``.npy`` is named as such, instead of
    numpy's fallback message about pickled data."""
    from dforce.errors import DataError

    path = Path(path)
    magic = NUMPY_MAGIC.get(path.suffix.lower())
    if magic is not None:
        with open(path, "rb") as f:
            head = f.read(len(magic))
        if head != magic:
            what = "it is empty" if not head else "it does not start like one (a text/CSV file?)"
            raise DataError(f"{path}: not a {path.suffix.lower()} file: {what}")
    return path


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
