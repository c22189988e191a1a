"""Generation speed of the video world model at a preset's resolution (weights do not affect speed).

Builds the preset's model (untrained), rolls out ``--frames`` frames after the preset's context for a
batch of ``--batch`` videos with each method's sampler, and reports frames/s (generated frames of all
videos per wall-clock second) and peak RSS.

    python benchmarks/studies/video_speed.py --config video_vizdoom64_small --batch 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results" / "studies"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="video_vizdoom64_small")
    ap.add_argument("--name", default="video_speed")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dforce.diffusion import NoiseSchedule
    from dforce.engine.config import load_config
    from dforce.recipes.video.recipe import METHODS, VideoRunConfig, build_video_model, method_config, rollout

    base = load_config(VideoRunConfig, args.config, args.overrides)
    r, C = base.data.resolution, base.context
    torch.manual_seed(0)
    frames = torch.rand(args.batch, C, 3, r, r) * 2 - 1
    actions = torch.eye(4)[torch.randint(0, 4, (args.batch, C + args.frames))]
    out = {"config": args.config, "resolution": r, "batch": args.batch, "frames": args.frames,
           "torch_threads": torch.get_num_threads(), "host": platform.node(), "methods": {}}
    for method in METHODS:
        cfg = method_config(base, method)
        model = build_video_model(cfg, 4).to(args.device).eval()
        schedule = NoiseSchedule(cfg.diffusion).to(args.device)
        rollout(model, schedule, cfg, frames, actions, 4, device=args.device)  # warm-up
        t0 = time.perf_counter()
        rollout(model, schedule, cfg, frames, actions, args.frames, device=args.device)
        sec = time.perf_counter() - t0
        out["methods"][method] = {"seconds": round(sec, 2), "frames_per_second": round(args.batch * args.frames / sec, 2),
                                  "sampling_steps": cfg.sampler.steps, "schedule": cfg.sampler.schedule,
                                  "parameters": sum(p.numel() for p in model.parameters())}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/video_speed.py")  # user errors: one line, exit code 2
