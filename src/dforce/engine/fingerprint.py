"""The training data's fingerprint, kept in the run marker: a data file replaced at the same path is caught.

``dforce train`` records it (:func:`record_data`); ``--resume``, ``sample`` and ``eval`` compare it
(:func:`check_data`) and refuse a changed file with one line unless told ``--allow-changed-data``: the run's
normalization statistics and held-out split come from the old file, so its results on the new one would be
silently wrong (a resumed loss of 0.4 jumped to 441117; eval reported an energy distance of -102.8).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dforce.engine import rundir
from dforce.errors import DataError

# data files up to this size are hashed whole; larger ones by size + first and last MiB (a replaced file
# almost always changes its size or its ends; hashing GBs at every `dforce sample` would not be worth it)
FULL_HASH_BYTES = 64 << 20
EDGE_BYTES = 1 << 20


def fingerprint(path: str | Path) -> dict:
    """``{"path", "size", "sha256", "hashed"}`` of a data file: the whole file up to :data:`FULL_HASH_BYTES`,
    else its size and first + last :data:`EDGE_BYTES`."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
    return {"path": str(path.absolute()), "size": size, "sha256": h.hexdigest(),
            "hashed": "all" if size <= FULL_HASH_BYTES else "first+last MiB"}


def record_data(run_dir: str | Path, path: str | Path) -> None:
    """Save the fingerprint of the training data file in the run's marker."""
    from dforce._utils import check_regular_file

    m = rundir.read_marker(run_dir)
    if m is not None:
        rundir._write_marker(Path(run_dir), {**m, "data": fingerprint(check_regular_file(path))})


def check_data(run_dir: str | Path, path: str | Path, allow_changed: bool = False) -> None:
    """Refuse a data file that is not the one ``run_dir`` was trained on (same path, other content)."""
    from dforce._utils import check_regular_file

    m = rundir.read_marker(run_dir) or {}
    saved = m.get("data")
    if not isinstance(saved, dict):
        return
    now = fingerprint(check_regular_file(path))
    if (now["size"], now["sha256"]) == (saved.get("size"), saved.get("sha256")):
        return
    why = f"size {saved.get('size')} → {now['size']} bytes" if now["size"] != saved.get("size") else "content differs"
    if allow_changed:
        rundir.note(f"{path}: changed since {run_dir} was trained ({why}); used anyway (--allow-changed-data)")
        return
    raise DataError(f"{path}: changed since {run_dir} was trained on it ({why}); its normalization and held-out "
                    "split come from the old file: restore it, or pass --allow-changed-data to use it anyway")
