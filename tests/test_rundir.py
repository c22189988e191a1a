"""engine.rundir: markers, claims, locks, stale temporaries, output checks and data fingerprints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dforce.engine import checkpoint as ckpt
from dforce.engine import fingerprint, rundir
from dforce.errors import CheckpointError, ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _release():
    yield
    rundir.release_all()


def test_claim_new_marks_and_records_what_dforce_writes(tmp_path):
    run = rundir.claim(tmp_path / "a" / "r", "sequence")
    m = rundir.read_marker(run)
    assert m["kind"] == "sequence" and m["files"] == [rundir.LOCK_FILE]
    ckpt.atomic_write_bytes(run / "config.yaml", b"x: 1\n")
    ckpt.atomic_write_bytes(run / "tb" / "events", b"e")
    assert {"config.yaml", "tb/events"} <= set(rundir.read_marker(run)["files"])
    assert rundir.written_by_dforce(run / "config.yaml") and rundir.expect_kind(run, "sequence") == run
    with pytest.raises(CheckpointError, match="is a sequence run .*not a video run"):
        rundir.expect_kind(run, "video")


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        ckpt.atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640  # mkstemp alone makes 0600


def test_overwrite_deletes_only_listed_files(tmp_path):
    run = rundir.claim(tmp_path / "r", "plan")
    for name in ("config.yaml", "model.safetensors", "tb/x"):
        ckpt.atomic_write_bytes(run / name, b"dforce")
    (run / "notes.txt").write_text("mine")
    (run / "tb" / "mine.txt").write_text("mine too")
    rundir.release_all()
    with pytest.raises(ConfigError, match="already holds a planning run"):
        rundir.claim(run, "plan")
    rundir.claim(run, "plan", overwrite=True)
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == \
        [".dforce.lock", "dforce-run.json", "notes.txt", "tb/mine.txt"]


def test_refuses_user_folders_and_other_kinds(tmp_path):
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "config.yaml").write_text("keep: 1\n")
    with pytest.raises(ConfigError, match="did not write"):
        rundir.claim(tmp_path / "u", "sequence", overwrite=True)
    assert not (tmp_path / "u" / rundir.LOCK_FILE).exists()  # not even a lock file is left in a user's folder
    rundir.claim(tmp_path / "v", "video")
    with pytest.raises(ConfigError, match="is a video run"):
        rundir.claim(tmp_path / "v", "forecast", overwrite=True)


def test_a_killed_writer_never_blocks_and_is_named(tmp_path):
    run = tmp_path / "r"
    code = (f"from dforce.engine import rundir; rundir.claim({str(run)!r}, 'sequence'); print('locked', flush=True); "
            "import time; time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=f"in use by another dforce process \\(pid {p.pid}\\)"):
            rundir.claim(run, "sequence", resume=True)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    rundir.claim(run, "sequence", resume=True)  # the kernel dropped the dead process's lock


def test_stale_lock_note(tmp_path, capsys):
    run = rundir.claim(tmp_path / "r", "sequence")
    rundir.release_all()
    (run / rundir.LOCK_FILE).write_text("999999999 2025-01-01\n")  # a pid that does not exist
    rundir.claim(run, "sequence", resume=True)
    assert "pid 999999999" in capsys.readouterr().err


def test_stale_temporaries_are_removed_on_claim(tmp_path, capsys):
    run = rundir.claim(tmp_path / "r", "sequence")
    rundir.release_all()
    for name in (".ema.safetensors.k3j_9x2a.tmp", ".loss.tmp.png", "user.tmp", ".notes.tmp"):
        (run / name).write_bytes(b"x")
    rundir.claim(run, "sequence", resume=True)
    assert sorted(p.name for p in run.iterdir()) == [".dforce.lock", ".notes.tmp", "dforce-run.json", "user.tmp"]
    assert "removed 2 temporary" in capsys.readouterr().err


def test_legacy_run_is_recognized_and_adopted(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("data: {window: 8}\nlogging: {plot: true}\n")
    (run / "model.safetensors").write_bytes(b"w")
    (run / "eval_umaze_single.json").write_text("{}")
    assert rundir.infer_kind(run) == "sequence"
    rundir.claim(run, "sequence", resume=True)
    assert {"config.yaml", "model.safetensors"} <= set(rundir.read_marker(run)["files"])


def test_output_checks(tmp_path):
    (tmp_path / "mine.npy").write_bytes(b"x")
    with pytest.raises(ConfigError, match="dforce did not write"):
        rundir.check_output_file(tmp_path / "mine.npy")
    rundir.check_output_file(tmp_path / "mine.npy", overwrite=True)
    with pytest.raises(ConfigError, match="not a regular file"):
        rundir.check_output_file(Path("/dev/null"), overwrite=True)
    run = rundir.claim(tmp_path / "r", "sequence")
    out = tmp_path / "out.npy"
    ckpt.atomic_write_bytes(out, b"1")
    rundir.note_output(out, run)  # recorded in the run's marker with its size and mtime
    rundir.check_output_file(out, owner=run)
    time.sleep(0.01)
    out.write_bytes(b"the user's now")
    with pytest.raises(ConfigError, match="dforce did not write"):
        rundir.check_output_file(out, owner=run)
    paths = rundir.prepare_outputs(tmp_path / "new", ["a.png", "b.json"])
    assert rundir.read_marker(tmp_path / "new")["kind"] == "outputs" and all(rundir.written_by_dforce(p) for p in paths)


def test_fingerprint_catches_a_replaced_file(tmp_path, monkeypatch):
    run = rundir.claim(tmp_path / "r", "sequence")
    data = tmp_path / "d.bin"
    data.write_bytes(b"a" * 5000)
    rundir.record_data(run, data)
    rundir.check_data(run, data)
    data.write_bytes(b"b" * 5000)  # same size, other content
    with pytest.raises(DataError, match="content differs"):
        rundir.check_data(run, data)
    rundir.check_data(run, data, allow_changed=True)
    monkeypatch.setattr(fingerprint, "FULL_HASH_BYTES", 1000)  # large-file mode: size + both ends
    monkeypatch.setattr(fingerprint, "EDGE_BYTES", 100)
    rundir.record_data(run, data)
    assert json.loads((run / rundir.MARKER).read_text())["data"]["hashed"] == "first+last MiB"
    data.write_bytes(b"b" * 4999 + b"c")
    with pytest.raises(DataError, match="changed since"):
        rundir.check_data(run, data)
