"""Command-line pieces every recipe shares: ``--threads N`` and the train/eval options (torch imported only when used)."""

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


OVERWRITE_TRAIN_HELP = "start over in an existing run of this kind (deletes only the files dforce wrote there)"
OVERWRITE_OUT_HELP = "replace existing output files that dforce did not write"


def at_least(flag: str, value, lo=1) -> None:
    """A numeric flag that was given (0 included: never read as "not given") must be >= ``lo``."""
    if value is not None and value < lo:
        from dforce.errors import ConfigError

        raise ConfigError(f"{flag} must be >= {lo}, got {value}")


def add_recipe_arguments(p, train: bool) -> None:
    """``--device``/``--threads``, and for training ``--config --set --out --resume --overwrite --quiet``."""
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    add_threads_argument(p)
    if train:
        p.add_argument("--config", default=None, help="preset name (e.g. imitation_small) or a YAML file")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
        p.add_argument("--overwrite", action="store_true", help=OVERWRITE_TRAIN_HELP)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
