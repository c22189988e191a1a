"""``dforce train | sample | eval | info | demo``: the generic sequence recipe on your own data.

    dforce train sequence_small [key.sub=value ...] [--data my.npz] [--out runs/x]
    dforce train --resume runs/x                      (continue a stopped/killed run exactly)
    dforce train sequence_small --nproc 2             (DDP over 2 processes via torchrun)
    dforce sample runs/x --length 500 --schedule pyramid
    dforce eval runs/x;  dforce info runs/x
    dforce demo
"""

from __future__ import annotations

import argparse
import json
import sys

from dforce._cli import add_threads_argument, at_least as positive, set_threads


def cmd_demo(args) -> int:
    from dforce.engine import rundir
    from dforce.recipes.sequence.demo import run_demo

    # the demo model is tiny: intra-op threads buy nothing and, on a busy 2-core machine, two OpenMP
    # threads contending for one free core made each step ~100x slower (measured 2.3 s vs 27 ms)
    set_threads(args.threads)
    positive("--steps", args.steps)
    rundir.claim(args.out, "demo", overwrite=True)  # a demo run is redone; a folder of yours is refused
    report = run_demo(args.out, steps=args.steps, progress=not args.quiet, device=args.device)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}/demo.png, {args.out}/demo.json and the run directory {args.out}/")
    return 0


def add_demo(sub):
    p = sub.add_parser("demo", help="train a small model on synthetic oscillations, sample it, plot (~3 min on CPU)")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--steps", type=int, default=2500, help="training steps (default: 2500)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    add_threads_argument(p, default=1)  # the demo model is tiny: one thread is as fast and never contends
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def _split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """``[config.yaml] key=value ...`` → (config path or None, overrides)."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    for it in items:
        if "=" not in it:
            from dforce.errors import ConfigError

            raise ConfigError(f"{it!r}: expected key.sub=value after the config file")
    return None, items


def _torchrun_command(args) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
           "-m", "dforce.cli", "train", *args.items]
    for flag in ("data", "out", "resume", "device", "init_from"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    # --overwrite is not passed on: the launcher claimed (and cleared) the run directory for its workers
    return cmd + [f for f, on in (("--quiet", args.quiet), ("--allow-changed-data", args.allow_changed_data)) if on]


def cmd_train(args) -> int:
    import os
    import subprocess
    from pathlib import Path

    from dforce.engine import checkpoint as ckpt
    from dforce.engine import rundir
    from dforce.engine.config import load_config
    from dforce.recipes.sequence.config import RunConfig
    from dforce.recipes.sequence.recipe import load_data, resume_config, run_train
    from dforce.errors import ConfigError

    config, overrides = _split_config_args(args.items)
    if args.resume is not None and (args.out is not None or args.overwrite):
        raise ConfigError("--resume RUN_DIR continues that run in place; it cannot be combined with --out or "
                          "--overwrite")
    positive("--nproc", args.nproc)
    if args.nproc is not None and args.nproc > 64:
        raise ConfigError(f"--nproc {args.nproc} is not a sensible number of processes")
    writer = int(os.environ.get("RANK", 0)) == 0  # under torchrun, rank 0 alone claims and writes
    if args.data is not None:  # absolute, so `dforce sample/eval` find the held-out data from anywhere
        overrides = [*overrides, f"data.path={Path(args.data).expanduser().absolute()}"]
    if args.device is not None:
        overrides = [*overrides, f"device={args.device}"]
    if args.init_from is not None:
        overrides = [*overrides, f"train.init_from={Path(args.init_from).expanduser().absolute()}"]
    if args.resume is not None:
        if config is not None:
            raise ConfigError("with --resume the config comes from RUN_DIR/config.yaml; give overrides only")
        run_dir = Path(args.resume)
        if writer:  # locked before anything is read: another process may be writing it
            rundir.claim(run_dir, "sequence", resume=True, flag="--resume")
        cfg = resume_config(run_dir, overrides)
        if not (run_dir / ckpt.STATE_FILE).exists():
            raise ConfigError(f"--resume {run_dir}: no checkpoint yet ({ckpt.STATE_FILE} missing); start it again "
                              f"with --out {run_dir}")
    else:
        cfg = load_config(RunConfig, config, overrides)
        run_dir = Path(args.out or f"runs/{Path(config).stem if config else 'sequence'}")
        if writer:
            rundir.claim(run_dir, "sequence", overwrite=args.overwrite)

    if args.nproc is not None and args.nproc > 1 and "RANK" not in os.environ:
        load_data(cfg)  # bad data fails here once, with one line, instead of once per rank
        cmd = _torchrun_command(args)
        if not args.quiet:
            print("launching:", " ".join(cmd[1:]), file=sys.stderr)
        # this process keeps the run directory's lock while its workers train; they skip the claim
        env = dict(os.environ, DFORCE_RUN_CLAIMED=str(run_dir.absolute()))
        return subprocess.call(cmd, env=env)

    result = run_train(cfg, run_dir, resume=args.resume is not None, progress=not args.quiet,
                       allow_changed_data=args.allow_changed_data)
    if int(os.environ.get("RANK", 0)) == 0:
        last = result.history[-1] if result.history else {}
        print(json.dumps({"run_dir": str(run_dir), "step": result.step, "seconds": round(result.seconds, 1),
                          "loss": last.get("loss")}))
    return 0


def add_train(sub):
    p = sub.add_parser(
        "train", help="train a sequence model (your .npz/.npy/.csv or built-in data)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""data formats (--data; no pickle needed or accepted):
  .npz  key 'x' (or the only array): (N, T, D) sequences or one (T, D) sequence;
        optional 'cond' (N, T, C): per-step conditioning given to the model for every token
  .npz  keys seq_0, seq_1, ... (T_i, D) of different lengths; optional cond_0, cond_1, ... (T_i, C)
  .npy  one (N, T, D) or (T, D) array
  .csv  header + one numeric column per channel; a time|date|timestamp|datetime|step|t column is dropped
held out: the last data.val_fraction of the sequences (or of a single sequence's steps).
normalization: per-channel mean/std of the training part, saved as RUN_DIR/data_stats.json.

examples:
  dforce train sequence_small --data my.npz --out runs/mine train.steps=3000
  dforce train --resume runs/mine
  dforce train sequence_small --nproc 2 train.batch_size=16""",
        description="Train a Diffusion Forcing sequence model. Config: a preset name (`dforce presets` lists them) or a YAML file, then "
                    "dotted overrides, e.g. `dforce train sequence_small train.lr=3e-4 model.width=256`. "
                    "The run directory gets config.yaml, model/ema.safetensors, trainer_state.pt, metrics.jsonl, "
                    "data_stats.json and loss.png. Under DDP, train.batch_size is per process.",
    )
    p.add_argument("items", nargs="*", metavar="[CONFIG] KEY=VALUE", help="preset name or YAML file, then dotted overrides")
    p.add_argument("--data", help="your sequences: .npz (x: (N,T,D) or seq_0, seq_1, ...; optional cond), .npy, .csv")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint (exact)")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run of this kind (deletes "
                   "only the files dforce wrote there)")
    p.add_argument("--allow-changed-data", action="store_true", help="with --resume: accept a data file that "
                   "changed since the run started (else refused)")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from RUN_DIR's weights (fine-tuning; same model "
                   "section, any objective), i.e. train.init_from=RUN_DIR")
    p.add_argument("--device", help="auto | cpu | cuda (default: the config's device, auto)")
    p.add_argument("--nproc", type=int, help="train with N processes (torchrun + DDP; gloo on CPU, nccl on GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_sample(args) -> int:
    from dforce.recipes.sequence.recipe import run_sample

    over = list(args.overrides)
    if args.schedule is not None:
        over.append(f"sampler.schedule={args.schedule}")
    positive("--steps", args.steps)
    if args.steps is not None:
        over.append(f"sampler.steps={args.steps}")
    out = run_sample(args.run_dir, args.length, args.context, args.num, args.seed, over, args.out, args.device,
                     progress=not args.quiet, overwrite=args.overwrite, allow_changed_data=args.allow_changed_data)
    print(json.dumps(out))
    return 0


def add_sample(sub):
    p = sub.add_parser("sample", help="roll out a trained run (any length) to .npy + .png",
                       description="Sample a trained run, window by window, past the training horizon. Context "
                                   "tokens come from the held-out data (--context 0: unconditional). Output is "
                                   "de-normalized: (num, context+length, D) in RUN_DIR/samples.npy and a plot.")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="sampler.KEY=VALUE", help="sampler overrides, e.g. sampler.eta=0.5")
    p.add_argument("--length", type=int, default=200, help="tokens to generate after the context (default 200)")
    p.add_argument("--context", type=int, default=4, help="real held-out tokens to start from (0: none; default 4)")
    p.add_argument("--num", type=int, default=8, help="number of rollouts (default 8)")
    p.add_argument("--schedule", help="full_sequence | autoregressive | pyramid | trapezoid (default: the config's)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="NAME.npy (the plot goes beside it as NAME.png) or a directory (samples.npy + "
                   "samples.png inside; created when missing); default RUN_DIR/samples.npy")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files dforce did not write")
    p.add_argument("--allow-changed-data", action="store_true", help="use the data file even if it changed "
                   "since training (else refused)")
    p.add_argument("--device", help="auto | cpu | cuda (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sample)


def cmd_eval(args) -> int:
    from dforce.recipes.sequence.recipe import run_eval

    over = list(args.overrides) + ([f"sampler.schedule={args.schedule}"] if args.schedule is not None else [])
    report = run_eval(args.run_dir, args.num, args.seed, over, args.device, progress=not args.quiet,
                      allow_changed_data=args.allow_changed_data)
    print(json.dumps(report, indent=1))
    return 0


def add_eval(sub):
    p = sub.add_parser("eval", help="held-out loss and sample quality (energy distance) of a run",
                       description="Report the training objective on held-out windows and the energy distance "
                                   "between sampled and held-out windows (normalized space; 0 = same distribution), "
                                   "next to two references: training windows (the floor) and Gaussian noise. "
                                   "Writes RUN_DIR/eval.json.")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="sampler.KEY=VALUE")
    p.add_argument("--num", type=int, default=256, help="held-out windows / samples compared (default 256)")
    p.add_argument("--schedule", help="sampling schedule (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-changed-data", action="store_true", help="use the data file even if it changed "
                   "since training (else refused)")
    p.add_argument("--device", help="auto | cpu | cuda (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)


def cmd_info(args) -> int:
    import yaml

    from dforce.recipes.sequence.recipe import run_info

    info = run_info(args.run_dir)
    for w in info.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"run: {info['run_dir']}\nkind: {info['kind']}\nstep: {info['step']}\nparameters: {info['parameters']}")
    print(f"last metrics: {json.dumps(info['last_metrics'])}")
    if info.get("eval") is not None:
        print(f"eval: {json.dumps(info['eval'])}")
    print("config:\n" + yaml.safe_dump(info["config"], sort_keys=False))
    return 0


def add_info(sub):
    p = sub.add_parser("info", help="print a run's config, step, parameter count and last metrics")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_info)


def register(subparsers) -> None:
    for add in (add_train, add_sample, add_eval, add_info, add_demo):
        add(subparsers)
