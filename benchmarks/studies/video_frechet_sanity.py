"""Does the trained-here Fréchet distance flag rollout blow-ups? Writes benchmarks/results/video_frechet_sanity_<data>.json.

Trains the clip feature network on real videos, then measures the Fréchet distance of held-out real
videos and of corrupted copies (saturation, noise, freezing, ...) against another held-out real set.

    nice python benchmarks/studies/video_frechet_sanity.py --data vizdoom --resolution 64 --steps 600   # ~5 min, 1 CPU thread
    python benchmarks/studies/video_frechet_sanity.py --data digits --resolution 16 --steps 300         # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dforce.recipes.video.synthetic import MovingDigitsConfig, generate_moving_digits
from dforce.recipes.video.common import to_model_frames
from dforce.recipes.video.metrics import FeatureNetConfig, frechet_distance, train_feature_net, video_features


def load(data: str, episodes: int, length: int, resolution: int, seed: int):
    if data == "vizdoom":
        from dforce.recipes.video.vizdoom import generate_vizdoom

        return generate_vizdoom(episodes, length, resolution, seed=seed, progress=False)
    return generate_moving_digits(episodes, length, seed=seed, config=MovingDigitsConfig(size=resolution))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", choices=("vizdoom", "digits"), default="digits")
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--episodes", type=int, default=120, help="training episodes (held-out sets get half)")
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tr = load(args.data, args.episodes, args.length, args.resolution, 0)
    te, te2 = (load(args.data, args.episodes // 2, args.length, args.resolution, s) for s in (1, 2))
    gen_s = time.perf_counter() - t0
    X, Y, Z = (to_model_frames(d.frames) for d in (tr, te, te2))
    cfg = FeatureNetConfig(size=args.resolution, width=args.width, n_actions=tr.actions.shape[-1])
    net = train_feature_net(X, torch.from_numpy(tr.actions), cfg, steps=args.steps, progress=False)
    ref = video_features(net, Y)
    fd = lambda v: frechet_distance(video_features(net, v), ref)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    res = {
        "real held-out": fd(Z),
        "real train": fd(X),
        "saturated (3x+3 clamped)": fd((3 * Z + 3).clamp(-1, 1)),
        "contrast x4 clamped": fd((4 * Z).clamp(-1, 1)),
        "uniform noise": fd(torch.rand(Z.shape, generator=g) * 2 - 1),
        "frozen (each video repeats its first frame)": fd(Z[:, :1].expand_as(Z).contiguous()),
        "blur 3x3 box": fd(torch.nn.functional.avg_pool2d(Z.flatten(0, 1), 3, 1, 1).view_as(Z)),
        "time shuffled": fd(Z[:, torch.randperm(Z.shape[1], generator=g)]),
    }
    out = {"args": vars(args), "generation_s": gen_s, "feature_net_train_s": net.train_seconds,
           "n_clips_per_set": len(ref), "frechet": res}
    path = Path(__file__).resolve().parents[1] / "results" / "studies" / f"video_frechet_sanity_{args.data}{args.resolution}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/video_frechet_sanity.py")  # user errors: one line, exit code 2
