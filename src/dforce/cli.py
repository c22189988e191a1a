"""The ``dforce`` command line. Subcommands register themselves in ``COMMANDS``.

User errors (:class:`dforce.errors.DforceError`) print one ``error: ...`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from dforce.errors import DforceError


def cmd_demo(args) -> int:
    from dforce.demo import run_demo

    report = run_demo(args.out, steps=args.steps, progress=not args.quiet, device=args.device)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}/demo.png, {args.out}/demo.json and the run directory {args.out}/")
    return 0


def add_demo(sub):
    p = sub.add_parser("demo", help="train a small model on synthetic oscillations, sample it, plot (~3 min on CPU)")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--steps", type=int, default=2500, help="training steps (default: 2500)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


COMMANDS = [add_demo]

# per-task CLI modules; each defines ``register(subparsers)`` and keeps heavy imports inside its commands
TASK_MODULES = (
    "dforce.tasks.forecast_cli",
    "dforce.tasks.planning_cli",
    "dforce.tasks.video_cli",
    "dforce.tasks.decision_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dforce", description="Diffusion Forcing: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    for name in TASK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DforceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
