"""Trivial predictors on the video benchmark's held-out rollouts: what PSNR/SSIM mean on this data.

Scores, per horizon (as ``benchmarks/video.py``), an all-black prediction and repeating the last
context frame, on the same held-out videos the benchmark rolls out (same config, episodes, multiple).
On sparse frames (a digit on black) black frames already score ~12 dB, so a model's PSNR must be read
against these rows.

    python benchmarks/studies/video_reference_psnr.py --config video_digits16_spatial --name video
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results" / "studies"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="video_digits16_spatial")
    ap.add_argument("--name", default="video", help="writes results/<name>_reference.json")
    ap.add_argument("--multiple", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from dforce.engine.config import load_config
    from dforce.recipes.video.metrics import horizon_metrics
    from dforce.recipes.video.recipe import VideoRunConfig, load_video_data

    base = load_config(VideoRunConfig, args.config, args.overrides)
    dcfg = dataclasses.replace(base.data, eval_episodes=args.episodes,
                               eval_multiple=max(base.data.eval_multiple, args.multiple + 1))  # as benchmarks/video.py
    frames, _ = load_video_data(dcfg, "eval", progress=False)
    T, C = base.data.window, base.context
    truth = frames[:, C:C + args.multiple * T]
    preds = {"black": torch.full_like(truth, -1.0), "copy_last_context": frames[:, C - 1:C].expand_as(truth)}
    out = {"config": args.config, "overrides": args.overrides, "episodes": args.episodes, "train_length": T,
           "predictors": {}}
    for name, pred in preds.items():
        rows = horizon_metrics(pred, truth, T)
        out["predictors"][name] = {"psnr": {f"{r['multiple']}x": round(r["psnr"], 4) for r in rows},
                                   "ssim": {f"{r['multiple']}x": round(r["ssim"], 4) for r in rows}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}_reference.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out["predictors"], indent=2))
    return out


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/video_reference_psnr.py")  # user errors: one line, exit code 2
