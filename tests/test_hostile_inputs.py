"""Hostile inputs to every `dforce` command: one clear error line, nothing of the user's touched, no hang.

The table is in ``tests/hostile_cases.py`` (shared with ``benchmarks/faults.py``); each row is a test here.
Then property tests (hypothesis, bounded examples) for numeric flags and config values, two concurrent
writers, and kill -9 at random moments followed by ``--resume`` (stale temporaries cleaned, weights
bit-identical to an uninterrupted run).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from hostile_cases import FAST, Case, all_cases, make_template, make_workspace, run_case  # noqa: E402

from dforce import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = all_cases()


@pytest.fixture(scope="module")
def base():
    # a 0755 folder outside pytest's 0700 tmp root: read-only rows run as `nobody` when the tests run as root
    d = Path(tempfile.mkdtemp(prefix="dforce-hostile-"))
    os.chmod(d, 0o755)
    make_template(d / "template")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def workspace(base, name):
    ws = base / "cases" / name.replace("/", "_")
    shutil.rmtree(ws, ignore_errors=True)
    return make_workspace(base / "template", ws)


def test_the_table_is_large_and_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case, base):
    res = run_case(case, workspace(base, case.name))
    assert res["outcome"] == ("clear_error" if case.expect == "error" else "ok"), \
        f"{res['outcome']}: {res['detail']}\nstderr: {res['err']}"


# ------------------------------------------------------------------------------------- property tests

def _run(ws, args):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


def _one_error_line(rc, err, needle):
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (rc, err)
    assert "Traceback" not in err


SAMPLE_FLAGS = {"--length": 1, "--num": 1, "--context": 0, "--steps": 1, "--seed": 0}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(sorted(SAMPLE_FLAGS)), value=st.integers(-10**12, 0))
def test_invalid_numeric_sample_flags_are_one_line(base, flag, value):
    if value >= SAMPLE_FLAGS[flag]:
        value = SAMPLE_FLAGS[flag] - 1
    ws = base / "template"
    before = sorted(p.name for p in (ws / "run").iterdir())
    rc, _, err = _run(ws, ["sample", str(ws / "run"), flag, str(value), "--quiet"])
    _one_error_line(rc, err, flag)
    assert sorted(p.name for p in (ws / "run").iterdir()) == before  # nothing written


# config values of every type for numeric keys: either a valid run (exit 0) or one line naming the key
NUMERIC_KEYS = ["train.lr", "train.weight_decay", "train.grad_clip", "train.ema_decay", "train.warmup_steps",
                "train.steps", "train.batch_size", "model.width", "model.depth", "data.window", "data.stride",
                "data.val_fraction", "diffusion.num_levels", "sampler.steps"]
VALUES = st.one_of(st.integers(-10**15, 10**15), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=3))


def _yaml_scalar(v):
    if isinstance(v, float):
        return ".nan" if v != v else (".inf" if v == float("inf") else "-.inf" if v == float("-inf") else repr(v))
    return json.dumps(v)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMERIC_KEYS), value=VALUES)
def test_config_values_never_traceback(base, key, value):
    # keep valid runs tiny: sizes are capped where a valid value would make a long (but correct) run
    # train.steps is never too large to be valid: cap it; the other sizes are refused from ~1e6 on
    # (memory estimates, depth and level limits), and capped below that
    if isinstance(value, int) and not isinstance(value, bool) and 8 < value and (key == "train.steps" or (
            value < 10**6 and key in ("train.batch_size", "model.width", "model.depth", "diffusion.num_levels"))):
        value = 8
    ws = Path(tempfile.mkdtemp(dir=base))
    rc, _, err = _run(ws, ["train", "sequence_small", *FAST, "data.synthetic_sequences=32", "--out", str(ws / "r"),
                           "--quiet", f"{key}={_yaml_scalar(value)}"])
    assert "Traceback" not in err
    if rc != 0:
        _one_error_line(rc, err, "")
        assert key.split(".")[-1] in err or "loss became" in err or "sampler.window" in err, err
    shutil.rmtree(ws, ignore_errors=True)


# ------------------------------------------------------------------------------- processes: locks and kills

def _env():
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    e.pop("RANK", None)
    return e


LONG = [*FAST, "train.steps=400", "train.checkpoint_every=20", "data.synthetic_sequences=64"]


def test_two_writers_the_second_fails_in_one_line(base, tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "dforce.cli", "train", "sequence_small", *LONG, "--out", str(run), "--quiet"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while not (run / "config.yaml").exists():
            assert p.poll() is None and time.time() < deadline, p.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        for args in (["train", "sequence_small", *FAST, "--out", str(run), "--overwrite", "--quiet"],
                     ["train", "--resume", str(run), "--quiet"]):
            before = {f.name: f.read_bytes() for f in run.iterdir() if f.name == "config.yaml"}
            rc, _, err = _run(tmp_path, args)
            _one_error_line(rc, err, "in use by another dforce process (pid")
            assert {f: (run / f).read_bytes() for f in before} == before
    finally:
        p.kill()
        p.wait()
        p.stderr.close()


def test_kill9_at_random_points_then_resume_is_exact(tmp_path):
    """Two kills at random moments (seeded), a planted stale temporary, resume: bit-identical to one run."""
    import random

    rng = random.Random(31)
    steps = [*FAST, "train.steps=60", "train.checkpoint_every=5", "data.synthetic_sequences=64"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "dforce.cli", "train", "sequence_small", *steps, "--out", str(ref),
                    "--quiet"], env=_env(), check=True, capture_output=True, timeout=180)
    run = tmp_path / "killed"
    first = True
    for _ in range(2):
        args = (["train", "sequence_small", *steps, "--out", str(run)] if first else ["train", "--resume", str(run)])
        p = subprocess.Popen([sys.executable, "-m", "dforce.cli", *args, "--quiet"], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 90
        while not (run / "trainer_state.pt").exists():
            assert p.poll() is None and time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        first = False
    (run / ".ema.safetensors.zz99yy88.tmp").write_bytes(b"\0" * 4096)  # as a kill inside an atomic write leaves
    r = subprocess.run([sys.executable, "-m", "dforce.cli", "train", "--resume", str(run), "--quiet"], env=_env(),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert not list(run.glob(".*.tmp")) and "temporary" in r.stderr
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(run / f)), load_file(str(ref / f))
        assert all(torch.equal(a[k], b[k]) for k in a), f
    assert (run / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_replaced_video_file_is_refused_on_resume_and_sample(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "v.npz"
    np.savez(path, frames=rng.integers(0, 255, (12, 24, 16, 16, 1), dtype=np.uint8),
             actions=rng.normal(size=(12, 24, 2)).astype(np.float32))
    run = tmp_path / "r"
    over = ["train.steps=1", "train.checkpoint_every=1", "model.width=16", "codec.channels=4", "codec.max_channels=4",
            "data.eval_episodes=2"]
    rc, _, err = _run(tmp_path, ["video", "train", "--config", "video_digits_tiny", "--data", str(path), "--out",
                                 str(run), "--quiet", *over])
    assert rc == 0, err
    assert json.loads((run / "dforce-run.json").read_text())["data"]["size"] == path.stat().st_size
    np.savez(path, frames=rng.integers(0, 255, (12, 24, 16, 16, 1), dtype=np.uint8),
             actions=rng.normal(size=(12, 24, 2)).astype(np.float32))  # same shapes, other videos
    rc, _, err = _run(tmp_path, ["video", "train", "--config", "video_digits_tiny", "--data", str(path), "--out",
                                 str(run), "--resume", "--quiet", *over, "train.steps=2"])
    _one_error_line(rc, err, "changed since")
    rc, _, err = _run(tmp_path, ["video", "sample", str(run), "--length", "4", "--episodes", "1", "--quiet"])
    _one_error_line(rc, err, "changed since")


def test_a_kill_inside_the_last_checkpoint_is_repaired_by_resume(tmp_path):
    """Killed after trainer_state.pt of the last checkpoint was written but before the weight files (found by
    benchmarks/faults.py: 2 of 20 cycles): --resume has no step left to train, and must still write the weights."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "r"
    rc, _, err = _run(tmp_path, ["train", "sequence_small", *FAST, "train.steps=10", "train.checkpoint_every=5",
                                 "data.synthetic_sequences=32", "--out", str(run), "--quiet"])
    assert rc == 0, err
    final = {f: (run / f).read_bytes() for f in ("model.safetensors", "ema.safetensors")}
    for f in final:  # the previous checkpoint's files, as the kill left them
        save_file({k: v * 0.5 for k, v in load_file(str(run / f)).items()}, str(run / f), metadata={"step": "5"})
    rc, _, err = _run(tmp_path, ["train", "--resume", str(run), "--quiet"])
    assert rc == 0, err
    for f, data in final.items():
        (tmp_path / "orig").write_bytes(data)
        got, want = load_file(str(run / f)), load_file(str(tmp_path / "orig"))
        assert all(torch.equal(got[k], want[k]) for k in want), f
