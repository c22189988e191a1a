"""The ``dforce`` command line: one dispatcher, each recipe registers its own commands.

    dforce train | sample | eval | info | demo      the generic sequence recipe (dforce.recipes.sequence.cli)
    dforce forecast | plan | video | imitation | compositional   the recipes (dforce.recipes.<name>.cli)
    dforce data maze2d | vizdoom                    dataset generators (registered by their recipe)

User errors print one ``error: ...`` line on stderr and exit with code 2, never a traceback:
:class:`dforce.errors.DforceError`, bad command-line arguments (argparse), and errors of the file system
(a read-only folder, a full disk) or of memory, which a user fixes outside dforce.
A recipe's CLI module defines ``register(subparsers)`` and, when it generates data,
``register_data(data_subparsers)``; heavy imports stay inside its commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dforce._malloc import keep_freed_memory
from dforce.engine.rundir import release_all
from dforce.errors import ConfigError, DforceError

# recipe CLI modules, in the order their commands appear in `dforce --help`
RECIPE_CLIS = (
    "dforce.recipes.sequence.cli",
    "dforce.recipes.forecast.cli",
    "dforce.recipes.planning.cli",
    "dforce.recipes.video.cli",
    "dforce.recipes.imitation.cli",
    "dforce.recipes.compositional.cli",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: dforce train: argument --steps: invalid int value: 'x'``."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_data(sub):
    p = sub.add_parser("data", help="generate / cache datasets (maze2d, vizdoom, ...)",
                       description="Generate a dataset into the cache ($DFORCE_CACHE, default ~/.cache/dforce) "
                                   "and print its summary. Generation is deterministic per seed.")
    return p.add_subparsers(dest="dataset", required=True, metavar="DATASET")


def cmd_presets(args) -> int:
    from dforce.engine.config import presets

    for name, path in presets().items():
        print(f"{name:28s} {path.parent.parent.name:14s} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dforce", description="Diffusion Forcing: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [importlib.import_module(name) for name in RECIPE_CLIS]
    for module in modules:
        module.register(sub)
    p = sub.add_parser("presets", help="list the YAML presets shipped with dforce (usable by name from anywhere)")
    p.set_defaults(func=cmd_presets)
    data_sub = add_data(sub)
    for module in modules:
        if hasattr(module, "register_data"):
            module.register_data(data_sub)
    return parser


def _parse(parser, argv):
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may also come after the options: `dforce train x.yaml --out r train.lr=1e-3`
    target = "items" if hasattr(args, "items") else "overrides" if hasattr(args, "overrides") else None
    if extra and target and not any(e.startswith("-") for e in extra):
        bare = [e for e in extra if "=" not in e]
        if bare:  # name the one that is wrong, not every override
            raise ConfigError(f"{bare[0]!r} is not an override: expected key.sub=value (e.g. train.lr=3e-4)")
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:  # --help, or an argparse error already printed as one line
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except DforceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keep_freed_memory()  # glibc: reuse freed activations instead of page-faulting them in again each step
    failed = True
    try:
        rc = int(args.func(args) or 0)
        failed = rc != 0
        return rc
    except DforceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no: read-only folder, full disk, path too long, ...
        if isinstance(e, BrokenPipeError):  # `dforce ... | head`
            sys.stderr.close()
            return 0
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; lower the batch size, the model size or the number of samples", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        release_all(failed)  # this command's locks; a folder it created and never wrote into goes again


if __name__ == "__main__":
    sys.exit(main())
