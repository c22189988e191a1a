"""``dforce plan``: train and evaluate Maze2D Diffusion Forcing planners.

    dforce plan train --maze umaze --config planning_umaze_small --out runs/plan_umaze [key=value ...]
    dforce plan eval runs/plan_umaze --episodes 100 [--multi] [--mcg 4] [--executor pd] [--set key=value ...]
"""

from __future__ import annotations

import json

from dforce._cli import add_threads_argument, set_threads


def cmd_train(args) -> int:
    set_threads(args.threads)
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig, train_planner

    overrides = list(args.overrides)
    if args.maze:
        overrides.append(f"data.maze={args.maze}")
    if args.init_from:
        from pathlib import Path

        overrides.append(f"train.init_from={Path(args.init_from).expanduser().absolute()}")
    cfg = load_config(PlanningConfig, args.config, overrides)
    out = args.out or f"runs/plan_{cfg.data.maze}"
    result, _ = train_planner(cfg, out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run_dir": out, "steps": result.step, "seconds": round(result.seconds, 1),
                      "final_loss": result.history[-1]["loss"] if result.history else None}))
    return 0


def cmd_eval(args) -> int:
    set_threads(args.threads)
    import dataclasses
    from pathlib import Path

    import numpy as np

    from dforce.recipes.planning.maze2d import plot_maze_paths
    from dforce.engine.config import apply_overrides, config_to_dict, from_dict
    from dforce.recipes.planning.recipe import Planner, PlanningConfig, load_planner, run_planner

    cfg, model, schedule, norm = load_planner(args.run_dir, args.device)
    if args.overrides:
        cfg = from_dict(PlanningConfig, apply_overrides(config_to_dict(cfg), args.overrides, PlanningConfig))
    sampler = cfg.sampler if args.mcg is None else dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=args.mcg))
    planner = Planner(cfg, model, schedule, norm, args.device, sampler)
    maze = args.maze or cfg.data.maze
    roll = run_planner(planner, maze, args.episodes, args.multi, args.seed, args.executor, progress=not args.quiet)
    setting = "multi" if args.multi else "single"
    out = Path(args.out or args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_maze_paths(maze, {"planned (first plan)": roll.first_plan[0, :, :2], "executed": roll.executed[0, :, :2]},
                          out / f"eval_{maze}_{setting}.png", goal=roll.goals[0],
                          title=f"{maze} {setting}: score {roll.result.scores[0]:.0f}")
    report = {"maze": maze, "setting": setting, "episodes": args.episodes, "score_mean": roll.result.mean,
              "score_se": roll.result.sem, "success": float(roll.result.success.mean()),
              "plan_seconds_mean": float(np.mean(roll.plan_seconds)), "mcg_samples": sampler.mcg.samples,
              "executor": args.executor or cfg.plan.executor, "png": str(png)}
    (out / f"eval_{maze}_{setting}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="Maze2D planning with Diffusion Forcing (train / eval)")
    sub = p.add_subparsers(dest="plan_command", required=True)

    t = sub.add_parser("train", help="train a planner on the D4RL-style Maze2D dataset (generated and cached)")
    t.add_argument("--maze", default=None, help="umaze | medium | large (overrides data.maze)")
    t.add_argument("--config", default=None, help="preset name (e.g. planning_umaze_small; `dforce presets` lists them) or a YAML file")
    t.add_argument("--out", default=None, help="run directory (default runs/plan_<maze>)")
    t.add_argument("--device", default="cpu", help="cpu | cuda")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--init-from", metavar="RUN_DIR", help="start from RUN_DIR's weights (fine-tuning; same model section)")
    t.add_argument("--quiet", action="store_true")
    add_threads_argument(t)
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 model.width=256")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="closed-loop MPC episodes; writes scores (JSON) and a path PNG")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=100)
    e.add_argument("--multi", action="store_true", help="Multi2D: a random goal per episode")
    e.add_argument("--maze", default=None, help="evaluate on this maze (default: the training maze)")
    e.add_argument("--mcg", type=int, default=None, help="Monte Carlo Guidance samples (default: the config's)")
    e.add_argument("--executor", default=None, choices=("actions", "pd"), help="diffused actions or PD on states")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="output folder (default: the run directory)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")
    add_threads_argument(e)
    e.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="sampler/plan overrides, e.g. --set sampler.guidance_scale=0.1 plan.executor=pd")
    e.set_defaults(func=cmd_eval)


def cmd_data_maze2d(args) -> int:
    from dforce.recipes.planning.maze2d import dataset_stats, load_or_generate_maze2d
    from dforce.recipes.planning.maze2d.dataset import dataset_path

    data = load_or_generate_maze2d(args.maze, args.steps, args.seed, progress=not args.quiet)
    print(json.dumps({"path": str(dataset_path(args.maze, args.steps, args.seed)), **dataset_stats(data)}, indent=1))
    return 0


def register_data(dsub) -> None:
    """``dforce data maze2d``: generate (and cache) a D4RL-style dataset."""
    m = dsub.add_parser("maze2d", help="D4RL-style Maze2D trajectories (MuJoCo point mass + waypoint controller)")
    m.add_argument("--maze", default="umaze", help="umaze | medium | large (default umaze)")
    m.add_argument("--steps", type=int, help="dataset size in steps (default 1M/2M/4M as D4RL)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_data_maze2d)
