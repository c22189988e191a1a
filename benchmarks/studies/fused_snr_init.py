"""Fused-SNR start, old vs new: ``objective.fused_snr_init`` first_token (c_0 = s̃_0, the reference's recurrence,
dforce's default since 0.2) vs discounted (c_0 = (1-d)·s̃_0, dforce 0.1) on the cheap benchmarks that use fused SNR.

    python benchmarks/studies/fused_snr_init.py --seeds 0 1

1. ``dforce demo`` (its objective is the default: first_token now); the discounted numbers are the demo's
   documented output before the change (deterministic: README, "energy distance untrained 0.869, full_sequence
   0.099, pyramid 0.025"), and are rerun here too through the same training with fused_snr_init=discounted.
2. ``sequence_small`` (2-D noisy oscillations, GRU, fused SNR): ``dforce train`` with each start and each seed,
   then ``dforce eval`` (held-out loss with each run's own weighting, and the energy distance of 256 sampled windows
   to held-out ones: the comparable number).

Writes ``benchmarks/results/studies/fused_snr_init.{json,md}``; runs go under ``--runs`` (reused when finished).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "studies"
DFORCE = [sys.executable, "-m", "dforce.cli"]


def run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def demo(out: Path, init: str) -> dict:
    """The demo's training and scoring with the given fused-SNR start (``dforce demo`` itself for first_token)."""
    if (out / "demo.json").exists():
        return json.loads((out / "demo.json").read_text())
    if init == "first_token":
        run(DFORCE + ["demo", "--out", str(out), "--quiet"])
        return json.loads((out / "demo.json").read_text())
    import dataclasses

    import dforce.recipes.sequence.demo as d

    real = d.ObjectiveConfig
    d.ObjectiveConfig = lambda **kw: dataclasses.replace(real(**kw), fused_snr_init=init)  # the demo's objective
    try:
        return d.run_demo(out, progress=False)
    finally:
        d.ObjectiveConfig = real


def sequence_small(out: Path, init: str, seed: int) -> dict:
    if not (out / "eval.json").exists():
        if not (out / "DONE").exists():
            if (out / "trainer_state.pt").exists():
                run(DFORCE + ["train", "--resume", str(out), "--quiet"])
            else:
                run(DFORCE + ["train", "sequence_small", f"objective.fused_snr_init={init}", f"train.seed={seed}",
                              "--out", str(out), "--quiet"])
            (out / "DONE").touch()
        run(DFORCE + ["eval", str(out), "--quiet"])
    return json.loads((out / "eval.json").read_text())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", default="runs/fused_snr_init")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    rep = {"command": "python benchmarks/studies/fused_snr_init.py --seeds " + " ".join(map(str, args.seeds)),
           "demo": {}, "sequence_small": {}}
    for init in ("first_token", "discounted"):
        rep["demo"][init] = demo(runs / f"demo_{init}", init)["energy_distance"]
        rep["sequence_small"][init] = {s: sequence_small(runs / f"seq_{init}_s{s}", init, s) for s in args.seeds}
        print(json.dumps({init: rep["demo"][init]}), flush=True)
    mean = lambda init, k: sum(v[k] for v in rep["sequence_small"][init].values()) / len(args.seeds)  # noqa: E731
    rep["summary"] = {init: {"demo_energy_full_sequence": rep["demo"][init]["full_sequence"],
                             "demo_energy_pyramid": rep["demo"][init]["pyramid"],
                             "sequence_small_energy_mean": round(mean(init, "energy_distance"), 4)}
                      for init in ("first_token", "discounted")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fused_snr_init.json").write_text(json.dumps(rep, indent=1))
    lines = ["# Fused-SNR start: first_token (reference, default) vs discounted (dforce 0.1)", "",
             f"`{rep['command']}`. Energy distance to held-out windows (lower is better).", "",
             "| benchmark | first_token | discounted |", "|---|---|---|"]
    for k in ("full_sequence", "pyramid"):
        lines.append(f"| demo, {k} | {rep['demo']['first_token'][k]} | {rep['demo']['discounted'][k]} |")
    for s in args.seeds:
        lines.append(f"| sequence_small seed {s} (pyramid) | "
                     f"{rep['sequence_small']['first_token'][s]['energy_distance']} | "
                     f"{rep['sequence_small']['discounted'][s]['energy_distance']} |")
    lines.append(f"| sequence_small mean | {rep['summary']['first_token']['sequence_small_energy_mean']} | "
                 f"{rep['summary']['discounted']['sequence_small_energy_mean']} |")
    (RESULTS / "fused_snr_init.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(rep["summary"], indent=1))
    return rep


if __name__ == "__main__":
    main()
