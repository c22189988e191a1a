"""Maze2D planning benchmark: Diffusion Forcing (+MCG) vs a Diffuser-style planner vs random / oracle.

Per maze: trains (or reuses) a DF planner (independent levels) and a Diffuser-style planner (full-sequence
levels, same backbone/data/sampler; the full_sequence scheduling matrix; goal inpainted on the last planned
state + guidance), then runs closed-loop episodes in the single-task and Multi2D settings:

    df_mcg            DF, pyramid schedule, guidance with Monte Carlo Guidance (N = --mcg), diffused actions
    df                the same without MCG (N = 1)
    diffuser_actions  Diffuser-style plan, diffused actions executed
    diffuser_pd       Diffuser-style plan, PD controller tracking the planned states (as Diffuser reported)
    random, oracle    dforce.recipes.planning.maze2d reference policies

All methods replan every ``plan.replan_every`` steps (MPC). Scores are D4RL-normalized (mean ± standard
error over episodes); our oracle scores far above D4RL's reference max (docs/planning.md), so compare with
the oracle row, not only with the paper. The table is repeated in raw episode returns, the unit the
reference code logs (``docs/planning.md``: "Which unit is the paper's Table 1 in?").

    PYTHONPATH=src python benchmarks/maze2d.py --mazes umaze            # one maze (results merge into the JSON)
    PYTHONPATH=src python benchmarks/maze2d.py --quick                   # smoke run: tiny training, 10 episodes
    PYTHONPATH=src python benchmarks/maze2d.py --config planning_gpu --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dforce.recipes.planning.maze2d import (MAZE_NAMES, OraclePolicy, RandomPolicy, episode_return, evaluate_policy, get_maze,
                                 normalized_score, plot_maze_paths)
from dforce.engine.config import apply_overrides, config_to_dict, from_dict, load_config
from dforce.recipes.planning.recipe import Planner, PlanningConfig, load_planner, run_planner, train_planner

METHODS = ("df_mcg", "df", "diffuser_actions", "diffuser_pd", "random", "oracle")
PAPER = {  # REFERENCE.md §3, paper Table 1 (DF with MCG)
    "single/umaze": 116.7, "single/medium": 149.4, "single/large": 159.0,
    "multi/umaze": 119.1, "multi/medium": 152.3, "multi/large": 167.1,
}
PAPER_NO_MCG = {  # REFERENCE.md §3, paper Table 1 (DF without MCG): compare with our df row
    "single/umaze": 110.1, "single/medium": 136.1, "single/large": 142.8,
    "multi/umaze": 107.7, "multi/medium": 145.6, "multi/large": 129.8,
}
# The paper's caption says "average reward", and the reference code's planning evaluation logs the mean raw
# episode return (df_planning.py: `episode_reward += reward`, logged as `episode_reward`, no normalization;
# its README: run that validation "to obtain numbers reported in paper"). So the table also shows our scores
# as raw returns, and the paper's DF converted to normalized scores under that reading (docs/planning.md).
# planned tokens per maze (× frame_stack steps): enough for the longest oracle path of the maze
HORIZON = {"umaze": 20, "medium": 30, "large": 40}
# training steps per maze (None: the preset's 2500). Large: 10 000 steps (~20 min per planner on one thread; the issue
# allows 60 min per maze) lifted DF + MCG 75.5 -> 121.5 single, 94.9 -> 111.8 Multi2D, not the Diffuser-style planner
# (docs/planning.md, "Longer training, a wider model"); Medium at 12 000 steps did not score better, nor Large at 20 000
# (DF + MCG 96.2 single, 110.5 Multi2D: benchmarks/results/studies/maze2d_large_20k_steps.json)
TRAIN_STEPS = {"umaze": None, "medium": None, "large": 10000}
# guidance per maze, at training (saved in config.yaml) and evaluation (also for runs trained earlier with other
# settings). Every maze: the reward term over 50-step windows, ρ = 30 (the U-Maze preset); on Large it lowered plain DF
# in the single task (53.8 -> 29.3) and raised every DF cell of Multi2D (DF + MCG 33.1 -> 88.4), against planned
# positions with ρ = 10 (docs/planning.md). Both terms score the positions the plan's *forces* lead to (the channels
# that are executed; ActionDynamics fitted to the data) instead of those its velocities lead to: 50 probe episodes,
# plain DF, Large Multi2D 124.2 -> 186.9, single 120.2 -> 194.4; U-Maze single 113.2 -> 126.1, Multi2D 131.8 -> 144.6
# (docs/planning.md, "Guidance on where the forces lead").
FORCES = ["plan.reward_positions=actions", "plan.integration_window=50", "plan.reward_weight=30",
          "plan.guidance_positions=actions"]
# Medium and Large: the distance term measures the shortest path through the dataset's positions (data_geodesic,
# no map). 50 probe episodes (docs/planning.md), single / Multi2D, on the velocities' positions: Medium 92.3 / 97.7 ->
# 118.1 / 113.6, Large 75.3 / 72.1 -> 81.0 / 77.2 (plain DF). A wall belongs to the side each guided path entered it
# from (entry_side; against nearest, 14 of the benchmark's 16 Medium/Large cells rose). U-Maze: Euclidean distance.
GEODESIC = FORCES + ["plan.distance=data_geodesic", "plan.geodesic_walls=entry_side"]
GUIDANCE = {"umaze": FORCES, "medium": GEODESIC, "large": GEODESIC}
# sampler per maze, at evaluation. Medium and Large: the pyramid's slope u = 0.25 (the near tokens lead the far ones by
# a quarter of a DDIM step per token; u = 1 before). 50 probe episodes, seed 2, plain DF (docs/planning.md), u = 1 ->
# 0.25: Large Multi2D 92.3 -> 124.2, single 109.6 -> 120.2, Medium Multi2D 117.7 -> 126.4, single 134.5 -> 134.6;
# half the rows per plan on Large. U-Maze keeps u = 1 (single 113.2 -> 109.9, Multi2D 131.8 -> 141.8: within the error).
# The Diffuser-style planner samples full_sequence
SAMPLER = {"umaze": [], "medium": ["sampler.uncertainty_scale=0.25"], "large": ["sampler.uncertainty_scale=0.25"]}
# MCG redraws only the tokens above 0.9 K in its N - 1 extra futures (the part of the plan not yet started), not every
# noisy token: the near tokens the guidance moves keep their values, and their gradient is averaged over futures of
# them (the paper's "futures given the current token"). Redrawing every noisy token put MCG 8.7-26.0 points below plain
# DF in the four Medium/Large cells of the benchmark before (docs/planning.md, "Which tokens MCG redraws"). A redrawn
# token's own gradient is replica 0's, at its own value (mcg_future_grad=own), not the average at the values the other
# replicas drew for it: single-task Large 176.2 -> 185.2, Multi2D Large 206.6 -> 199.4, the other four cells within 2.5
# (docs/planning.md, "What gradient a redrawn token gets"); chosen for never taking a token's gradient at a value it does
# not have, not for the scores.
MCG = ["sampler.mcg.redraw_above=0.9", "sampler.mcg.future_grad=own"]
ROOT = Path(__file__).resolve().parent


def get_run(maze: str, kind: str, args) -> tuple[Path, float]:
    """Train (or reuse) the planner of ``kind`` (df | diffuser); returns (run dir, training seconds)."""
    run = Path(args.runs) / f"{maze}_{kind}"
    if (run / "ema.safetensors").exists() and (run / "train_time.json").exists() and not args.retrain:
        return run, json.loads((run / "train_time.json").read_text())["seconds"]
    ov = [f"data.maze={maze}", f"data.horizon={HORIZON[maze]}", f"sampler.window={HORIZON[maze]}", *GUIDANCE[maze]]
    if TRAIN_STEPS[maze]:
        ov.append(f"train.steps={TRAIN_STEPS[maze]}")  # before args.overrides: a command-line value wins
    if kind == "diffuser":
        ov += ["objective.level_strategy=full_sequence", "sampler.schedule=full_sequence", "plan.inpaint_goal=true"]
    if args.quick:
        ov += ["train.steps=300", "train.warmup_steps=20", "data.num_steps=100000"]
    cfg = load_config(PlanningConfig, args.config, ov + list(args.overrides))
    result, _ = train_planner(cfg, run, device=args.device, progress=not args.quiet)
    return run, result.seconds


def planner_for(run: Path, args, mcg: int, maze: str) -> Planner:
    cfg, model, schedule, norm = load_planner(run, args.device)
    overrides = GUIDANCE[maze] + SAMPLER[maze] + MCG + list(args.eval_overrides)
    if overrides:
        cfg = from_dict(PlanningConfig, apply_overrides(config_to_dict(cfg), overrides, PlanningConfig))
    return Planner(cfg, model, schedule, norm, args.device, dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=mcg)))


def entry(res, seconds=None) -> dict:
    e = {"score_mean": round(res.mean, 2), "score_se": round(res.sem, 2), "episodes": int(len(res.scores)),
         "return_mean": round(float(res.returns.mean()), 2),  # raw episode return (the unit the reference logs)
         "success": round(float(res.success.mean()), 3),
         # per episode, in episode order (the same starts and goals for every method at one seed: paired comparisons)
         "episode_scores": [round(float(v), 2) for v in res.scores]}
    if seconds:
        e["plan_seconds_per_call"] = round(float(np.mean(seconds)), 3)
        e["plan_calls"] = len(seconds)
    return e


def run_maze(maze: str, args, results: dict) -> None:
    # method -> (planner kind, MCG samples, executor); only the planners the chosen methods use are trained
    kinds = {"df_mcg": ("df", args.mcg, "actions"), "df": ("df", 1, "actions"),
             "diffuser_actions": ("diffuser", 1, "actions"), "diffuser_pd": ("diffuser", 1, "pd")}
    runs = {k: get_run(maze, k, args) for k in sorted({kinds[m][0] for m in args.methods if m in kinds})}
    results.setdefault("training", {})[maze] = {k: {"run_dir": str(r), "seconds": round(s, 1)} for k, (r, s) in runs.items()}
    for setting in args.settings:
        multi = setting == "multi"
        key = f"{setting}/{maze}"
        summary, paths = {}, {}
        specs = {m: (runs[kind][0], mcg, executor) for m, (kind, mcg, executor) in kinds.items() if kind in runs}
        for method in args.methods:
            t0 = time.time()
            if method in specs:
                run, mcg, executor = specs[method]
                roll = run_planner(planner_for(run, args, mcg, maze), maze, args.episodes, multi, args.seed, executor,
                                   progress=not args.quiet)
                summary[method] = entry(roll.result, roll.plan_seconds)
                paths[method] = roll
            else:
                policy = RandomPolicy(args.seed) if method == "random" else OraclePolicy(seed=args.seed)
                summary[method] = entry(evaluate_policy(maze, policy, args.episodes, args.seed, multi))
            summary[method]["wall_seconds"] = round(time.time() - t0, 1)
            print(f"{key:14s} {method:17s} {summary[method]['score_mean']:7.1f} ± {summary[method]['score_se']:.1f}"
                  f"  ({summary[method]['wall_seconds']} s)", flush=True)
            results["summary"].setdefault(key, {})[method] = summary[method]
            write(results, args)
        if paths:
            plot(maze, setting, paths, args)


def plot(maze: str, setting: str, paths: dict, args) -> None:
    """Planned (first plan) vs executed paths of episode 0 for each planner method."""
    out = Path(args.out) / (f"maze2d_{maze}.png" if setting == "single" else f"maze2d_{maze}_multi.png")
    curves = {}
    for m, roll in paths.items():
        curves[f"{m} planned"] = roll.first_plan[0, :, :2]
        curves[f"{m} executed"] = roll.executed[0, :, :2]
    plot_maze_paths(maze, curves, out, goal=next(iter(paths.values())).goals[0],
                    title=f"{maze} ({setting}), episode 0: first plan vs executed")


def write(results: dict, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "maze2d.json").write_text(json.dumps(results, indent=2))
    lines = ["# Maze2D planning benchmark", "",
             f"Command: `{results['command']}`", "",
             "D4RL-normalized score, mean ± standard error over episodes (n). Paper = paper Table 1, DF with MCG "
             "(compare with df_mcg) and without (compare with df). "
             "Our oracle scores far above D4RL's reference max (docs/planning.md): compare against it too.", "",
             "| setting | " + " | ".join(METHODS) + " | paper DF | paper DF w/o MCG |", "|---" * (len(METHODS) + 3) + "|"]
    for key in sorted(results["summary"]):
        row = results["summary"][key]
        cells = [f"{row[m]['score_mean']:.1f} ± {row[m]['score_se']:.1f} (n={row[m]['episodes']})" if m in row else "—"
                 for m in METHODS]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {PAPER.get(key, '—')} | {PAPER_NO_MCG.get(key, '—')} |")
    lines += ["", "## The same in raw episode return (the unit the reference code logs)", "",
              "Mean raw episode return (steps within 0.5 of the goal; `dforce.recipes.planning.maze2d.episode_return` of the "
              "scores above, an exact linear map). The paper's caption says \"average reward\" and the reference "
              "code logs the raw return (see the docstring), so its DF numbers may be in this unit: the last column "
              "gives them as normalized scores under that reading.", "",
              "| setting | " + " | ".join(METHODS) + " | paper DF | paper DF w/o MCG | paper DF as a normalized score, if raw |",
              "|---" * (len(METHODS) + 4) + "|"]
    for key in sorted(results["summary"]):
        row, maze = results["summary"][key], key.split("/")[1]
        slope = float(episode_return(maze, 100.0) - episode_return(maze, 0.0)) / 100.0
        cells = [f"{float(episode_return(maze, row[m]['score_mean'])):.1f} ± {row[m]['score_se'] * slope:.1f}"
                 if m in row else "—" for m in METHODS]
        paper = PAPER.get(key)
        as_score = f"{float(normalized_score(maze, paper)):.1f}" if paper is not None else "—"
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {paper if paper is not None else '—'} | "
                     f"{PAPER_NO_MCG.get(key, '—')} | {as_score} |")
    paired = [(key, d) for key in sorted(results["summary"]) if (d := paired_difference(results["summary"][key]))]
    if paired:
        lines += ["", "## MCG vs no MCG, paired by episode", "",
                  "df_mcg − df per episode (the same start and goal: one seed), mean ± standard error of the "
                  "differences, and the episodes where each is ahead.", "",
                  "| setting | df_mcg − df | df_mcg ahead | df ahead | n |", "|---|---|---|---|---|"]
        lines += [f"| {key} | {d['mean']:+.1f} ± {d['se']:.1f} | {d['ahead']} | {d['behind']} | {d['n']} |"
                  for key, d in paired]
    lines += ["", "## Training and planning cost", "", "| maze | planner | train s | s per planning call (all episodes batched) |",
              "|---|---|---|---|"]
    for maze, tr in results.get("training", {}).items():
        for kind, info in tr.items():
            m = "df_mcg" if kind == "df" else "diffuser_actions"
            per = [results["summary"][k][mm].get("plan_seconds_per_call") for k in results["summary"] if k.endswith(maze)
                   for mm in ((m, "df") if kind == "df" else (m,)) if mm in results["summary"][k]]
            per_s = ", ".join(f"{p:.2f}" for p in per if p is not None)
            lines.append(f"| {maze} | {kind} | {info['seconds']} | {per_s} |")
    lines += ["", f"Settings: {json.dumps(results['settings'])}"]
    (out / "maze2d.md").write_text("\n".join(lines) + "\n")


def paired_difference(row: dict, a: str = "df_mcg", b: str = "df") -> dict | None:
    """Per-episode ``a − b`` of one cell (episodes paired by index: the same seed gives every method the same
    starts and goals): mean, standard error, episodes each is ahead; None without both methods' episode scores."""
    sa, sb = row.get(a, {}).get("episode_scores"), row.get(b, {}).get("episode_scores")
    if not sa or not sb or len(sa) != len(sb) or len(sa) < 2:
        return None
    d = np.asarray(sa) - np.asarray(sb)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))), "ahead": int((d > 0).sum()),
            "behind": int((d < 0).sum()), "n": len(d)}


def merge(args) -> int:
    """Combine partial runs (e.g. single and multi run as two processes) into one JSON + table."""
    results: dict = {"summary": {}, "training": {}, "command": [], "settings": []}
    for spec in args.merge:
        folder, _, only = spec.partition("=")  # FOLDER=umaze,medium: only those mazes of that folder
        mazes = set(only.split(",")) if only else None
        for m in mazes or ():
            get_maze(m)  # clear error on a bad name
        keep = lambda maze: mazes is None or maze in mazes  # noqa: E731
        path = Path(folder) / "maze2d.json"
        if not path.exists():
            raise SystemExit(f"--merge: {path} does not exist")
        part = json.loads(path.read_text())
        for key, row in part["summary"].items():
            if keep(key.split("/")[1]):
                results["summary"].setdefault(key, {}).update(row)
        for m, t in part.get("training", {}).items():  # per planner: a maze's DF and Diffuser rows may come apart
            if keep(m):
                results["training"].setdefault(m, {}).update(t)
        for png in Path(folder).glob("maze2d_*.png"):  # the planned-vs-executed paths of the kept mazes
            if keep(png.stem.split("_")[1]) and png.resolve().parent != Path(args.out).resolve():
                Path(args.out).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, Path(args.out) / png.name)
        commands = [c for c in part["command"].split(" ; ")
                    if mazes is None or any(f"--mazes {m} " in c + " " for m in mazes)]
        results["command"] += commands
        # a filtered folder: only the settings its kept commands ran with (told apart by episodes per cell)
        episodes = {int(c.split("--episodes ")[1].split()[0]) if "--episodes " in c else 100 for c in commands}
        for st in part["settings"] if isinstance(part["settings"], list) else [part["settings"]]:
            if (mazes is None or st["episodes"] in episodes) and st not in results["settings"]:
                results["settings"].append(st)  # one entry per distinct setting (e.g. episodes per maze)
    results["command"] = " ; ".join(dict.fromkeys(results["command"]))
    if len(results["settings"]) == 1:
        results["settings"] = results["settings"][0]
    write(results, args)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mazes", nargs="+", default=list(MAZE_NAMES), help="umaze medium large")
    p.add_argument("--settings", nargs="+", default=["single", "multi"], choices=("single", "multi"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--mcg", type=int, default=4, help="Monte Carlo Guidance samples for df_mcg")
    p.add_argument("--config", default="planning_umaze_small")
    p.add_argument("--runs", default="runs/maze2d_bench", help="where planners are trained / reused")
    p.add_argument("--retrain", action="store_true", help="train even if a run directory exists")
    p.add_argument("--quick", action="store_true", help="smoke run: 300 training steps on 100k steps, 10 episodes")
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--eval-overrides", nargs="*", default=[], help="sampler/plan overrides at evaluation, e.g. sampler.steps=10")
    p.add_argument("overrides", nargs="*", help="config overrides for training, e.g. train.steps=5000")
    p.add_argument("--train-only", nargs="*", choices=("df", "diffuser"), default=None,
                   help="train (or reuse) these planners of --mazes and exit (e.g. one process per planner)")
    p.add_argument("--merge", nargs="+", default=None,
                   help="merge the maze2d.json of these folders into --out and exit "
                        "(FOLDER=umaze,medium: only those mazes)")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args)
    for m in args.mazes:
        get_maze(m)  # clear error on a bad name
    if args.quick:
        args.episodes = min(args.episodes, 10)
        args.out = args.out if args.out != str(ROOT / "results") else str(ROOT / "results" / "quick")
    if args.threads:
        torch.set_num_threads(args.threads)  # 1 on a shared CPU: oversubscribed OpenMP threads spin
    if args.train_only is not None:
        for maze in args.mazes:
            for kind in args.train_only or ("df", "diffuser"):
                run, seconds = get_run(maze, kind, args)
                print(f"{maze} {kind}: {run} ({seconds:.0f} s of training)")
        return 0
    path = Path(args.out) / "maze2d.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("summary", {})
    results["command"] = "python benchmarks/maze2d.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["settings"] = {"episodes": args.episodes, "mcg": args.mcg, "config": Path(args.config).name,
                           "overrides": list(args.overrides), "eval_overrides": list(args.eval_overrides),
                           "horizon_tokens": HORIZON, "train_steps": TRAIN_STEPS, "guidance": GUIDANCE,
                           "sampler": SAMPLER, "mcg_overrides": MCG,
                           "quick": args.quick}
    for maze in args.mazes:
        run_maze(maze, args, results)
    write(results, args)
    return 0


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main, "benchmarks/maze2d.py"))  # user errors: one line, exit code 2
