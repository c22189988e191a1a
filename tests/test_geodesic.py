"""The data-geodesic guidance distance: shortest paths through the positions a dataset visits."""

import dataclasses

import numpy as np
import pytest
import torch

from dforce.recipes.planning.maze2d import cell_center, get_maze
from dforce.recipes.planning.maze2d.geodesic import GeodesicField
from dforce.errors import ConfigError, DataError
from dforce.recipes.planning.recipe import ExecConfig, Normalizer, ROW, goal_distance_guidance

UMAZE = get_maze("umaze")  # free cells (1,1) (1,2) (1,3) / (2,3) / (3,1) (3,2) (3,3); goal (1,1)


def free_space_positions(task, n_per_cell: int = 400, seed: int = 0) -> np.ndarray:
    """Uniform positions over the maze's free cells (what a dataset visits), D4RL frame."""
    rng = np.random.default_rng(seed)
    centres = cell_center(task.free_cells)
    return (centres[:, None] + rng.uniform(-0.5, 0.5, size=(len(centres), n_per_cell, 2))).reshape(-1, 2)


@pytest.fixture(scope="module")
def field():
    """The field of steps 1-4 (``walls="nearest"``); ``entry_side`` (the default) only changes positions in walls."""
    return GeodesicField.from_positions(free_space_positions(UMAZE), cell=0.1, walls="nearest")


def distance(field, goal, points, grad: bool = False):
    p = torch.tensor(np.asarray(points, dtype=np.float32)[None], requires_grad=grad)
    d = field.distance_fn(np.asarray(goal, dtype=np.float64)[None])(p)[0]
    if not grad:
        return d.detach().numpy()
    (g,) = torch.autograd.grad(d.sum(), p)
    return d.detach().numpy(), g[0].numpy()


def test_geodesic_equals_euclidean_in_the_open_and_goes_round_walls(field):
    goal = cell_center(np.array([1, 1]))
    along = cell_center(np.array([[1, 2], [1, 3]]))  # the same corridor as the goal
    d = distance(field, goal, along)
    assert d == pytest.approx(np.linalg.norm(along - goal, axis=1), rel=0.08)
    # (3, 1) is 2 from the goal through the wall (row 2 is wall there); round the U, cutting the inner corners,
    # 4.16 (1.58 + 1 + 1.58), plus the grid's error
    behind = cell_center(np.array([[3, 1]]))
    (d_behind,) = distance(field, goal, behind)
    assert 4.1 < d_behind < 4.7
    # never shorter than the straight line, anywhere in free space
    pts = free_space_positions(UMAZE, 50, seed=1)
    assert (distance(field, goal, pts) >= np.linalg.norm(pts - goal, axis=1) - 0.1).all()


def test_geodesic_gradient_points_along_the_corridor(field):
    goal = cell_center(np.array([1, 1]))
    p = cell_center(np.array([[3, 1]]))  # bottom-left of the U; the goal is straight up (−row), behind a wall
    _, g = distance(field, goal, p, grad=True)
    descent = -g[0]
    # Euclidean descent would be −row (into the wall); the geodesic one runs along the bottom corridor (+column)
    assert descent[1] > 0.5 and abs(descent[0]) < descent[1]


def test_field_rises_into_walls_and_keeps_the_far_side_long(field):
    goal = cell_center(np.array([1, 1]))
    wall = cell_center(np.array([[2, 1]]))  # the wall cell between the goal and (3, 1)
    top, bottom = wall + [-0.55, 0.0], wall + [0.55, 0.0]  # just outside it, on either side
    d_wall, d_top, d_bottom = distance(field, goal, np.concatenate([wall, top, bottom]))
    assert d_wall > d_top  # rising from the goal side into the wall
    assert d_bottom > 3.5  # the far side keeps its long way round: the wall is no shortcut


def test_higher_side_owns_the_wall_between_it_and_the_goal(field):
    goal = cell_center(np.array([1, 1]))
    high = GeodesicField.from_positions(free_space_positions(UMAZE), cell=0.1, walls="higher_side")
    wall = cell_center(np.array([2, 1]))  # between the goal's corridor (row 1) and the far side (row 3)
    across = wall + np.stack([np.linspace(0.35, -0.35, 8), np.zeros(8)], 1)  # from the far side towards the goal
    d_near, g_near = distance(field, goal, across, grad=True)
    d_high, g_high = distance(high, goal, across, grad=True)
    # "nearest": past the middle the wall belongs to the goal's side, and the descent draws a point through it
    assert d_near[-1] < d_near[4] and -g_near[-2][0] < 0
    # "higher_side": the far side owns the whole wall; the field keeps rising across it and the descent leads
    # back to the side the point came from (+row) everywhere inside
    assert (np.diff(d_high) > 0).all() and (-g_high[:, 0] > 0).all()
    # near the far side's edge it starts from that side's level (its owner: a cell near the nearest one)
    assert d_near[0] - 0.05 < d_high[0] < d_near[0] + 0.4
    # a wall with one side (the outer wall beside the goal's corridor) belongs to it: the descent leads back out
    outer = cell_center(np.array([[0, 2], [0, 3]])) + [0.3, 0.0]
    d_out, g_out = distance(high, goal, outer, grad=True)
    assert (-g_out[:, 0] > 0.5).all() and (d_out > distance(field, goal, outer) - 0.05).all()


def test_entry_side_gives_a_wall_to_the_side_a_path_enters_from(field):
    goal = cell_center(np.array([1, 1]))
    entry = GeodesicField.from_positions(free_space_positions(UMAZE), cell=0.1, walls="entry_side")
    start = cell_center(np.array([3, 1]))
    path = start + np.stack([np.linspace(0, -1.6, 17), np.zeros(17)], 1)  # straight up through the wall (2, 1)
    d_near, g_near = distance(field, goal, path, grad=True)
    d_path, g_path = distance(entry, goal, path, grad=True)
    in_wall = np.abs(path[:, 0] - cell_center(np.array([2, 1]))[0]) < 0.25  # deeper than wall_depth = 0.2
    # "nearest" jumps down at the wall's middle (the goal's side owns that half) and draws the path through
    assert (-g_near[in_wall, 0] < 0).any()
    # entry_side: the field keeps rising until the path is out on the goal's side, and every position inside the
    # wall is drawn back the way it came (+row)
    w = np.flatnonzero(in_wall)
    assert (np.diff(d_path[w[0] - 1: w[-1] + 1]) > 0).all() and (-g_path[in_wall, 0] > 1.5).all()
    # in free space it is the field itself; a path that starts inside a wall has no side to take: nearest values
    free = ~in_wall
    assert d_path[free] == pytest.approx(d_near[free], abs=1e-5)
    from_wall = path[in_wall][::-1]  # starts in the wall, heads down to (3, 1)
    assert distance(entry, goal, from_wall)[0] == pytest.approx(distance(field, goal, from_wall)[0], abs=1e-5)


def test_guidance_with_a_euclidean_distance_fn_equals_the_default():
    norm = Normalizer(np.array([0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), np.array([0.7, 0.7, 1.0, 1.0, 2.5, 2.5]))
    goal = np.array([[1.0, 1.0], [2.0, 3.0]])
    goal_n = torch.tensor((goal - norm.mean[2:4]) / norm.std[2:4], dtype=torch.float32)
    x = torch.randn(4, 3, 5, ROW)  # 2 goals x 2 replicas (MCG futures), 3 tokens of 5 steps
    g_world = torch.tensor(goal, dtype=torch.float32).repeat_interleave(2, 0)[:, None]
    euclid = lambda p: (p - g_world).pow(2).sum(-1).sqrt()  # noqa: E731
    for kw in ({}, {"vel_weight": 0.2, "reward_weight": 30.0}):
        a = goal_distance_guidance(goal_n, norm, **kw)(x, 0)
        b = goal_distance_guidance(goal_n, norm, distance_fn=euclid, **kw)(x, 0)
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-5)
    # a different distance changes the objective
    c = goal_distance_guidance(goal_n, norm, distance_fn=lambda p: 2 * euclid(p))(x, 0)
    assert (c < goal_distance_guidance(goal_n, norm)(x, 0)).all()


def test_distance_fn_maps_rows_to_their_goals(field):
    goals = cell_center(np.array([[1, 1], [3, 1]]))
    f = field.distance_fn(goals)
    p = torch.tensor(np.repeat(goals[:, None], 2, 0), dtype=torch.float32)  # (4, 1, 2): each goal's rows at it
    assert f(p).squeeze(1).numpy() == pytest.approx([0, 0, 0, 0], abs=0.1)
    q = torch.tensor(np.repeat(goals[::-1, None], 2, 0).copy(), dtype=torch.float32)  # rows at the other goal
    assert (f(q).numpy() > 4.1).all()
    with pytest.raises(ValueError, match="not a multiple of the 2 goals"):
        f(p[:3])


def test_bad_geodesic_inputs_fail_clearly(field):
    with pytest.raises(ConfigError, match="plan.distance"):
        ExecConfig(distance="manhattan")
    with pytest.raises(ConfigError, match="geodesic_cell"):
        ExecConfig(geodesic_cell=0.0)
    with pytest.raises(ConfigError, match="geodesic_outside_slope"):
        ExecConfig(geodesic_outside_slope=-1.0)
    with pytest.raises(ConfigError, match="plan.geodesic_walls"):
        ExecConfig(geodesic_walls="thick")
    with pytest.raises(ConfigError, match="plan.geodesic_walls"):
        GeodesicField.from_positions(free_space_positions(UMAZE, 10), walls="thick")
    with pytest.raises(DataError, match="finite"):
        GeodesicField.from_positions(np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match="not next to any position"):
        field.distances(np.array([[40.0, 40.0]]))
    assert dataclasses.replace(ExecConfig(), distance="data_geodesic").distance == "data_geodesic"


def test_field_png(field, tmp_path):
    from dforce.recipes.planning.maze2d import plot_distance_field

    out = plot_distance_field(field, cell_center(np.array([1, 1])), tmp_path / "field.png", maze="umaze", title="t")
    assert out.exists() and out.stat().st_size > 1000
