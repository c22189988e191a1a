"""``dforce imitation train|eval`` and ``dforce compositional train|sample`` (decision-making recipes).

    dforce imitation train --config configs/imitation_small.yaml --out runs/imitation_df
    dforce imitation train --config configs/imitation_small.yaml --set method=next_frame --out runs/imitation_nf
    dforce imitation eval --run runs/imitation_df --episodes 100 [--corruption distractor --fraction 0.25]
    dforce compositional train --config configs/compositional_small.yaml --out runs/compositional
    dforce compositional sample --run runs/compositional --n 200 --out runs/compositional/samples
"""

from __future__ import annotations

import json

from dforce._threads import add_threads_argument, set_threads


def cmd_imitation_train(args) -> int:
    from dforce.engine.config import load_config
    from dforce.tasks.imitation import ImitationConfig, train_policy

    set_threads(args.threads)
    cfg = load_config(ImitationConfig, args.config, args.set)
    res = train_policy(cfg, args.out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run": args.out, "method": cfg.method, "steps": res.step, "seconds": round(res.seconds, 1),
                      "final_loss": res.history[-1]["loss"] if res.history else None}))
    return 0


def cmd_imitation_eval(args) -> int:
    from dforce.tasks.imitation import evaluate_run

    set_threads(args.threads)
    report = evaluate_run(args.run, episodes=args.episodes, seed=args.seed, corruption=args.corruption,
                          fraction=args.fraction, device=args.device, policy_overrides=args.set)
    print(json.dumps(report, indent=2))
    return 0


def cmd_compositional_train(args) -> int:
    from dforce.engine.config import load_config
    from dforce.tasks.compositional import CompositionalConfig, train_model

    set_threads(args.threads)
    cfg = load_config(CompositionalConfig, args.config, args.set)
    res = train_model(cfg, args.out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run": args.out, "steps": res.step, "seconds": round(res.seconds, 1),
                      "final_loss": res.history[-1]["loss"] if res.history else None}))
    return 0


def cmd_compositional_sample(args) -> int:
    from dforce.tasks.compositional import sample_run

    set_threads(args.threads)
    report = sample_run(args.run, n=args.n, out=args.out, seed=args.seed, device=args.device)
    print(json.dumps(report, indent=2))
    return 0


def _common(p, train: bool) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    add_threads_argument(p)
    if train:
        p.add_argument("--config", default=None, help="YAML preset (e.g. configs/imitation_small.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    imi = subparsers.add_parser("imitation", help="fruit-swap imitation with memory (DF policy + MPC, baselines)")
    isub = imi.add_subparsers(dest="imitation_command", required=True)
    p = isub.add_parser("train", help="train a policy (method df | markov_diffusion | next_frame)")
    _common(p, True)
    p.set_defaults(func=cmd_imitation_train)
    p = isub.add_parser("eval", help="success rate of a trained policy over N episodes (optionally corrupted)")
    _common(p, False)
    p.add_argument("--run", required=True, help="run directory written by `imitation train`")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (episodes disjoint from the demos)")
    p.add_argument("--corruption", default=None, help="distractor | occlusion | noise | missing (default: none)")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of corrupted steps (default: 0.25)")
    p.add_argument("--set", action="append", default=[], metavar="policy.KEY=VALUE",
                   help="override a policy setting of the run (e.g. policy.horizon=4), repeatable")
    p.set_defaults(func=cmd_imitation_eval)

    comp = subparsers.add_parser("compositional", help="compositional generation on the cross dataset")
    csub = comp.add_subparsers(dest="compositional_command", required=True)
    p = csub.add_parser("train", help="train one DF model on the cross dataset (whole paths + short crops)")
    _common(p, True)
    p.set_defaults(func=cmd_compositional_train)
    p = csub.add_parser("sample", help="sample with full memory and with memoryless MPC; classify and plot")
    _common(p, False)
    p.add_argument("--run", required=True, help="run directory written by `compositional train`")
    p.add_argument("--n", type=int, default=200, help="paths per mode (default: 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="where plots/JSON go (default: <run>/samples)")
    p.set_defaults(func=cmd_compositional_sample)
