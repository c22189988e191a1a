"""``dforce compositional train|sample``: compositional generation on the cross dataset.

    dforce compositional train --config compositional_small --out runs/compositional
    dforce compositional sample --run runs/compositional --n 200 --out runs/compositional/samples
"""

from __future__ import annotations

import json

from dforce._cli import OVERWRITE_OUT_HELP, add_recipe_arguments, at_least, set_threads


def cmd_compositional_train(args) -> int:
    from dforce.engine.config import load_config
    from dforce.recipes.compositional.recipe import CompositionalConfig, train_model

    from dforce.engine.rundir import claim

    set_threads(args.threads)
    cfg = load_config(CompositionalConfig, args.config, args.set)
    claim(args.out, "compositional", resume=args.resume, overwrite=args.overwrite)  # never into your files
    res = train_model(cfg, args.out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run": args.out, "steps": res.step, "seconds": round(res.seconds, 1),
                      "final_loss": res.history[-1]["loss"] if res.history else None}))
    return 0


def cmd_compositional_sample(args) -> int:
    from pathlib import Path

    from dforce.engine.rundir import expect_kind, prepare_outputs
    from dforce.recipes.compositional.recipe import sample_run

    set_threads(args.threads)
    at_least("--n", args.n)
    at_least("--seed", args.seed, 0)
    expect_kind(args.run, "compositional")
    out = Path(args.out) if args.out is not None else Path(args.run) / "samples"
    prepare_outputs(out, [f"{m}{s}" for m in ("memory", "mpc") for s in (".png", "_paths.npy")], args.overwrite)
    report = sample_run(args.run, n=args.n, out=args.out, seed=args.seed, device=args.device)
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers) -> None:
    comp = subparsers.add_parser("compositional", help="compositional generation on the cross dataset")
    csub = comp.add_subparsers(dest="compositional_command", required=True)
    p = csub.add_parser("train", help="train one DF model on the cross dataset (whole paths + short crops)")
    add_recipe_arguments(p, True)
    p.set_defaults(func=cmd_compositional_train)
    p = csub.add_parser("sample", help="sample with full memory and with memoryless MPC; classify and plot")
    add_recipe_arguments(p, False)
    p.add_argument("--run", required=True, help="run directory written by `compositional train`")
    p.add_argument("--n", type=int, default=200, help="paths per mode (default: 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="where plots/JSON go (default: <run>/samples)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_OUT_HELP)
    p.set_defaults(func=cmd_compositional_sample)
