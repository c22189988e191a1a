"""Sampling speed: dforce's cached sampler vs a reference-style sampler vs the FLOP floor, plus training speed.

Writes ``benchmarks/results/sampling.json`` and ``benchmarks/results/sampling.md``. Everything is measured
in one run on the same (random-init, seed 0) weights, saved once and loaded by every measurement:

    * **ours**: :func:`dforce.sampler.sample` (committed tokens cached in the model state, only changing
      tokens evaluated, window by window);
    * **reference**: the reference implementation's cost model — :class:`StatelessDenoiser` over the last
      ``window`` kept tokens and ``skip_inactive=False``: every row of every chunk re-reads the kept
      context and the whole chunk. It is measured at a few short lengths (``ref_lengths``) and, since its
      per-token cost is constant (checked: the fit residuals are reported), extrapolated to 1 000 / 10 000
      tokens with a straight-line fit of time vs length;
    * **floor**: the model's FLOPs per generated token (``FlopCounterMode``: ``steps`` forwards of one
      token after a full cache + one commit; attention added analytically), divided by the fp32 matmul
      throughput (1024² matmul) measured in this run. *Dense* FLOPs count every token's own level
      embedding / adaLN modulation (the model's FLOPs per token); *executed* FLOPs what our sampler runs
      (those once per level, shared by the batch) — time / floor is reported against both;
    * a batch sweep of the transformer (``floor_batches``) shows how time / floor falls with the batch
      (fixed per-call overheads amortized), with the Python blocks and with ``sampler.fused_kernel`` (the
      transformer's passes in dforce's C++ kernel, :mod:`dforce.models.fused`), and a width sweep at batch ``width_batch`` (``floor_widths``)
      how it falls with the model size (the per-call overhead is fixed, the arithmetic grows as width²).

Each rollout runs in a fresh subprocess (same weights, same thread count): its wall time (median of
repeats) and its peak resident memory (``ru_maxrss``, which the kernel tracks as a true high-water mark
of the whole process, so nothing that lives only briefly during the rollout escapes it); the peak after
a short warm-up rollout is reported too, so the growth caused by the rollout itself is visible.

    nice -n 10 python benchmarks/sampling.py                 # full run (~30-40 min on the loaded shared 2-core box)
    python benchmarks/sampling.py --quick                    # smoke run (~1-2 min, lengths 16/32/48)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine.checkpoint import load_weights, save_weights
from dforce.errors import DataError
from dforce.models import KVCache, ModelConfig, build_model, fused
from dforce.objective import ObjectiveConfig, diffusion_forcing_loss
from dforce.sampler import SamplerConfig, StatelessDenoiser, sample

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    # torch threads. The issue asks for 2, but on the shared 2-core box (load 8-15) two OpenMP threads spin
    # on each other: a (16x128)@(128x384) linear took 1035 us with 2 threads vs 34 us with 1 (see report)
    threads: int = 1
    batch: int = 32  # sequences sampled together (issue target: batch >= 16)
    window: int = 16  # sampling window W (issue target: window 16); transformer max_context = W
    steps: int = 4  # DDIM steps S per token (small so the 10 000-token rollouts fit the time budget)
    num_levels: int = 1000  # K (reference video / time series)
    token_dim: int = 2  # token size (the synthetic noisy-sines data)
    width: int = 128  # model width (both backbones; the dforce default)
    rnn_depth: int = 2  # GRU layers
    tf_depth: int = 4  # transformer blocks
    tf_heads: int = 4
    lengths: tuple[int, ...] = (100, 1000, 10000)  # rollout lengths
    repeats: tuple[int, ...] = (3, 1, 1)  # timing repeats per length (median)
    # the reference costs ~5-50x more per token: it is measured (once) at these lengths and its time for
    # longer rollouts extrapolated by a straight-line fit of time vs length over them (labelled as such);
    # its per-token cost does not depend on the length (sliding window of W tokens), which the measured
    # lengths check (the fit's residuals are reported)
    ref_lengths: tuple[int, ...] = (32, 64, 128)
    floor_batches: tuple[int, ...] = (16, 32, 64, 128)  # time / floor of the transformer vs batch size
    sweep_repeats: int = 3  # timed rollouts per batch / width sweep point (median; one shared-box outlier was 1.5x)
    floor_len: int = 256  # rollout length of the batch sweep
    floor_widths: tuple[int, ...] = (128, 256, 512)  # time / floor of the transformer vs width (same depth/heads)
    width_batch: int = 16  # batch of the width sweep (the issue's smallest target batch)
    width_len: int = 128  # rollout length of the width sweep (shorter: width 512 costs 16x width 128)
    train_batch: int = 16  # training throughput: batch
    train_len: int = 32  # training throughput: window length
    train_steps: int = 8  # timed optimizer steps (after 2 warm-up steps)
    precision_len: int = 200  # rollout length of the fp32 vs bf16 comparison


def model_cfg(bc: BenchConfig, backbone: str) -> ModelConfig:
    if backbone == "rnn":
        return ModelConfig(backbone="rnn", width=bc.width, depth=bc.rnn_depth)
    return ModelConfig(backbone="transformer", width=bc.width, depth=bc.tf_depth, heads=bc.tf_heads,
                       max_context=bc.window)


def make(bc: BenchConfig, backbone: str, weights: Path | None = None):
    torch.manual_seed(0)
    model = build_model(model_cfg(bc, backbone), (bc.token_dim,), bc.num_levels).eval()
    if weights is None:
        # random init, but the zero-initialized output layers get small random weights so that the
        # predictions (and hence every sampled token) depend on the whole network
        for p in model.parameters():
            if p.abs().max() == 0:
                p.data.normal_(0, 0.02)
    else:
        load_weights(model, weights)
    return model


def state_bytes(state) -> int:
    """Bytes held by a model state (RNN latent, KV cache, or the stateless adapter's kept tokens)."""
    if state is None:
        return 0
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, KVCache):  # keys/values (or the buffers they are views of) + the per-level table, if any
        table = [] if state.table is None else [state.table.ada, state.table.out]
        kv = state.keys + state.values if state.store is None else state.store.keys + state.store.values
        return sum(state_bytes(t) for t in kv + table)
    if isinstance(state, (tuple, list)):
        return sum(state_bytes(s) for s in state)
    return 0


def rollout(bc: BenchConfig, model, kind: str, schedule_name: str, length: int, precision: str = "fp32", seed=0):
    """One timed rollout. ``kind``: ``ours`` (the sampler), ``fused`` (the sampler with ``sampler.fused_kernel``:
    the transformer's passes in dforce's C++ kernel) or ``reference`` (full-window recompute per row)."""
    schedule = NoiseSchedule(NoiseScheduleConfig(num_levels=bc.num_levels))
    ours = kind in ("ours", "fused")
    cfg = SamplerConfig(steps=bc.steps, schedule=schedule_name, window=bc.window, precision=precision,
                        skip_inactive=ours, fused_kernel=kind == "fused")
    net = model if ours else StatelessDenoiser(lambda x, k, c: model(x, k, c), max_context=bc.window)
    g = torch.Generator().manual_seed(seed)
    return sample(net, schedule, cfg, length=length, batch=bc.batch, token_shape=(bc.token_dim,), generator=g)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------------------------------
# worker: one rollout configuration in a fresh process
# ---------------------------------------------------------------------------------------------------


def worker(spec: dict) -> dict:
    bc = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["bench"].items()})
    torch.set_num_threads(bc.threads)
    model = make(bc, spec["backbone"], Path(spec["weights"]))
    rss_start = maxrss_mb()
    rollout(bc, model, spec["kind"], spec["schedule"], 2 * bc.window)  # warm-up (kernels, allocator)
    rss_warm = maxrss_mb()
    times, cpu, out = [], [], None
    for _ in range(spec["repeats"]):
        t, c = time.perf_counter(), time.process_time()
        out = rollout(bc, model, spec["kind"], spec["schedule"], spec["length"])
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"seconds": times, "median_s": statistics.median(times), "cpu_seconds": cpu,
            "median_cpu_s": statistics.median(cpu), "rss_start_mb": rss_start,
            "rss_after_warmup_mb": rss_warm, "peak_rss_mb": maxrss_mb(), "state_bytes": state_bytes(out.state),
            "output_bytes": out.x.numel() * out.x.element_size(), "model_calls": out.model_calls,
            "tokens_evaluated": out.tokens_evaluated}


def run_worker(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                         text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed for {spec}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# floor: FLOPs per generated token and the machine's matmul throughput
# ---------------------------------------------------------------------------------------------------


def matmul_gflops(n: int = 1024, repeats: int = 5, clock=time.perf_counter) -> float:
    """Median fp32 ``n x n`` matmul throughput; ``clock=time.process_time`` times the CPU time this process
    got (with one thread: the work, without the time other processes on the shared cores took)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        t = clock()
        a @ b
        rates.append(2 * n**3 / max(clock() - t, 1e-9) / 1e9)
    return statistics.median(rates)


def matmul_both() -> tuple[float, float]:
    return matmul_gflops(), matmul_gflops(clock=time.process_time)


def flops_per_token(bc: BenchConfig, model, shared_levels: bool = False) -> dict:
    """FLOPs for one generated token of each of the B sequences: S forwards after a full cache + 1 commit.

    ``shared_levels=False``: the model's dense per-token FLOPs (every token computes its own level
    embedding / adaLN modulation). ``True``: the FLOPs it executes in our sampler, which passes the levels
    broadcast over the batch, so the transformer computes those once per level (not per token).
    """
    from torch.utils.flop_counter import FlopCounterMode

    B, W = bc.batch, bc.window
    x1 = torch.randn(B, 1, bc.token_dim)
    k1 = torch.full((1, 1), bc.num_levels // 2).expand(B, -1) if shared_levels else torch.full((B, 1), bc.num_levels // 2)
    with torch.no_grad():
        state = model.absorb(torch.randn(B, W, bc.token_dim), torch.zeros(B, W, dtype=torch.long), None,
                             model.init_state(B))
    counts = {}
    # counted with grad enabled: the transformer then computes its level conditioning per call (no memoized
    # per-level table), so both counts keep their definitions whatever the inference shortcuts
    with torch.enable_grad():
        for name, fn in (("forward", lambda: model(x1, k1, None, state)),
                         ("absorb", lambda: model.absorb(x1, k1, None, state))):
            with FlopCounterMode(display=False) as fc:
                fn()
            counts[name] = fc.get_total_flops()
    if isinstance(model, torch.nn.Module) and hasattr(model, "gru") and counts["forward"] < 6 * bc.width**2 * B:
        # the counter may not see inside the fused CPU GRU kernel: add its matmuls analytically
        # (per layer and token: 3 gates x (input + hidden) matmuls of width x width, 2 FLOPs per MAC)
        gru = 2 * 3 * 2 * bc.width**2 * bc.rnn_depth * B
        counts = {k: v + gru for k, v in counts.items()}
        counts["gru_added_analytically"] = gru
    if hasattr(model, "blocks"):
        # FlopCounterMode does not see CPU scaled_dot_product_attention: add it analytically. Per block and
        # new token attending to W cached tokens + itself: q·kᵀ and att·v, 2·(W+1)·width MACs each
        att = 2 * 2 * (W + 1) * bc.width * bc.tf_depth * B
        counts = {k: v + att for k, v in counts.items()}
        counts["attention_added_analytically"] = att
    counts["per_generated_column"] = bc.steps * counts["forward"] + counts["absorb"]  # B tokens
    return counts


# ---------------------------------------------------------------------------------------------------
# training throughput and fp32 vs bf16
# ---------------------------------------------------------------------------------------------------


def train_tokens_per_s(bc: BenchConfig, model) -> float:
    model = model.train()
    schedule = NoiseSchedule(NoiseScheduleConfig(num_levels=bc.num_levels))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(bc.train_batch, bc.train_len, bc.token_dim)
    times = []
    for i in range(bc.train_steps + 2):
        t = time.perf_counter()
        loss = diffusion_forcing_loss(model, schedule, x0, ObjectiveConfig()).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    model.eval()
    return bc.train_batch * bc.train_len / statistics.median(times)


def precision_study(bc: BenchConfig, model) -> dict:
    res = {}
    for sched in ("pyramid", "autoregressive"):
        outs, secs = {}, {}
        for prec in ("fp32", "bf16"):
            rollout(bc, model, "ours", sched, bc.window, prec)  # warm-up
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                outs[prec] = rollout(bc, model, "ours", sched, bc.precision_len, prec, seed=1).x
                ts.append(time.perf_counter() - t)
            secs[prec] = statistics.median(ts)
        diff = (outs["fp32"] - outs["bf16"]).abs()
        res[sched] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                      "token_rms": float(outs["fp32"].pow(2).mean().sqrt()),
                      "fp32_tokens_per_s": bc.batch * bc.precision_len / secs["fp32"],
                      "bf16_tokens_per_s": bc.batch * bc.precision_len / secs["bf16"],
                      "bf16_speedup": secs["fp32"] / secs["bf16"]}
    return res


AB_STUDIES = {  # paired timings: name -> (labels of the "on" and "off" runs, help)
    "inference_mode": (("inference_mode", "no_grad"), "sampler.inference_mode on vs off"),
    "kv_store": (("kv_store", "concatenate"), "the transformer's preallocated KV buffers (KV_STORE) vs concatenation"),
    "transposed_weights": (("transposed_weights", "linear"),
                           "the transformer's transposed weight copies (TRANSPOSED_WEIGHTS) vs F.linear"),
    "lean_pass": (("lean_pass", "training_blocks"),
                  "the transformer's lean inference blocks (LEAN_PASS) vs the training blocks' forward"),
    "fused_kernel": (("fused_kernel", "python_blocks"),
                     "sampler.fused_kernel (the transformer's passes in dforce's C++ kernel) vs the lean Python blocks"),
}
SWITCHES = {"kv_store": "KV_STORE", "transposed_weights": "TRANSPOSED_WEIGHTS",  # study -> flag in models.transformer
            "lean_pass": "LEAN_PASS"}


def paired_study(bc: BenchConfig, name: str, length: int = 256, repeats: int = 8) -> dict:
    """The transformer's rollouts with one of ``AB_STUDIES`` on and off, timed alternately in this process (paired:
    the machine's drift hits both alike), with the CPU time over the dense FLOP floor of each."""
    from dforce.models import transformer

    model = make(bc, "transformer")
    schedule = NoiseSchedule(NoiseScheduleConfig(num_levels=bc.num_levels))
    flops = flops_per_token(bc, model)["per_generated_column"]
    gflops_cpu = [matmul_gflops(clock=time.process_time)]
    labels = AB_STUDIES[name][0]
    res, tokens = {}, {}
    for sched in ("autoregressive", "pyramid"):
        def run(on: bool, n: int):
            if name in SWITCHES:
                setattr(transformer, SWITCHES[name], on)
            cfg = SamplerConfig(steps=bc.steps, schedule=sched, window=bc.window,
                                inference_mode=on if name == "inference_mode" else True,
                                fused_kernel=on and name == "fused_kernel")
            try:
                return sample(model, schedule, cfg, length=n, batch=bc.batch, token_shape=(bc.token_dim,),
                              generator=torch.Generator().manual_seed(0)).x
            finally:
                if name in SWITCHES:
                    setattr(transformer, SWITCHES[name], True)
        secs = {True: [], False: []}
        run(True, 2 * bc.window), run(False, 2 * bc.window)  # warm-up
        for _ in range(repeats):
            for on in secs:
                c = time.process_time()
                tokens[on] = run(on, length)
                secs[on].append(time.process_time() - c)
        gflops_cpu.append(matmul_gflops(clock=time.process_time))
        med = {on: statistics.median(v) for on, v in secs.items()}
        res[sched] = {"cpu_seconds": {labels[0]: secs[True], labels[1]: secs[False]},
                      "speedup": med[False] / med[True], "median_cpu_s": {labels[0]: med[True], labels[1]: med[False]},
                      "max_abs_token_diff": float((tokens[True] - tokens[False]).abs().max())}
    g = statistics.median(gflops_cpu)
    for r in res.values():  # floor: FLOPs per generated column × length / CPU-time matmul throughput
        r["cpu_time_over_floor"] = {k: v / (length * flops / (g * 1e9)) for k, v in r["median_cpu_s"].items()}
    return {"study": name, "batch": bc.batch, "length": length, "repeats": repeats,
            "matmul_gflops_cpu_time": gflops_cpu, "loadavg": os.getloadavg(), "by_schedule": res}


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------


def log(t_start: float, msg: str) -> None:
    print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def line_fit(measured: dict) -> dict:
    """Least-squares ``time = intercept + per_token · length`` over the measured reference rollouts."""
    Ls = [float(L) for L in measured]
    ts = [r["median_s"] for r in measured.values()]
    n, mL, mt = len(Ls), statistics.fmean(Ls), statistics.fmean(ts)
    slope = sum((L - mL) * (t - mt) for L, t in zip(Ls, ts)) / sum((L - mL) ** 2 for L in Ls)
    icpt = mt - slope * mL
    res = [abs(icpt + slope * L - t) / t for L, t in zip(Ls, ts)]
    return {"intercept_s": icpt, "per_token_s": slope, "max_rel_residual": max(res), "points": n,
            "tokens_per_s_by_length": {int(L): r["tokens_per_s"] for L, r in measured.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny lengths, for a smoke test")
    p.add_argument("--threads", type=int, default=BenchConfig.threads)
    p.add_argument("--steps", type=int, default=BenchConfig.steps)
    p.add_argument("--batch", type=int, default=BenchConfig.batch)
    p.add_argument("--out", default=str(RESULTS / "sampling"), help="output path without suffix")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--from-json", action="store_true", help="only redo summary/markdown from the --out json")
    for name, (_, what) in AB_STUDIES.items():
        p.add_argument(f"--{name.replace('_', '-')}-ab", action="store_true",
                       help=f"only time {what} (transformer, --batch, 256 tokens, paired) to <out>_{name}.json")
    args = p.parse_args()
    if args.from_json:
        src = Path(args.out).with_suffix(".json")
        if not src.is_file():
            raise DataError(f"--from-json: {src} does not exist (run the benchmark with --out {args.out} first)")
        report = json.loads(src.read_text())
        for entry in report["backbones"].values():  # json turned the length keys into strings
            entry["rollouts"] = {s: {int(L): r for L, r in rows.items()} for s, rows in entry["rollouts"].items()}
            for ref in entry["reference"].values():
                ref["measured"] = {int(L): r for L, r in ref["measured"].items()}
        report["batch_sweep"] = {int(B): r for B, r in report["batch_sweep"].items()}
        report["width_sweep"] = {int(W): r for W, r in report.get("width_sweep", {}).items()}
        bc = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["config"].items()})
        finish(bc, report, Path(args.out))
        return
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    bc = BenchConfig(threads=args.threads, steps=args.steps, batch=args.batch)
    for name, ((on, off), _) in AB_STUDIES.items():
        if getattr(args, f"{name}_ab"):
            torch.set_num_threads(bc.threads)
            study = paired_study(bc, name, length=16 if args.quick else 256, repeats=1 if args.quick else 8)
            Path(f"{args.out}_{name}.json").write_text(json.dumps(study, indent=2))
            for sched, r in study["by_schedule"].items():
                ratio = r["cpu_time_over_floor"]
                print(f"{sched:14s} batch {bc.batch}: {on} {r['speedup']:.3f}x faster; CPU time / floor "
                      f"{ratio[on]:.2f} ({off} {ratio[off]:.2f}); tokens differ by {r['max_abs_token_diff']:.1e}")
            return
    if args.quick:
        bc = BenchConfig(threads=args.threads, steps=args.steps, batch=args.batch, lengths=(16, 32, 48),
                         repeats=(1, 1, 1), ref_lengths=(8, 16), floor_batches=(16, 32), floor_len=16,
                         floor_widths=(32, 64), width_len=16, train_steps=2, precision_len=16)
    torch.set_num_threads(bc.threads)
    t_start = time.time()
    load_before, uptime_before = os.getloadavg(), uptime()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gflops, gflops_cpu = [], []
    sample_matmul = lambda: [v.append(x) for v, x in zip((gflops, gflops_cpu), matmul_both())]  # noqa: E731
    sample_matmul()
    report = {"config": asdict(bc), "weights": "random init (seed 0; zero-init output layers ~N(0, 0.02))",
              "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__}, "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in ("rnn", "transformer"):
            print(f"[{time.time() - t_start:6.0f}s] {backbone}", flush=True)
            model = make(bc, backbone)
            weights = Path(tmp) / f"{backbone}.safetensors"
            save_weights(model, weights)
            entry = {"params": sum(p.numel() for p in model.parameters()), "flops": flops_per_token(bc, model),
                     "flops_executed": flops_per_token(bc, model, shared_levels=True), "rollouts": {},
                     "reference": {}}
            for sched in ("autoregressive", "pyramid"):
                spec = {"bench": asdict(bc), "backbone": backbone, "weights": str(weights), "schedule": sched}
                ref = {}
                for length in bc.ref_lengths:
                    r = run_worker({**spec, "kind": "reference", "length": length, "repeats": 1})
                    r["tokens_per_s"] = bc.batch * length / r["median_s"]
                    ref[length] = r
                    log(t_start, f"  {sched:14s} L={length:5d} reference {r['tokens_per_s']:9.0f} tok/s")
                entry["reference"][sched] = {"measured": ref, "fit": line_fit(ref)}
                rows = {}
                for length, reps in zip(bc.lengths, bc.repeats):
                    r = run_worker({**spec, "kind": "ours", "length": length, "repeats": reps})
                    r["tokens_per_s"] = bc.batch * length / r["median_s"]
                    log(t_start, f"  {sched:14s} L={length:5d} ours      {r['tokens_per_s']:9.0f} tok/s  "
                                 f"peak {r['peak_rss_mb']:.0f} MB")
                    rows[length] = {"ours": r}
                entry["rollouts"][sched] = rows
            print(f"[{time.time() - t_start:6.0f}s]   training + precision", flush=True)
            entry["train_tokens_per_s"] = train_tokens_per_s(bc, make(bc, backbone, weights))
            entry["precision"] = precision_study(bc, model)
            report["backbones"][backbone] = entry
            sample_matmul()
            out.with_suffix(".partial.json").write_text(json.dumps(report, indent=2))  # in case the run dies
        # time / floor of the transformer vs batch size (same weights)
        log(t_start, "transformer batch sweep")
        fused.load()  # build the C++ kernel once here (cached), not in the first worker that uses it
        sweep = {}
        for B in bc.floor_batches:
            bcb = replace(bc, batch=B)
            tf = make(bcb, "transformer", Path(tmp) / "transformer.safetensors")
            row = {"flops": flops_per_token(bcb, tf), "flops_executed": flops_per_token(bcb, tf, shared_levels=True)}
            row["fused"] = {}
            for kind in ("ours", "fused"):
                for sched in ("autoregressive", "pyramid"):
                    r = run_worker({"bench": asdict(bcb), "backbone": "transformer", "kind": kind, "schedule": sched,
                                    "weights": str(Path(tmp) / "transformer.safetensors"), "length": bc.floor_len,
                                    "repeats": bc.sweep_repeats})
                    r["tokens_per_s"] = B * bc.floor_len / r["median_s"]
                    (row if kind == "ours" else row["fused"])[sched] = r
                    log(t_start, f"  batch {B:4d} {sched:14s} {kind:5s} {r['tokens_per_s']:9.0f} tok/s")
            sweep[B] = row
        report["batch_sweep"] = sweep
        # time / floor of the transformer vs width at batch width_batch (random init seed 0 per width)
        log(t_start, "transformer width sweep")
        wsweep = {}
        for W in bc.floor_widths:
            bcw = replace(bc, batch=bc.width_batch, width=W)
            tf = make(bcw, "transformer")
            wpath = Path(tmp) / f"transformer_w{W}.safetensors"
            save_weights(tf, wpath)
            row = {"params": sum(p.numel() for p in tf.parameters()), "flops": flops_per_token(bcw, tf),
                   "flops_executed": flops_per_token(bcw, tf, shared_levels=True)}
            for sched in ("autoregressive", "pyramid"):
                r = run_worker({"bench": asdict(bcw), "backbone": "transformer", "kind": "ours", "schedule": sched,
                                "weights": str(wpath), "length": bc.width_len, "repeats": bc.sweep_repeats})
                r["tokens_per_s"] = bcw.batch * bc.width_len / r["median_s"]
                row[sched] = r
                log(t_start, f"  width {W:4d} {sched:14s} {r['tokens_per_s']:9.0f} tok/s")
            wsweep[W] = row
        report["width_sweep"] = wsweep
        sample_matmul()
    # the floor uses the median matmul throughput over the run (measured before, between and after)
    report["matmul_gflops"] = {"samples": gflops, "median": statistics.median(gflops)}
    report["matmul_gflops_cpu_time"] = {"samples": gflops_cpu, "median": statistics.median(gflops_cpu)}
    report["load"] = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                      "uptime_before": uptime_before, "uptime_after": uptime(),
                      "note": "other jobs on the machine change every timing: compare uptime's load averages",
                      "seconds": time.time() - t_start, "nice": os.nice(0)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))  # raw results first
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    finish(bc, report, out)


def finish(bc: BenchConfig, report: dict, out: Path) -> None:
    """Speedups, floors, summary and markdown from the raw results (``--from-json`` redoes this part only)."""
    g, gc = report["matmul_gflops"]["median"], report["matmul_gflops_cpu_time"]["median"]
    floor = lambda L, fl, g=g: L * fl["per_generated_column"] / (g * 1e9)  # noqa: E731  seconds
    for entry in report["backbones"].values():
        for sched, rows in entry["rollouts"].items():
            ref = entry["reference"][sched]
            for L, row in rows.items():
                measured = ref["measured"].get(L)
                ref_s = measured["median_s"] if measured else ref["fit"]["intercept_s"] + ref["fit"]["per_token_s"] * L
                row["reference"] = {"median_s": ref_s, "tokens_per_s": bc.batch * L / ref_s,
                                    "extrapolated": measured is None}
                row["speedup"] = ref_s / row["ours"]["median_s"]
                row["speedup_extrapolated"] = measured is None
                row["floor_s"] = floor(L, entry["flops"])
                row["time_over_floor"] = row["ours"]["median_s"] / row["floor_s"]
                row["time_over_floor_executed_flops"] = row["ours"]["median_s"] / floor(L, entry["flops_executed"])
                # CPU time of the rollout over the floor at the CPU-time matmul throughput (load-independent)
                row["time_over_floor_cpu_time"] = row["ours"]["median_cpu_s"] / floor(L, entry["flops"], gc)
    for B, row in report["batch_sweep"].items():
        for sched, r in [(s, row[s]) for s in ("autoregressive", "pyramid")] + list(row.get("fused", {}).items()):
            r["time_over_floor"] = r["median_s"] / floor(bc.floor_len, row["flops"])
            r["time_over_floor_executed_flops"] = r["median_s"] / floor(bc.floor_len, row["flops_executed"])
            r["time_over_floor_cpu_time"] = r["median_cpu_s"] / floor(bc.floor_len, row["flops"], gc)
            r["time_over_floor_cpu_time_executed_flops"] = r["median_cpu_s"] / floor(bc.floor_len,
                                                                                     row["flops_executed"], gc)
    for W, row in report.get("width_sweep", {}).items():
        for sched in ("autoregressive", "pyramid"):
            r = row[sched]
            r["ms_per_call"] = 1e3 * r["median_cpu_s"] / r["model_calls"]  # CPU ms per row (commits ride along)
            r["time_over_floor"] = r["median_s"] / floor(bc.width_len, row["flops"])
            r["time_over_floor_cpu_time"] = r["median_cpu_s"] / floor(bc.width_len, row["flops"], gc)
            r["time_over_floor_cpu_time_executed_flops"] = r["median_cpu_s"] / floor(bc.width_len,
                                                                                     row["flops_executed"], gc)
    for row in report["batch_sweep"].values():
        for r in [row["autoregressive"], row["pyramid"], *row.get("fused", {}).values()]:
            r["ms_per_call"] = 1e3 * r["median_cpu_s"] / r["model_calls"]
    report["summary"] = summarize(bc, report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(bc, report))
    print(json.dumps(report["summary"], indent=2))


def summarize(bc: BenchConfig, report: dict) -> dict:
    bb = report["backbones"]
    L1, Lmax = bc.lengths[1], bc.lengths[2]
    ar = "autoregressive"
    mem = max(bb[b]["rollouts"][s][Lmax]["ours"]["peak_rss_mb"] / bb[b]["rollouts"][s][L1]["ours"]["peak_rss_mb"]
              for b in bb for s in bb[b]["rollouts"])
    steps_file = RESULTS / "steps_study.json"
    min_steps = {"forecast": None, "video": None, "synthetic": None}
    if steps_file.exists():
        min_steps.update(json.loads(steps_file.read_text()).get("min_steps", {}))
    tf = bb["transformer"]["rollouts"]
    sweep = report["batch_sweep"]
    return {
        "speedup_vs_reference_1000": min(bb[b]["rollouts"][ar][L1]["speedup"] for b in bb),  # worst backbone
        "speedup_vs_reference_10000": min(bb[b]["rollouts"][ar][Lmax]["speedup"] for b in bb),
        "speedup_by_length": {b: {s: {L: r["speedup"] for L, r in rows.items()} for s, rows in bb[b]["rollouts"].items()}
                              for b in bb},
        "reference_extrapolation": (
            f"reference measured at {list(bc.ref_lengths)} tokens; longer rollouts use a straight-line fit of its "
            f"time vs length (its per-token cost is constant: sliding window of {bc.window} tokens); worst "
            f"relative fit residual "
            f"{max(r['fit']['max_rel_residual'] for e in bb.values() for r in e['reference'].values()):.3f}"),
        # transformer, batch bc.batch, L1 tokens, floor = dense per-token FLOPs (the model's FLOPs per token)
        "time_over_floor": min(tf[s][L1]["time_over_floor"] for s in tf),
        "time_over_floor_by_schedule": {s: tf[s][L1]["time_over_floor"] for s in tf},
        # the same against the FLOPs our sampler executes (adaLN once per level): the stricter ratio
        "time_over_floor_executed_flops_by_schedule": {s: tf[s][L1]["time_over_floor_executed_flops"] for s in tf},
        # CPU time (process_time, 1 thread) over the floor at the CPU-time matmul throughput: the same ratio
        # without the time other jobs on the shared cores took from both measurements
        "time_over_floor_cpu_time_by_schedule": {s: tf[s][L1]["time_over_floor_cpu_time"] for s in tf},
        "time_over_floor_cpu_time_by_batch": {B: {s: row[s]["time_over_floor_cpu_time"] for s in (ar, "pyramid")}
                                              for B, row in sweep.items()},
        "time_over_floor_cpu_time_executed_flops_by_batch": {
            B: {s: row[s]["time_over_floor_cpu_time_executed_flops"] for s in (ar, "pyramid")} for B, row in sweep.items()},
        "time_over_floor_by_batch": {B: {s: row[s]["time_over_floor"] for s in (ar, "pyramid")}
                                     for B, row in sweep.items()},
        "time_over_floor_executed_flops_by_batch": {B: {s: row[s]["time_over_floor_executed_flops"]
                                                        for s in (ar, "pyramid")} for B, row in sweep.items()},
        # CPU ms per model call (one row of the schedule; finished tokens are committed inside it) vs batch
        "ms_per_call_cpu_time_by_batch": {B: {s: row[s]["ms_per_call"] for s in (ar, "pyramid")}
                                          for B, row in sweep.items()},
        # the same with sampler.fused_kernel (the transformer's passes in dforce's C++ kernel)
        "time_over_floor_cpu_time_by_batch_fused": {B: {s: r["time_over_floor_cpu_time"] for s, r in row["fused"].items()}
                                                    for B, row in sweep.items() if "fused" in row},
        "time_over_floor_by_batch_fused": {B: {s: r["time_over_floor"] for s, r in row["fused"].items()}
                                           for B, row in sweep.items() if "fused" in row},
        "ms_per_call_cpu_time_by_batch_fused": {B: {s: r["ms_per_call"] for s, r in row["fused"].items()}
                                                for B, row in sweep.items() if "fused" in row},
        # the same model shape at larger widths, batch width_batch: the fixed per-call overhead vs the arithmetic
        "time_over_floor_cpu_time_by_width": {W: {s: row[s]["time_over_floor_cpu_time"] for s in (ar, "pyramid")}
                                              for W, row in report.get("width_sweep", {}).items()},
        "time_over_floor_by_width": {W: {s: row[s]["time_over_floor"] for s in (ar, "pyramid")}
                                     for W, row in report.get("width_sweep", {}).items()},
        # the matmul samples swing with the machine's load; against the fastest one the floor is lowest
        "matmul_gflops_samples": report["matmul_gflops"]["samples"],
        "matmul_gflops_cpu_time_samples": report["matmul_gflops_cpu_time"]["samples"],
        # the issue's targets, read off the numbers above
        "targets": {
            "speedup_1000_at_least_5x": min(bb[b]["rollouts"][ar][L1]["speedup"] for b in bb) >= 5,
            "speedup_grows_with_length": {b: [bb[b]["rollouts"][ar][L]["speedup"] for L in bc.lengths] for b in bb},
            "speedup_growth_note": (
                "grows from the first lengths (our first window has no cache to reuse) and is then flat within the "
                "timing noise of the loaded machine (single 1 000- and 10 000-token runs): the "
                "reference-style sampler keeps a sliding window too, so its per-token cost is constant and both "
                "costs are linear in the length; a reference re-reading the whole history would grow quadratically"),
            "floor_within_3x_at_batch": bc.batch if min(tf[s][L1]["time_over_floor"] for s in tf) <= 3 else None,
            "smallest_batch_within_3x": {
                kind: {s: min((B for B, row in sweep.items() if row[s][key] <= 3), default=None) for s in (ar, "pyramid")}
                for kind, key in (("wall_dense", "time_over_floor"), ("cpu_time_dense", "time_over_floor_cpu_time"),
                                  ("cpu_time_executed", "time_over_floor_cpu_time_executed_flops"))},
            "smallest_batch_within_3x_fused": {
                kind: {s: min((B for B, row in sweep.items() if "fused" in row and row["fused"][s][key] <= 3),
                              default=None) for s in (ar, "pyramid")}
                for kind, key in (("wall_dense", "time_over_floor"), ("cpu_time_dense", "time_over_floor_cpu_time"),
                                  ("cpu_time_executed", "time_over_floor_cpu_time_executed_flops"))},
            "every_batch_within_3x_fused_cpu_time": {
                s: all(row["fused"][s]["time_over_floor_cpu_time"] <= 3 for row in sweep.values() if "fused" in row)
                for s in (ar, "pyramid")} if any("fused" in row for row in sweep.values()) else None,
            "memory_flat_10pct": abs(mem - 1) <= 0.10,
        },
        "memory_ratio_10000_vs_1000": mem,  # worst backbone/schedule, peak RSS
        "min_steps": min_steps,
        "machine_load": {"loadavg_before": report["load"]["loadavg_before"],
                         "loadavg_after": report["load"]["loadavg_after"],
                         "uptime_before": report["load"].get("uptime_before"),
                         "uptime_after": report["load"].get("uptime_after"), "threads": bc.threads},
    }


def markdown(bc: BenchConfig, report: dict) -> str:
    s, ld = report["summary"], report["load"]
    lines = [
        "# Sampling speed (`nice -n 10 python benchmarks/sampling.py`)", "",
        f"Random-init weights (seed 0), batch {bc.batch}, window {bc.window}, S = {bc.steps} DDIM steps, "
        f"K = {bc.num_levels}, width {bc.width} (RNN depth {bc.rnn_depth}, transformer depth {bc.tf_depth}, "
        f"max_context {bc.window}), fp32, {bc.threads} torch thread(s). tokens/s counts all B sequences. "
        f"Machine: {report['machine']['cpu_count']} cores (other jobs on it change the timings); `uptime` before: "
        f"`{ld.get('uptime_before', '')}`, after: `{ld.get('uptime_after', '')}` (timings are medians of the "
        f"repeats {dict(zip(bc.lengths, bc.repeats))}). fp32 matmul throughput (1024², measured before, between "
        f"and after): {', '.join(f'{x:.1f}' for x in report['matmul_gflops']['samples'])} GFLOP/s, median "
        f"{report['matmul_gflops']['median']:.1f} used for the floor (time / floor is uncertain by that spread); "
        f"per CPU second of this process: {', '.join(f'{x:.1f}' for x in report['matmul_gflops_cpu_time']['samples'])}, "
        f"median {report['matmul_gflops_cpu_time']['median']:.1f} (the *CPU* ratios: rollout CPU time over this "
        f"floor, free of the other jobs' share of the cores). "
        f"Floor = FLOPs per generated token (S forwards + 1 commit, FlopCounterMode + attention analytically) × "
        f"tokens / that throughput; *dense* = the model's per-token FLOPs, *executed* = what our sampler runs "
        f"(adaLN / level embedding once per level, shared by the batch). Reference = the same model re-reading "
        f"the last {bc.window} tokens and the whole chunk every row; (fit): {s['reference_extrapolation']}. "
        f"Peak RSS: ru_maxrss of a "
        f"fresh process per rollout; (after warm-up) is its value before the timed rollouts.", "",
        "| backbone | schedule | tokens | ours tok/s | reference tok/s | speedup | time / floor (dense) | "
        "time / floor (executed) | CPU time / floor (dense) | peak RSS MB (after warm-up) | state bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b, entry in report["backbones"].items():
        for sched, rows in entry["rollouts"].items():
            for L, row in rows.items():
                o, r = row["ours"], row["reference"]
                ext = " (fit)" if row["speedup_extrapolated"] else ""
                lines.append(f"| {b} | {sched} | {L} | {o['tokens_per_s']:.0f} | {r['tokens_per_s']:.0f}{ext} | "
                             f"{row['speedup']:.1f}x | {row['time_over_floor']:.2f} | "
                             f"{row['time_over_floor_executed_flops']:.2f} | {row['time_over_floor_cpu_time']:.2f} | "
                             f"{o['peak_rss_mb']:.0f} "
                             f"({o['rss_after_warmup_mb']:.0f}) | {o['state_bytes']} |")
    lines += ["", "Reference sampler, measured (tokens/s by rollout length; constant = linear cost):", "",
              "| backbone | schedule | " + " | ".join(f"{L} tokens" for L in bc.ref_lengths) + " | fit: s/token | max residual |",
              "|---|---|" + "---|" * len(bc.ref_lengths) + "---|---|"]
    for b, entry in report["backbones"].items():
        for sched, ref in entry["reference"].items():
            lines.append(f"| {b} | {sched} | " + " | ".join(f"{ref['measured'][L]['tokens_per_s']:.0f}"
                                                         for L in bc.ref_lengths)
                         + f" | {ref['fit']['per_token_s']:.3g} | {ref['fit']['max_rel_residual']:.3f} |")
    lines += ["", f"Transformer time / floor vs batch ({bc.floor_len}-token rollouts, ours):", "",
              "| batch | schedule | tok/s | CPU ms / call | time / floor (dense) | time / floor (executed) | "
              "CPU time / floor (dense) | CPU time / floor (executed) |", "|---|---|---|---|---|---|---|---|"]
    for B, row in report["batch_sweep"].items():
        for sched in ("autoregressive", "pyramid"):
            r = row[sched]
            lines.append(f"| {B} | {sched} | {r['tokens_per_s']:.0f} | {r['ms_per_call']:.2f} | {r['time_over_floor']:.2f} | "
                         f"{r['time_over_floor_executed_flops']:.2f} | {r['time_over_floor_cpu_time']:.2f} | "
                         f"{r['time_over_floor_cpu_time_executed_flops']:.2f} |")
    if any("fused" in row for row in report["batch_sweep"].values()):
        lines += ["", f"The same with `sampler.fused_kernel=true` (the transformer's fp32 CPU passes in dforce's C++ "
                  f"kernel, `src/dforce/models/fused_pass.cpp`; same weights, same tokens within 1e-6):", "",
                  "| batch | schedule | tok/s | CPU ms / call | time / floor (dense) | time / floor (executed) | "
                  "CPU time / floor (dense) | CPU time / floor (executed) |", "|---|---|---|---|---|---|---|---|"]
        for B, row in report["batch_sweep"].items():
            for sched, r in row.get("fused", {}).items():
                lines.append(f"| {B} | {sched} | {r['tokens_per_s']:.0f} | {r['ms_per_call']:.2f} | "
                             f"{r['time_over_floor']:.2f} | {r['time_over_floor_executed_flops']:.2f} | "
                             f"{r['time_over_floor_cpu_time']:.2f} | {r['time_over_floor_cpu_time_executed_flops']:.2f} |")
    lines += ["", f"Transformer time / floor vs width (batch {bc.width_batch}, {bc.width_len}-token rollouts, ours; "
              f"depth {bc.tf_depth}, heads {bc.tf_heads}, random init seed 0 per width):", "",
              "| width | params | schedule | tok/s | CPU ms / call | time / floor (dense) | CPU time / floor (dense) | "
              "CPU time / floor (executed) |", "|---|---|---|---|---|---|---|---|"]
    for W, row in report.get("width_sweep", {}).items():
        for sched in ("autoregressive", "pyramid"):
            r = row[sched]
            lines.append(f"| {W} | {row['params']} | {sched} | {r['tokens_per_s']:.0f} | {r['ms_per_call']:.2f} | "
                         f"{r['time_over_floor']:.2f} | {r['time_over_floor_cpu_time']:.2f} | "
                         f"{r['time_over_floor_cpu_time_executed_flops']:.2f} |")
    lines += ["", "| backbone | params | FLOPs / token column (B tokens), dense | executed | training tok/s |",
              "|---|---|---|---|---|"]
    for b, entry in report["backbones"].items():
        lines.append(f"| {b} | {entry['params']} | {entry['flops']['per_generated_column']:.3g} | "
                     f"{entry['flops_executed']['per_generated_column']:.3g} | {entry['train_tokens_per_s']:.0f} |")
    lines += ["", f"bf16 autocast vs fp32 ({bc.precision_len}-token rollouts, same seed):", "",
              "| backbone | schedule | max abs diff | mean abs diff | token RMS | bf16 speedup |", "|---|---|---|---|---|---|"]
    for b, entry in report["backbones"].items():
        for sched, p in entry["precision"].items():
            lines.append(f"| {b} | {sched} | {p['max_abs_diff']:.2e} | {p['mean_abs_diff']:.2e} | "
                         f"{p['token_rms']:.2f} | {p['bf16_speedup']:.2f}x |")
    lines += ["", "Summary:", "", "```json", json.dumps(s, indent=2), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/sampling.py")  # user errors: one line, exit code 2
