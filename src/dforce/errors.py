"""User-facing errors.

Every error a user can cause (bad file, bad config value, bad shape, corrupt checkpoint) is raised as a
subclass of :class:`DforceError` with one sentence that names *what* is wrong and *where* (file, key,
argument). The CLI catches ``DforceError`` and prints ``error: <message>`` with exit code 2 and no
traceback; library callers get an ordinary exception (also a ``ValueError``) they can catch.
"""

from __future__ import annotations


class DforceError(ValueError):
    """Base class for errors caused by user input (exit code 2 in the CLI)."""


class ConfigError(DforceError):
    """A config key, value, preset or CLI override is invalid."""


class DataError(DforceError):
    """A data file is missing, unreadable or has the wrong content (shape, NaN/inf, too short)."""


class CheckpointError(DforceError):
    """A checkpoint/run directory is missing, corrupt, or does not match the model/config."""


class ScheduleError(DforceError):
    """A scheduling matrix or noise schedule is invalid."""


class TrainingError(DforceError):
    """Training cannot go on with these settings (the loss diverged, a step ran out of memory); the last
    checkpoint is kept."""


def exit_on_user_error(main, prog: str):
    """Run ``main()`` for a script entry point: a :class:`DforceError` prints one ``<prog>: error: ...`` line to
    stderr and exits with code 2 (no traceback), as the CLI does; anything else propagates."""
    import sys

    try:
        return main()
    except DforceError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
