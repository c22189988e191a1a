"""History guidance, keyframe interpolation and fine-tuning into Diffusion Forcing on the ViZDoom 32 px benchmark.

Same data, feature net and horizons as ``benchmarks/video.py`` (``results/video.json``): held-out ViZDoom videos,
``context`` real frames, then a rollout under the real actions scored at 1x/5x/10x/30x the training length T with
the Fréchet distance of ``results/video_vizdoom32_feature_net`` against every held-out real clip.

Stages (each cell is saved as it finishes under ``--cells``, so a killed run resumes where it stopped):

    # 1. sweep: every guidance setting on one seed, shorter rollouts (model selection)
    python benchmarks/history_guidance.py sweep --runs /work/runs/shared/vizdoom32_df_s0 --multiple 10 --episodes 8
    # 2. final: no guidance vs the chosen settings at 30x on every seed
    python benchmarks/history_guidance.py final --runs /work/runs/shared/vizdoom32_df_s{0,1,2} --modes none,hg_v_1.5
    # 3. interpolation: a bidirectional run vs a linear blend vs causal DF given frame 0
    python benchmarks/history_guidance.py interp --bidir RUN --causal /work/runs/shared/vizdoom32_df_s0
    # 4. fine-tuning: full-sequence run fine-tuned into DF for 12.5 % of its steps vs DF from scratch
    python benchmarks/history_guidance.py finetune --finetuned RUN --scratch /work/runs/shared/vizdoom32_df_s0 [--short RUN]
    # 5. cost: time per row with and without history guidance (same model, same rows, interleaved)
    python benchmarks/history_guidance.py cost --runs /work/runs/shared/vizdoom32_df_s0
    # 6. report: results/history_guidance.{json,md} + strips/GIF from the saved cells
    python benchmarks/history_guidance.py report

Guidance settings (``MODES``): ``hg_v_<ω>`` stabilized vanilla HG (history dropped = level K), ``hg_f_<k_f>``
stabilized fractional HG (history at k_f·K, ω = 1.5), ``hg_t`` stabilized temporal HG (whole history and the last
4 frames, λ = ½ each, ω = 1.5), ``hg_v_<ω>_plain`` vanilla HG without stabilization (generated history clean).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
FEATURE_NET = RESULTS / "video_vizdoom32_feature_net"
FEATURE_STEPS = 400  # the feature net of results/video.json (benchmarks/video.py --feature-steps)
HG_OMEGA = 1.5  # ω of the fractional / temporal settings (DFoT's HG-v scale w = 2.5 ~ its best; 1 + ω here)


def modes() -> dict:
    from dforce.history_guidance import HistoryGuidanceConfig as H

    out = {"none": H()}
    for w in (0.5, 1, 1.5, 2, 3):
        out[f"hg_v_{w}"] = H(mode="stabilized_vanilla", scale=float(w))
    out["hg_v_1.5_plain"] = H(mode="vanilla", scale=1.5)
    for kf in (0.3, 0.6):
        out[f"hg_f_{kf}"] = H(mode="stabilized_fractional", scale=HG_OMEGA, fractional_level=kf)
    out["hg_t"] = H(mode="stabilized_temporal", scale=HG_OMEGA, windows=(0, 4), weights=(0.5, 0.5))
    return out


def atomic_json(path: Path, obj) -> None:
    from dforce.engine.checkpoint import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


class Bench:
    """Held-out data, feature net and reference features shared by the cells of one (episodes, multiple)."""

    def __init__(self, run_dir: str, episodes: int, multiple: int):
        from dforce.recipes.video.metrics import load_feature_net, video_features
        from dforce.recipes.video.recipe import feature_provenance, load_run, load_video_data

        _, _, cfg = load_run(run_dir)
        self.cfg = cfg
        self.T, self.C = cfg.data.window, cfg.context
        dcfg = dataclasses.replace(cfg.data, eval_episodes=episodes, eval_multiple=max(cfg.data.eval_multiple, 31))
        self.frames, self.actions = load_video_data(dcfg, "eval", progress=False)
        self.frames, self.actions = self.frames[:episodes], self.actions[:episodes]
        self.length = multiple * self.T
        self.truth = self.frames[:, self.C:self.C + self.length]
        self.fnet = load_feature_net(FEATURE_NET, expect=feature_provenance(cfg.data, FEATURE_STEPS))
        self.ref = video_features(self.fnet, self.truth)

    def score(self, video: torch.Tensor) -> list[dict]:
        from dforce.recipes.video.metrics import horizon_metrics

        pred = video[:, self.C:self.C + self.length]
        return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                for r in horizon_metrics(pred, self.truth, self.T, self.fnet, self.ref)]


def rollout_cell(path: Path, bench: Bench, run_dir: str, hg, media: bool, label: str) -> dict:
    """One (run, guidance setting) rollout, scored and saved (skipped when ``path`` exists)."""
    if path.exists():
        return json.loads(path.read_text())
    from dforce.recipes.video.recipe import load_run, method_config, rollout

    model, schedule, cfg = load_run(run_dir)
    smp = dataclasses.replace(method_config(cfg).sampler, history_guidance=hg)
    t0 = time.time()
    video, seconds = rollout(model, schedule, cfg, bench.frames, bench.actions, bench.length, smp, seed=1,
                             progress=True)
    cell = {"label": label, "run": str(run_dir), "episodes": int(bench.frames.shape[0]), "frames": bench.length,
            "rollout_seconds": round(seconds, 1), "history_guidance": dataclasses.asdict(hg),
            "horizons": bench.score(video), "wall_seconds": round(time.time() - t0, 1)}
    if media:  # two videos' first 5T frames for strips/GIFs
        from dforce.recipes.video.common import to_uint8_frames

        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path.with_suffix(".npz"), video=to_uint8_frames(video[:2, :bench.C + 5 * bench.T]))
    atomic_json(path, cell)
    print(json.dumps({"cell": str(path.name), "frechet": {f"{h['multiple']}x": h["frechet"] for h in cell["horizons"]},
                      "seconds": cell["rollout_seconds"]}), flush=True)
    return cell


def stage_rollouts(args, names: list[str], tag: str) -> None:
    table = modes()
    for name in names:
        if name not in table:
            from dforce.errors import ConfigError

            raise ConfigError(f"unknown guidance setting {name!r}; known: {', '.join(table)}")
    for run in args.runs:
        bench = Bench(run, args.episodes, args.multiple)
        seed = Path(run).name
        d = Path(args.cells) / f"{tag}_{args.multiple}x_{args.episodes}ep"
        if not args.no_media and run == args.runs[0] and not (d / "truth.npz").exists():
            from dforce.recipes.video.common import to_uint8_frames

            d.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(d / "truth.npz", video=to_uint8_frames(bench.frames[:2, :bench.C + 5 * bench.T]))
        for name in names:
            rollout_cell(Path(args.cells) / f"{tag}_{args.multiple}x_{args.episodes}ep" / f"{seed}__{name}.json", bench,
                         run, table[name], media=not args.no_media and run == args.runs[0], label=name)


# ------------------------------------------------------------------------------------------- interpolation
def stage_interp(args) -> None:
    """Frames 0..16 of held-out segments with keyframes {0, 16} and {0, 8, 16}: the bidirectional run (sees every
    keyframe), a linear blend between keyframes, causal DF given frame 0 only, causal DF given the keyframes (it
    only carries each one forward)."""
    from dforce.recipes.video.metrics import per_frame_metrics, video_features, frechet_distance
    from dforce.recipes.video.recipe import interpolate, load_run, rollout

    out_path = Path(args.cells) / f"interp_{args.episodes}ep_{args.segments}seg.json"
    done = json.loads(out_path.read_text()) if out_path.exists() else {}
    bench = Bench(args.causal, args.episodes, 30)
    span = 17
    # segments: frames [s, s + 17) of each held-out video, s = 0, 16, 32, ... (args.segments per video)
    starts = [16 * i for i in range(args.segments)]
    seg_f = torch.cat([bench.frames[:, s:s + span] for s in starts])  # (N·S, 17, C, H, W)
    seg_a = torch.cat([bench.actions[:, s:s + span + 1] for s in starts])
    ref = video_features(bench.fnet, seg_f)
    bidir, bsch, bcfg = load_run(args.bidir)
    causal, csch, ccfg = load_run(args.causal)
    results = done
    for keys in ([0, 16], [0, 8, 16]):
        name = ",".join(map(str, keys))
        if name in results:
            continue
        gen = torch.ones(span, dtype=torch.bool)
        gen[keys] = False
        videos = {}
        videos["dfot"], secs = interpolate(bidir, bsch, bcfg, seg_f, seg_a, keys, seed=1)
        for sched in ("pyramid", "trapezoid"):  # the same model under other scheduling matrices (not the headline)
            smp = dataclasses.replace(bcfg.sampler, schedule=sched)
            videos[f"dfot_{sched}"], _ = interpolate(bidir, bsch, bcfg, seg_f, seg_a, keys, smp, seed=1)
        blend = seg_f.clone()
        for a, b in zip(keys[:-1], keys[1:]):
            for t in range(a + 1, b):
                w = (t - a) / (b - a)
                blend[:, t] = (1 - w) * seg_f[:, a] + w * seg_f[:, b]
        videos["linear"] = blend
        one = dataclasses.replace(ccfg, context=1)
        videos["causal_df"], _ = rollout(causal, csch, one, seg_f, seg_a, span - 1, seed=1)
        videos["causal_df_keyframes"], _ = interpolate(causal, csch, ccfg, seg_f, seg_a, keys, seed=1)
        row = {}
        for m, v in videos.items():
            pf = per_frame_metrics(v[:, gen], seg_f[:, gen])
            row[m] = {"psnr": round(float(pf["psnr"].mean()), 3), "ssim": round(float(pf["ssim"].mean()), 4),
                      "frechet": round(frechet_distance(video_features(bench.fnet, v), ref), 4)}
        row["dfot_seconds"] = round(secs, 1)
        row["segments"] = int(seg_f.shape[0])
        results[name] = row
        if not args.no_media:
            from dforce.recipes.video.common import to_uint8_frames

            np.savez_compressed(out_path.with_name(f"interp_{name.replace(',', '_')}.npz"),
                                **{k: to_uint8_frames(v[:2]) for k, v in videos.items()},
                                truth=to_uint8_frames(seg_f[:2]))
        atomic_json(out_path, results)
        print(json.dumps({name: row}), flush=True)


# ------------------------------------------------------------------------------------------- fine-tuning
def stage_finetune(args) -> None:
    bench = Bench(args.scratch, args.episodes, args.multiple)
    table = modes()
    d = Path(args.cells) / f"final_{args.multiple}x_{args.episodes}ep"
    rollout_cell(d / f"{Path(args.scratch).name}__none.json", bench, args.scratch, table["none"], False, "none")
    rollout_cell(Path(args.cells) / f"finetune_{args.multiple}x_{args.episodes}ep" / "finetuned.json", bench,
                 args.finetuned, table["none"], False, "finetuned")
    if args.short:
        rollout_cell(Path(args.cells) / f"finetune_{args.multiple}x_{args.episodes}ep" / "scratch_short.json", bench,
                     args.short, table["none"], False, "scratch_short")


# ------------------------------------------------------------------------------------------- cost
def stage_cost(args) -> None:
    """Seconds per sampled row with and without HG-v (G = 2) and HG-t (G = 3): the same rollout of 2T frames,
    alternating the settings ``--repeats`` times (the host is shared: medians of interleaved runs)."""
    from dforce.recipes.video.recipe import load_run, method_config, rollout

    run = args.runs[0]
    model, schedule, cfg = load_run(run)
    bench = Bench(run, args.episodes, 2)
    table = modes()
    times = {"none": [], "hg_v_1.5": [], "hg_t": []}
    for _ in range(args.repeats):
        for name in times:
            smp = dataclasses.replace(method_config(cfg).sampler, history_guidance=table[name])
            _, s = rollout(model, schedule, cfg, bench.frames, bench.actions, 2 * bench.T, smp, seed=1)
            times[name].append(s)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"episodes": args.episodes, "frames": 2 * bench.T, "repeats": args.repeats, "seconds": times,
           "median_seconds": med, "ratio_hg_v": round(med["hg_v_1.5"] / med["none"], 3),
           "ratio_hg_t": round(med["hg_t"] / med["none"], 3), "copies": {"hg_v": 2, "hg_t": 3}}
    atomic_json(Path(args.cells) / "cost.json", out)
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------- report
def load_cells(d: Path) -> dict:
    """``{seed: {name: cell}}`` of a stage directory."""
    out = {}
    for f in sorted(d.glob("*.json")):
        seed, name = f.stem.split("__")
        out.setdefault(seed, {})[name] = json.loads(f.read_text())
    return out


def frechet(cell, m) -> float | None:
    return next((h["frechet"] for h in cell["horizons"] if h["multiple"] == m), None)


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def summarize(final: dict) -> dict:
    """Mean Fréchet per setting over the seeds that have it; the best HG: lowest mean 30x among the settings that
    raise 1x by at most 5 % (else lowest overall), over the seeds where none and it were both run."""
    seeds = sorted(s for s in final if "none" in final[s])
    names = sorted({n for s in seeds for n in final[s]})
    mean = {}
    for n in names:
        have = [s for s in seeds if n in final[s]]
        vals = {m: [frechet(final[s][n], m) for s in have] for m in (1, 5, 10, 30)}
        mean[n] = {"seeds": have, **{f"{m}x": float(np.mean(v)) for m, v in vals.items() if None not in v}}
    hg = [n for n in names if n != "none" and mean[n]["seeds"] == seeds]
    ok = [n for n in hg if mean[n]["1x"] <= 1.05 * mean["none"]["1x"]]
    last = max((k for k in mean.get("none", {}) if k.endswith("x")), key=lambda k: int(k[:-1]), default="1x")
    best = min(ok or hg, key=lambda n: mean[n][last]) if hg else None
    return {"seeds": seeds, "mean": mean, "best": best, "best_within_1x_limit": bool(ok) and best in ok}


def stage_report(args) -> dict:
    cells = Path(args.cells)
    sweep = {p.name: load_cells(p) for p in sorted(cells.glob("sweep_*")) if p.is_dir()}
    final_dirs = sorted(p for p in cells.glob("final_*") if p.is_dir())
    final = load_cells(final_dirs[-1]) if final_dirs else {}
    summ = summarize(final) if final else None
    interp = {}
    for p in sorted(cells.glob("interp_*.json")):
        interp = json.loads(p.read_text())
    ft = {}
    for p in sorted(cells.glob("finetune_*")):
        ft = {f.stem: json.loads(f.read_text()) for f in p.glob("*.json")}
    cost = json.loads((cells / "cost.json").read_text()) if (cells / "cost.json").exists() else None
    rep = {"command": "python benchmarks/history_guidance.py report", "cells": str(cells), "scratch_run": args.scratch,
           "sweep": sweep,
           "final": final, "final_summary": summ, "interpolation": interp, "finetune": ft, "cost": cost}
    s = {"seeds": len(summ["seeds"]) if summ else 0}
    if summ and summ["best"] and "30x" in summ["mean"]["none"]:
        m, b = summ["mean"], summ["best"]
        s["frechet_30x"] = {"none": round(m["none"]["30x"], 4), "best_hg": round(m[b]["30x"], 4), "best_hg_name": b}
        s["frechet_1x"] = {"none": round(m["none"]["1x"], 4), "best_hg": round(m[b]["1x"], 4)}
    if "0,16" in interp:
        r = interp["0,16"]
        s["interpolation_frechet"] = {"dfot": r["dfot"]["frechet"], "linear": r["linear"]["frechet"],
                                      "causal_df": r["causal_df"]["frechet"]}
    if "finetuned" in ft and summ:
        scratch = final.get(Path(args.scratch).name, {}).get("none")
        s["finetune_frechet_30x"] = {"finetuned_12pct": frechet(ft["finetuned"], 30),
                                     "scratch": frechet(scratch, 30) if scratch else None}
        if "scratch_short" in ft:
            s["finetune_frechet_30x"]["scratch_12pct"] = frechet(ft["scratch_short"], 30)
    if cost:
        s["row_cost_ratio_hg_v"] = cost["ratio_hg_v"]
    rep["summary"] = s
    if summ and summ["best"] and "30x" in summ["mean"]["none"]:
        m, b = summ["mean"], summ["best"]
        rep["targets"] = {"hg_30x_reduction": round(1 - m[b]["30x"] / m["none"]["30x"], 4),
                          "hg_30x_reduction_ge_20pct": m[b]["30x"] <= 0.8 * m["none"]["30x"],
                          "hg_1x_increase": round(m[b]["1x"] / m["none"]["1x"] - 1, 4),
                          "hg_1x_within_5pct": m[b]["1x"] <= 1.05 * m["none"]["1x"]}
    if "0,16" in interp:
        r = interp["0,16"]
        rep.setdefault("targets", {})["interp_beats_linear_and_causal"] = (
            r["dfot"]["frechet"] < r["linear"]["frechet"] and r["dfot"]["frechet"] < r["causal_df"]["frechet"])
    if cost:
        rep.setdefault("targets", {})["row_cost_hg_v_le_2.2"] = cost["ratio_hg_v"] <= 2.2
    atomic_json(RESULTS / "history_guidance.json", rep)
    (RESULTS / "history_guidance.md").write_text(markdown(rep))
    if not args.no_media:
        media(cells, final_dirs[-1] if final_dirs else None, interp)
    print(json.dumps(rep["summary"], indent=1))
    return rep


def markdown(rep: dict) -> str:
    L = ["# History guidance, interpolation and fine-tuning (ViZDoom 32 px)", "",
         "`python benchmarks/history_guidance.py report` (cells: see `benchmarks/history_guidance.py` docstring). "
         "Fréchet distance of the `video_vizdoom32_feature_net` features (lower is better) at 1x/5x/10x/30x the "
         "training length after 4 real frames, as `results/video.json`.", ""]
    for name, stage in rep["sweep"].items():
        L += [f"## Sweep `{name}` (model selection)", "", "| run | setting | Fréchet 1x | 5x | 10x | 30x | rollout s |",
              "|---|---|---|---|---|---|---|"]
        for seed, cells in stage.items():
            for n, c in cells.items():
                f = [frechet(c, m) for m in (1, 5, 10, 30)]
                L.append(f"| {seed} | {n} | " + " | ".join("-" if v is None else f"{v:.3g}" for v in f) +
                         f" | {c['rollout_seconds']} |")
        L.append("")
    if rep["final"]:
        L += ["## Final: 30x rollouts per training seed", "", "| run | setting | Fréchet 1x | 5x | 10x | 30x | rollout s |",
              "|---|---|---|---|---|---|---|"]
        for seed, cells in rep["final"].items():
            for n, c in cells.items():
                L.append(f"| {seed} | {n} | " + " | ".join(fmt(frechet(c, m)) for m in (1, 5, 10, 30)) +
                         f" | {c['rollout_seconds']} |")
        sm = rep["final_summary"]
        L += ["", "Mean over seeds:", "", "| setting | seeds | Fréchet 1x | 5x | 10x | 30x |", "|---|---|---|---|---|---|"]
        for n, v in sm["mean"].items():
            L.append(f"| {n} | {len(v['seeds'])} | " + " | ".join(fmt(v.get(f"{m}x")) for m in (1, 5, 10, 30)) + " |")
        L.append("")
    if rep["interpolation"]:
        L += ["## Interpolation (frames 0..16 of held-out segments; scores on the generated frames, Fréchet on the "
              "17-frame segments vs the real ones)", "", "| keyframes | method | PSNR | SSIM | Fréchet |", "|---|---|---|---|---|"]
        for keys, row in rep["interpolation"].items():
            for m in ("dfot", "dfot_pyramid", "dfot_trapezoid", "linear", "causal_df", "causal_df_keyframes"):
                if m in row:
                    L.append(f"| {keys} | {m} | {row[m]['psnr']} | {row[m]['ssim']} | {row[m]['frechet']} |")
        L.append("")
    if rep["finetune"]:
        L += ["## Fine-tuning a full-sequence model into DF", "", "| run | Fréchet 1x | 5x | 10x | 30x |", "|---|---|---|---|---|"]
        rows = dict(rep["finetune"])
        scratch = rep["final"].get(Path(rep.get("scratch_run", "")).name, {}).get("none")
        if scratch:
            rows["scratch (DF, all steps)"] = scratch
        for n, c in rows.items():
            L.append(f"| {n} ({c['run']}) | " + " | ".join(fmt(frechet(c, m)) for m in (1, 5, 10, 30)) + " |")
        L.append("")
    if rep["cost"]:
        c = rep["cost"]
        L += [f"## Cost per row: HG-v (2 copies) {c['ratio_hg_v']}x, HG-t (3 copies) {c['ratio_hg_t']}x the unguided "
              f"rollout (median of {c['repeats']} interleaved rollouts of {c['frames']} frames, {c['episodes']} videos).", ""]
    L += ["## Summary", "", "```json", json.dumps(rep["summary"], indent=1), "```", "",
          "Targets: " + json.dumps(rep.get("targets", {})), ""]
    return "\n".join(L)


def media(cells: Path, final_dir: Path | None, interp: dict) -> None:
    from dforce.recipes.video.viz import write_rollout_strip, write_rollout_video

    if final_dir is not None:
        vids = {}
        if (final_dir / "truth.npz").exists():
            vids["truth"] = np.load(final_dir / "truth.npz")["video"]
        for f in sorted(final_dir.glob("*__*.npz")):
            vids[f.stem.split("__")[1]] = np.load(f)["video"]
        if len(vids) > 1:
            n = min(v.shape[1] for v in vids.values())
            vids = {k: v[:, :n] for k, v in vids.items()}
            write_rollout_video(RESULTS / "history_guidance_rollouts.gif", vids, context=4, fps=8, scale=2)
            T = 16
            write_rollout_strip(RESULTS / "history_guidance_strip.png", vids,
                                [t for t in (3, 4, 5, 7, 19, 4 + 5 * T - 1) if t < n],
                                episode=0, scale=3)
    for keys in interp:
        f = cells / f"interp_{keys.replace(',', '_')}.npz"
        if f.exists():
            z = np.load(f)
            write_rollout_strip(RESULTS / f"history_guidance_interp_{keys.replace(',', '_')}.png",
                                {k: z[k] for k in ("truth", "dfot", "linear", "causal_df")}, list(range(17)),
                                episode=0, scale=3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("sweep", "final", "interp", "finetune", "cost", "report"))
    ap.add_argument("--runs", nargs="*", default=["/work/runs/shared/vizdoom32_df_s0"], help="DF run directories")
    ap.add_argument("--modes", default=None, help="comma-separated settings (default: all for sweep, none for final)")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--multiple", type=int, default=30)
    ap.add_argument("--cells", default="/work/runs/issue34/hg_cells", help="where finished cells are kept")
    ap.add_argument("--bidir", help="interp: the bidirectional run")
    ap.add_argument("--causal", default="/work/runs/shared/vizdoom32_df_s0", help="interp: a causal DF run")
    ap.add_argument("--segments", type=int, default=4, help="interp: 17-frame segments per held-out video")
    ap.add_argument("--finetuned", help="finetune: the fine-tuned run")
    ap.add_argument("--scratch", default="/work/runs/shared/vizdoom32_df_s0", help="finetune: DF from scratch")
    ap.add_argument("--short", help="finetune: DF from scratch with the fine-tuning's step budget")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-media", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage in ("sweep", "final"):
        names = args.modes.split(",") if args.modes else (list(modes()) if args.stage == "sweep" else ["none"])
        return stage_rollouts(args, names, args.stage)
    return {"interp": stage_interp, "finetune": stage_finetune, "cost": stage_cost, "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/history_guidance.py")
