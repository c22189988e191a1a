"""Run directories: what dforce writes where, and the rule that it never touches what it did not write.

Every directory a dforce command creates carries a marker, ``dforce-run.json``::

    {"kind": "sequence", "dforce": "0.2.0", "created": "2025-01-01T12:00:00Z",
     "files": ["config.yaml", "model.safetensors", ...],          # every file dforce wrote here
     "outputs": {"/abs/fig.npy": [size, mtime_ns]},                # files written elsewhere for this run
     "data": {"path": "/abs/my.npz", "size": 123, "sha256": "..."}}  # the training data's fingerprint

``kind`` is one of :data:`KINDS` (a run of one recipe) or ``outputs`` (a folder of results). The rules:

* :func:`claim` (every training command, before it writes): a new or empty directory is created and
  marked; a run of the same kind is continued (``--resume``) or started over (``--overwrite``: deletes
  only the files listed in the marker); anything else (user files, a run of another kind) is refused
  with one line. Training holds an exclusive ``flock`` on ``.dforce.lock`` until the process ends, so a
  second writer fails at once; the kernel drops the lock of a killed process, so a stale lock never blocks.
* :func:`prepare_outputs` (commands that write results): a file that exists and is not listed in a
  marker is the user's: refused unless ``--overwrite``.
* :func:`expect_kind` (commands that read a run): names the run's real kind when it is another recipe's.
* Temporaries of an atomic write interrupted by ``kill -9`` are removed by the next :func:`claim`.

Runs written before the marker existed (``config.yaml`` + weights) are recognized from their config and
adopted (marked) the first time a command of their own kind writes to them.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import sys
from pathlib import Path

from dforce.errors import CheckpointError, ConfigError

MARKER = "dforce-run.json"
LOCK_FILE = ".dforce.lock"
KINDS = ("sequence", "forecast", "plan", "video", "imitation", "compositional", "demo")
OUTPUTS = "outputs"  # kind of a folder of results (forecast --out, sample --out DIR, ...)
COMMANDS = {"sequence": "dforce train", "forecast": "dforce forecast", "plan": "dforce plan train",
            "video": "dforce video train", "imitation": "dforce imitation train",
            "compositional": "dforce compositional train", "demo": "dforce demo", OUTPUTS: "a dforce command"}
NAMES = {"plan": "planning"}  # how a kind is written in messages ("a planning run")
# files of runs written before the marker existed (adopted as dforce's own when such a run is marked)
LEGACY_FILES = ("config.yaml", "model.safetensors", "ema.safetensors", "trainer_state.pt", "metrics.jsonl",
                "data_stats.json", "loss.png", "eval.json", "samples.npy", "samples.png", "stats.json",
                "train_time.json", "best.safetensors", "forecast_meta.json", "demo.json", "demo.png",
                "eval_*.json", "eval_*.png", "rollout_*.gif", "samples/*.png", "samples/*_paths.npy", "tb/*")
WEIGHT_FILES = ("trainer_state.pt", "model.safetensors", "ema.safetensors", "best.safetensors")
# temporaries of checkpoint.atomic_write_bytes (.NAME.XXXXXXXX.tmp) and plotting.save_figure (.STEM.tmp.png)
STALE_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|^\..+\.tmp\.[A-Za-z0-9]+$")

_held: dict[str, int] = {}  # run dir → fd of its flock, held until release_all() or process exit
_created: list[tuple[Path, Path]] = []  # (folder, its top new parent) this command created: removed on failure


def note(msg: str) -> None:
    """A one-line notice on stderr (not an error: the command goes on)."""
    print(f"note: {msg}", file=sys.stderr)


def _short(names, n: int = 3) -> str:
    names = sorted(map(str, names))
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


# ----------------------------------------------------------------------------------------------- marker

def read_marker(d: str | Path) -> dict | None:
    """The marker of directory ``d`` (None when it has none); a corrupt marker is a one-line error."""
    p = Path(d) / MARKER
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p}: unreadable run marker ({type(e).__name__}); it records which files dforce "
                              "wrote here: restore it or move your files elsewhere") from None
    if not isinstance(m, dict) or not isinstance(m.get("kind"), str) or not isinstance(m.get("files", []), list):
        raise CheckpointError(f"{p}: not a dforce run marker (expected kind and files)")
    return m


def _write_marker(d: Path, m: dict) -> None:
    from dforce.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(d / MARKER, json.dumps(m, indent=1).encode(), record=False)


def new_marker(kind: str, files=()) -> dict:
    from dforce import __version__

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": kind, "dforce": __version__, "created": now, "files": sorted(set(files))}


def note_written(path: str | Path) -> None:
    """Record ``path`` as written by dforce in the marker of its directory (or of the one above)."""
    path = Path(path).absolute()
    for d in (path.parent, path.parent.parent):
        m = read_marker(d) if (d / MARKER).is_file() else None
        if m is not None:
            rel = path.relative_to(d).as_posix()
            if rel != MARKER and rel not in m.get("files", []):
                m["files"] = sorted({*m.get("files", []), rel})
                _write_marker(d, m)
            return


def note_output(path: str | Path, owner: str | Path) -> None:
    """Record a result written outside any marked directory in the marker of run ``owner`` (with its size and
    mtime: if the user later replaces the file, it is theirs again)."""
    path, owner = Path(path).absolute(), Path(owner)
    if (path.parent / MARKER).is_file():
        return note_written(path)
    m = read_marker(owner)
    if m is None:
        return
    st = path.stat()
    m.setdefault("outputs", {})[str(path)] = [st.st_size, st.st_mtime_ns]
    try:
        _write_marker(owner, m)
    except OSError:  # a read-only run directory: the result is written, only its record is missing
        pass


def written_by_dforce(path: str | Path, owner: str | Path | None = None) -> bool:
    """Whether dforce wrote ``path`` (listed in a marker beside it, or recorded as an output of ``owner``)."""
    path = Path(path).absolute()
    for d in (path.parent, path.parent.parent):
        m = read_marker(d)
        if m is not None and path.relative_to(d).as_posix() in m.get("files", []):
            return True
    m = read_marker(owner) if owner is not None else None
    rec = (m or {}).get("outputs", {}).get(str(path))
    if rec:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns] == list(rec)
    return False


# ------------------------------------------------------------------------------------------------- kinds

def infer_kind(d: str | Path) -> str | None:
    """The kind of run in ``d``: its marker's, else (runs older than the marker) guessed from ``config.yaml``
    when weights are present; None for anything else."""
    d = Path(d)
    m = read_marker(d)
    if m is not None:
        return m["kind"]
    cfg = d / "config.yaml"
    if not (cfg.is_file() and any((d / w).is_file() for w in WEIGHT_FILES)):
        return None
    from dforce.engine.checkpoint import load_yaml

    try:
        keys = set(load_yaml(cfg))
    except CheckpointError:
        return None
    for kind, key in (("demo", "demo"), ("compositional", "cross"), ("imitation", "policy"), ("plan", "plan"),
                      ("forecast", "early_stop"), ("video", "codec"), ("sequence", "logging")):
        if key in keys:
            return kind
    return None


def _name(kind: str) -> str:
    return NAMES.get(kind, kind)


def _what(kind: str) -> str:
    if kind == OUTPUTS:
        return "a folder of dforce results"
    return f"a {_name(kind)} run (made by `{COMMANDS.get(kind, 'dforce')}`)"


def expect_kind(run_dir: str | Path, kind: str) -> Path:
    """Check that ``run_dir`` is a run of ``kind`` before a command reads it; one line naming what it is else."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: run directory not found")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: is a file, not a run directory")
    found = infer_kind(run_dir)
    if found is None:
        raise CheckpointError(f"{run_dir}: not a {_name(kind)} run directory (no {MARKER}, or config.yaml + weights)")
    if found != kind:
        raise CheckpointError(f"{run_dir} is {_what(found)}, not a {_name(kind)} run; use it with its own command")
    return run_dir


# ------------------------------------------------------------------------------------------------- claim

def _entries(d: Path) -> list[str]:
    return [e for e in os.listdir(d) if e not in (MARKER, LOCK_FILE) and not STALE_TMP.match(e)]


def lock(run_dir: str | Path) -> None:
    """Take the exclusive lock of ``run_dir`` for this process (until :func:`release_all` or exit)."""
    run_dir = Path(run_dir).absolute()
    if str(run_dir) in _held:
        return
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CheckpointError(f"{run_dir}: cannot write into the run directory ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        who = os.pread(fd, 200, 0).decode(errors="replace").split()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            pid = f" (pid {who[0]})" if who else ""
            raise CheckpointError(f"{run_dir} is in use by another dforce process{pid}; wait for it to finish "
                                  "or give another --out") from None
        raise CheckpointError(f"{run_dir}: cannot lock the run directory ({e.strerror})") from None
    prev = os.pread(fd, 200, 0).decode(errors="replace").split()
    if prev and prev[0].isdigit() and int(prev[0]) != os.getpid() and not _alive(int(prev[0])):
        note(f"{run_dir}: the previous writer (pid {prev[0]}) stopped without finishing (killed?); "
             "its lock was released by the system")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {datetime.datetime.now().isoformat(timespec='seconds')}\n".encode(), 0)
    _held[str(run_dir)] = fd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mkdir_new(d: Path) -> None:
    """Create ``d`` and its missing parents, remembered so that a failed command removes them again."""
    top = d
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    d.mkdir(parents=True)
    _created.append((d, top))


def release_all(failed: bool = False) -> None:
    """Drop every run-directory lock this process holds (end of a CLI command; process exit does it too).
    The lock file is emptied; one that still names a pid was left by a writer that died (the next says so).
    With ``failed``, folders this command created and left holding only the marker and the lock are removed
    (a refused config or data file leaves no empty run behind)."""
    while _held:
        _, fd = _held.popitem()
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
    while _created:
        d, top = _created.pop()
        if not (failed and d.is_dir() and set(os.listdir(d)) <= {MARKER, LOCK_FILE}):
            continue
        for name in (MARKER, LOCK_FILE):
            (d / name).unlink(missing_ok=True)
        for p in (d, *d.parents):  # the folder, then the parents made for it, while empty
            try:
                p.rmdir()
            except OSError:
                break
            if p == top:
                break


def clean_stale_temps(d: str | Path) -> list[str]:
    """Remove temporaries left by an atomic write that was killed (``.NAME.XXXXXXXX.tmp``); returns them."""
    d = Path(d)
    gone = []
    for sub in (d, *(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())):
        for p in sub.iterdir():
            if STALE_TMP.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()
                gone.append(p.relative_to(d).as_posix())
    if gone:
        note(f"{d}: removed {len(gone)} temporary file(s) left by an interrupted write ({_short(gone)})")
    return gone


def claim(run_dir: str | Path, kind: str, resume: bool = False, overwrite: bool = False,
          flag: str = "--out") -> Path:
    """Take ``run_dir`` for a training command of ``kind`` (see module docstring); returns it, locked.

    New or empty → created and marked. A run of ``kind``: ``resume`` continues it; ``overwrite`` (or a run
    that never reached a checkpoint) deletes the files dforce wrote there, nothing else; otherwise refused.
    Anything else is refused with one line. Under ``--nproc`` the launcher claims and its workers skip this
    (``DFORCE_RUN_CLAIMED``).
    """
    assert kind in KINDS, kind
    run_dir = Path(run_dir)
    if os.environ.get("DFORCE_RUN_CLAIMED") == str(run_dir.absolute()):
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag} {run_dir}: is not a directory")
    if not run_dir.exists():
        if resume:
            raise CheckpointError(f"--resume {run_dir}: run directory not found")
        try:
            _mkdir_new(run_dir)
        except FileExistsError:
            pass  # a second writer racing us: it meets the lock below
        except OSError as e:
            raise ConfigError(f"{flag} {run_dir}: cannot create the directory ({e.strerror})") from None
        lock(run_dir)
    found, marker = infer_kind(run_dir), read_marker(run_dir)
    if found is None:
        if resume:
            raise CheckpointError(f"--resume {run_dir}: not a dforce run directory (no {MARKER})")
        entries = _entries(run_dir)
        if entries:
            raise ConfigError(f"{flag} {run_dir}: holds files dforce did not write ({_short(entries)}); give a new "
                              "or empty directory (dforce never writes over or deletes them)")
        lock(run_dir)
        clean_stale_temps(run_dir)
        _write_marker(run_dir, new_marker(kind, [LOCK_FILE]))
        return run_dir
    if found != kind:
        raise ConfigError(f"{flag} {run_dir}: is {_what(found)}, not a {_name(kind)} run; give a new or empty "
                          "directory")
    lock(run_dir)
    clean_stale_temps(run_dir)
    marker = adopt(run_dir, kind)
    if resume:
        return run_dir
    started = any((run_dir / w).is_file() for w in WEIGHT_FILES)
    if started and not overwrite:
        raise ConfigError(f"{run_dir} already holds a {_name(kind)} run; use --resume to continue it, --overwrite "
                          f"to start over (deletes only the files dforce wrote there), or another {flag}")
    _delete_written(run_dir, marker)
    return run_dir


def adopt(run_dir: str | Path, kind: str) -> dict:
    """The marker of run ``run_dir``; a run from before markers (``config.yaml`` + weights of ``kind``) gets
    one listing the files such a run writes (a one-line notice). Read-only directories are left as they are."""
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    if marker is None and infer_kind(run_dir) == kind:
        files = [p.relative_to(run_dir).as_posix() for pat in LEGACY_FILES for p in run_dir.glob(pat) if p.is_file()]
        marker = new_marker(kind, files + [LOCK_FILE])
        try:
            _write_marker(run_dir, marker)
        except OSError:
            return marker
        note(f"{run_dir}: a {kind} run from before run markers; marked it as one ({MARKER})")
    return marker or {}


def _delete_written(run_dir: Path, marker: dict) -> None:
    """``--overwrite``: delete the files the marker lists (never anything else), then empty folders they left."""
    keep = {MARKER, LOCK_FILE}
    for rel in marker.get("files", []):
        p = run_dir / rel
        if rel in keep or ".." in Path(rel).parts or Path(rel).is_absolute():
            continue
        if p.is_file() or p.is_symlink():
            p.unlink()
    for rel in {Path(r).parent for r in marker.get("files", [])} - {Path(".")}:
        try:
            (run_dir / rel).rmdir()  # only when empty: a user's file inside keeps it
        except OSError:
            pass
    _write_marker(run_dir, {**marker, "files": sorted(keep - {MARKER}), "outputs": {}, "data": None})


# ----------------------------------------------------------------------------------------------- outputs

def prepare_outputs(folder: str | Path, names, overwrite: bool = False, flag: str = "--out") -> list[Path]:
    """Check the result files ``folder/name`` before a command computes them; returns their paths.

    A new folder is created and marked (kind ``outputs``, unless it is inside a run being written). An existing
    file that dforce did not write (not listed in the folder's marker) is refused unless ``overwrite``, as is
    anything that is not a regular file. The names are recorded in the folder's marker before they are written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: is a file, not a directory")
    paths = [folder / n for n in names]
    if not folder.exists():
        try:
            _mkdir_new(folder)
        except OSError as e:
            raise ConfigError(f"{flag} {folder}: cannot create the directory ({e.strerror})") from None
        _write_marker(folder, new_marker(OUTPUTS, names))
        return paths
    kind = infer_kind(folder)
    if kind not in (None, OUTPUTS):
        adopt(folder, kind)  # a run from before markers: its earlier results are dforce's
    for p in paths:
        check_output_file(p, overwrite, flag=flag)
    if not _writable(folder):
        raise ConfigError(f"{flag} {folder}: the directory is not writable; give another {flag}")
    m = read_marker(folder)
    if m is not None and not set(names) <= set(m["files"]):
        _write_marker(folder, {**m, "files": sorted({*m["files"], *names})})
    return paths


def check_output_file(path: str | Path, overwrite: bool = False, owner: str | Path | None = None,
                      flag: str = "--out") -> Path:
    """Refuse to write ``path`` when it exists and is not a regular file, or is a file dforce did not write
    (unless ``overwrite``), or when its folder is not writable. Creates a missing parent folder."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_file():
            raise ConfigError(f"{flag} {path}: exists and is not a regular file; give a file path")
        if not overwrite and not written_by_dforce(path, owner):
            raise ConfigError(f"{flag} {path}: exists and dforce did not write it; pass --overwrite to replace "
                              f"it, or give another {flag}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {path}: cannot create it ({parent} is not a directory)")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise ConfigError(f"{flag} {path}: cannot create {parent} ({e.strerror})") from None
    if not _writable(parent):
        raise ConfigError(f"{flag} {path}: {parent} is not writable; give another {flag}")
    return path


def _writable(d: Path) -> bool:
    """Whether this process may create files in ``d`` (checked with its effective ids)."""
    eff = os.access in os.supports_effective_ids
    return os.access(d, os.W_OK | os.X_OK, effective_ids=eff)


# the training data's fingerprint lives in the marker too (dforce.engine.fingerprint)
from dforce.engine.fingerprint import check_data, fingerprint, record_data  # noqa: E402,F401
