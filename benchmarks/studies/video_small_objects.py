"""What makes small moving objects survive a video rollout: an ablation on an Atari game at 64 × 64.

Every variant trains on the same file (the benchmark's, ``benchmarks/video_atari.py``) with the preset
``video_atari64`` and one change, for the same number of steps, and is scored on the same held-out episodes with
one shared Fréchet feature net (trained on the training split), by ``dforce.recipes.video.report.evaluate_run``:

    plain         the spatial latent alone (8 × 8 map; what a user got): prev_frame=false motion_weight=0
    motion        + the moving pixels weighted in the loss (motion_weight=4)
    prev          + the previous frame at full resolution in the stem (prev_frame=true)
    prev+motion   both (the preset)
    latent16      the plain model with a 16 × 16 recurrent map (codec.bottom=16: a higher-resolution latent)

and, evaluation only, on the prev+motion run: ``more sampling steps`` (sampler.steps=25) and ``longer context``
(``--long-context`` real frames, default 6, instead of the preset's 4; it must stay below the training window of 8).
With ``--headline RUN`` the benchmark's longer-trained run is scored too ("more training steps").

    PYTHONPATH=src python benchmarks/studies/video_small_objects.py --data FILE --steps 500 --runs runs/small_objects \\
        --headline runs/video_atari/df

Writes ``benchmarks/results/studies/video_small_objects.{json,md}`` (one row per variant: PSNR, moving-pixel RMSE
and Fréchet at 1× and 4×, copy-last-frame alongside, training CPU minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": ["prev_frame=false", "motion_weight=0"],
    "motion": ["prev_frame=false", "motion_weight=4"],
    "prev": ["prev_frame=true", "motion_weight=0"],
    "prev+motion": ["prev_frame=true", "motion_weight=4"],
    "latent16": ["prev_frame=false", "motion_weight=0", "codec.bottom=16"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the game's .npz (benchmarks/video_atari.py records it)")
    p.add_argument("--config", default="video_atari64")
    p.add_argument("--steps", type=int, default=500, help="training steps of every variant")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--runs", default="runs/small_objects")
    p.add_argument("--headline", default=None, help="also score this longer-trained run (more training steps)")
    p.add_argument("--eval-episodes", type=int, default=16)
    p.add_argument("--length-x", type=int, default=4)
    p.add_argument("--sampling-steps", type=int, default=25, help="the 'more sampling steps' evaluation")
    p.add_argument("--long-context", type=int, default=6, help="the 'longer context' evaluation (< training window)")
    p.add_argument("--name", default="video_small_objects")
    p.add_argument("--out", default=str(ROOT / "results" / "studies"))
    p.add_argument("--no-frechet", action="store_true", help="skip the Fréchet distance (and its feature net)")
    p.add_argument("overrides", nargs="*", help="training overrides for every variant, e.g. train.batch_size=4")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    import torch

    from dforce.engine.config import load_config
    from dforce.recipes.video.recipe import VideoRunConfig, load_run, method_config, train_video
    from dforce.recipes.video.report import evaluate_run, run_feature_net

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    results["command"] = "python benchmarks/studies/video_small_objects.py " + " ".join(sys.argv[1:] if argv is None else argv)
    base = load_config(VideoRunConfig, args.config, [f"data.source={args.data}"])
    net = None if args.no_frechet else run_feature_net(Path(args.runs) / "feature_net_run", base,
                                                        progress=not args.quiet)  # one scale for every row

    def score(label: str, run: Path, cfg=None, sampler=None, context=None):
        model, schedule, rcfg = load_run(run)
        rcfg = cfg or rcfg
        if context is not None:
            rcfg = dataclasses.replace(rcfg, context=context)
        T = rcfg.data.window
        rep = evaluate_run(run, args.length_x * T, args.eval_episodes, sampler=sampler, out=Path(args.runs) / "eval" / label,
                           model=model, schedule=schedule, cfg=rcfg, feature_net=net, frechet=net is not None,
                           progress=not args.quiet)
        cost = json.loads((run / "train_time.json").read_text())
        results["rows"][label] = {"run": str(run), "train": cost, "context": rcfg.context,
                                  "sampler_steps": rep["sampler"]["steps"], "scores": rep["scores"]}
        path.write_text(json.dumps(results, indent=2))
        write_table(out / f"{args.name}.md", results)
        print(label, json.dumps(rep["scores"][rcfg.method][0]), flush=True)

    for v in args.variants:
        run = Path(args.runs) / v.replace("+", "_")
        if not (run / "train_time.json").exists():
            cfg = load_config(VideoRunConfig, args.config, [f"data.source={args.data}", f"train.steps={args.steps}",
                                                             *args.overrides, *VARIANTS[v]])
            train_video(cfg, run, progress=not args.quiet)
        score(v, run)
    best = Path(args.runs) / "prev_motion"
    if (best / "train_time.json").exists():
        _, _, cfg = load_run(best)
        score("prev+motion, 25 sampling steps", best,
              sampler=dataclasses.replace(method_config(cfg).sampler, steps=args.sampling_steps))
        score(f"prev+motion, context {args.long_context}", best, context=args.long_context)
    if args.headline:
        score("prev+motion, headline run (more training steps)", Path(args.headline))
    return 0


def write_table(path: Path, results: dict) -> None:
    lines = ["# Small moving objects: ablation (benchmarks/studies/video_small_objects.py)", "",
             f"Command: `{results['command']}`", "",
             "Held-out episodes, rollouts 4× the training window; horizon 1x = the first T generated frames, 4x = "
             "frames [3T, 4T). Moving-pixel RMSE in 0-255 grey levels over the pixels that change in the true video "
             "(lower is better). Fréchet: one feature net for every row.", "",
             "| variant | train steps | train CPU min | PSNR 1x | copy-last PSNR 1x | moving RMSE 1x | copy-last moving "
             "RMSE 1x | moving RMSE 4x | copy-last moving RMSE 4x | Fréchet 1x | Fréchet 4x |", "|---" * 11 + "|"]
    for label, r in results["rows"].items():
        sc = r["scores"]
        m = next(k for k in sc if k != "copy_last")
        get = lambda name, h, f: next((x.get(f) for x in sc[name] if x["horizon"] == h), None)  # noqa: E731
        fmt = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(f"| {label} | {r['train']['steps']} | {r['train']['cpu_seconds'] / 60:.1f} | "
                     f"{fmt(get(m, '1x', 'psnr'))} | {fmt(get('copy_last', '1x', 'psnr'))} | "
                     f"{fmt(get(m, '1x', 'moving_err'), 1)} | {fmt(get('copy_last', '1x', 'moving_err'), 1)} | "
                     f"{fmt(get(m, '4x', 'moving_err'), 1)} | {fmt(get('copy_last', '4x', 'moving_err'), 1)} | "
                     f"{fmt(get(m, '1x', 'frechet'))} | {fmt(get(m, '4x', 'frechet'))} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main, "benchmarks/studies/video_small_objects.py"))
