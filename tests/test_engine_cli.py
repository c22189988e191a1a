"""The `dforce` CLI end to end: train → sample → eval → info, SIGKILL + exact resume, 2-process DDP,
bring-your-own-data errors, corrupt/mismatched checkpoints. Subprocesses run with one thread each
(OMP_NUM_THREADS=1) so they are fast and bit-reproducible on a loaded 2-core machine."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dforce import cli

ROOT = Path(__file__).resolve().parents[1]
PRESET = "sequence_small"
# a tiny run: 40 steps, a checkpoint every 10, 96 oscillations of 64 steps, windows of 16
TINY = ["train.steps=40", "train.checkpoint_every=10", "train.log_every=5", "train.warmup_steps=5",
        "train.batch_size=16", "data.synthetic_sequences=96", "data.window=16", "model.width=32",
        "sampler.window=8", "device=cpu"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    e.pop("RANK", None)
    return e


def dforce(*args, check=True, timeout=120):
    p = subprocess.run([sys.executable, "-m", "dforce.cli", *args], capture_output=True, text=True, env=env(),
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"dforce {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def weights(path):
    return load_file(str(path))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    dforce("train", PRESET, *TINY, "--out", str(out), "--quiet")
    return out


# ---------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------

def test_train_sample_eval_info(trained_run, capsys):
    r = trained_run
    for f in ("config.yaml", "model.safetensors", "ema.safetensors", "trainer_state.pt", "metrics.jsonl",
              "data_stats.json", "loss.png"):
        assert (r / f).exists(), f
    recs = [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs] == list(range(5, 41, 5))
    assert np.mean([x["loss"] for x in recs[-2:]]) < np.mean([x["loss"] for x in recs[:2]])  # it learns

    # roll out 40 tokens (5 sampler windows, 2.5 training horizons) after 4 real ones
    out = json.loads(dforce("sample", str(r), "--length", "40", "--num", "3", "--schedule", "pyramid",
                            "--quiet").stdout)
    x = np.load(out["samples"])
    assert x.shape == (3, 44, 2) and np.isfinite(x).all()
    assert Path(out["plot"]).exists()
    # the context is the held-out data, de-normalized back to the data's scale (|x| ~ amplitude <= 1.05)
    assert np.abs(x[:, :4]).max() < 1.3 and np.abs(x).max() < 10

    ev = json.loads(dforce("eval", str(r), "--num", "32", "--quiet").stdout)
    assert ev["heldout_loss"] > 0 and np.isfinite(ev["energy_distance"]) and ev["windows"] == 32
    assert json.loads((r / "eval.json").read_text()) == ev

    info = dforce("info", str(r)).stdout
    assert "step: 40" in info and "parameters:" in info and "last metrics" in info and "width: 32" in info
    j = json.loads(run_cli(capsys, "info", str(r), "--json")[1])
    n_params = sum(v.numel() for v in weights(r / "model.safetensors").values())
    assert j["step"] == 40 and j["parameters"] == n_params and j["last_metrics"]["step"] == 40


def test_sigkill_then_resume_matches_uninterrupted(trained_run, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dforce.cli", "train", PRESET, *TINY, "--out", str(run), "--quiet"]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while not (run / "model.safetensors").exists():  # the first checkpoint (step 10) is on disk
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 90 s"
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    saved = torch.load(run / "trainer_state.pt", weights_only=True)["step"]
    logged = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip())
    assert 10 <= saved < 40, "the kill must land mid-training"
    assert logged - saved < 10  # lost at most one checkpoint interval

    dforce("train", "--resume", str(run), "--quiet")
    assert torch.load(run / "trainer_state.pt", weights_only=True)["step"] == 40
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))  # records after the checkpoint were dropped, then re-logged once
    # batch stream, noise RNG, optimizer and EMA are checkpointed: bit-identical to the uninterrupted run
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = weights(run / f), weights(trained_run / f)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{f}:{k} differs after resume"


def test_two_process_ddp(tmp_path):
    run = tmp_path / "ddp"
    p = dforce("train", PRESET, *TINY, "train.steps=30", "train.batch_size=8", "--nproc", "2", "--out", str(run),
               "--quiet", timeout=240)
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 30
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(5, 31, 5))  # rank 0 alone writes the log
    assert all(r["ddp_in_sync"] for r in recs)  # both ranks hold bit-identical weights at every log step
    assert np.mean([r["loss"] for r in recs[-2:]]) < np.mean([r["loss"] for r in recs[:2]])
    assert torch.load(run / "trainer_state.pt", weights_only=True)["world_size"] == 2


# ---------------------------------------------------------------------------------------------------------
# your own data (in-process through cli.main: same code path as the console script)
# ---------------------------------------------------------------------------------------------------------

def run_cli(capsys, *args):
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_bad_threads_value_is_a_clear_error(capsys):
    rc, out, err = run_cli(capsys, "demo", "--threads", "-1", "--out", "/nonexistent/never-written")
    assert rc == 2 and "--threads must be >= 0" in err and "Traceback" not in err


FAST = ["train.steps=3", "train.log_every=1", "train.warmup_steps=1", "train.batch_size=4", "data.window=8",
        "model.width=16", "sampler.window=8", "sampler.steps=4", "device=cpu", "logging.plot=false"]


def test_npz_variable_length_with_cond_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    seqs = {f"seq_{i}": rng.normal(size=(20 + 3 * i, 3)).astype(np.float32) for i in range(5)}
    # cond far from unit scale (e.g. raw actions in the hundreds): the run must standardize it
    conds = {f"cond_{i}": (300 + 50 * rng.normal(size=(20 + 3 * i, 2))).astype(np.float32) for i in range(5)}
    np.savez(tmp_path / "var.npz", **seqs, **conds)
    rc, out, err = run_cli(capsys, "train", PRESET, *FAST, "--data", str(tmp_path / "var.npz"),
                           "--out", str(tmp_path / "v"), "--quiet")
    assert rc == 0, err
    stats = json.loads((tmp_path / "v" / "data_stats.json").read_text())
    assert stats["cond_dim"] == 2 and len(stats["mean"]) == 3
    train_cond = np.concatenate([conds[f"cond_{i}"] for i in range(4)])  # the last sequence is held out
    assert np.allclose(stats["cond_mean"], train_cond.mean(0), rtol=1e-4)
    assert np.allclose(stats["cond_std"], train_cond.std(0), rtol=1e-3)
    # the held-out sequence (the last, 32 steps) supplies cond for context + generated steps
    rc, out, err = run_cli(capsys, "sample", str(tmp_path / "v"), "--length", "20", "--context", "2", "--num", "2",
                           "--quiet")
    assert rc == 0, err
    assert np.load(tmp_path / "v" / "samples.npy").shape == (2, 22, 3)
    rc, out, err = run_cli(capsys, "sample", str(tmp_path / "v"), "--length", "200", "--quiet")
    assert rc == 2 and "cond" in err

    t = np.arange(100)  # one sequence: the last 10 steps are held out
    lines = ["time,a,b"] + [f"{i},{np.sin(i / 3):.4f},{np.cos(i / 3):.4f}" for i in t]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = run_cli(capsys, "train", PRESET, *FAST, "--data", str(tmp_path / "s.csv"),
                           "--out", str(tmp_path / "c"), "--quiet")
    assert rc == 0, err
    stats = json.loads((tmp_path / "c" / "data_stats.json").read_text())
    assert stats["channels"] == ["a", "b"] and abs(stats["mean"][0] - np.sin(t[:90] / 3).mean()) < 1e-3
    rc, out, err = run_cli(capsys, "sample", str(tmp_path / "c"), "--length", "30", "--context", "0", "--quiet")
    assert rc == 0 and np.load(tmp_path / "c" / "samples.npy").shape == (8, 30, 2)


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, text the error must contain)."""
    ok = np.zeros((4, 30, 2), np.float32)
    cases = {}

    def npz(name, **arrays):
        np.savez(d / f"{name}.npz", **arrays)
        return d / f"{name}.npz"

    cases["missing"] = (d / "nope.npz", "file not found")
    cases["wrong_dims"] = (npz("dims", x=np.zeros((4, 30, 2, 2), np.float32)), "expected (N, T, D)")
    cases["one_dim"] = (npz("dims1", x=np.zeros(30, np.float32)), "expected (N, T, D)")
    nan = ok.copy()
    nan[1, 5, 0] = np.nan
    cases["nan"] = (npz("nan", x=nan), "NaN/inf")
    inf = ok.copy()
    inf[0, 2, 1] = np.inf
    np.save(d / "inf.npy", inf)
    cases["inf_npy"] = (d / "inf.npy", "NaN/inf")
    cases["too_short"] = (npz("short", x=np.zeros((4, 5, 2), np.float32)), "shorter than data.window")
    cases["missing_key"] = (npz("keys", a=ok, b=ok), "no array named 'x'")
    cases["cond_mismatch"] = (npz("cond", x=ok, cond=np.zeros((4, 29, 1), np.float32)), "cond of sequence 0")
    np.save(d / "obj.npy", np.array([np.zeros((3, 2)), np.zeros((4, 2))], dtype=object), allow_pickle=True)
    cases["object_array"] = (d / "obj.npy", "pickle")
    (d / "trunc.npz").write_bytes(npz("full", x=ok).read_bytes()[:100])
    cases["truncated"] = (d / "trunc.npz", "not a readable .npz")
    (d / "text.csv").write_text("time,a,b\n0,1.0,x\n1,2.0,3.0\n")
    cases["csv_non_numeric"] = (d / "text.csv", "column 'b' is not numeric (line 2")
    (d / "nan.csv").write_text("a\n1.0\nnan\n")
    cases["csv_nan"] = (d / "nan.csv", "NaN/inf")
    (d / "x.txt").write_text("1 2 3\n")
    cases["extension"] = (d / "x.txt", "unsupported file type")
    return cases


def test_bad_data_files_fail_with_one_line(tmp_path, capsys):
    for name, (path, text) in _bad_files(tmp_path).items():
        rc, out, err = run_cli(capsys, "train", PRESET, *FAST, "--data", str(path), "--out", str(tmp_path / name),
                               "--quiet")
        assert rc == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (name, err)
        assert path.name in lines[0] and text in lines[0], (name, lines[0])
        assert not (tmp_path / name / "trainer_state.pt").exists()


def test_bad_data_exit_code_in_a_real_process(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.full((4, 30, 2), np.nan, np.float32))
    p = dforce("train", PRESET, *FAST, "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "bad.npz" in p.stderr


# ---------------------------------------------------------------------------------------------------------
# checkpoints: corrupt, mismatched, refused pickles; run-directory rules; logging options
# ---------------------------------------------------------------------------------------------------------

def one_error_line(rc, err, *texts):
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for t in texts:
        assert t in err, err


def test_corrupt_and_mismatched_checkpoints(trained_run, tmp_path, capsys):
    r = tmp_path / "r"
    shutil.copytree(trained_run, r)
    ema = (r / "ema.safetensors").read_bytes()
    (r / "ema.safetensors").write_bytes(ema[: len(ema) // 2])  # truncated mid-file
    one_error_line(*run_cli(capsys, "sample", str(r), "--quiet")[::2], "ema.safetensors", "not a readable safetensors")
    (r / "ema.safetensors").write_bytes(ema)

    st = (r / "trainer_state.pt").read_bytes()
    (r / "trainer_state.pt").write_bytes(st[:200])
    one_error_line(*run_cli(capsys, "train", "--resume", str(r), "--quiet")[::2], "trainer_state.pt", "corrupt")

    class Evil:  # an arbitrary object: weights_only loading must refuse to unpickle it
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"step": 1, "payload": Evil()}, r / "trainer_state.pt")
    rc, out, err = run_cli(capsys, "train", "--resume", str(r), "--quiet")
    one_error_line(rc, err, "trainer_state.pt")
    assert "pwned" not in out + err
    (r / "trainer_state.pt").write_bytes(st)

    # a config that no longer matches the weights
    cfg_text = (r / "config.yaml").read_text()
    (r / "config.yaml").write_text(cfg_text.replace("width: 32", "width: 48"))
    one_error_line(*run_cli(capsys, "sample", str(r), "--quiet")[::2], "shape", "does not match")
    (r / "config.yaml").write_text(cfg_text)

    # resume may not change the model; a new run may not silently reuse a run directory
    one_error_line(*run_cli(capsys, "train", "--resume", str(r), "model.width=48")[::2], "model.width", "cannot change")
    one_error_line(*run_cli(capsys, "train", PRESET, *TINY, "--out", str(r))[::2], "--resume")
    one_error_line(*run_cli(capsys, "sample", str(tmp_path / "none"))[::2], "not found")
    one_error_line(*run_cli(capsys, "info", str(tmp_path))[::2], "not a run directory")


def test_tensorboard_and_bf16(tmp_path, capsys, monkeypatch):
    rc, out, err = run_cli(capsys, "train", PRESET, *FAST, "train.precision=bf16", "logging.tensorboard=true",
                           "--out", str(tmp_path / "tb"), "--quiet")
    assert rc == 0, err
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb" / "tb").iterdir())
    assert np.isfinite(json.loads(out)["loss"])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    rc, out, err = run_cli(capsys, "train", PRESET, *FAST, "logging.tensorboard=true", "--out", str(tmp_path / "x"))
    one_error_line(rc, err, "logging.tensorboard", "pip install tensorboard")


def test_help_is_useful(capsys):
    for cmd in (["train"], ["sample"], ["eval"], ["info"], ["data"], ["data", "maze2d"], ["data", "vizdoom"]):
        assert cli.main([*cmd, "--help"]) == 0  # main returns argparse's exit code (in-process callers)
        assert "usage: dforce " + " ".join(cmd) in capsys.readouterr().out


def test_data_commands_generate_into_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DFORCE_CACHE", str(tmp_path))
    rc, out, err = run_cli(capsys, "data", "maze2d", "--maze", "umaze", "--steps", "400", "--quiet")
    assert rc == 0, err
    info = json.loads(out)
    assert info["steps"] == 400 and Path(info["path"]).exists()
    pytest.importorskip("vizdoom")
    rc, out, err = run_cli(capsys, "data", "vizdoom", "--episodes", "1", "--length", "4", "--resolution", "16",
                           "--quiet")
    assert rc == 0, err
    assert json.loads(out)["frames"] == [1, 4, 16, 16, 3]


@pytest.mark.slow
def test_ddp_resume_is_exact(tmp_path):
    """2 processes: 20 steps then --resume to 30 equals 30 uninterrupted steps (constant LR after warm-up)."""
    args = [PRESET, *TINY, "train.lr_schedule=constant", "train.batch_size=8", "--nproc", "2", "--quiet"]
    dforce("train", *args, "train.steps=30", "--out", str(tmp_path / "a"), timeout=300)
    dforce("train", *args, "train.steps=20", "--out", str(tmp_path / "b"), timeout=300)
    dforce("train", "--resume", str(tmp_path / "b"), "train.steps=30", "--nproc", "2", "--quiet", timeout=300)
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = weights(tmp_path / "a" / f), weights(tmp_path / "b" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f


# ---------------------------------------------------------------------------------------------------------
# --init-from (fine-tuning another run's weights)
# ---------------------------------------------------------------------------------------------------------

def test_init_from_starts_from_the_other_runs_weights(trained_run, tmp_path):
    """A run started with --init-from A and a learning rate too small to move the weights in one step ends
    (within that step's change) at A's EMA weights; its config records where it started from."""
    out = tmp_path / "ft"
    dforce("train", PRESET, *TINY, "train.steps=1", "train.lr=1e-12", "train.warmup_steps=1", "train.ema_decay=0",
           "objective.level_strategy=full_sequence", "--init-from", str(trained_run), "--out", str(out), "--quiet")
    a, b = weights(trained_run / "ema.safetensors"), weights(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["init_from"] == str(trained_run.absolute())
    assert cfg["objective"]["level_strategy"] == "full_sequence"


def test_init_from_refuses_another_architecture(trained_run, tmp_path):
    p = dforce("train", PRESET, *TINY, "model.width=64", "--init-from", str(trained_run), "--out", str(tmp_path / "x"),
               "--quiet", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: train.init_from=") and "shape" in lines[0]
    p = dforce("train", PRESET, *TINY, "--init-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"),
               "--quiet", check=False)
    assert p.returncode == 2 and "run directory not found" in p.stderr
