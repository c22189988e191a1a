"""``dforce video``: train an action-conditioned video world model and roll it out far past its horizon.

    dforce video train --data digits --config video_digits_tiny --out runs/video_digits [key=value ...]
    dforce video train --data my.npz --config video_vizdoom32_small data.resolution=32
    dforce video sample runs/video_digits --length 4x --episodes 8   # held-out videos; vs copy-last-frame; GIF/MP4/PNG/JSON
"""

from __future__ import annotations

import json

from dforce._cli import OVERWRITE_OUT_HELP, OVERWRITE_TRAIN_HELP, add_threads_argument, at_least, set_threads


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
    if cfg.data.is_file:
        from dforce._utils import check_numpy_file, check_regular_file
        from dforce.recipes.video.files import load_video_file

        from pathlib import Path

        if Path(cfg.data.source).exists():  # a FIFO or /dev/zero would never end; a text file is not "pickled"
            check_numpy_file(check_regular_file(cfg.data.source, "a .npy/.npz video file"))
        load_video_file(cfg.data.source, min_length=cfg.data.window)  # fail fast, before anything is written
    out = args.out or f"runs/video_{cfg.method}"
    from dforce.engine import rundir

    rundir.claim(out, "video", resume=args.resume, overwrite=args.overwrite)  # never into your files/another run
    if cfg.data.is_file:  # the file it trains on: refused if replaced on --resume
        if args.resume:
            rundir.check_data(out, cfg.data.source, args.allow_changed_data)
        else:
            rundir.record_data(out, cfg.data.source)
    result = train_video(cfg, out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run_dir": out, "method": cfg.method, "steps": result.step, "seconds": round(result.seconds, 1),
                      "final_loss": result.history[-1]["loss"] if result.history else None}))
    return 0


def cmd_sample(args) -> int:
    import dataclasses
    from pathlib import Path

    from dforce.recipes.video.evaluate import DEFAULT_MULTIPLES
    from dforce.recipes.video.recipe import load_run, method_config, parse_length
    from dforce.recipes.video.report import evaluate_run

    from dforce.engine import rundir

    set_threads(args.threads)
    for flag, v, lo in (("--episodes", args.episodes, 1), ("--steps", args.steps, 1), ("--seed", args.seed, 0),
                        ("--stabilization-level", args.stabilization_level, 0), ("--fps", args.fps, 1)):
        at_least(flag, v, lo)
    rundir.expect_kind(args.run_dir, "video")
    model, schedule, cfg = load_run(args.run_dir, args.device)
    length = parse_length(args.length, cfg.data.window)
    smp = method_config(cfg).sampler
    changes = {k: v for k, v in (("steps", args.steps), ("stabilization_level", args.stabilization_level)) if v is not None}
    smp = dataclasses.replace(smp, **changes)
    if args.history_guidance:
        from dforce.engine.config import from_dict

        mode, _, scale = args.history_guidance.partition(":")
        hg = from_dict(type(smp.history_guidance), {"mode": mode, "scale": scale or 1.0}, "sampler.history_guidance.")
        smp = dataclasses.replace(smp, history_guidance=hg)
    if cfg.data.is_file:
        rundir.check_data(args.run_dir, cfg.data.source, args.allow_changed_data)
    if args.keyframes:
        return _sample_keyframes(args, model, schedule, cfg, smp)
    multiples = parse_horizons(args.horizons) if args.horizons else DEFAULT_MULTIPLES
    stem = Path(args.out) if args.out else Path(args.run_dir) / f"rollout_{length}"
    stem = stem.with_suffix("") if stem.suffix in (".gif", ".mp4", ".json", ".png") else stem
    if args.out is None:
        rundir.adopt(args.run_dir, "video")
    names = [f"{stem.name}{ext}" for ext in (".gif", ".mp4", ".json", ".md")]
    names += [f"{stem.name}_strip{i}.png" for i in range(min(2, args.episodes))]
    # checked before the rollout, not after it; recorded as the run's (or the new folder's) files
    rundir.prepare_outputs(stem.parent, names, args.overwrite)
    report = evaluate_run(args.run_dir, length, args.episodes, smp, args.seed, multiples, frechet=not args.no_frechet,
                          out=stem, fps=args.fps, device=args.device, progress=not args.quiet, model=model,
                          schedule=schedule, cfg=cfg)
    print(json.dumps(report, indent=2))
    return 0


def _sample_keyframes(args, model, schedule, cfg, smp) -> int:
    """``--keyframes``: generate the frames between given ones; GIF (truth | generated) and PSNR/SSIM of the
    generated frames."""
    import dataclasses
    from pathlib import Path

    import torch

    from dforce.recipes.video.metrics import per_frame_metrics
    from dforce.engine import rundir
    from dforce.recipes.video.report import heldout_videos
    from dforce.recipes.video.recipe import interpolate, parse_keyframes
    from dforce.recipes.video.viz import write_rollout_video

    keys = parse_keyframes(args.keyframes)
    out = Path(args.out or Path(args.run_dir) / f"keyframes_{'_'.join(map(str, keys))}.gif")
    if args.out is None:
        rundir.adopt(args.run_dir, "video")
    rundir.check_output_file(out, args.overwrite, owner=args.run_dir)
    frames, actions, _ = heldout_videos(args.run_dir, cfg, args.episodes, max(keys) + 1 - cfg.context, not args.quiet)
    video, seconds = interpolate(model, schedule, cfg, frames, actions, keys, smp, args.seed, args.device,
                                 progress=not args.quiet)
    truth = frames[:, : video.shape[1]]
    gen = torch.ones(video.shape[1], dtype=torch.bool)
    gen[keys] = False
    pf = per_frame_metrics(video[:, gen], truth[:, gen])
    write_rollout_video(out, {"truth": truth, "keyframes": video}, context=0, fps=args.fps)
    rundir.note_output(out, args.run_dir)
    report = {"gif": str(out), "keyframes": keys, "frames": int(video.shape[1]), "seconds": round(seconds, 2),
              "model_sees_future_keyframes": not getattr(model, "causal", True),
              "psnr_generated": round(float(pf["psnr"].mean()), 3), "ssim_generated": round(float(pf["ssim"].mean()), 4),
              "sampler": dataclasses.asdict(smp)}
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
    t.add_argument("--overwrite", action="store_true", help=OVERWRITE_TRAIN_HELP)
    t.add_argument("--allow-changed-data", action="store_true", help="with --resume: accept a video file that "
                   "changed since the run started (else refused)")
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
    s.add_argument("--keyframes", metavar="I,J,...",
                   help="generate the frames between these real frames (e.g. 0,16) instead of a rollout; a "
                        "bidirectional run (model.causal=false) sees all of them, a causal one only the past ones")
    s.add_argument("--history-guidance", metavar="MODE:SCALE",
                   help="history guidance, e.g. stabilized_vanilla:1.5 (sampler.history_guidance)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fps", type=int, default=10)
    s.add_argument("--out", help="output stem: writes STEM.gif, STEM.mp4, STEM_strip<i>.png, STEM.json, STEM.md "
                   "(default: RUN_DIR/rollout_<frames>; with --keyframes the GIF path)")
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_OUT_HELP)
    s.add_argument("--allow-changed-data", action="store_true", help="use the video file even if it changed "
                   "since training (else refused)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--quiet", action="store_true")
    add_threads_argument(s)
    s.set_defaults(func=cmd_sample)


def cmd_data_vizdoom(args) -> int:
    from dforce.recipes.video.vizdoom import generate_vizdoom

    for flag, val, lo in (("--episodes", args.episodes, 1), ("--length", args.length, 2), ("--seed", args.seed, 0)):
        at_least(flag, val, lo)
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
