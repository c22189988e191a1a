"""``dforce imitation train|eval``: fruit-swap imitation with memory (DF policy + MPC, baselines).

    dforce imitation train --config imitation_small --out runs/imitation_df
    dforce imitation train --config imitation_small --set method=next_frame --out runs/imitation_nf
    dforce imitation eval --run runs/imitation_df --episodes 100 [--corruption distractor --fraction 0.25]
"""

from __future__ import annotations

import json

from dforce._cli import add_recipe_arguments, at_least, set_threads


def cmd_imitation_train(args) -> int:
    from dforce.engine.config import load_config
    from dforce.recipes.imitation.recipe import ImitationConfig, train_policy

    from dforce.engine.rundir import claim

    set_threads(args.threads)
    cfg = load_config(ImitationConfig, args.config, args.set)
    claim(args.out, "imitation", resume=args.resume, overwrite=args.overwrite)  # never into your files/another run
    res = train_policy(cfg, args.out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run": args.out, "method": cfg.method, "steps": res.step, "seconds": round(res.seconds, 1),
                      "final_loss": res.history[-1]["loss"] if res.history else None}))
    return 0


def cmd_imitation_eval(args) -> int:
    from dforce.engine.rundir import expect_kind
    from dforce.errors import ConfigError
    from dforce.recipes.imitation.recipe import evaluate_run

    set_threads(args.threads)
    at_least("--episodes", args.episodes)
    at_least("--seed", args.seed, 0)
    if not 0.0 <= args.fraction <= 1.0:  # also NaN
        raise ConfigError(f"--fraction must be in [0, 1], got {args.fraction}")
    expect_kind(args.run, "imitation")
    report = evaluate_run(args.run, episodes=args.episodes, seed=args.seed, corruption=args.corruption,
                          fraction=args.fraction, device=args.device, policy_overrides=args.set)
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers) -> None:
    imi = subparsers.add_parser("imitation", help="fruit-swap imitation with memory (DF policy + MPC, baselines)")
    isub = imi.add_subparsers(dest="imitation_command", required=True)
    p = isub.add_parser("train", help="train a policy (method df | markov_diffusion | next_frame)")
    add_recipe_arguments(p, True)
    p.set_defaults(func=cmd_imitation_train)
    p = isub.add_parser("eval", help="success rate of a trained policy over N episodes (optionally corrupted)")
    add_recipe_arguments(p, False)
    p.add_argument("--run", required=True, help="run directory written by `imitation train`")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (episodes disjoint from the demos)")
    p.add_argument("--corruption", default=None, help="distractor | occlusion | noise | missing (default: none)")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of corrupted steps (default: 0.25)")
    p.add_argument("--set", action="append", default=[], metavar="policy.KEY=VALUE",
                   help="override a policy setting of the run (e.g. policy.horizon=4), repeatable")
    p.set_defaults(func=cmd_imitation_eval)
