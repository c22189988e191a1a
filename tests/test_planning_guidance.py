"""Maze2D planning guidance terms: the reward (in-radius count) term, integrated positions, arrival goal inpainting."""

import numpy as np
import pytest
import torch

from dforce.errors import ConfigError
from dforce.data.maze2d import load_or_generate_maze2d
from dforce.tasks.planning import DT, ExecConfig, Normalizer, ROW, goal_distance_guidance, inpaint_after_arrival

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


def test_inpaint_after_arrival_sets_the_goal_state_from_the_first_arrival():
    goal = np.array([[1.0, 1.0]])
    pos = np.linspace([3.0, 1.0], [0.0, 1.0], 20)[None]  # passes through the goal at step ~13
    x = plan_at(pos, velocity=2.0)
    out = inpaint_after_arrival(x, goal_n(goal), torch.tensor(NORM.std[2:4]).float(),
                                torch.tensor(-NORM.mean[4:6] / NORM.std[4:6]).float(), radius=0.3)
    assert out.shape == x.shape
    raw = NORM.decode(out.flatten(1, 2).double().numpy())[0]
    first = int(np.argmax(np.linalg.norm(pos[0] - goal, axis=1) <= 0.3))
    assert np.allclose(raw[:first, 2:], NORM.decode(x.flatten(1, 2).double().numpy())[0, :first, 2:], atol=1e-5)
    assert np.allclose(raw[first:, 2:4], goal, atol=1e-5) and np.allclose(raw[first:, 4:], 0, atol=1e-5)
    assert np.allclose(out[..., :2], x[..., :2])  # actions are left to the model


def test_bad_guidance_settings_fail_clearly():
    with pytest.raises(ConfigError, match="reward_temperature"):
        ExecConfig(reward_temperature=0.0)
    with pytest.raises(ConfigError, match="inpaint_arrival_radius"):
        ExecConfig(inpaint_arrival_radius=-1.0)
    with pytest.raises(ConfigError, match="guidance_positions"):
        ExecConfig(guidance_positions="velocities")
    with pytest.raises(ConfigError, match="reward_positions"):
        ExecConfig(reward_positions="velocities")
    with pytest.raises(ConfigError, match="integration_window"):
        ExecConfig(integration_window=-1)
