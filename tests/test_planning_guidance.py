"""Maze2D planning guidance terms: the reward (in-radius count) term, integrated positions, the removed guidance keys."""

import numpy as np
import pytest
import torch

from dforce.engine.config import apply_overrides, config_to_dict, from_dict
from dforce.errors import ConfigError, DataError
from dforce.recipes.planning.maze2d import load_or_generate_maze2d
from dforce.recipes.planning.recipe import (DT, ActionDynamics, ExecConfig, Normalizer, PlanningConfig, ROW,
                                            action_positions, goal_distance_guidance)

NORM = Normalizer(np.array([0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), np.array([0.7, 0.7, 1.0, 1.0, 2.5, 2.5]))


def plan_at(positions: np.ndarray, velocity: float = 0.0) -> torch.Tensor:
    """(B, H·k, 2) world positions → normalized plan tokens (B, H, k=5, 6)."""
    B, L, _ = positions.shape
    rows = np.zeros((B, L, ROW))
    rows[..., 2:4], rows[..., 4:6] = positions, velocity
    return torch.tensor(NORM.encode(rows), dtype=torch.float32).view(B, L // 5, 5, ROW)


def goal_n(goal):
    return torch.tensor((np.asarray(goal) - NORM.mean[2:4]) / NORM.std[2:4], dtype=torch.float32)


def test_reward_term_counts_steps_inside_the_radius():
    goal = np.array([[1.0, 1.0]])
    log_c = goal_distance_guidance(goal_n(goal), NORM, reward_weight=1.0, reward_radius=0.5, reward_temperature=0.01)
    plain = goal_distance_guidance(goal_n(goal), NORM)
    pos = np.tile([[[1.0, 1.0]]], (1, 10, 1))
    pos[0, 6:] = [[3.0, 1.0]]  # 6 steps at the goal, 4 steps 2 away
    x = plan_at(pos)
    assert log_c(x, 0).shape == (1,)
    # the reward term adds ≈ the number of steps inside the radius (6)
    assert float(log_c(x, 0) - plain(x, 0)) == pytest.approx(6.0, abs=1e-2)


def test_reward_guidance_gradient_pulls_positions_into_the_radius():
    goal = np.array([[1.0, 1.0], [2.0, 3.0]])
    log_c = goal_distance_guidance(goal_n(goal), NORM, reward_weight=10.0)
    x = plan_at(goal[:, None] + np.array([0.6, 0.0])[None, None].repeat(10, 1)).requires_grad_(True)  # just outside
    (g,) = torch.autograd.grad(log_c(x, 0).sum(), x)
    x2 = x.detach() + 0.01 * g
    assert (log_c(x2, 0) > log_c(x.detach(), 0)).all()  # the objective increases
    d = lambda t: np.linalg.norm(NORM.decode(t.flatten(1, 2).numpy())[..., 2:4] - goal[:, None], axis=-1).mean()
    assert d(x2) < d(x.detach())  # and the plan moves toward the goal


def test_dt_integrates_the_data_velocities_exactly():
    # the integrated-position guidance rests on p_{t+1} = p_t + DT·v_{t+1} (MuJoCo's semi-implicit Euler step)
    obs = load_or_generate_maze2d("umaze", 20000, progress=False)["observations"].astype(np.float64)
    resid = obs[1:, :2] - (obs[:-1, :2] + DT * obs[1:, 2:])
    assert np.median(np.abs(resid)) < 1e-6  # (a few stream starts jump)


def test_integrated_positions_score_where_the_velocities_lead():
    # a plan whose position channels sit on the goal while its velocities carry it away: scored on the planned
    # positions it is perfect; scored on the integrated positions it is not, and the gradient slows it down
    goal, start = np.array([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    x = plan_at(np.tile(goal[:, None], (1, 20, 1)), velocity=2.0).requires_grad_(True)
    planned = goal_distance_guidance(goal_n(goal), NORM)
    integrated = goal_distance_guidance(goal_n(goal), NORM, start=start, distance_positions="integrated")
    assert float(planned(x.detach(), 0)) == pytest.approx(-20 * 1e-3, abs=1e-4)  # sqrt(1e-6) per step
    # steps j = 1..20 at 2·√2·DT·j from the goal (velocity (2, 2) in world units)
    expect = -sum(np.sqrt(8 * (DT * j) ** 2 + 1e-6) for j in range(1, 21))
    assert float(integrated(x.detach(), 0)) == pytest.approx(expect, rel=1e-4)
    # a window of 5 steps anchors each integration on the planned position 5 steps back (here the goal)
    windowed = goal_distance_guidance(goal_n(goal), NORM, start=start, distance_positions="integrated", window=5)
    expect5 = -sum(np.sqrt(8 * (DT * min(j, 5)) ** 2 + 1e-6) for j in range(1, 21))
    assert float(windowed(x.detach(), 0)) == pytest.approx(expect5, rel=1e-4)
    # both: each step is as far as the farther of the two (here the integrated one, at every step)
    both = goal_distance_guidance(goal_n(goal), NORM, start=start, distance_positions="both")
    assert float(both(x.detach(), 0)) == pytest.approx(expect, rel=1e-4)
    x_back = plan_at(np.tile(goal[:, None] + [[[0.3, 0.0]]], (1, 20, 1)), velocity=0.0)  # positions 0.3 off, at rest
    assert float(both(x_back, 0)) == pytest.approx(float(planned(x_back, 0)), rel=1e-4)  # ... here the planned one
    (g,) = torch.autograd.grad(integrated(x, 0).sum(), x)
    vel = NORM.decode((x.detach() + 0.01 * g).flatten(1, 2).double().numpy())[0, :, 4:]
    assert (vel < 2.0).all() and np.allclose(g.flatten(1, 2)[..., 2:4], 0)  # pushes velocities only
    # the reward term chooses its positions separately: counted on the planned positions every step is inside
    # the radius; on the integrated ones only the steps within 0.5 of the start (2·√2·DT·j <= 0.5: j <= 17)
    reward = lambda kind: goal_distance_guidance(goal_n(goal), NORM, reward_weight=1.0, reward_temperature=1e-3,  # noqa: E731
                                                 start=start, distance_positions="integrated", reward_positions=kind)
    on_plan, on_int, on_both = reward("planned"), reward("integrated"), reward("both")
    assert float(on_plan(x.detach(), 0) - integrated(x.detach(), 0)) == pytest.approx(20.0, abs=1e-3)
    assert float(on_int(x.detach(), 0) - integrated(x.detach(), 0)) == pytest.approx(17.0, abs=1e-3)
    assert float(on_both(x.detach(), 0) - integrated(x.detach(), 0)) == pytest.approx(17.0, abs=1e-3)  # both inside
    with pytest.raises(ConfigError, match="start position"):
        goal_distance_guidance(goal_n(goal), NORM, reward_weight=1.0, reward_positions="both")


DYN = ActionDynamics(alpha=(0.99, 0.98), beta=(0.25, 0.2), bias=(0.001, -0.002))


@pytest.mark.parametrize("window", [0, 7])
def test_action_positions_match_stepping_the_dynamics(window):
    """The closed form equals stepping v' = α v + β a + c, p' = p + DT v' row by row from each row's anchor state
    (the current state, or the plan's own state ``window`` rows earlier)."""
    g = torch.Generator().manual_seed(0)
    B, L = 3, 37
    p0, v0, forces = torch.randn(B, 2, generator=g), torch.randn(B, 2, generator=g), torch.rand(B, L, 2, generator=g)
    planned = torch.randn(B, L, 4, generator=g)
    out = action_positions(DYN, p0, v0, forces * 2 - 1, planned, window)
    al, be, c = (torch.tensor(t, dtype=torch.float64) for t in (DYN.alpha, DYN.beta, DYN.bias))
    for j in range(L):
        s = max(j + 1 - window, 0) if window else 0
        p, v = (p0, v0) if s == 0 else (planned[:, s - 1, :2], planned[:, s - 1, 2:])
        p, v = p.double(), v.double()
        for i in range(s, j + 1):
            v = al * v + be * (forces[:, i].double() * 2 - 1) + c
            p = p + DT * v
        assert torch.allclose(out[:, j].double(), p, atol=1e-5), j


def test_action_dynamics_fitted_to_the_data_predict_where_the_forces_lead():
    """Fitted to a generated dataset, the velocity response predicts the data's own positions 50 steps on from its
    forces alone (a damped point mass: only wall contacts break it)."""
    data = load_or_generate_maze2d("umaze", 20000, progress=False)
    dyn = ActionDynamics.fit(data)
    assert all(0.98 < a < 1 for a in dyn.alpha) and all(0.1 < b < 0.5 for b in dyn.beta)
    obs, act = (torch.tensor(data[k], dtype=torch.float64) for k in ("observations", "actions"))
    starts = torch.arange(100, 19000, 97)
    rows = starts[:, None] + torch.arange(50)  # (S, 50)
    pos = action_positions(dyn, obs[starts, :2], obs[starts, 2:], act[rows], obs[rows + 1], 0)
    err = (pos[:, -1] - obs[starts + 50, :2]).norm(dim=-1)
    assert err.median() < 0.1  # 50 steps travel ~1.2 on average
    with pytest.raises(DataError, match="alpha"):
        ActionDynamics.fit({"observations": obs.numpy() * 0, "actions": act.numpy()})


def test_action_guidance_scores_where_the_forces_lead_and_pushes_the_forces():
    """A plan whose states sit at rest on the goal while its forces push away: scored on the planned (or
    velocity-integrated) positions it is perfect, on the positions its forces lead to it is not, and the gradient
    moves the force channels only."""
    goal, start = np.array([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    x = plan_at(np.tile(goal[:, None], (1, 20, 1)))
    rows = x.detach().flatten(1, 2).clone()
    rows[..., :2] = torch.tensor((1.0 - NORM.mean[:2]) / NORM.std[:2], dtype=torch.float32)  # force (1, 1)
    x = rows.view_as(x).requires_grad_(True)
    kw = dict(start=start, velocity=torch.zeros(1, 2), dynamics=DYN)
    integrated = goal_distance_guidance(goal_n(goal), NORM, distance_positions="integrated", **kw)
    actions = goal_distance_guidance(goal_n(goal), NORM, distance_positions="actions", **kw)
    assert float(integrated(x.detach(), 0)) == pytest.approx(-20 * 1e-3, abs=1e-4)
    world = torch.tensor(NORM.decode(rows.double().numpy()))
    expect = action_positions(DYN, start, torch.zeros(1, 2), world[..., :2].float(), world[..., 2:].float())
    assert float(actions(x.detach(), 0)) == pytest.approx(
        -float(((expect - torch.tensor(goal)).pow(2).sum(-1) + 1e-6).sqrt().sum()), rel=1e-4)
    (g,) = torch.autograd.grad(actions(x, 0).sum(), x)
    assert (g.flatten(1, 2)[..., :2] < 0).all()  # lower forces: the plan stays closer to the goal
    assert np.allclose(g.flatten(1, 2)[..., 2:4], 0)  # (planned positions are not read; a window reads them)
    with pytest.raises(ConfigError, match="velocity"):
        goal_distance_guidance(goal_n(goal), NORM, start=start, reward_weight=1.0, reward_positions="actions")


# the guidance keys removed in dforce 0.2 and their old off values
REMOVED = {"guidance_decay": 1.0, "inpaint_arrival_radius": 0.0, "geodesic_reward": False}
NOT_OFF = {"guidance_decay": 1.01, "inpaint_arrival_radius": 0.3, "geodesic_reward": True}


def test_old_config_with_the_removed_guidance_keys_loads_at_their_off_values():
    """A run saved before the removal (every plan key written out) still loads when the removed keys hold their off
    values, and means what it meant; a removed key set to anything else is refused in one line naming it."""
    old = config_to_dict(PlanningConfig())
    old["plan"].update(REMOVED)
    assert from_dict(PlanningConfig, old) == PlanningConfig()
    for key, value in REMOVED.items():  # a command-line override at the off value is a no-op too
        assert from_dict(PlanningConfig, apply_overrides({}, [f"plan.{key}={value}"], PlanningConfig)) == PlanningConfig()
    for key, value in NOT_OFF.items():
        with pytest.raises(ConfigError, match=f"plan.{key} was removed") as e:
            from_dict(PlanningConfig, {**old, "plan": {**old["plan"], key: value}})
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match=f"plan.{key} was removed"):
            apply_overrides({}, [f"plan.{key}={str(value).lower()}"], PlanningConfig)


def test_bad_guidance_settings_fail_clearly():
    with pytest.raises(ConfigError, match="reward_temperature"):
        ExecConfig(reward_temperature=0.0)
    with pytest.raises(ConfigError, match="guidance_positions"):
        ExecConfig(guidance_positions="velocities")
    with pytest.raises(ConfigError, match="reward_positions"):
        ExecConfig(reward_positions="velocities")
    with pytest.raises(ConfigError, match="integration_window"):
        ExecConfig(integration_window=-1)


def test_planning_defaults_are_the_maze_preset():
    """The dataclass defaults are the best settings we know: the preset ``planning_maze`` (the Maze2D benchmark's
    recipe for any maze) resolves to them, the maze it names aside."""
    from dforce.engine.config import load_config

    preset = config_to_dict(load_config(PlanningConfig, "planning_maze", []))
    defaults = config_to_dict(PlanningConfig())
    for d in (preset, defaults):
        d["data"].pop("maze")
    assert preset == defaults
