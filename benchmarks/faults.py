"""Fault benchmark: the hostile-input table over every command, plus random kill -9 / resume cycles.

    python benchmarks/faults.py                    # everything (~10 min on the loaded shared 2-core box)
    python benchmarks/faults.py --cycles 3         # fewer kill/resume cycles (smoke run)

1. Every row of ``tests/hostile_cases.py`` (bad configs, data files, run directories, output paths,
   read-only folders, numeric flags; ~200 rows over train | sample | eval | info | demo | forecast | plan |
   video | imitation | compositional | data) runs in-process through ``dforce.cli.main`` and is classified:
   ``clear_error`` (exit 2, exactly one ``error:`` line naming the file/key, no traceback), ``ok`` (a
   row that must succeed did, with the right result), ``unclear`` (refused, but not in one clear line),
   ``traceback``, ``silent_wrong`` (bad input accepted, or a wrong result with exit 0), ``data_lost`` (a file
   that existed before changed or vanished), ``hang`` (no answer within the row's timeout).
2. ``--cycles`` kill/resume cycles (default 20): a tiny CPU fp32 run (``CYCLE_STEPS`` steps, a checkpoint
   every ``CYCLE_CKPT``) is killed with SIGKILL at a random moment (seeded) one to three times, each time
   after its first checkpoint, then resumed to the end; its weights (model + EMA) and trainer state must be
   bit-identical to one uninterrupted run, and no temporary file of an interrupted write may survive.

Writes ``benchmarks/results/faults.json`` (``summary`` with cases, clear_errors, tracebacks, silent_wrong,
data_lost, hangs, kill_resume_cycles, kill_resume_bit_identical; then every row and cycle) and
``benchmarks/results/faults.md``. Targets: tracebacks = silent_wrong = data_lost = hangs = 0, cases >= 150,
every cycle bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from hostile_cases import FAST, all_cases, make_template, make_workspace, run_case  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CYCLE_STEPS = 80  # steps of a kill/resume run (tiny model: ~2-4 s of training on one thread)
CYCLE_CKPT = 5  # checkpoint interval: kills land between, and sometimes inside, checkpoint writes
CYCLE_ARGS = [*FAST, f"train.steps={CYCLE_STEPS}", f"train.checkpoint_every={CYCLE_CKPT}", "train.log_every=5",
              "data.synthetic_sequences=64"]


def run_table(base: Path) -> list[dict]:
    make_template(base / "template")
    rows = []
    for i, case in enumerate(all_cases()):
        ws = make_workspace(base / "template", base / "cases" / f"{i:03d}")
        t0 = time.time()
        res = run_case(case, ws)
        res |= {"group": case.group, "seconds": round(time.time() - t0, 2)}
        rows.append(res)
        print(f"[{i + 1:3d}] {res['outcome']:12s} {case.name}" + (f"  ({res['detail'][:120]})" if res["detail"] else ""),
              flush=True)
        shutil.rmtree(ws, ignore_errors=True)
    return rows


def _env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    e.pop("RANK", None)
    return e


def _dforce(*args, **kw):
    return [sys.executable, "-m", "dforce.cli", *args]


def _same(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    for f in ("model.safetensors", "ema.safetensors"):
        x, y = load_file(str(a / f)), load_file(str(b / f))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    sa = torch.load(a / "trainer_state.pt", weights_only=True)
    sb = torch.load(b / "trainer_state.pt", weights_only=True)
    return sa["step"] == sb["step"] == CYCLE_STEPS and all(
        torch.equal(sa["optimizer"]["state"][k]["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])
        for k in sa["optimizer"]["state"])


def kill_cycles(base: Path, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    ref = base / "ref"
    subprocess.run(_dforce("train", "sequence_small", *CYCLE_ARGS, "--out", str(ref), "--quiet"), env=_env(),
                   check=True, capture_output=True, timeout=600)
    out = []
    for c in range(n):
        run = base / f"cycle{c:02d}"
        kills, temps_seen = [], 0
        for k in range(rng.randint(1, 3)):
            args = ["train", "sequence_small", *CYCLE_ARGS, "--out", str(run)] if k == 0 else ["train", "--resume",
                                                                                             str(run)]
            p = subprocess.Popen(_dforce(*args, "--quiet"), env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while not (run / "trainer_state.pt").exists() and p.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            delay = rng.uniform(0.0, 2.0)
            time.sleep(delay)
            finished = p.poll() is not None
            p.send_signal(signal.SIGKILL)
            p.wait()
            temps_seen += len(list(run.glob(".*.tmp")))
            kills.append({"delay_s": round(delay, 3), "finished_before_kill": finished})
        r = subprocess.run(_dforce("train", "--resume", str(run), "--quiet"), env=_env(), capture_output=True,
                           text=True, timeout=600)
        leftover = [p.name for p in run.glob(".*.tmp")]
        same = r.returncode == 0 and not leftover and _same(run, ref)
        out.append({"cycle": c, "kills": kills, "stale_temps_after_kills": temps_seen, "temps_left": leftover,
                    "resume_rc": r.returncode, "bit_identical": same,
                    "stderr": r.stderr.strip().splitlines()[-2:] if r.returncode else []})
        print(f"cycle {c:2d}: {len(kills)} kill(s), temps after kills {temps_seen}, "
              f"resume rc {r.returncode}, bit-identical {same}", flush=True)
        shutil.rmtree(run, ignore_errors=True)
    return out


def summarize(rows: list[dict], cycles: list[dict]) -> dict:
    n = Counter(r["outcome"] for r in rows)
    return {"cases": len(rows), "clear_errors": n["clear_error"], "ok_cases": n["ok"], "unclear": n["unclear"],
            "tracebacks": n["traceback"], "silent_wrong": n["silent_wrong"], "data_lost": n["data_lost"],
            "hangs": n["hang"], "kill_resume_cycles": len(cycles),
            "kill_resume_bit_identical": sum(c["bit_identical"] for c in cycles)}


def markdown(summary: dict, rows: list[dict], cycles: list[dict]) -> str:
    lines = ["# Fault benchmark (`python benchmarks/faults.py`)", "",
             "| cases | clear errors | ok (must succeed) | unclear | tracebacks | silent wrong | data lost | hangs | "
             "kill/resume cycles | bit-identical |", "|" + "---|" * 10,
             "| {cases} | {clear_errors} | {ok_cases} | {unclear} | {tracebacks} | {silent_wrong} | {data_lost} | "
             "{hangs} | {kill_resume_cycles} | {kill_resume_bit_identical} |".format(**summary), "",
             "## By input kind", "", "| input kind | rows | clear errors | ok | other |", "|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r["outcome"])
    for g, outs in groups.items():
        c = Counter(outs)
        other = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("clear_error", "ok")) or "0"
        lines.append(f"| {g} | {len(outs)} | {c['clear_error']} | {c['ok']} | {other} |")
    bad = [r for r in rows if r["outcome"] not in ("clear_error", "ok")]
    if bad:
        lines += ["", "## Rows that failed", "", "| row | outcome | detail |", "|---|---|---|"]
        lines += [f"| {r['case']} | {r['outcome']} | {r['detail'][:150].replace('|', '/')} |" for r in bad]
    kills = sum(len(c["kills"]) for c in cycles)
    temps = sum(c["stale_temps_after_kills"] for c in cycles)
    lines += ["", f"Kill/resume: {len(cycles)} cycles, {kills} SIGKILLs at random moments; {temps} temporary "
              "file(s) of interrupted writes found after kills, all removed by the resume; "
              f"{summary['kill_resume_bit_identical']}/{len(cycles)} ended bit-identical to an uninterrupted run "
              f"({CYCLE_STEPS} steps, checkpoint every {CYCLE_CKPT}, CPU fp32, one thread)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20, help="kill -9 / resume cycles (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "faults.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix="dforce-faults-"))
    os.chmod(base, 0o755)  # read-only rows run as `nobody` when this runs as root
    os.environ["DFORCE_CACHE"] = str(base / "cache")
    try:
        t0 = time.time()
        rows = run_table(base)
        t_table = time.time() - t0
        cycles = kill_cycles(base, args.cycles, args.seed)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = summarize(rows, cycles)
    report = {"summary": summary, "seconds": {"table": round(t_table, 1), "total": round(time.time() - t0, 1)},
              "command": "python benchmarks/faults.py" + (f" --cycles {args.cycles}" if args.cycles != 20 else ""),
              "rows": rows, "cycles": cycles}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(summary, rows, cycles))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
