"""Maze2D planning with Diffusion Forcing (paper §4.2): one readable recipe.

Tokens. A step row is ``[a_t, o_{t+1}]`` (6 numbers: force, next [x, y, vx, vy]), z-scored with dataset
statistics; ``frame_stack`` (k, reference 10) consecutive rows make one token of shape ``(k, 6)``. Every
training segment starts with a *start token* ``[0, o_0] × k`` (zero force, the first observation
repeated), which is how an episode's first observation is shown to the model at execution. With
``data.markovian`` every training window starts with the start token of its own first observation instead,
and a plan is conditioned on the current observation only (the reference's ``context_frames: 0``).

Training. Windows of ``context_tokens + horizon`` tokens (any step offset) cut from the dataset's
segments, Algorithm 1 (independent levels = Diffusion Forcing; ``full_sequence`` = the Diffuser-style
baseline with the same backbone and data).

Execution (MPC, all episodes of a batch planned together). Every ``replan_every`` steps:
    1. the real history (start token + the completed real tokens, the last ``context_tokens`` of them)
       is committed to the model state at level 0 (posterior update with the real observations);
    2. a plan of ``horizon`` tokens is sampled with the pyramid schedule (causal uncertainty) and goal
       guidance on the x0 prediction (:func:`goal_distance_guidance`: distance to the goal plus a smooth
       count of steps inside the reward radius, scored on the planned positions or on the positions the
       planned velocities lead to), with Monte Carlo Guidance when ``sampler.mcg.samples > 1``; with
       ``plan.candidates`` n > 1, n plans per episode and the one the guidance objective scores highest is kept;
    3. the plan's *diffused actions* are executed directly (``executor=actions``) — or, for the Diffuser
       baseline, a PD controller tracks the planned states (``executor=pd``).

Layout: the configuration in :mod:`dforce.recipes.planning.config`, the data (normalization, segments, windows) in
:mod:`dforce.recipes.planning.windows`, the guidance, planner and rollouts in :mod:`dforce.recipes.planning.planner`;
this module trains and loads planners and re-exports the public names of the three, so imports from
``dforce.recipes.planning.recipe`` keep working.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from dforce._utils import check_choice
from dforce.recipes.planning.maze2d import get_maze, load_or_generate_maze2d
from dforce.recipes.planning.maze2d.maps import run_maze_file, save_run_maze
from dforce.diffusion import NoiseSchedule
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict, from_dict
from dforce.engine.trainer import train
from dforce.errors import CheckpointError
from dforce.models import build_model
from dforce.recipes.planning.config import (
    ACT, DISTANCE_POSITIONS, DISTANCES, DT, PLAN_TOKENS_BY_DIAMETER, POS, REWARD_POSITIONS, ROW,
    TRAIN_STEPS_BY_DIAMETER, VEL, ExecConfig, PlanDataConfig, PlanDiffusionConfig, PlanModelConfig,
    PlanObjectiveConfig, PlanSamplerConfig, PlanTrainConfig, PlanningConfig, plan_tokens_for, train_steps_for,
)
from dforce.recipes.planning.windows import (
    ActionDynamics, MazeWindows, Normalizer, action_positions, split_segments, start_rows,
)
from dforce.recipes.planning.planner import (
    Plan, Planner, RolloutResult, force_path, goal_distance_guidance, pd_action, run_planner,
)

__all__ = [
    # config
    "ROW", "ACT", "POS", "VEL", "DT", "DISTANCE_POSITIONS", "REWARD_POSITIONS", "DISTANCES",
    "PLAN_TOKENS_BY_DIAMETER", "TRAIN_STEPS_BY_DIAMETER", "train_steps_for", "plan_tokens_for",
    "PlanDataConfig", "ExecConfig", "PlanDiffusionConfig", "PlanModelConfig", "PlanTrainConfig",
    "PlanObjectiveConfig", "PlanSamplerConfig", "PlanningConfig",
    # windows
    "Normalizer", "ActionDynamics", "action_positions", "split_segments", "start_rows", "MazeWindows",
    # planner
    "goal_distance_guidance", "Plan", "Planner", "force_path", "pd_action", "RolloutResult", "run_planner",
    # training (this module)
    "STATS_FILE", "train_planner", "with_plan_tokens", "load_planner",
]

STATS_FILE = "stats.json"

# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------


def train_planner(cfg: PlanningConfig, run_dir: str | Path | None, device: str = "cpu", progress: bool = True,
                  resume: bool = False, data: dict | None = None):
    """Train a planner (DF or, with ``objective.level_strategy=full_sequence``, Diffuser-style).

    Returns ``(TrainResult, Normalizer)``; writes the trainer's files plus ``stats.json`` to ``run_dir`` (and a custom
    maze's map as ``maze/<name>.txt``, which :func:`load_planner` evaluates on). The saved config holds the planned
    tokens as a number (``data.horizon``; None resolves to the maze's default first)."""
    cfg = with_plan_tokens(cfg)
    torch.manual_seed(cfg.train.seed)
    data = data if data is not None else load_or_generate_maze2d(cfg.data.maze, cfg.data.num_steps, progress=progress)
    norm = Normalizer.fit(data)
    ds = MazeWindows(data, cfg.data, norm)
    schedule = NoiseSchedule(cfg.diffusion)
    model = build_model(cfg.model, (cfg.data.frame_stack, ROW), cfg.diffusion.num_levels)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_bytes(Path(run_dir) / STATS_FILE, json.dumps(norm.to_dict()).encode())
        save_run_maze(get_maze(cfg.data.maze), run_dir)
    result = train(model, schedule, ds, cfg.train, cfg.objective, run_dir=run_dir, config_dict=config_to_dict(cfg),
                   resume=resume, device=device, progress=progress)
    if run_dir is not None:
        ckpt.atomic_write_bytes(Path(run_dir) / "train_time.json",
                                json.dumps({"seconds": result.seconds, "steps": result.step}).encode())
    return result, norm


def with_plan_tokens(cfg: PlanningConfig) -> PlanningConfig:
    """``cfg`` with ``data.horizon`` and ``train.steps`` as numbers (None: the maze's defaults, :func:`plan_tokens_for`,
    :func:`train_steps_for`)."""
    if cfg.data.horizon is None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, horizon=cfg.data.plan_tokens))
    if cfg.train.steps is None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=train_steps_for(get_maze(cfg.data.maze))))
    return cfg


def load_planner(run_dir: str | Path, device: str = "cpu", weights: str = "auto"):
    """``(cfg, model, schedule, norm)`` from a run directory written by :func:`train_planner`.

    ``weights``: ema | raw | auto. ``auto`` takes the EMA weights only once the run is long enough for the
    EMA to have forgotten its initialization (steps · (1 − decay) ≥ 3, i.e. < 5 % initial weight left);
    a short run (e.g. 1000 steps at decay 0.999 keeps 37 % of the random init) uses the raw weights.
    """
    check_choice("weights", weights, ("auto", "ema", "raw"))
    run_dir = Path(run_dir)
    for f in (ckpt.CONFIG_FILE, STATS_FILE):
        if not (run_dir / f).exists():
            raise CheckpointError(f"{run_dir} is not a planning run directory (missing {f})")
    conf = ckpt.load_yaml(run_dir / ckpt.CONFIG_FILE)
    saved_map = run_maze_file(run_dir)
    if saved_map is not None and isinstance(conf.get("data"), dict):  # the run's own copy of its custom map
        conf["data"]["maze"] = str(saved_map)
    cfg = from_dict(PlanningConfig, conf)
    norm = Normalizer.from_dict(json.loads((run_dir / STATS_FILE).read_text()))
    model = build_model(cfg.model, (cfg.data.frame_stack, ROW), cfg.diffusion.num_levels)
    if weights == "auto":
        steps = cfg.train.steps
        if (run_dir / "train_time.json").exists():
            steps = json.loads((run_dir / "train_time.json").read_text()).get("steps", steps)
        weights = "ema" if steps * (1 - cfg.train.ema_decay) >= 3 and (run_dir / ckpt.EMA_FILE).exists() else "raw"
    wfile = run_dir / (ckpt.EMA_FILE if weights == "ema" else ckpt.MODEL_FILE)
    if not wfile.exists():
        raise CheckpointError(f"{run_dir} has no {wfile.name}")
    ckpt.load_weights(model, wfile)
    return cfg, model.to(device).eval(), NoiseSchedule(cfg.diffusion).to(device), norm
