"""Where a trained video model stands: x0-prediction MSE of one frame at each noise level, clean past.

For held-out windows, frame ``t = context + 1`` (0-based ``context``) is noised to level k while the
frames before it are clean (level 0) and the ones after it are hidden (level K); the model's x0
prediction is compared with the true frame, next to copying the previous frame and a black frame.
At k = K the prediction comes from the past alone (the recurrent latent): a model that has learned the
dynamics beats copy-last there.

    python benchmarks/studies/video_diagnose.py runs/bench_video/df
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--levels", default="20,100,300,600,900,1000")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from dforce.recipes.video.common import actions_into_frames
    from dforce.recipes.video.recipe import load_run, load_video_data, stack_frames

    model, schedule, cfg = load_run(args.run_dir)
    frames, actions = load_video_data(cfg.data, "eval")
    T, k = cfg.data.window, cfg.frame_stack
    x, cond = stack_frames(frames[:, :T], actions_into_frames(actions)[:, :T], k)
    t = cfg.context // k
    K = schedule.num_levels
    gen = torch.Generator().manual_seed(args.seed)
    out = {"run_dir": args.run_dir, "token": t,
           "copy_last_mse": (x[:, t - 1] - x[:, t]).pow(2).mean().item(),
           "black_mse": (x[:, t] + 1).pow(2).mean().item(), "x0_mse": {}}
    for lv in (int(s) for s in args.levels.split(",")):
        lv = min(lv, K)
        levels = torch.zeros(x.shape[:2], dtype=torch.long)
        levels[:, t], levels[:, t + 1:] = lv, K
        xn = schedule.add_noise(x, levels, torch.randn(x.shape, generator=gen))
        with torch.no_grad():
            x0, _ = schedule.to_x0_eps(xn, levels, model(xn, levels, cond))
        out["x0_mse"][str(lv)] = round((x0[:, t] - x[:, t]).pow(2).mean().item(), 5)
    out["copy_last_mse"], out["black_mse"] = round(out["copy_last_mse"], 5), round(out["black_mse"], 5)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/video_diagnose.py")  # user errors: one line, exit code 2
