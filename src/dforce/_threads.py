"""The one ``--threads N`` option every ``dforce`` command shares (torch is imported only when used)."""

from __future__ import annotations

THREADS_HELP = "torch CPU threads (0 = torch's default, all cores; 1 on a busy shared machine)"


def add_threads_argument(parser, default: int = 0) -> None:
    """Add ``--threads N`` to an argparse parser (0 leaves torch's setting alone)."""
    parser.add_argument("--threads", type=int, default=default, help=f"{THREADS_HELP}; default {default}")


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` for ``n > 0``; ``n == 0`` keeps torch's default (or the caller's setting)."""
    if n < 0:
        from dforce.errors import ConfigError

        raise ConfigError(f"--threads must be >= 0 (got {n})")
    if n > 0:
        import torch

        torch.set_num_threads(n)
