"""Maze2D planning: data windows, one planning step, guidance direction, a tiny end-to-end plan, CLI errors."""

import dataclasses

import numpy as np
import pytest
import torch

from dforce.cli import main as cli_main
from dforce.recipes.planning.maze2d import Maze2DBatchEnv, load_or_generate_maze2d
from dforce.engine.config import load_config
from dforce.errors import ConfigError
from dforce.recipes.planning.recipe import (
    ROW, MazeWindows, Planner, PlanningConfig, run_planner, split_segments, train_planner,
)

# a tiny model: 1 context token, 6 planned tokens of 10 steps, 8 DDIM steps, 500 training steps (~30 s)
TINY = ["data.frame_stack=10", "data.horizon=6", "data.context_tokens=1", "data.num_steps=60000",
        "model.width=64", "model.depth=1", "diffusion.num_levels=100", "train.steps=500", "train.batch_size=64",
        "train.lr=3e-3", "train.warmup_steps=20", "train.ema_decay=0.9", "train.checkpoint_every=1000",
        "sampler.steps=8", "sampler.window=6", "plan.replan_every=10", "sampler.guidance_scale=1.0",
        "plan.reward_weight=0", "plan.guidance_positions=planned", "plan.reward_positions=planned",
        "plan.integration_window=0", "plan.distance=euclidean", "sampler.uncertainty_scale=1.0",
        "objective.fused_snr_init=first_token"]  # the plain distance guidance and training the tiny test was tuned with


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
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



def test_data_geodesic_guidance_plans_round_the_wall(tiny):
    # from the bottom-left of the U to the goal top-left: the Euclidean guidance pulls the (tiny, strongly guided)
    # plan straight through the wall; the shortest path through the data's positions leads round by column 3
    cfg, model, schedule, norm, _ = tiny
    N = 16
    obs = np.tile([[3.0, 1.0, 0.0, 0.0]], (1, N, 1))
    goal = np.tile([1.0, 1.0], (N, 1))
    mid_column = {}
    for distance in ("euclidean", "data_geodesic"):
        c = dataclasses.replace(cfg, plan=dataclasses.replace(cfg.plan, distance=distance))
        p = Planner(c, model, schedule, norm).plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(1))
        mid_column[distance] = p.states[:, p.states.shape[1] // 2, 1].mean()
    assert mid_column["data_geodesic"] > mid_column["euclidean"] + 0.8, mid_column

@pytest.mark.parametrize("mcg", [1, 3])
def test_guidance_moves_endpoint_toward_goal(tiny, mcg):
    cfg, model, schedule, norm, _ = tiny
    sampler = dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=mcg))
    planner = Planner(cfg, model, schedule, norm, sampler=sampler)
    N = 16
    obs = np.tile([[3.0, 1.0, 0.0, 0.0]], (1, N, 1))  # bottom-left corner of the U
    goal = np.tile([1.0, 1.0], (N, 1))  # top-left (single-task goal)
    dist = {}
    for guided in (False, True):
        p = planner.plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(1), guided=guided)
        dist[guided] = np.linalg.norm(p.states[:, -1, :2] - goal, axis=1).mean()
    assert dist[True] < dist[False] - 0.2, dist


def test_candidates_execute_the_best_scored_plan(tiny, monkeypatch):
    """``plan.candidates`` n: n guided plans per episode in one batch, each episode keeps the one its guidance
    objective scores highest (checked against the scores of every drawn candidate)."""
    import dforce.recipes.planning.planner as planning  # where Planner.plan looks up ``sample``

    cfg, model, schedule, norm, _ = tiny
    n, N = 4, 3
    ccfg = dataclasses.replace(cfg, plan=dataclasses.replace(cfg.plan, candidates=n))
    drawn = []

    def recording_sample(*a, **kw):
        out = real_sample(*a, **kw)
        drawn.append((out.x[:, out.context_len:].clone(), kw["guidance"]))
        return out

    real_sample = planning.sample
    monkeypatch.setattr(planning, "sample", recording_sample)
    obs = np.tile([[3.0, 1.0, 0.0, 0.0]], (1, N, 1))
    goal = np.tile([1.0, 1.0], (N, 1))
    p = Planner(ccfg, model, schedule, norm).plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(1))
    (tokens, guide), = drawn
    per_episode = lambda t: t.view(N, n, *t.shape[1:])  # noqa: E731  (N·n, ...) -> (N, n, ...)
    assert tokens.shape[0] == N * n
    scores = per_episode(guide(tokens, 0))
    best = per_episode(tokens)[torch.arange(N), scores.argmax(1)]
    expect = norm.decode(best.flatten(1, 2).double().numpy())[..., 2:]
    np.testing.assert_allclose(p.states, expect, atol=1e-6)
    assert (scores.max(1).values > scores.min(1).values).all()  # the candidates differ: a real choice
    with pytest.raises(ConfigError, match="plan.candidates"):
        dataclasses.replace(cfg.plan, candidates=0)
    with pytest.raises(ConfigError, match="plan.candidate_guidance_min"):
        dataclasses.replace(cfg.plan, candidate_guidance_min=1.5)
    # spread guidance: the first candidate of each episode unguided, the last at the full scale (the same noise
    # stream, so the last candidates equal the run above and the first ones differ)
    spread = dataclasses.replace(ccfg, plan=dataclasses.replace(ccfg.plan, candidate_guidance_min=0.0))
    Planner(spread, model, schedule, norm).plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(1))
    spread_tokens, tokens = per_episode(drawn[1][0]), per_episode(tokens)
    torch.testing.assert_close(spread_tokens[:, -1], tokens[:, -1])
    assert (spread_tokens[:, 0] - tokens[:, 0]).abs().max() > 1e-2


def test_tiny_plan_beats_random(tiny):
    # 16 episodes of 150 steps starting in the two cells next to the goal's corridor end, (1, 2) and (1, 3)
    # (the goal is (1, 1)). Random forces barely leave the start cell (success 0 here), so the guided
    # planner reaching the goal in at least a quarter of them is a clear, seed-fixed margin.
    cfg, model, schedule, norm, _ = tiny
    planner = Planner(cfg, model, schedule, norm)
    starts = np.repeat([[1.0, 2.0], [1.0, 3.0]], 8, 0)
    roll = run_planner(planner, "umaze", episodes=16, seed=3, max_episode_steps=150, starts=starts)
    env = Maze2DBatchEnv("umaze", 16, seed=3, max_episode_steps=150)
    env.reset(start=starts)
    rnd, rng = np.zeros(16, bool), np.random.default_rng(3)
    for _ in range(150):
        rnd |= env.step(rng.uniform(-1, 1, (16, 2)))[3].success
    assert roll.executed.shape == (16, 151, 4)
    assert roll.result.success.mean() >= rnd.mean() + 0.25, (roll.result, rnd.mean())


def test_cli_bad_maze_and_run_dir(tmp_path, capsys):
    assert cli_main(["plan", "train", "--maze", "nowhere", "--out", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli_main(["plan", "eval", str(tmp_path), "--episodes", "2"]) == 2
    assert "not a planning run directory" in capsys.readouterr().err
    assert cli_main(["plan", "train", "--maze", "umaze", "plan.replan_every=7", "--out", str(tmp_path / "r")]) == 2
    assert "multiple of" in capsys.readouterr().err


def test_plan_with_reward_guidance_and_mcg(tiny):
    cfg, model, schedule, norm, _ = tiny
    plan_cfg = dataclasses.replace(cfg.plan, reward_weight=10.0)
    planner = Planner(dataclasses.replace(cfg, plan=plan_cfg), model, schedule, norm, sampler=dataclasses.replace(cfg.sampler, mcg=dataclasses.replace(cfg.sampler.mcg, samples=2)))
    N = 4
    goal = np.tile([1.0, 1.0], (N, 1))
    obs = np.tile([[1.1, 1.0, 0.0, 0.0]], (1, N, 1))  # starts inside the radius
    p = planner.plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(0))
    H = cfg.data.horizon * cfg.data.frame_stack
    assert p.actions.shape == (N, H, 2) and np.isfinite(p.actions).all() and np.isfinite(p.states).all()


def test_plan_guided_on_where_the_forces_lead(tiny):
    """``plan.guidance_positions=actions``: the planner fits the data's velocity response once, and the guidance
    brings the positions the plan's forces lead to closer to the goal than guidance on the planned positions does."""
    from dforce.recipes.planning.recipe import action_positions

    cfg, model, schedule, norm, _ = tiny
    N = 8
    goal = np.tile([1.0, 1.0], (N, 1))
    obs = np.tile([[3.0, 1.0, 0.0, 0.0]], (1, N, 1))  # 2 cells right of the goal, at rest
    far = {}
    for kind in ("planned", "actions"):
        planner = Planner(dataclasses.replace(cfg, plan=dataclasses.replace(cfg.plan, guidance_positions=kind)),
                          model, schedule, norm)
        p = planner.plan(obs, np.zeros((0, N, 2)), goal, torch.Generator().manual_seed(0))
        assert p.actions.shape == (N, cfg.data.horizon * cfg.data.frame_stack, 2) and np.isfinite(p.actions).all()
        if kind == "actions":
            assert planner.dynamics is not None and all(0.98 < a < 1 for a in planner.dynamics.alpha)
        dyn = planner.action_dynamics()
        led = action_positions(dyn, torch.tensor(obs[-1, :, :2]), torch.tensor(obs[-1, :, 2:]),
                               torch.tensor(p.actions), torch.tensor(p.states))  # (N, H·k, 2)
        far[kind] = float((led - torch.tensor(goal)[:, None]).norm(dim=-1).mean())
    assert far["actions"] < far["planned"], far


def test_markovian_windows_and_context(tiny):
    # data.markovian: every window opens with the start token of the observation before its first row, and a
    # plan sees only the current observation, so it may start at any step (replan_every need not be a multiple)
    cfg, model, schedule, norm, data = tiny
    mcfg = load_config(PlanningConfig, None, TINY + ["data.markovian=true", "plan.replan_every=3"])
    assert mcfg.data.window == 1 + mcfg.data.horizon
    ds = MazeWindows(data, mcfg.data, norm)
    k, H = mcfg.data.frame_stack, mcfg.data.horizon
    (s0, e0), (s, e) = split_segments(data, "streams")[:2]
    t = 25  # the window starting at real row t of the second segment: rows [a_t, o_{t+1}], ...
    idx = torch.tensor([(e0 - s0 - 1) - H * k + 1 + t])  # after segment 0's windows (one per real row offset)
    x = norm.decode(ds.get_batch(idx)["x"][0].double().numpy())  # (1 + H, k, 6)
    obs, act = data["observations"][s:e], data["actions"][s:e]
    assert np.allclose(x[0, :, :2], 0, atol=1e-5) and np.allclose(x[0, :, 2:], obs[t], atol=1e-4)
    assert np.allclose(x[1, 0], np.concatenate([act[t], obs[t + 1]]), atol=1e-4)
    assert np.allclose(x[H, k - 1], np.concatenate([act[t + H * k - 1], obs[t + H * k]]), atol=1e-4)
    planner = Planner(mcfg, model, schedule, norm)
    rng = np.random.default_rng(0)
    obs_h, act_h = rng.normal(size=(8, 2, 4)), rng.normal(size=(7, 2, 2))  # t = 7: not a token boundary
    ctx = norm.decode(planner.context(obs_h, act_h).double().numpy())  # (N, 1, k, 6)
    assert ctx.shape == (2, 1, k, ROW) and np.allclose(ctx[:, 0, :, 2:], obs_h[-1][:, None], atol=1e-5)
    with pytest.raises(ConfigError, match="markovian"):
        load_config(PlanningConfig, None, TINY + ["plan.replan_every=3"])
