"""The hostile-input table: bad or unusual inputs to every `dforce` command, and what must happen.

Shared by ``tests/test_hostile_inputs.py`` (each row a test) and ``benchmarks/faults.py`` (the whole table,
counted). A row is a command line (``{ws}`` = the case's workspace, ``{run}`` = a trained sequence run copied
into it, ``{data}`` = that run's data file), an optional ``setup(ws)`` that plants the hostile input, and the
expectation:

* ``error`` (most rows): exit code 2, exactly one ``error:`` line on stderr containing ``needle``, nothing else
  but ``note:`` lines, no traceback;
* ``ok``: exit code 0 (a ``warning:`` line allowed) and ``check(ws, out, err)`` returns None (else a
  description of the wrong result).

For every row, every file that existed in the workspace before the command must be byte-identical after it
(``data_lost`` otherwise). Commands run in-process through ``dforce.cli.main`` (fast), under a SIGALRM
watchdog (``hang``). Rows with ``readonly`` run with those folders read-only (as user ``nobody`` when the
tests run as root, who ignores permission bits).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

# a tiny sequence run: 3 steps of an 8-token window, width 16 (trains in ~1 s)
FAST = ["train.steps=3", "train.log_every=1", "train.warmup_steps=1", "train.batch_size=4", "data.window=8",
        "model.width=16", "sampler.window=8", "sampler.steps=4", "device=cpu", "logging.plot=false"]
NOBODY = 65534


@dataclass
class Case:
    name: str
    args: list[str]
    needle: str | None = None  # must appear (case-insensitive) in the error line
    setup: Callable[[Path], object] | None = None  # may return a cleanup callable
    expect: str = "error"  # error | ok
    check: Callable[[Path, str, str], str | None] | None = None  # ok rows: None when the result is right
    readonly: tuple[str, ...] = ()  # workspace folders made read-only for the command
    cwd: str | None = None  # run in this workspace folder
    timeout: int = 60
    may_change: tuple[str, ...] = ()  # glob patterns of files the command was asked to replace (--resume, ...)
    group: str = ""  # input kind: config | data | run directory | output path | read-only | numeric flag
    leaves_nothing: bool = True  # error rows: no new file or folder may remain (no empty run left behind)


# ------------------------------------------------------------------------------------------------ workspace

def make_template(root: Path) -> Path:
    """``root/data.npz`` (16 noisy 2-D oscillations of 24 steps) and ``root/run`` trained on it (in-process)."""
    from dforce import cli

    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(24)[None, :, None]
    f = np.linspace(0.2, 0.6, 16)[:, None, None]
    x = np.concatenate([np.sin(f * t), np.cos(f * t)], -1) + 0.05 * np.random.default_rng(0).normal(size=(16, 24, 2))
    np.savez(root / "data.npz", x=x.astype(np.float32))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = cli.main(["train", "sequence_small", *FAST, "--data", str(root / "data.npz"), "--out", str(root / "run"),
                       "--quiet"])
    assert rc == 0, err.getvalue()
    return root


def make_workspace(template: Path, ws: Path) -> Path:
    """A copy of the template whose run points at the copy's data file (fingerprint unchanged)."""
    shutil.copytree(template, ws)
    os.chmod(ws, 0o755)
    cfg = yaml.safe_load((ws / "run" / "config.yaml").read_text())
    cfg["data"]["path"] = str(ws / "data.npz")
    (ws / "run" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ws


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``root`` (``dir/`` for each folder)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        out.update({str((Path(dirpath) / d).relative_to(root)) + "/": "" for d in dirs})
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


@contextlib.contextmanager
def readonly_dirs(ws: Path, rels: tuple[str, ...]):
    """Make ``ws/rel`` folders read-only for the duration (as ``nobody`` when root: root ignores modes)."""
    if not rels:
        yield
        return
    root = os.geteuid() == 0
    if root:
        for dirpath, dirs, files in os.walk(ws):
            for n in [dirpath, *(os.path.join(dirpath, f) for f in dirs + files)]:
                os.lchown(n, NOBODY, NOBODY)
    modes = {}
    for rel in rels:
        d = ws / rel
        for p in [d, *d.rglob("*")]:
            modes[p] = p.stat().st_mode
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
    try:
        if root:
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
        yield
    finally:
        if root:
            os.seteuid(0)
            os.setegid(0)
        for p, m in modes.items():
            os.chmod(p, stat.S_IMODE(m))


def run_case(case: Case, ws: Path) -> dict:
    """Run one row in workspace ``ws``; returns ``{outcome, rc, err, detail}`` with outcome one of
    clear_error | ok | unclear | traceback | silent_wrong | data_lost | hang."""
    from dforce import cli

    cleanup = case.setup(ws) if case.setup else None
    args = [a.format(ws=ws, run=ws / "run", data=ws / "data.npz") for a in case.args]
    before = snapshot(ws)
    out, err = io.StringIO(), io.StringIO()
    rc, crash = None, None
    old = signal.signal(signal.SIGALRM, _alarm)
    cwd = os.getcwd()
    try:
        if case.cwd:
            os.chdir(ws / case.cwd)
        signal.alarm(case.timeout)
        with readonly_dirs(ws, case.readonly), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(args)
    except Hang:
        crash = "hang"
    except BaseException:  # anything escaping cli.main is a traceback for the user
        crash = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
        if callable(cleanup):
            cleanup()
    after = snapshot(ws)
    err_text = err.getvalue()
    res = {"case": case.name, "expect": case.expect, "rc": rc, "err": err_text[-2000:], "detail": ""}
    # a command that succeeds updates dforce's own bookkeeping (the marker lists what it wrote); a failed one
    # must not even do that
    own = ("*dforce-run.json", "*.dforce.lock") if case.expect == "ok" else ()
    changed = [k for k, h in before.items() if after.get(k) != h
               and not any(fnmatch.fnmatch(k, pat) for pat in (*case.may_change, *own))]
    if crash == "hang":
        return res | {"outcome": "hang", "detail": f"no answer within {case.timeout} s"}
    if crash is not None or "Traceback" in err_text:
        return res | {"outcome": "traceback", "detail": (crash or err_text)[-1500:]}
    if changed:
        return res | {"outcome": "data_lost", "detail": f"changed or deleted: {changed[:5]}"}
    lines = [ln for ln in err_text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if case.expect == "error":
        if rc == 0:
            return res | {"outcome": "silent_wrong", "detail": "accepted (exit 0)"}
        others = [ln for ln in lines if not ln.startswith(("error:", "note:"))]
        left = sorted(set(after) - set(before))
        if case.leaves_nothing and left:
            return res | {"outcome": "unclear", "detail": f"a failed command left new files behind: {left[:4]}"}
        if rc == 2 and len(errors) == 1 and not others and (case.needle or "").lower() in errors[0].lower():
            return res | {"outcome": "clear_error"}
        return res | {"outcome": "unclear", "detail": f"rc={rc}, stderr lines: {lines[:4]}"}
    if rc != 0 or errors:
        return res | {"outcome": "silent_wrong" if rc == 0 else "unclear", "detail": f"rc={rc}: {lines[:3]}"}
    problem = case.check(ws, out.getvalue(), err_text) if case.check else None
    if problem:
        return res | {"outcome": "silent_wrong", "detail": problem}
    return res | {"outcome": "ok"}


# ----------------------------------------------------------------------------------------- setup helpers

def write(rel: str, content: bytes | str):
    def setup(ws: Path):
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def npy(rel: str, arr):
    def setup(ws: Path):
        np.save(ws / rel, arr)
    return setup


def npz(rel: str, **arrays):
    def setup(ws: Path):
        np.savez(ws / rel, **arrays)
    return setup


def fifo(rel: str):
    def setup(ws: Path):
        os.mkfifo(ws / rel)
        return lambda: (ws / rel).unlink()  # snapshots skip FIFOs; remove it so copies stay plain
    return setup


def steps(*fns):
    def setup(ws: Path):
        cleanups = [fn(ws) for fn in fns]
        return lambda: [c() for c in cleanups if callable(c)]
    return setup


def marker(rel: str, kind: str):
    """A folder that is a run of another kind (marker + a config), as its recipe would leave it."""
    def setup(ws: Path):
        d = ws / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "dforce-run.json").write_text(json.dumps({"kind": kind, "dforce": "0.2.0", "created": "x",
                                                       "files": ["config.yaml"]}))
        (d / "config.yaml").write_text("method: df\n")
    return setup


def edit_json(rel: str, fn):
    def setup(ws: Path):
        p = ws / rel
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return setup


def replace_data(ws: Path):
    x = np.load(ws / "data.npz")["x"]
    np.savez(ws / "data.npz", x=x * 1000.0 + 7.0)  # same shape, another scale: the old statistics would lie


def hold_lock(ws: Path):
    """Another process's lock on the run (flock on a separate open file: the same as another process)."""
    import fcntl

    fd = os.open(ws / "run" / ".dforce.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"424242 2025-01-01T00:00:00\n", 0)
    return lambda: os.close(fd)


def strip_marker(ws: Path):
    (ws / "run" / "dforce-run.json").unlink()  # a run from before markers


def nan_weights(ws: Path):
    from safetensors.torch import load_file, save_file

    for f in ("model.safetensors", "ema.safetensors"):
        sd = load_file(str(ws / "run" / f))
        k = next(iter(sd))
        sd[k] = sd[k].clone()
        sd[k].view(-1)[0] = float("nan")
        save_file(sd, str(ws / "run" / f))


def alias_bomb(key_path: str = "train") -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    return "\n".join(lines).replace("a: &a", f"{key_path}: {{lr: 1}}\nzz: &a", 1) + "\n"


def csv_text(bom: bool = False) -> bytes:
    t = np.arange(80)
    rows = ["time,a,b"] + [f"{i},{np.sin(0.3 * i):.5f},{np.cos(0.3 * i):.5f}" for i in t]
    text = "\n".join(rows) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


# ----------------------------------------------------------------------------------------------- checks

def stats_channels(expected):
    def check(ws, out, err):
        stats = json.loads((ws / "r" / "data_stats.json").read_text())
        return None if stats["channels"] == expected else f"channels {stats['channels']} != {expected}"
    return check


def tiny_scale_normalized(ws, out, err):
    stats = json.loads((ws / "r" / "data_stats.json").read_text())
    ok = all(1e-11 < s < 1e-9 for s in stats["std"])
    return None if ok else f"std {stats['std']} (the data's std is ~4.5e-10: it was left unnormalized)"


def reported_exactly(npy_rel: str, png_rel: str):
    def check(ws, out, err):
        rep = json.loads(out)
        want = (str(ws / npy_rel), str(ws / png_rel))
        if (rep["samples"], rep["plot"]) != want:
            return f"reported {rep['samples']}, {rep['plot']}; expected {want}"
        if not all(Path(p).is_file() for p in want):
            return "a reported file is missing"
        return None
    return check


def file_kept(rel: str, content: bytes):
    def check(ws, out, err):
        p = ws / rel
        return None if p.is_file() and p.read_bytes() == content else f"{rel} was not kept"
    return check


def printed_json_with(key: str):
    def check(ws, out, err):
        try:
            rep = json.loads(out)
        except ValueError:
            return "no JSON report printed"
        return None if key in rep else f"{key} missing from the report"
    return check


def metrics_are_objects(ws, out, err):
    lines = (ws / "run" / "metrics.jsonl").read_text().splitlines()
    bad = [ln for ln in lines if ln.strip() and not ln.strip().startswith("{")]
    return f"metrics.jsonl kept {bad}" if bad else None


def temps_cleaned(ws, out, err):
    left = [p.name for p in (ws / "run").iterdir() if p.name.endswith(".tmp")]
    return f"stale temporaries left: {left}" if left else None


def all_of(*checks):
    def check(ws, out, err):
        for c in checks:
            problem = c(ws, out, err)
            if problem:
                return problem
        return None
    return check


# ------------------------------------------------------------------------------------------------- table

T = ["train", "sequence_small", *FAST, "--quiet"]
TD = [*T, "--data"]
SEQ = ["sample", "{run}", "--length", "4", "--num", "2", "--quiet"]
EV = ["eval", "{run}", "--num", "4", "--quiet"]
RES = ["train", "--resume", "{run}", "--quiet", "train.steps=4"]


def _config_cases() -> list[Case]:
    big = "train:\n  lr: 0.001\n" + "# padding\n" * 200_000
    nested = "train: " + "[" * 5000 + "]" * 5000 + "\n"
    return [
        Case("config-missing", ["train", "{ws}/nope.yaml", "--out", "{ws}/r"], "not found"),
        Case("config-directory", ["train", "{ws}", "--out", "{ws}/r"], "is a directory"),
        Case("config-dev-zero", ["train", "/dev/zero", "--out", "{ws}/r"], "not a regular file"),
        Case("config-fifo", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "not a regular file", fifo("c.yaml")),
        Case("config-invalid-yaml", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "not valid YAML",
             write("c.yaml", "train: [1, 2\n")),
        Case("config-top-level-list", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "mapping", write("c.yaml", "- 1\n")),
        Case("config-alias-bomb", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "aliases",
             write("c.yaml", alias_bomb())),
        Case("config-binary", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "c.yaml",
             write("c.yaml", bytes(range(256)) * 4)),
        Case("config-huge", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "too large", write("c.yaml", big)),
        Case("config-deeply-nested", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "c.yaml", write("c.yaml", nested)),
        Case("config-unknown-key", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "trian",
             write("c.yaml", "trian:\n  lr: 1\n")),
        Case("config-wrong-type-in-file", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "train.lr",
             write("c.yaml", "train:\n  lr: fast\n")),
        Case("config-section-not-mapping", ["train", "{ws}/c.yaml", "--out", "{ws}/r"], "train",
             write("c.yaml", "train: 3\n")),
        Case("preset-unknown", ["train", "no_such_preset", "--out", "{ws}/r"], "no_such_preset"),
        Case("override-unknown-key", [*T, "--out", "{ws}/r", "train.lrr=1"], "train.lrr"),
        Case("override-bad-type", [*T, "--out", "{ws}/r", "train.lr=abc"], "train.lr"),
        Case("override-weight-decay-negative", [*T, "--out", "{ws}/r", "train.weight_decay=-5"], "weight_decay"),
        Case("override-lr-nan", [*T, "--out", "{ws}/r", "train.lr=.nan"], "train.lr"),
        Case("override-lr-inf", [*T, "--out", "{ws}/r", "train.lr=.inf"], "train.lr"),
        Case("override-lr-negative", [*T, "--out", "{ws}/r", "train.lr=-1"], "train.lr"),
        Case("override-lr-diverges", [*T, "--out", "{ws}/r", "train.lr=1e30"], "loss became", leaves_nothing=False),
        Case("override-grad-clip-negative", [*T, "--out", "{ws}/r", "train.grad_clip=-1"], "grad_clip"),
        Case("override-warmup-negative", [*T, "--out", "{ws}/r", "train.warmup_steps=-3"], "warmup_steps"),
        Case("override-steps-zero", [*T, "--out", "{ws}/r", "train.steps=0"], "train.steps"),
        Case("override-batch-zero", [*T, "--out", "{ws}/r", "train.batch_size=0"], "batch_size"),
        Case("override-ema-one", [*T, "--out", "{ws}/r", "train.ema_decay=1"], "ema_decay"),
        Case("override-width-huge", [*T, "--out", "{ws}/r", "model.width=1000000"], "model.width"),
        Case("override-width-zero", [*T, "--out", "{ws}/r", "model.width=0"], "model.width"),
        Case("override-depth-huge", [*T, "--out", "{ws}/r", "model.depth=100000000"], "model.depth"),
        Case("override-batch-huge", [*T, "--out", "{ws}/r", "train.batch_size=1000000000"], "batch_size"),
        Case("override-backbone", [*T, "--out", "{ws}/r", "model.backbone=lstm"], "model.backbone"),
        Case("override-window-one", [*T, "--out", "{ws}/r", "data.window=1"], "data.window"),
        Case("override-val-fraction", [*T, "--out", "{ws}/r", "data.val_fraction=1.5"], "val_fraction"),
        Case("override-sampler-window", [*T, "--out", "{ws}/r", "sampler.window=64"], "sampler.window"),
        Case("override-device", [*T, "--out", "{ws}/r", "device=tpu"], "device"),
        Case("override-levels-zero", [*T, "--out", "{ws}/r", "diffusion.num_levels=0"], "num_levels"),
        Case("override-not-a-section", [*T, "--out", "{ws}/r", "train.lr.x=1"], "train.lr"),
        Case("override-bad-key-syntax", [*T, "--out", "{ws}/r", "train..lr=1"], "train..lr"),
        Case("override-bare-word", [*T, "--out", "{ws}/r", "train.lr=1e-3", "lr"], "'lr'"),
        Case("override-alias-bomb", [*T, "--out", "{ws}/r",
                                     "train.lr=[&a [1,1,1,1,1,1,1,1], *a, *a, *a, *a, *a, *a, *a, *a]"], "train.lr"),
        Case("override-huge-list", [*T, "--out", "{ws}/r", "train.lr=[" + ",".join(["1"] * 5000) + "]"], "train.lr"),
        Case("override-null-steps", [*T, "--out", "{ws}/r", "train.steps=null"], "train.steps"),
        Case("plan-config-directory", ["plan", "train", "--config", "{ws}", "--out", "{ws}/r"], "is a directory"),
        Case("plan-unknown-maze", ["plan", "train", "--maze", "nowhere", "--out", "{ws}/r"], "nowhere"),
        Case("video-config-missing", ["video", "train", "--config", "{ws}/nope.yaml", "--out", "{ws}/r"], "not found"),
        Case("video-bad-override", ["video", "train", "--config", "video_digits_tiny", "--out", "{ws}/r",
                                    "model.width=-4"], "model.width"),
        Case("imitation-unknown-key", ["imitation", "train", "--config", "imitation_small", "--set", "policy.nope=1",
                                       "--out", "{ws}/r"], "policy.nope"),
        Case("imitation-config-fifo", ["imitation", "train", "--config", "{ws}/c.yaml", "--out", "{ws}/r"],
             "not a regular file", fifo("c.yaml")),
        Case("compositional-bad-value", ["compositional", "train", "--config", "compositional_small", "--set",
                                         "train.lr=-1", "--out", "{ws}/r"], "train.lr"),
        Case("forecast-config-alias-bomb", ["forecast", "--data", "{ws}/f.csv", "--horizon", "5", "--config",
                                            "{ws}/c.yaml", "--out", "{ws}/o"], "aliases",
             steps(write("c.yaml", alias_bomb()), write("f.csv", csv_text()))),
        Case("config-with-bom-ok", ["train", "{ws}/c.yaml", *FAST, "--out", "{ws}/r", "--quiet"], expect="ok",
             setup=write("c.yaml", b"\xef\xbb\xbftrain:\n  lr: 0.002\n")),
    ]


def _data_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    good = rng.normal(size=(6, 30, 2)).astype(np.float32)
    nan = good.copy()
    nan[2, 5, 1] = np.nan
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = np.zeros((10, 2)), np.zeros((12, 2))
    tiny = (4.5e-10 * rng.normal(size=(8, 30, 2))).astype(np.float32)
    return [
        Case("data-missing", [*TD, "{ws}/nope.npz", "--out", "{ws}/r"], "nope.npz"),
        Case("data-directory", [*TD, "{ws}", "--out", "{ws}/r"], "is a directory"),
        Case("data-dev-zero", [*TD, "/dev/zero", "--out", "{ws}/r"], "not a regular file"),
        Case("data-fifo", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "not a regular file", fifo("d.npy")),
        Case("data-text-named-npy", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "not a .npy file",
             write("d.npy", "1,2\n3,4\n")),
        Case("data-empty-npy", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "empty", write("d.npy", b"")),
        Case("data-text-named-npz", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "not a .npz file", write("d.npz", "x\n")),
        Case("data-truncated-npz", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "d.npz",
             lambda ws: (np.savez(ws / "full.npz", x=good),
                         (ws / "d.npz").write_bytes((ws / "full.npz").read_bytes()[:300]))),
        Case("data-pickled-object", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "pickle",
             lambda ws: np.savez(ws / "d.npz", x=obj)),
        Case("data-x-and-seq", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "ambiguous",
             npz("d.npz", x=good, seq_0=good[0])),
        Case("data-unexpected-array", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "'y'", npz("d.npz", x=good, y=good)),
        Case("data-two-unnamed-arrays", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "no array named 'x'",
             npz("d.npz", a=good, b=good)),
        Case("data-empty-npz", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "d.npz", npz("d.npz")),
        Case("data-complex", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "complex", npy("d.npy", good + 1j * good)),
        Case("data-nan", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "NaN", npy("d.npy", nan)),
        Case("data-inf", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "inf", npy("d.npy", inf)),
        Case("data-4d", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "shape", npy("d.npy", good[None])),
        Case("data-1d", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "shape", npy("d.npy", good[0, :, 0])),
        Case("data-strings", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "non-numeric", npy("d.npy", np.array([["a"]]))),
        Case("data-too-short", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "data.window", npy("d.npy", good[:, :5])),
        Case("data-zero-channels", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], "d.npy", npy("d.npy", good[:, :, :0])),
        Case("data-seq-3d", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "seq_1", npz("d.npz", seq_0=good[0],
                                                                               seq_1=good[:2])),
        Case("data-seq-channels-differ", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "channels",
             npz("d.npz", seq_0=good[0], seq_1=good[1, :, :1])),
        Case("data-cond-missing-one", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "cond_1",
             npz("d.npz", seq_0=good[0], seq_1=good[1], cond_0=good[0])),
        Case("data-cond-length", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "cond", npz("d.npz", x=good, cond=good[:, :9])),
        Case("data-cond-nan", [*TD, "{ws}/d.npz", "--out", "{ws}/r"], "cond", npz("d.npz", x=good, cond=nan)),
        Case("data-csv-text-cell", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], "line 3",
             write("d.csv", "a,b\n1,2\nx,3\n")),
        Case("data-csv-ragged", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], "fields", write("d.csv", "a,b\n1,2\n3\n")),
        Case("data-csv-header-only", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], "header", write("d.csv", "a,b\n")),
        Case("data-csv-latin1", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], "UTF-8", write("d.csv", b"a,\xe9\n1,2\n")),
        Case("data-csv-only-time", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], "no data columns",
             write("d.csv", "time\n1\n2\n")),
        Case("data-csv-time-column-missing", [*TD, "{ws}/d.csv", "--out", "{ws}/r", "data.time_column=when"], "when",
             write("d.csv", csv_text())),
        Case("data-unsupported-suffix", [*TD, "{ws}/d.txt", "--out", "{ws}/r"], "unsupported",
             write("d.txt", "1 2\n")),
        Case("data-csv-bom-ok", [*TD, "{ws}/d.csv", "--out", "{ws}/r"], expect="ok", setup=write("d.csv", csv_text(True)),
             check=stats_channels(["a", "b"])),
        Case("data-tiny-scale-ok", [*TD, "{ws}/d.npy", "--out", "{ws}/r"], expect="ok", setup=npy("d.npy", tiny),
             check=tiny_scale_normalized),
        Case("video-data-text-npy", ["video", "train", "--data", "{ws}/v.npy", "--out", "{ws}/r"], "not a .npy file",
             write("v.npy", "hello\n")),
        Case("video-data-fifo", ["video", "train", "--data", "{ws}/v.npz", "--out", "{ws}/r"], "not a regular file",
             fifo("v.npz")),
        Case("video-data-dev-zero", ["video", "train", "--data", "/dev/zero", "--out", "{ws}/r"], "not a regular file"),
        Case("video-data-dims", ["video", "train", "--data", "{ws}/v.npy", "--out", "{ws}/r"], "5 dims",
             npy("v.npy", np.zeros((4, 8, 8), np.uint8))),
        Case("forecast-data-missing", ["forecast", "--data", "{ws}/nope.csv", "--horizon", "5", "--out", "{ws}/o"],
             "nope.csv"),
    ]


def _run_dir_cases() -> list[Case]:
    def bad_width(ws):
        p = ws / "run" / "config.yaml"
        p.write_text(p.read_text().replace("width: 16", "width: 24"))

    return [
        Case("sample-missing-run", ["sample", "{ws}/nope"], "not found"),
        Case("sample-run-is-file", ["sample", "{data}"], "is a file"),
        Case("sample-empty-dir", ["sample", "{ws}/empty"], "not a sequence run", lambda ws: (ws / "empty").mkdir()),
        Case("sample-video-run", ["sample", "{ws}/v"], "is a video run", marker("v", "video")),
        Case("eval-plan-run", ["eval", "{ws}/v"], "is a planning run", marker("v", "plan")),
        Case("video-sample-sequence-run", ["video", "sample", "{run}"], "is a sequence run"),
        Case("plan-eval-sequence-run", ["plan", "eval", "{run}", "--episodes", "1"], "is a sequence run"),
        Case("imitation-eval-sequence-run", ["imitation", "eval", "--run", "{run}", "--episodes", "1"],
             "is a sequence run"),
        Case("compositional-sample-sequence-run", ["compositional", "sample", "--run", "{run}"], "is a sequence run"),
        Case("forecast-into-sequence-run", ["forecast", "--data", "{ws}/f.csv", "--horizon", "5", "--run", "{run}",
                                            "--out", "{ws}/o"], "is a sequence run", write("f.csv", csv_text())),
        Case("run-config-invalid", SEQ, "config.yaml", write("run/config.yaml", "data: [\n")),
        Case("run-config-alias-bomb", SEQ, "aliases", write("run/config.yaml", alias_bomb("data"))),
        Case("run-config-is-dir", SEQ, "config.yaml", lambda ws: ((ws / "run" / "config.yaml").unlink(),
                                                                  (ws / "run" / "config.yaml").mkdir())),
        Case("run-weights-garbage", SEQ, "safetensors", write("run/ema.safetensors", b"\x00" * 100)),
        Case("run-weights-nan", SEQ, "NaN", nan_weights),
        Case("run-weights-missing", SEQ, "weights", lambda ws: [(ws / "run" / f).unlink() for f in
                                                               ("ema.safetensors", "model.safetensors")]),
        Case("run-weights-wrong-shape", SEQ, "shape", bad_width),
        Case("run-stats-corrupt", SEQ, "data_stats.json", write("run/data_stats.json", "{")),
        Case("run-stats-zero-std", SEQ, "data_stats.json",
             edit_json("run/data_stats.json", lambda d: d | {"std": [0.0, 0.0]})),
        Case("run-stats-list", SEQ, "data_stats.json", write("run/data_stats.json", "[1, 2]")),
        Case("run-stats-missing", SEQ, "data_stats.json", lambda ws: (ws / "run" / "data_stats.json").unlink()),
        Case("run-marker-corrupt", SEQ, "dforce-run.json", write("run/dforce-run.json", "{")),
        Case("resume-state-corrupt", RES, "trainer_state.pt", write("run/trainer_state.pt", b"PK\x03\x04garbage")),
        Case("resume-state-missing", RES, "trainer_state.pt", lambda ws: (ws / "run" / "trainer_state.pt").unlink()),
        Case("resume-missing-dir", ["train", "--resume", "{ws}/nope"], "not found"),
        Case("resume-not-a-run", ["train", "--resume", "{ws}"], "not a dforce run directory"),
        Case("resume-with-out", ["train", "--resume", "{run}", "--out", "{ws}/x"], "--out"),
        Case("resume-change-model", [*RES, "model.width=32"], "model.width"),
        Case("resume-video-run", ["train", "--resume", "{ws}/v"], "is a video run", marker("v", "video")),
        Case("resume-data-replaced", RES, "changed since", replace_data),
        Case("eval-data-replaced", EV, "changed since", replace_data),
        Case("sample-data-replaced", SEQ, "changed since", replace_data),
        Case("sample-data-replaced-allowed-ok", [*SEQ, "--allow-changed-data"], expect="ok", setup=replace_data,
             check=printed_json_with("samples")),
        Case("sample-data-deleted", SEQ, "data.npz", lambda ws: (ws / "data.npz").unlink()),
        Case("sample-data-became-fifo", SEQ, "not a regular file",
             lambda ws: ((ws / "data.npz").unlink(), fifo("data.npz")(ws))[1]),
        Case("resume-metrics-list-line-ok", RES, expect="ok", may_change=("run/*",), setup=lambda ws: open(
            ws / "run" / "metrics.jsonl", "a").write("[1, 2]\n\"text\"\n{\"step\": \"x\"}\n"),
            check=metrics_are_objects),
        Case("info-metrics-list-line-ok", ["info", "{run}", "--json"], expect="ok", setup=lambda ws: open(
            ws / "run" / "metrics.jsonl", "a").write("[1, 2]\n"),
            check=lambda ws, out, err: None if isinstance(json.loads(out)["last_metrics"], dict) else "not a dict"),
        Case("info-eval-truncated-ok", ["info", "{run}"], expect="ok", setup=write("run/eval.json", '{"heldout'),
             check=lambda ws, out, err: None if "eval.json" in err else "no warning about eval.json"),
        Case("info-not-a-run", ["info", "{ws}"], "not a run directory"),
        Case("resume-stale-temps-ok", RES, expect="ok", may_change=("run/*",), check=temps_cleaned, setup=steps(
            write("run/.ema.safetensors.ab12cd34.tmp", b"x" * 1000), write("run/.loss.tmp.png", b"x"))),
        Case("legacy-run-sample-ok", SEQ, expect="ok", setup=strip_marker, check=printed_json_with("samples")),
        Case("legacy-run-train-again", [*T, "--out", "{run}"], "already holds", strip_marker, leaves_nothing=False),
        Case("legacy-run-resume-ok", RES, expect="ok", may_change=("run/*",), setup=strip_marker,
             check=lambda ws, out, err: None if (ws / "run" / "dforce-run.json").is_file() else "not marked"),
        Case("locked-train-overwrite", [*T, "--out", "{run}", "--overwrite"], "in use", hold_lock),
        Case("locked-resume", RES, "in use", hold_lock),
    ]


def _output_cases() -> list[Case]:
    user = b"my own results\n"
    return [
        Case("train-out-user-dir", [*T, "--out", "{ws}/p"], "did not write", write("p/config.yaml", "keep: 1\n")),
        Case("train-out-user-dir-overwrite", [*T, "--out", "{ws}/p", "--overwrite"], "did not write",
             write("p/notes.txt", user)),
        Case("train-out-cwd-project", [*T, "--out", "."], "did not write", write("proj/config.yaml", "mine: 1\n"),
             cwd="proj"),
        Case("train-out-is-file", [*T, "--out", "{data}"], "not a directory"),
        Case("train-out-dev-null", [*T, "--out", "/dev/null"], "not a directory"),
        Case("train-out-existing-run", [*T, "--out", "{run}"], "already holds"),
        Case("train-out-video-run", [*T, "--out", "{ws}/v", "--overwrite"], "is a video run", marker("v", "video")),
        Case("train-out-parent-is-file", [*T, "--out", "{data}/sub"], "cannot create"),
        Case("train-overwrite-keeps-user-file-ok", [*T, "--out", "{run}", "--overwrite"], expect="ok",
             setup=write("run/notes.txt", user), check=file_kept("run/notes.txt", user), may_change=("run/*",)),
        Case("plan-train-into-sequence-run", ["plan", "train", "--out", "{run}", "--overwrite"], "is a sequence run"),
        Case("video-train-into-sequence-run", ["video", "train", "--config", "video_digits_tiny", "--out", "{run}"],
             "is a sequence run"),
        Case("video-train-into-user-dir", ["video", "train", "--config", "video_digits_tiny", "--out", "{ws}/p"],
             "did not write", write("p/a.txt", user)),
        Case("imitation-train-into-user-dir", ["imitation", "train", "--config", "imitation_small", "--out", "{ws}/p"],
             "did not write", write("p/a.txt", user)),
        Case("compositional-train-into-run", ["compositional", "train", "--out", "{run}"], "is a sequence run"),
        Case("forecast-out-user-file", ["forecast", "--data", "{ws}/f.csv", "--horizon", "5", "--out", "{ws}/o"],
             "forecast.png", steps(write("f.csv", csv_text()), write("o/forecast.png", user))),
        Case("demo-out-user-dir", ["demo", "--out", "{ws}/p", "--steps", "1"], "did not write",
             write("p/a.txt", user)),
        Case("demo-out-sequence-run", ["demo", "--out", "{run}", "--steps", "1"], "is a sequence run"),
        Case("sample-out-png", [*SEQ, "--out", "{ws}/fig.png"], "give a .npy"),
        Case("sample-out-user-npy", [*SEQ, "--out", "{ws}/x.npy"], "did not write", write("x.npy", user)),
        Case("sample-out-user-png-beside", [*SEQ, "--out", "{ws}/x.npy"], "x.png", write("x.png", user)),
        Case("sample-out-dev-null", [*SEQ, "--out", "/dev/null"], "/dev/null"),
        Case("sample-out-dir-with-user-file", [*SEQ, "--out", "{ws}/d"], "did not write", write("d/samples.npy", user)),
        Case("sample-out-parent-is-file", [*SEQ, "--out", "{data}/x.npy"], "cannot create"),
        Case("sample-out-symlink", [*SEQ, "--out", "{ws}/l.npy"], "not a regular file",
             lambda ws: os.symlink(ws / "data.npz", ws / "l.npy")),
        Case("sample-run-has-user-samples", SEQ, "did not write", write("run/samples.npy", user)),
        Case("sample-out-new-file-ok", [*SEQ, "--out", "{ws}/new/x.npy"], expect="ok",
             check=reported_exactly("new/x.npy", "new/x.png")),
        Case("sample-out-existing-dir-ok", [*SEQ, "--out", "{ws}/d"], expect="ok",
             setup=lambda ws: (ws / "d").mkdir(), check=reported_exactly("d/samples.npy", "d/samples.png")),
        Case("sample-out-overwrite-user-ok", [*SEQ, "--out", "{ws}/x.npy", "--overwrite"], expect="ok",
             setup=write("x.npy", user), check=reported_exactly("x.npy", "x.png"), may_change=("x.npy",)),
        Case("compositional-sample-missing-run", ["compositional", "sample", "--run", "{ws}/nope"], "not found"),
    ]


def _readonly_cases() -> list[Case]:
    return [
        Case("readonly-resume", RES, "cannot write", readonly=("run",)),
        Case("readonly-train-overwrite", [*T, "--out", "{run}", "--overwrite"], "cannot write", readonly=("run",)),
        Case("readonly-sample", SEQ, "not writable", readonly=("run",)),
        Case("readonly-parent-new-out", [*T, "--out", "{ws}/ro/new"], "cannot create",
             setup=lambda ws: (ws / "ro").mkdir(), readonly=("ro",)),
        Case("readonly-eval-prints-ok", EV, expect="ok", readonly=("run",),
             check=lambda ws, out, err: None if ("heldout_loss" in out and "could not save" in err) else
             "results not printed, or no warning"),
    ]


def _numeric_cases() -> list[Case]:
    rows = [
        ("sample", SEQ, [("--length", "0"), ("--length", "-3"), ("--num", "0"), ("--num", "-1"), ("--context", "-1"),
                         ("--steps", "0"), ("--steps", "-2"), ("--seed", "-1")]),
        ("eval", EV, [("--num", "0"), ("--num", "-5"), ("--seed", "-1")]),
        ("demo", ["demo", "--out", "{ws}/dm"], [("--steps", "0"), ("--threads", "-1")]),
        ("train", [*T, "--out", "{ws}/r"], [("--nproc", "0"), ("--nproc", "1000")]),
        ("forecast", ["forecast", "--dataset", "exchange_rate", "--out", "{ws}/o"],
         [("--samples", "0"), ("--samples", "-5"), ("--seed", "-1")]),
        ("forecast-csv", ["forecast", "--data", "{ws}/nope.csv", "--out", "{ws}/o"], [("--horizon", "0")]),
        ("maze2d", ["data", "maze2d"], [("--steps", "0"), ("--steps", "-1")]),
        ("vizdoom", ["data", "vizdoom"], [("--episodes", "0"), ("--length", "1")]),
        ("plan-eval", ["plan", "eval", "{run}"], [("--episodes", "0"), ("--mcg", "0"), ("--seed", "-2")]),
        ("video-sample", ["video", "sample", "{run}"], [("--episodes", "0"), ("--steps", "0"), ("--fps", "0"),
                                                       ("--stabilization-level", "-1")]),
        ("imitation-eval", ["imitation", "eval", "--run", "{run}"], [("--episodes", "0"), ("--fraction", "2"),
                                                                    ("--fraction", "nan")]),
        ("compositional-sample", ["compositional", "sample", "--run", "{run}"], [("--n", "0"), ("--n", "-1")]),
    ]
    out = []
    for cmd, base, flags in rows:
        for flag, value in flags:
            needle = "horizon" if flag == "--horizon" else flag
            out.append(Case(f"flag-{cmd}{flag}={value}", [*base, flag, value], needle))
    out += [
        Case("flag-sample-length-text", [*SEQ, "--length", "ten"], "--length"),
        Case("cli-unknown-command", ["trian"], "invalid choice"),
        Case("cli-no-command", [], "required"),
        Case("cli-unknown-option", [*SEQ, "--bogus"], "--bogus"),
        Case("cli-missing-run-arg", ["sample"], "run_dir"),
    ]
    return out


GROUPS = (("config", _config_cases), ("data file", _data_cases), ("run directory", _run_dir_cases),
          ("output path", _output_cases), ("read-only folder", _readonly_cases), ("numeric flag / CLI", _numeric_cases))


def all_cases() -> list[Case]:
    out = []
    for group, make in GROUPS:
        for c in make():
            c.group = group
            out.append(c)
    return out
