"""Does Diffusion Forcing's long-rollout stability improve with more training or a higher stabilization level?

Scores saved DF runs (no training) on the video benchmark's held-out videos with the benchmark's saved
Fréchet feature network (``benchmarks/video.py`` writes it to ``results/<name>_feature_net/``), for each
run and each sampler stabilization level. Same rollouts as the benchmark (``context`` real frames, real
actions, ``multiple`` × T frames, seed 1), so with the same ``--episodes`` the ``stabilization_level = 20`` row
of a benchmark run reproduces its DF row (e.g. ``results/studies/video_digits16_brightness`` vs ``video_digits16``).

    python benchmarks/studies/video_df_longer.py --config video_digits16_spatial \\
        --run 2000=runs/bench_video_spatial/df --run 9000=runs/bench_video_spatial_longer/df \\
        --stabilization 20,100,200 --feature-net benchmarks/results/studies/video_feature_net --name video_df_longer

Besides PSNR/SSIM/Fréchet per horizon it reports ``brightness``: the mean pixel value in [0, 1] of the
rollout window over that of the true window (1 = as bright as the truth, 0 = black), which shows fading.
Runs of the baselines (teacher forcing, full-sequence) are scored too, at their own sampler settings
(one row each), so longer-trained baselines can be compared at the same budget.
Writes ``results/<name>.json``, ``.md`` and ``<name>_strip{0,1}.png`` (two held-out rollouts, rows = truth
and each run at the first stabilization level).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results" / "studies"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="video_digits16_spatial")
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR of a DF run (repeatable)")
    ap.add_argument("--stabilization", default="20,100,200", help="sampler.stabilization_level values")
    ap.add_argument("--feature-net", default=str(RESULTS / "video_feature_net"))
    ap.add_argument("--name", default="video_df_longer")
    ap.add_argument("--multiple", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from dforce.recipes.video.viz import write_rollout_strip
    from dforce.engine import checkpoint as ckpt
    from dforce.engine.config import load_config
    from dforce.errors import ConfigError
    from dforce.recipes.video.metrics import frechet_distance, horizon_metrics, load_feature_net, video_features
    from dforce.recipes.video.recipe import VideoRunConfig, feature_provenance, load_run, load_video_data, rollout

    base = load_config(VideoRunConfig, args.config, args.overrides)
    dcfg = dataclasses.replace(base.data, eval_episodes=args.episodes,  # as benchmarks/video.py
                               eval_multiple=max(base.data.eval_multiple, args.multiple + 1))
    frames, actions = load_video_data(dcfg, "eval", progress=False)
    T, C = base.data.window, base.context
    length = args.multiple * T
    truth = frames[:, C:C + length]
    fnet = load_feature_net(args.feature_net, expect=feature_provenance(base.data))
    ref = video_features(fnet, truth)
    half = truth.shape[1] // 2
    levels = [int(v) for v in args.stabilization.split(",")]
    out = {"command": "python benchmarks/studies/video_df_longer.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "config": args.config, "overrides": args.overrides, "feature_net": args.feature_net, "train_length": T,
           "context": C, "rollout_frames": length, "episodes": args.episodes, "rollout_seed": 1,
           "torch_threads": torch.get_num_threads(),
           "frechet_real_first_vs_second_half": round(frechet_distance(
               video_features(fnet, truth[:, :half]), video_features(fnet, truth[:, half:])), 4),
           "runs": {}}
    strips = {"truth": frames[:, :C + length]}
    for spec in args.run:
        label, _, run_dir = spec.partition("=")
        if not run_dir:
            raise ConfigError(f"--run must be LABEL=RUN_DIR, got {spec!r}")
        model, schedule, cfg = load_run(run_dir, "cpu")
        # baselines (teacher forcing, full-sequence) keep their own sampler: one row at their stabilization level
        run_levels = levels if cfg.method == "df" else [cfg.sampler.stabilization_level]
        hist = ckpt.read_jsonl(Path(run_dir) / ckpt.METRICS_FILE)
        entry = {"run_dir": run_dir, "method": cfg.method, "train_steps": hist[-1]["step"], "final_loss": hist[-1]["loss"],
                 "lr_schedule": f"{cfg.train.lr_schedule}, lr {cfg.train.lr}, train.steps {cfg.train.steps}",
                 "levels": {}}
        for lvl in run_levels:
            smp = dataclasses.replace(cfg.sampler, stabilization_level=lvl)
            video, seconds = rollout(model, schedule, cfg, frames, actions, length, sampler=smp, seed=1)
            pred = video[:, C:C + length]
            if lvl == run_levels[0]:
                strips[f"{cfg.method} {label} (stab {lvl})"] = video
            rows = horizon_metrics(pred, truth, T, fnet, ref)
            for r in rows:
                s, e = r["start"], r["end"]
                r["brightness"] = ((pred[:, s:e] + 1).mean() / (truth[:, s:e] + 1).mean()).item()
            fr = {f"{r['multiple']}x": round(r["frechet"], 3) for r in rows}
            entry["levels"][str(lvl)] = {
                "frechet": fr, "psnr": {f"{r['multiple']}x": round(r["psnr"], 3) for r in rows},
                "ssim": {f"{r['multiple']}x": round(r["ssim"], 4) for r in rows},
                "brightness": {f"{r['multiple']}x": round(r["brightness"], 3) for r in rows},
                "frechet_ratio_30x_over_1x": round(fr[f"{rows[-1]['multiple']}x"] / fr["1x"], 3),
                "rollout_seconds": round(seconds, 1)}
            print(label, lvl, json.dumps(entry["levels"][str(lvl)]), flush=True)
        out["runs"][label] = entry
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{args.name}.md").write_text(markdown(out))
    times = [C - 1, C, C + 1, C + 3, C + T - 1] + [C + m * T - 1 for m in (5, 10, 30) if m <= args.multiple]
    for ep in range(min(2, args.episodes)):
        write_rollout_strip(RESULTS / f"{args.name}_strip{ep}.png", strips, times, episode=ep, scale=3)
    return out


def markdown(rep: dict) -> str:
    ks = ("1x", "5x", "10x", "30x")
    lines = [f"# Longer training and stabilization level ({rep['config']})", "",
             f"T={rep['train_length']}, {rep['context']} context frames, {rep['rollout_frames']}-frame rollouts on "
             f"{rep['episodes']} held-out videos (seed {rep['rollout_seed']}); Fréchet with the saved feature net "
             f"`{rep['feature_net']}` vs all held-out real clips (real-vs-real: "
             f"{rep['frechet_real_first_vs_second_half']}). brightness = rollout mean / truth mean (0 = black).", "",
             "| run (steps) | final loss | stab. level | " + " | ".join(f"Fréchet {k}" for k in ks) +
             " | 30x/1x | " + " | ".join(f"PSNR {k}" for k in ks) + " | " +
             " | ".join(f"bright. {k}" for k in ks) + " |", "|" + "---|" * 16]
    for label, e in rep["runs"].items():
        for lvl, v in e["levels"].items():
            g = lambda d, f: " | ".join(f.format(d[k]) if k in d else "-" for k in ks)  # noqa: E731
            lines.append(f"| {label} ({e['train_steps']}) | {e['final_loss']:.4f} | {lvl} | {g(v['frechet'], '{:.3g}')} | "
                         f"{v['frechet_ratio_30x_over_1x']:.2f} | {g(v['psnr'], '{:.2f}')} | {g(v['brightness'], '{:.2f}')} |")
    lines += ["", "Target (issue 6): Fréchet 30x/1x <= 1.5 for DF.", "", f"Command: `{rep['command']}`", "",
              "How the runs were trained (resumes of the benchmark's DF run) and what the numbers show: "
              "`docs/video.md`, section 'DF with longer training'.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/video_df_longer.py")  # user errors: one line, exit code 2
