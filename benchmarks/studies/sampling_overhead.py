"""Where a small-batch autoregressive call's time goes: fixed per-call overhead vs arithmetic (issue #8).

`benchmarks/sampling.py` reports the transformer's CPU time over the FLOP floor by batch; at batch 16 the
autoregressive schedule stays above 3x. This script splits one model call of that rollout (the benchmark's
model: width 128, depth 4, window 16, S = 4, one thread, random init seed 0) into:

    * CPU ms per call at each batch in ``batches`` (256-token autoregressive rollouts, best of ``repeats``, the
      batches taking turns): at batch 1 the arithmetic is negligible, so that time is the fixed per-call cost;
    * the FLOP floor per call at each batch (``sampling.flops_per_token``, dense, over the fp32 1024² matmul
      rate measured here, CPU time), and time / floor;
    * aten operators per call (``torch.profiler``, top-level operators only, counted over a 64-token rollout)
      and the CPU cost of one small operator (``torch.addcmul`` on (16, 128)) called from Python;
    * the same CPU ms per call with ``sampler.fused_kernel`` (the transformer's passes in dforce's C++ kernel,
      :mod:`dforce.models.fused`: the per-operator overhead gone), and the kernel's load (or first build) time;
    * with ``--compile``: the same rollout with every block's forward under ``torch.compile`` (inductor, dynamic
      shapes), the first rollout's wall time (compilation) and then CPU ms per call.

Writes ``benchmarks/results/studies/sampling_overhead.{json,md}``. On an idle machine (other jobs change the timings):

    nice -n 10 python benchmarks/studies/sampling_overhead.py [--compile]     # ~1 min (+ ~2 min with --compile)
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for sampling.py
from sampling import RESULTS, BenchConfig, flops_per_token, make, matmul_gflops, rollout, uptime  # noqa: E402

from dforce.models import fused  # noqa: E402

LENGTH = 256  # tokens per timed rollout (as the batch sweep of sampling.py; --length)
PROFILE_LENGTH = 64  # tokens of the profiled rollout (operator counts)


def cpu_ms_per_call(setups: dict, repeats: int, length: int, kinds=("ours",)) -> dict:
    """Best-of-``repeats`` CPU ms per model call of a ``length``-token autoregressive rollout for each ``batch ->
    (BenchConfig, model)`` and each rollout kind (``ours``; ``fused``: with the C++ kernel), and its calls:
    ``{(batch, kind): (ms, calls)}``. They take turns, repeat by repeat, so a slow phase of the machine does not
    fall on one of them only."""
    for bc, model in setups.values():
        for kind in kinds:
            rollout(bc, model, kind, "autoregressive", length)  # warm-up
    best = {(B, kind): (float("inf"), 0) for B in setups for kind in kinds}
    for _ in range(repeats):
        for B, (bc, model) in setups.items():
            for kind in kinds:
                t = time.process_time()
                out = rollout(bc, model, kind, "autoregressive", length)
                best[B, kind] = min(best[B, kind], ((time.process_time() - t) / out.model_calls * 1e3, out.model_calls))
    return best


def ops_per_call(bc: BenchConfig, model) -> tuple[float, dict]:
    """Top-level aten operators per model call (all, and the 12 most frequent)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = rollout(bc, model, "ours", "autoregressive", PROFILE_LENGTH)
    top = [e.name for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
    common = collections.Counter(top).most_common(12)
    return len(top) / out.model_calls, {k: round(v / out.model_calls, 2) for k, v in common}


def small_op_us(n: int = 20000) -> float:
    """CPU µs of one ``torch.addcmul`` on (16, 128) called from Python (best of 5 loops of n)."""
    a, b, c = torch.randn(16, 128), torch.randn(1, 128), torch.randn(16, 128)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            t = time.process_time()
            for _ in range(n):
                torch.addcmul(c, a, b)
            best = min(best, (time.process_time() - t) / n * 1e6)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--length", type=int, default=LENGTH, help="tokens per timed rollout")
    p.add_argument("--compile", action="store_true", help="also time the blocks under torch.compile (slow to build)")
    p.add_argument("--no-fused-kernel", action="store_true", help="skip the C++ kernel rows (no compiler here)")
    p.add_argument("--out", default=str(RESULTS / "studies" / "sampling_overhead"), help="output path without suffix")
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1 or args.length < 1:
        p.error(f"--batches, --repeats and --length must be >= 1, got {args.batches}, {args.repeats}, {args.length}")
    base = BenchConfig()
    torch.set_num_threads(base.threads)
    report = {"command": "python benchmarks/studies/sampling_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "bench": asdict(base), "length": args.length, "uptime_before": uptime()}
    kinds = ("ours",) if args.no_fused_kernel else ("ours", "fused")
    if "fused" in kinds:
        t = time.perf_counter()
        fused.load()
        report["fused_kernel_load_s"] = time.perf_counter() - t  # ~1 s from the cache, ~1 min when it is built
    gflops = [matmul_gflops(clock=time.process_time)]
    rows = {}
    setups = {B: (replace(base, batch=B), make(replace(base, batch=B), "transformer")) for B in args.batches}
    for (B, kind), (ms, calls) in cpu_ms_per_call(setups, args.repeats, args.length, kinds).items():
        bc, model = setups[B]
        flops = flops_per_token(bc, model)["per_generated_column"] * args.length / calls  # dense FLOPs per call
        row = rows.setdefault(B, {"calls": calls, "flops_per_call": flops})
        row["cpu_ms_per_call" if kind == "ours" else "fused_cpu_ms_per_call"] = ms
        print(f"batch {B} {kind}: {ms:.3f} CPU ms per call", flush=True)
    gflops.append(matmul_gflops(clock=time.process_time))
    rate = statistics.median(gflops) * 1e9
    for row in rows.values():
        row["floor_ms_per_call"] = row["flops_per_call"] / rate * 1e3
        row["time_over_floor"] = row["cpu_ms_per_call"] / row["floor_ms_per_call"]
        if "fused_cpu_ms_per_call" in row:
            row["fused_time_over_floor"] = row["fused_cpu_ms_per_call"] / row["floor_ms_per_call"]
    bc16 = replace(base, batch=16)
    model = make(bc16, "transformer")
    n_ops, common = ops_per_call(bc16, model)
    report.update(rows=rows, matmul_gflops_cpu_time=gflops, ops_per_call_batch16=n_ops, most_common_ops=common,
                  addcmul_us=small_op_us())
    if args.compile:
        import dforce.models.transformer as tr

        eager = tr.Block.forward
        tr.Block.forward = torch.compile(eager, dynamic=True)
        try:
            t = time.perf_counter()
            rollout(bc16, model, "ours", "autoregressive", 3 * bc16.window)
            first_s = time.perf_counter() - t
            ms, _ = cpu_ms_per_call({16: (bc16, model)}, args.repeats, args.length)[16, "ours"]
        finally:
            tr.Block.forward = eager
        report["compiled_batch16"] = {"first_rollout_s": first_s, "cpu_ms_per_call": ms}
    report["uptime_after"] = uptime()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    rows = r["rows"]
    lines = [f"# Per-call overhead of the autoregressive sampler (`{r['command']}`)", "",
             f"Transformer of `benchmarks/sampling.py` (width {r['bench']['width']}, depth {r['bench']['tf_depth']}, "
             f"window {r['bench']['window']}, S = {r['bench']['steps']}, {r['bench']['threads']} thread), "
             f"{r['length']}-token autoregressive rollouts, CPU time, best of the repeats. Floor = dense FLOPs per "
             f"call over the fp32 matmul rate measured here ({', '.join(f'{g:.0f}' for g in r['matmul_gflops_cpu_time'])}"
             f" GFLOP/s, median used). `uptime` before: `{r['uptime_before']}`, after: `{r['uptime_after']}`.", "",
             "| batch | CPU ms / call | floor ms / call | time / floor | ms / call above batch 1 | fused kernel: CPU ms "
             "/ call | fused kernel: time / floor |", "|---|---|---|---|---|---|---|"]
    first = rows[min(rows, key=int)]["cpu_ms_per_call"]
    for B, row in rows.items():
        fused_cells = (f"{row['fused_cpu_ms_per_call']:.3f} | {row['fused_time_over_floor']:.2f}"
                       if "fused_cpu_ms_per_call" in row else "- | -")
        lines.append(f"| {B} | {row['cpu_ms_per_call']:.3f} | {row['floor_ms_per_call']:.3f} | "
                     f"{row['time_over_floor']:.2f} | {row['cpu_ms_per_call'] - first:.3f} | {fused_cells} |")
    if "fused_kernel_load_s" in r:
        lines += ["", f"Fused kernel: `sampler.fused_kernel=true` (the transformer's passes in dforce's C++ kernel, "
                  f"`src/dforce/models/fused_pass.cpp`), loaded in {r['fused_kernel_load_s']:.1f} s (built when not "
                  f"cached: about a minute)."]
    lines += ["", f"Top-level aten operators per call (batch 16): {r['ops_per_call_batch16']:.0f}; most frequent: "
              + ", ".join(f"{k.removeprefix('aten::')} {v}" for k, v in r["most_common_ops"].items()) + ". One "
              f"`torch.addcmul` on (16, 128) from Python: {r['addcmul_us']:.2f} CPU µs."]
    if "compiled_batch16" in r:
        c = r["compiled_batch16"]
        lines += ["", f"`torch.compile` (inductor, dynamic shapes) on every block's forward, batch 16: first rollout "
                  f"{c['first_rollout_s']:.0f} s (compilation), then {c['cpu_ms_per_call']:.3f} CPU ms per call."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
