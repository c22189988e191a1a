"""Why does a Maze2D planner score what it scores? Arrival time and dwell time at the goal.

Runs ``--episodes`` single-task U-Maze episodes (all batched) of a trained planner with optional guidance
changes and prints the score, the share of episodes that ever reach the goal, the median first-arrival
step, the share of steps inside the 0.5 radius after the first arrival, and the final distance and speed.
``docs/planning.md`` ("passes through the goal") was measured with it:

    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN                                # the run's settings
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --guidance-scale 0.1
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --velocity-weight 1.0          # slow down everywhere
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --velocity-weight 1.0 --velocity-gate 0.5   # near the goal only
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --start-at-goal --max-steps 60 --episodes 10   # hold test
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --set plan.reward_weight=10 --mcg 4 \
        --log benchmarks/results/studies/maze2d_probes.jsonl             # any plan.* / sampler.* override; append a record
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --maze medium --paths-png fails.png   # where failures end
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --maze medium --set plan.distance=data_geodesic \
        --field-png field.png                                    # guidance on the data's shortest paths, and its field
    PYTHONPATH=src python benchmarks/studies/maze2d_diagnose.py RUN --maze medium --mcg 8 --mcg-effect --max-steps 30 \
        --set sampler.mcg.redraw_above=0.9                       # how much MCG moves the present's gradient, per row

``RUN`` is a planner run directory (``dforce plan train`` or ``benchmarks/maze2d.py --runs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

import dforce.recipes.planning.planner as planning_planner
import dforce.recipes.planning.recipe as planning
from dforce.recipes.planning.maze2d import Maze2DBatchEnv
from dforce.recipes.planning.maze2d.layouts import get_maze, pos_to_cell
from dforce.recipes.planning.maze2d.plot import plot_distance_field, plot_maze_paths
from dforce.engine.config import apply_overrides, config_to_dict, from_dict
from dforce.guidance import MCGConfig, mcg_future

STALL_STEPS = 100  # a failed episode "stalled" if its last 100 steps (1 s of simulated time) ...
STALL_RADIUS = 0.5  # ... stayed within 0.5 (the reward radius) of its final position


def gated_velocity_guidance(radius: float):
    """``goal_distance_guidance`` whose velocity term counts only near the goal: w²‖v‖²·exp(−d²/2r²).

    The gate is computed on detached positions, so it cannot push plans away from the goal. The later settings
    of ``goal_distance_guidance`` (reward term, integrated positions, distance) are not used by this variant."""

    def make(goal_n, norm, vel_weight: float = 0.0, *_later_settings, **_later_keywords):
        std = torch.as_tensor(norm.std, dtype=torch.float32)
        vmean = torch.as_tensor(norm.mean[4:6], dtype=torch.float32)

        def log_c(x0_hat: torch.Tensor, t0: int) -> torch.Tensor:
            s = x0_hat.flatten(1, 2)  # (B·N, H·k, 6)
            p = s[..., planning.POS]
            g = goal_n.to(p).repeat_interleave(p.shape[0] // goal_n.shape[0], 0).unsqueeze(1)
            dp2 = ((p - g) * std[2:4].to(p)).pow(2).sum(-1)
            v2 = (s[..., 4:6] * std[4:6].to(p) + vmean.to(p)).pow(2).sum(-1)
            d = (dp2 + vel_weight**2 * v2 * torch.exp(-dp2.detach() / (2 * radius**2)) + 1e-6).sqrt()
            return -d.sum(1)

        return log_c

    return make


class MCGEffect:
    """How much MCG changes the guidance: wraps ``dforce.sampler.guided_prediction`` and, on every guided call with
    N > 1 futures, also computes plain guidance's gradient on the same tokens (no random draws: the rollout is the
    one MCG makes). Per call it records ‖g_MCG − g_plain‖ / ‖g_plain‖ over the noisy tokens MCG keeps (the present whose
    gradient it averages) and how far apart the futures are: the standard deviation over the N
    replicas of the scored x̂0 of the redrawn tokens (normalized units, mean over channels)."""

    def __init__(self):
        import dforce.sampler as sampler

        self.real = sampler.guided_prediction
        self.rel, self.spread, self.redrawn_tokens = [], [], []
        sampler.guided_prediction = self

    def __call__(self, model_fn, schedule, x, levels, x0_prev, log_c, t0, mcg=MCGConfig(), *rest):
        seen = []
        wrapped = lambda x0, t: (seen.append(x0.detach()), log_c(x0, t))[1]  # noqa: E731
        pred, grad = self.real(model_fn, schedule, x, levels, x0_prev, wrapped, t0, mcg, *rest)
        n = mcg.samples
        if n > 1:
            _, plain = self.real(model_fn, schedule, x, levels, x0_prev, log_c, t0, MCGConfig(), rest[0] if rest else None)
            redrawn = mcg_future(levels, schedule.num_levels, mcg.redraw_above)  # (B, T), as guided_prediction redraws
            kept = (levels > 0) & ~redrawn
            w = kept.reshape(*kept.shape, *((1,) * (x.ndim - 2))).to(grad)
            den = (plain * w).norm()
            if den > 0:
                self.rel.append(float(((grad - plain) * w).norm() / den))
            if redrawn.any():
                x0 = seen[0].view(x.shape[0], n, *x.shape[1:])  # (B, N, T, *D)
                sd = x0.std(1).flatten(2).mean(-1)  # (B, T) over the futures
                self.spread.append(float(sd[redrawn].mean()))
                self.redrawn_tokens.append(float(redrawn.float().sum(1).mean()))
        return pred, grad

    def summary(self) -> dict:
        q = lambda v: [round(float(np.quantile(v, p)), 4) for p in (0.1, 0.5, 0.9)] if v else None  # noqa: E731
        return {"mcg_calls": len(self.rel), "grad_change_kept_q10_50_90": q(self.rel),
                # the share of guided rows (calls) where MCG moves the present's gradient by more than 1 %
                "calls_changed_over_1pct": round(float(np.mean(np.asarray(self.rel) > 0.01)), 3) if self.rel else None,
                "futures_x0_std_q10_50_90": q(self.spread), "redrawn_tokens_per_row_median":
                float(np.median(self.redrawn_tokens)) if self.redrawn_tokens else 0.0}


def plot_dwell(dist: np.ndarray, speed: np.ndarray, path: str, title: str) -> None:
    """Distance to the goal and speed over time ``(N, T)`` for the first 8 episodes, reward radius marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for i in range(min(8, len(dist))):
        ax[0].plot(dist[i], lw=0.8)
        ax[1].plot(speed[i], lw=0.8)
    ax[0].axhline(0.5, color="k", ls="--", lw=0.8)
    ax[0].set_ylabel("distance to goal")
    ax[1].set_ylabel("speed")
    ax[1].set_xlabel("env step")
    ax[0].set_title(title or "run settings", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def goal_behind_wall(maze: str, pos: np.ndarray, goals: np.ndarray, samples: int = 200) -> np.ndarray:
    """``(N,)`` bool: does the straight segment from ``pos (N, 2)`` to ``goals (N, 2)`` (D4RL frame) cross a wall
    cell? A planner guided by the Euclidean distance to the goal can stall where it does (a local optimum)."""
    walls = get_maze(maze).walls
    s = np.linspace(0.0, 1.0, samples)[None, :, None]
    pts = pos[:, None] + s * (goals - pos)[:, None]  # (N, samples, 2)
    cells = np.clip(pos_to_cell(pts), 0, np.array(walls.shape) - 1)  # (N, samples, 2)
    return walls[cells[..., 0], cells[..., 1]].any(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--maze", default="umaze")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--velocity-weight", type=float, default=None, help="plan.goal_velocity_weight")
    ap.add_argument("--velocity-gate", type=float, default=None, help="apply the velocity term only within ~r")
    ap.add_argument("--multi", action="store_true", help="Multi2D (random goal per episode)")
    ap.add_argument("--mcg", type=int, default=1, help="sampler.mcg.samples")
    ap.add_argument("--set", nargs="*", default=[], help="plan.* / sampler.* overrides, e.g. plan.reward_weight=1")
    ap.add_argument("--log", default=None, help="append the result as one JSON line to this file")
    ap.add_argument("--start-at-goal", action="store_true",
                    help="start every episode at rest on the goal (can the plan's diffused actions hold it there?)")
    ap.add_argument("--max-steps", type=int, default=None, help="episode length (default: the maze's)")
    ap.add_argument("--png", default=None, help="plot distance to the goal and speed over time (8 episodes)")
    ap.add_argument("--paths-png", default=None,
                    help="plot the executed paths of (up to 8) episodes that never reached the goal, over the maze")
    ap.add_argument("--field-png", default=None,
                    help="plot the data-geodesic distance (plan.distance=data_geodesic) to the first episode's goal")
    ap.add_argument("--mcg-effect", action="store_true",
                    help="with --mcg N: also compute plain guidance's gradient on every guided call and report how much "
                         "MCG changes it, and how far apart its futures' x0 predictions are (slower)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    effect = MCGEffect() if args.mcg_effect else None
    torch.set_num_threads(args.threads)
    if args.velocity_gate is not None:
        # patched where Planner.plan looks it up (the planner module), not on the recipe's re-export
        planning_planner.goal_distance_guidance = gated_velocity_guidance(args.velocity_gate)
    cfg, model, schedule, norm = planning.load_planner(args.run)
    if args.set:
        cfg = from_dict(planning.PlanningConfig, apply_overrides(config_to_dict(cfg), args.set, planning.PlanningConfig))
    planner = planning.Planner(cfg, model, schedule, norm, sampler=dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=args.mcg)))
    plan = planner.cfg.plan
    if args.velocity_weight is not None:
        plan = dataclasses.replace(plan, goal_velocity_weight=args.velocity_weight)
    planner.cfg = dataclasses.replace(planner.cfg, plan=plan)
    if args.guidance_scale is not None:
        planner.sampler = dataclasses.replace(planner.sampler, guidance_scale=args.guidance_scale)

    starts = None
    if args.start_at_goal:
        env = Maze2DBatchEnv(args.maze, args.episodes, seed=args.seed, multi_goal=args.multi)
        env.reset()
        starts = env.goals.copy()  # same seed: run_planner's env draws the same goals
    r = planning.run_planner(planner, args.maze, episodes=args.episodes, seed=args.seed, multi_goal=args.multi,
                             max_episode_steps=args.max_steps, starts=starts)
    d = np.linalg.norm(r.executed[:, 1:, :2] - r.goals[:, None], axis=-1)  # (N, T)
    inside = d <= 0.5
    gap = np.linalg.norm(r.first_plan[:, :, :2] - (r.executed[:, :1, :2] + planning.DT * np.cumsum(r.first_plan[:, :, 2:], 1)),
                         axis=-1)  # (N, H·k)
    reached = inside.any(1)
    first = np.where(reached, inside.argmax(1), -1)
    dwell = [inside[i, f:].mean() if f >= 0 else 0.0 for i, f in enumerate(first)]
    failed = ~reached
    last = r.executed[:, -STALL_STEPS:, :2]  # (N, STALL_STEPS, 2) the episode's final positions
    stalled = np.linalg.norm(last - last[:, -1:], axis=-1).max(1) < STALL_RADIUS  # (N,) stayed put at the end
    behind = goal_behind_wall(args.maze, r.executed[:, -1, :2], r.goals)
    record = {
        "run": args.run, "score": round(r.result.mean, 1), "score_se": round(r.result.sem, 1),
        "reached_goal": float(reached.mean()),
        "first_arrival_median": float(np.median(first[reached])) if reached.any() else None,
        "in_goal_after_arrival": round(float(np.mean(dwell)), 2),
        "final_distance_median": round(float(np.median(d[:, -1])), 2),
        "speed_in_goal_median": round(float(np.median(np.linalg.norm(r.executed[:, 1:, 2:], axis=-1)[inside])), 2) if inside.any() else None,
        "distance_median_t10_20_30_60": [round(float(np.median(d[:, t - 1])), 2) for t in (10, 20, 30, 60) if t <= d.shape[1]],
        "speed_median_t10_20_30_60": [round(float(np.median(np.linalg.norm(r.executed[:, t, 2:], axis=-1))), 2) for t in (10, 20, 30, 60) if t < r.executed.shape[1]],
        "first_plan_speed_median_steps1_10_50": [round(float(np.median(np.linalg.norm(r.first_plan[:, t, 2:], axis=-1))), 2) for t in (0, 9, 49)],
        # does the first plan's motion agree with its own velocities? ‖planned p_j − (p_0 + DT Σ_{i≤j} v_i)‖
        "first_plan_integration_gap_steps10_50": [round(float(np.median(gap[:, t])), 2) for t in (9, 49)],
        "final_speed_median": round(float(np.median(np.linalg.norm(r.executed[:, -1, 2:], axis=-1))), 2),
        # episodes that never reached the goal: did they end stalled (within STALL_RADIUS over the last
        # STALL_STEPS steps) with a wall on the straight line to the goal (a local optimum of the distance)?
        "failed_episodes": int(failed.sum()),
        "failed_stalled": int((failed & stalled).sum()),
        "failed_goal_behind_wall": int((failed & behind).sum()),
        "failed_final_distance_median": round(float(np.median(d[failed, -1])), 2) if failed.any() else None,
        "plan_seconds": round(float(np.sum(r.plan_seconds)), 1),  # wall time of all planning calls (the cost of a setting)
        **({"mcg_effect": effect.summary()} if effect else {}),
        "settings": {k: v for k, v in vars(args).items() if k not in ("run", "log")},
        "plan": config_to_dict(planner.cfg)["plan"], "sampler": config_to_dict(planner.sampler) if dataclasses.is_dataclass(planner.sampler) else None,
    }
    print(json.dumps(record))
    if args.png:
        plot_dwell(d, np.linalg.norm(r.executed[:, 1:, 2:], axis=-1), args.png, " ".join(args.set))
    if args.paths_png:
        ids = np.flatnonzero(failed)[:8]
        plot_maze_paths(args.maze, {f"episode {i}": r.executed[i] for i in ids}, args.paths_png,
                        goal=r.goals[ids] if len(ids) else None,
                        title=f"{args.maze}: {int(failed.sum())}/{len(failed)} episodes never reach the goal")
    if args.field_png:  # the data-geodesic guidance distance to the first episode's goal
        plot_distance_field(planner.geodesic_field(), r.goals[0], args.field_png, maze=args.maze,
                            title=f"{args.maze}: shortest path through the data to the goal")
    if args.log:
        with open(args.log, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/maze2d_diagnose.py")  # user errors: one line, exit code 2
