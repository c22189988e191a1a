"""``dforce video``: train an action-conditioned video world model and roll it out far past its horizon.

    dforce video train --data digits --config video_digits_tiny --out runs/video_digits [key=value ...]
    dforce video train --data my.npz --config video_vizdoom32_small data.resolution=32
    dforce video sample runs/video_digits --length 4x --episodes 8   # held-out videos; vs copy-last-frame; GIF/MP4/PNG/JSON
"""

from __future__ import annotations

import json

from dforce._cli import add_threads_argument, set_threads


def cmd_train(args) -> int:
    from dforce.engine.config import load_config
    from dforce.recipes.video.recipe import VideoRunConfig, train_video

    set_threads(args.threads)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.source={args.data}")
    if args.method:
        overrides.append(f"method={args.method}")
    if args.init_from:
        from pathlib import Path

        overrides.append(f"train.init_from={Path(args.init_from).expanduser().absolute()}")
    cfg = load_config(VideoRunConfig, args.config, overrides)
    if cfg.data.source not in ("digits", "vizdoom"):
        from dforce.recipes.video.files import load_video_file

        load_video_file(cfg.data.source, min_length=cfg.data.window)  # fail fast, before anything is written
    out = args.out or f"runs/video_{cfg.method}"
    result = train_video(cfg, out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run_dir": out, "method": cfg.method, "steps": result.step, "seconds": round(result.seconds, 1),
                      "final_loss": result.history[-1]["loss"] if result.history else None}))
    return 0


def cmd_sample(args) -> int:
    import dataclasses

    from dforce.recipes.video.evaluate import DEFAULT_MULTIPLES
    from dforce.recipes.video.recipe import load_run, method_config, parse_length
    from dforce.recipes.video.report import evaluate_run

    set_threads(args.threads)
    model, schedule, cfg = load_run(args.run_dir, args.device)
    length = parse_length(args.length, cfg.data.window)
    smp = method_config(cfg).sampler
    changes = {k: v for k, v in (("steps", args.steps), ("stabilization_level", args.stabilization_level)) if v is not None}
    smp = dataclasses.replace(smp, **changes)
    multiples = parse_horizons(args.horizons) if args.horizons else DEFAULT_MULTIPLES
    report = evaluate_run(args.run_dir, length, args.episodes, smp, args.seed, multiples, frechet=not args.no_frechet,
                          out=args.out, fps=args.fps, device=args.device, progress=not args.quiet, model=model,
                          schedule=schedule, cfg=cfg)
    print(json.dumps(report, indent=2))
    return 0


def parse_horizons(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` → (1, 2, 4, 8)."""
    from dforce.errors import ConfigError

    try:
        out = tuple(int(v) for v in str(text).replace("x", "").split(","))
    except ValueError:
        raise ConfigError(f"--horizons must be comma-separated multiples of the training window like 1,2,4, got {text!r}") from None
    if not out or min(out) < 1:
        raise ConfigError(f"--horizons must be multiples >= 1, got {text!r}")
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("video", help="action-conditioned video world model (train / sample long rollouts)")
    sub = p.add_subparsers(dest="video_command", required=True)

    t = sub.add_parser("train", help="train on digits, vizdoom or your own .npy/.npz videos")
    t.add_argument("--data", help="digits | vizdoom | path to a .npy/.npz file (sets data.source)")
    t.add_argument("--config", help="preset name (e.g. video_digits_tiny; `dforce presets` lists them) or a YAML file")
    t.add_argument("--method", choices=("df", "teacher_forcing", "full_sequence"),
                   help="Diffusion Forcing (default) or a baseline")
    t.add_argument("--out", help="run directory (default: runs/video_<method>)")
    t.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--init-from", metavar="RUN_DIR", help="start from RUN_DIR's weights (fine-tuning; same model section)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(t)
    t.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=500 model.width=128")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="roll out held-out videos from real context frames under the real actions; "
                       "scores (PSNR, SSIM, moving-pixel error, Fréchet) against copy-last-frame; GIF, MP4, PNG strips, JSON")
    s.add_argument("run_dir", help="a training run directory")
    s.add_argument("--length", default="10x", help="frames to generate: N or a multiple of the training length (10x)")
    s.add_argument("--episodes", type=int, default=4,
                   help="held-out videos to roll out (default: 4); a file source: the first n of the run's held-out episodes")
    s.add_argument("--horizons", default=None, help="horizon windows in training windows, e.g. 1,2,4,8 (default 1,2,4)")
    s.add_argument("--no-frechet", action="store_true",
                   help="skip the Fréchet distance (else a feature net is trained once on the run's training videos)")
    s.add_argument("--steps", type=int, help="sampling steps (default: the run's sampler.steps)")
    s.add_argument("--stabilization-level", type=int, help="level generated frames are fed back at")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fps", type=int, default=10)
    s.add_argument("--out", help="output stem: writes STEM.gif, STEM.mp4, STEM_strip<i>.png, STEM.json, STEM.md "
                   "(default: RUN_DIR/rollout_<frames>)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--quiet", action="store_true")
    add_threads_argument(s)
    s.set_defaults(func=cmd_sample)


def cmd_data_vizdoom(args) -> int:
    from dforce.recipes.video.vizdoom import generate_vizdoom

    v = generate_vizdoom(args.episodes, args.length, args.resolution, args.seed, progress=not args.quiet)
    print(json.dumps({"episodes": int(v.frames.shape[0]), "frames": list(v.frames.shape),
                      "actions": list(v.actions.shape)}))
    return 0


def cmd_data_atari(args) -> int:
    from dforce.recipes.video.atari import run

    return run(args)


def register_data(dsub) -> None:
    """``dforce data vizdoom``: record (and cache) ViZDoom videos; ``dforce data atari``: Atari videos to a file."""
    from dforce.recipes.video.atari import add_arguments

    a = dsub.add_parser("atari", help="Atari game videos with random persistent actions (ale-py) into an .npz file")
    add_arguments(a)
    a.set_defaults(func=cmd_data_atari)
    v = dsub.add_parser("vizdoom", help="ViZDoom maze exploration videos (frames + actions)")
    v.add_argument("--episodes", type=int, default=100, help="episodes to record (default 100)")
    v.add_argument("--length", type=int, default=64, help="frames per episode (default 64)")
    v.add_argument("--resolution", type=int, default=64, help="16 | 32 | 64 pixels (default 64)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--quiet", action="store_true", help="no progress bars")
    v.set_defaults(func=cmd_data_vizdoom)
