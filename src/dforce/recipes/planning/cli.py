"""``dforce plan``: train and evaluate Maze2D Diffusion Forcing planners, on D4RL's mazes or your own map.

    dforce data maze2d --maze my_maze.txt                          # generate + cache the dataset
    dforce plan train --maze my_maze.txt --out runs/my_maze        # preset planning_maze unless --config
    dforce plan eval runs/my_maze --episodes 100 [--multi] [--mcg 4] [--executor pd] [--set key=value ...]
    dforce plan train --maze umaze --config planning_umaze_small --out runs/plan_umaze [key=value ...]

A maze is a D4RL name (umaze, medium, large), a map file (.txt text map, .json/.yaml list of rows) or an inline
map ('#####/#G..#/###.#/#S..#/#####'): dforce.recipes.planning.maze2d.maps.
"""

from __future__ import annotations

import json

from dforce._cli import OVERWRITE_OUT_HELP, OVERWRITE_TRAIN_HELP, add_threads_argument, at_least, set_threads

DEFAULT_PRESET = "planning_maze"  # `plan train` without --config: the benchmark's recipe for any maze
MAZE_HELP = "umaze | medium | large, a map file (.txt: '#' wall, '.' free, 'G' goal, 'S' start; .json/.yaml 0/1 grid) or an inline map ('#####/#G..#/#####')"


def cmd_train(args) -> int:
    set_threads(args.threads)
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig, train_planner

    overrides = list(args.overrides)
    if args.maze:
        from dforce.recipes.planning.maze2d import get_maze

        get_maze(args.maze)  # a bad name or map: its own error line, before the config is read
        overrides.append(f"data.maze={args.maze}")
    if args.init_from:
        from pathlib import Path

        overrides.append(f"train.init_from={Path(args.init_from).expanduser().absolute()}")
    cfg = load_config(PlanningConfig, args.config or DEFAULT_PRESET, overrides)
    from dforce.recipes.planning.maze2d import get_maze

    out = args.out or f"runs/plan_{get_maze(cfg.data.maze).name}"
    from dforce.engine.rundir import claim

    claim(out, "plan", resume=args.resume, overwrite=args.overwrite)  # never into your files or another run
    result, _ = train_planner(cfg, out, device=args.device, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"run_dir": out, "steps": result.step, "seconds": round(result.seconds, 1),
                      "final_loss": result.history[-1]["loss"] if result.history else None}))
    return 0


def cmd_eval(args) -> int:
    set_threads(args.threads)
    import dataclasses
    from pathlib import Path

    from dforce.engine.checkpoint import atomic_write_bytes
    from dforce.engine.config import apply_overrides, config_to_dict, from_dict
    from dforce.recipes.planning.maze2d import get_maze
    from dforce.recipes.planning.maze2d.references import score_scale
    from dforce.recipes.planning.recipe import Planner, PlanningConfig, load_planner, run_planner

    from dforce.engine.rundir import expect_kind, prepare_outputs

    at_least("--episodes", args.episodes)
    at_least("--mcg", args.mcg)
    at_least("--seed", args.seed, 0)
    expect_kind(args.run_dir, "plan")
    cfg, model, schedule, norm = load_planner(args.run_dir, args.device)
    if args.overrides:
        cfg = from_dict(PlanningConfig, apply_overrides(config_to_dict(cfg), args.overrides, PlanningConfig))
    sampler = cfg.sampler if args.mcg is None else dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=args.mcg))
    planner = Planner(cfg, model, schedule, norm, args.device, sampler)
    task = get_maze(args.maze or cfg.data.maze, args.episode_steps)
    setting = "multi" if args.multi else "single"
    out = Path(args.out or args.run_dir)  # checked before the episodes run, written after
    prepare_outputs(out, [f"eval_{task.name}_{setting}.png", f"eval_{task.name}_{setting}.json"], args.overwrite)
    # what the scores are normalized against, settled before the rollout (a custom maze: its random and oracle
    # references on these episodes, computed once and cached)
    scale = score_scale(task, args.multi, args.episodes, args.seed, args.normalization)
    roll = run_planner(planner, task, args.episodes, args.multi, args.seed, args.executor, progress=not args.quiet,
                       scale=scale)
    png = plot_rollout(task, roll, out / f"eval_{task.name}_{setting}.png", setting)
    report = {"maze": task.name, "setting": setting, "episodes": args.episodes, "episode_steps": task.max_episode_steps,
              **roll.result.summary(), "normalization": scale.to_dict(),
              "plan_seconds_mean": float(sum(roll.plan_seconds) / len(roll.plan_seconds)),
              "mcg_samples": sampler.mcg.samples, "executor": args.executor or cfg.plan.executor, "seed": args.seed,
              "png": str(png)}
    atomic_write_bytes(out / f"eval_{task.name}_{setting}.json", json.dumps(report, indent=2).encode())
    print(json.dumps(report, indent=2))
    return 0


def plot_rollout(task, roll, path, setting: str):
    """Episode 0: the executed path, and where the first and the final plan's forces lead (the final plan: the last
    one before the first arrival), clipped to the maze."""
    from dforce.recipes.planning.maze2d import plot_maze_paths

    step, final, _ = roll.final_plan()
    curves = {"executed": roll.executed[0, :, :2], "first plan's forces (t=0)": roll.plans0[0][1],
              f"final plan's forces (t={step})": final}
    arrived = roll.result.steps_to_goal[0]
    title = (f"{task.name} {setting}, episode 0: score {roll.result.scores[0]:.0f},\n"
             + (f"goal reached at t={arrived}" if arrived >= 0 else "goal not reached"))
    return plot_maze_paths(task, curves, path, goal=roll.goals[0], title=title, clip=True)


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="Maze2D planning with Diffusion Forcing (train / eval)")
    sub = p.add_subparsers(dest="plan_command", required=True)

    t = sub.add_parser("train", help="train a planner on the D4RL-style Maze2D dataset (generated and cached)")
    t.add_argument("--maze", default=None, help=MAZE_HELP + " (overrides data.maze)")
    t.add_argument("--config", default=None, help=f"preset name (e.g. planning_umaze_small; `dforce presets` lists them) "
                   f"or a YAML file (default: {DEFAULT_PRESET}, the benchmark's recipe for any maze)")
    t.add_argument("--out", default=None, help="run directory (default runs/plan_<maze name or map file stem>)")
    t.add_argument("--device", default="cpu", help="cpu | cuda")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--overwrite", action="store_true", help=OVERWRITE_TRAIN_HELP)
    t.add_argument("--init-from", metavar="RUN_DIR", help="start from RUN_DIR's weights (fine-tuning; same model section)")
    t.add_argument("--quiet", action="store_true")
    add_threads_argument(t)
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 model.width=256")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="closed-loop MPC episodes; writes scores (JSON: normalized score, raw return, "
                       "success rate, steps to goal) and a path PNG")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=100)
    e.add_argument("--multi", action="store_true", help="Multi2D: a random goal per episode")
    e.add_argument("--maze", default=None, help="evaluate on this maze (default: the training maze): " + MAZE_HELP)
    e.add_argument("--episode-steps", type=int, default=None,
                   help="episode length (default: D4RL's 300/600/800; a custom maze: 42 steps per cell of its diameter)")
    e.add_argument("--normalization", default="auto", choices=("auto", "d4rl", "maze"),
                   help="auto: D4RL's constants on its mazes, else random = 0 / oracle = 100 on the same episodes "
                        "(computed once, cached); maze: the latter on any maze")
    e.add_argument("--mcg", type=int, default=None, help="Monte Carlo Guidance samples (default: the config's)")
    e.add_argument("--executor", default=None, choices=("actions", "pd"), help="diffused actions or PD on states")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="output folder (default: the run directory)")
    e.add_argument("--overwrite", action="store_true", help=OVERWRITE_OUT_HELP)
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")
    add_threads_argument(e)
    e.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="sampler/plan overrides, e.g. --set sampler.guidance_scale=0.1 plan.executor=pd")
    e.set_defaults(func=cmd_eval)


def cmd_data_maze2d(args) -> int:
    from dforce.recipes.planning.maze2d import dataset_stats, get_maze, load_or_generate_maze2d
    from dforce.recipes.planning.maze2d.dataset import dataset_path

    at_least("--steps", args.steps)  # 0 is not "the default size"
    at_least("--seed", args.seed, 0)
    task = get_maze(args.maze)
    data = load_or_generate_maze2d(task, args.steps, args.seed, progress=not args.quiet)
    print(json.dumps({"maze": task.name, "map": task.parsed_map().to_text().splitlines(),
                      "episode_steps": task.max_episode_steps, "path": str(dataset_path(task, args.steps, args.seed)),
                      **dataset_stats(data)}, indent=1))
    return 0


def register_data(dsub) -> None:
    """``dforce data maze2d``: generate (and cache) a D4RL-style dataset."""
    m = dsub.add_parser("maze2d", help="D4RL-style Maze2D trajectories (MuJoCo point mass + waypoint controller)")
    m.add_argument("--maze", default="umaze", help=MAZE_HELP + " (default umaze)")
    m.add_argument("--steps", type=int, help="dataset size in steps (default 1M/2M/4M as D4RL; a custom maze: by its free cells)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_data_maze2d)
