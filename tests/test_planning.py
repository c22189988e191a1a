"""Maze2D planning: data windows, one planning step, guidance direction, a tiny end-to-end plan, CLI errors."""

import dataclasses

import numpy as np
import pytest
import torch

from dforce.cli import main as cli_main
from dforce.data.maze2d import RandomPolicy, evaluate_policy, load_or_generate_maze2d
from dforce.engine.config import load_config
from dforce.errors import ConfigError
from dforce.tasks.planning import (
    ROW, MazeWindows, Normalizer, Planner, PlanningConfig, run_planner, split_segments, train_planner,
)

# a tiny model: 2 tokens of context, 8 planned tokens of 5 steps, 10 DDIM steps, 400 training steps
TINY = ["data.frame_stack=5", "data.horizon=8", "data.context_tokens=2", "data.num_steps=60000",
        "model.width=48", "model.depth=1", "diffusion.num_levels=100", "train.steps=400", "train.batch_size=32",
        "train.lr=3e-3", "train.warmup_steps=20", "train.ema_decay=0.9", "train.checkpoint_every=1000",
        "sampler.steps=8", "sampler.window=8", "plan.replan_every=10", "sampler.guidance_scale=0.2"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_config(PlanningConfig, None, TINY)
    data = load_or_generate_maze2d("umaze", cfg.data.num_steps, progress=False)
    result, norm = train_planner(cfg, None, progress=False, data=data)
    from dforce.diffusion import NoiseSchedule

    return cfg, result.model, NoiseSchedule(cfg.diffusion), norm, data


def test_windows_and_segments(tiny):
    cfg, _, _, norm, data = tiny
    segs = split_segments(data, "streams")
    # the generator runs continuous streams side by side; goal switches do not split them
    assert len(segs) < len(split_segments(data, "timeouts"))
    ds = MazeWindows(data, cfg.data, norm)
    x = ds.get_batch(torch.tensor([0, 1, len(ds) - 1]))["x"]
    assert x.shape == (3, cfg.data.window, cfg.data.frame_stack, ROW)
    # window 0 starts with a start token: zero force, one observation repeated
    raw = norm.decode(x[0, 0].double().numpy())
    assert np.allclose(raw[:, :2], 0, atol=1e-5) and np.allclose(raw, raw[:1], atol=1e-5)


def test_one_planning_step_shapes(tiny):
    cfg, model, schedule, norm, _ = tiny
    planner = Planner(cfg, model, schedule, norm)
    N, k = 3, cfg.data.frame_stack
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3 * k + 1, N, 4)) * 0.1 + np.array([3.0, 1.0, 0, 0])
    act = rng.uniform(-1, 1, size=(3 * k, N, 2))
    ctx = planner.context(obs, act)
    assert ctx.shape == (N, cfg.data.context_tokens, k, ROW)
    plan = planner.plan(obs, act, np.tile([1.0, 1.0], (N, 1)), torch.Generator().manual_seed(0))
    H = cfg.data.horizon * k
    assert plan.actions.shape == (N, H, 2) and plan.states.shape == (N, H, 4)
    assert np.abs(plan.actions).max() <= 1.0 and np.isfinite(plan.states).all()
    with pytest.raises(ConfigError):
        planner.context(obs[:4], act[:3])  # plans start on token boundaries


@pytest.mark.parametrize("mcg", [1, 3])
def test_guidance_moves_endpoint_toward_goal(tiny, mcg):
    cfg, model, schedule, norm, _ = tiny
    sampler = dataclasses.replace(cfg.sampler, mcg_samples=mcg)
    planner = Planner(cfg, model, schedule, norm, sampler=sampler)
    N = 16
    obs = np.tile([[3.0, 1.0, 0.0, 0.0]], (1, N, 1))  # bottom-left corner of the U
    goal = np.tile([1.0, 1.0], (N, 1))  # top-left (single-task goal)
    dist = {}
    for guided in (False, True):
        p = planner.plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(1), guided=guided)
        dist[guided] = np.linalg.norm(p.states[:, -1, :2] - goal, axis=1).mean()
    assert dist[True] < dist[False] - 0.2, dist


def test_tiny_plan_beats_random(tiny):
    # 24 episodes of 150 steps from random starts. Random forces barely leave the start cell, so random
    # only scores when it starts near the goal; the guided planner must reach it clearly more often.
    cfg, model, schedule, norm, _ = tiny
    planner = Planner(cfg, model, schedule, norm)
    roll = run_planner(planner, "umaze", episodes=24, seed=3, max_episode_steps=150)
    rnd = evaluate_policy("umaze", RandomPolicy(3), 24, seed=3, max_episode_steps=150)
    assert roll.executed.shape == (24, 151, 4)
    assert roll.result.success.mean() > rnd.success.mean() + 0.15, (roll.result, rnd)
    assert roll.result.returns.mean() > rnd.returns.mean()


def test_cli_bad_maze_and_run_dir(tmp_path, capsys):
    assert cli_main(["plan", "train", "--maze", "nowhere", "--out", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli_main(["plan", "eval", str(tmp_path), "--episodes", "2"]) == 2
    assert "not a planning run directory" in capsys.readouterr().err
    assert cli_main(["plan", "train", "--maze", "umaze", "plan.replan_every=7", "--out", str(tmp_path / "r")]) == 2
    assert "multiple of" in capsys.readouterr().err
