"""Maze2D environment, controller and dataset generator (fast: a few seconds in total)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("gymnasium_robotics")

from benchutil import load_benchmark  # noqa: E402

from dforce.recipes.planning.maze2d import (  # noqa: E402
    GOAL_RADIUS,
    Maze2DBatchEnv,
    Maze2DDataConfig,
    OraclePolicy,
    PointMassBatch,
    RandomPolicy,
    d4rl_to_gym_pos,
    d4rl_to_gym_vec,
    episode_return,
    evaluate_policy,
    generate_maze2d_dataset,
    get_maze,
    gym_to_d4rl_pos,
    gym_to_d4rl_vec,
    load_or_generate_maze2d,
    normalized_score,
    plot_maze_paths,
    pos_to_cell,
    q_iteration,
)
from dforce.errors import ConfigError, DataError  # noqa: E402


def test_d4rl_goal_cells_and_episode_lengths():
    # D4RL maze_model.py 'G' tiles and pointmaze/__init__.py max_episode_steps for maze2d-*-v1
    expected = {"umaze": ((1, 1), 300, (5, 5)), "medium": ((6, 6), 600, (8, 8)), "large": ((7, 9), 800, (9, 12))}
    for name, (goal, steps, shape) in expected.items():
        task = get_maze(name)
        assert task.goal_cell == goal and task.max_episode_steps == steps and task.shape == shape
        assert not task.walls[goal]
    assert get_maze("maze2d-large-v1").name == "large"


def test_walls_match_gymnasium_robotics_maps():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from gymnasium_robotics.envs.maze import maps
    for name, gm in (("umaze", maps.U_MAZE), ("medium", maps.MEDIUM_MAZE), ("large", maps.LARGE_MAZE)):
        np.testing.assert_array_equal(get_maze(name).walls, np.array(gm, dtype=bool))


def test_reward_radius():
    env = Maze2DBatchEnv("umaze", 3, seed=0)
    g = get_maze("umaze").goal
    # start at rest 0.45 / 0.55 / 0.0 from the goal along the free corridor (+column); one step of
    # zero force moves nothing, so the reward is decided by the start distance alone
    env.reset(start=g + np.array([[0, 0.45], [0, 0.55], [0, 0.0]]))
    _, r, done, info = env.step(np.zeros((3, 2)))
    np.testing.assert_array_equal(r, [1.0, 0.0, 1.0])
    assert GOAL_RADIUS == 0.5 and not done.any() and info.episode_return.tolist() == [1, 0, 1]


def test_normalized_score_known_returns():
    np.testing.assert_allclose(normalized_score("umaze", [23.85, 161.86]), [0.0, 100.0])
    np.testing.assert_allclose(normalized_score("medium", 13.13 + 0.5 * (277.39 - 13.13)), 50.0)
    np.testing.assert_allclose(normalized_score("large", 273.99), 100.0)
    with pytest.raises(ConfigError):
        normalized_score(["#####", "#O#O#", "#OOO#", "#####"], 10.0)
    # episode_return inverts it (the unit the reference code logs): medium R = 149.4 is a score of 51.6
    np.testing.assert_allclose(episode_return("medium", normalized_score("medium", [0.0, 149.4, 600.0])),
                               [0.0, 149.4, 600.0])
    np.testing.assert_allclose(normalized_score("medium", 149.4), 51.56, atol=0.01)
    with pytest.raises(ConfigError, match="episode_return"):
        episode_return(["#####", "#O#O#", "#OOO#", "#####"], 10.0)


def test_custom_maps_and_rejections():
    t = get_maze(["#####", "#OOO#", "#O#G#", "#####"])
    assert t.name == "custom" and t.goal_cell == (2, 3) and t.shape == (4, 5)
    t2 = get_maze([[1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    assert t2.goal_cell == (1, 1)
    with pytest.raises(ConfigError, match="maze='huge'"):
        get_maze("huge")
    bad = {
        "row 1 has": ["#####", "#OO#", "#####"],
        "unknown tile": ["#####", "#OXO#", "#####"],
        "border": ["#####", "OOOO#", "#####"],
        "not all connected": ["#####", "#O#O#", "#####"],
        "more than one 'G'": ["#####", "#GOG#", "#####"],
        "0 \\(free\\) and 1": [[1, 1, 1], [1, 2, 1], [1, 1, 1]],
    }
    for msg, layout in bad.items():
        with pytest.raises(DataError, match=msg):
            get_maze(layout)


def test_frames_round_trip():
    rng = np.random.default_rng(0)
    p, v = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(gym_to_d4rl_pos(d4rl_to_gym_pos(p, (9, 12)), (9, 12)), p, atol=1e-12)
    np.testing.assert_allclose(gym_to_d4rl_vec(d4rl_to_gym_vec(v)), v, atol=1e-12)
    # D4RL: the integer point (i, j) lies 0.2 past the centre of cell (i, j)
    np.testing.assert_array_equal(pos_to_cell(np.array([[1.0, 1.0], [0.31, 1.29], [1.31, 0.29]])), [[1, 1], [1, 1], [2, 0]])


def test_batch_env_matches_gym_env():
    """Same (wall-bumping) action sequence through gymnasium-robotics PointMaze and our batch stepping.
    Both run the same MjModel with the same per-step clipping, so agreement is to float round-off."""
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)
    task = get_maze("umaze")
    env = gym.make("PointMaze_UMaze-v3", continuing_task=True, max_episode_steps=10_000).unwrapped
    obs, _ = env.reset(seed=0, options={"reset_cell": np.array([1, 1]), "goal_cell": np.array([3, 1])})
    rng = np.random.default_rng(0)
    actions = np.clip(rng.normal(0.3, 1.0, (300, 2)) + [0.5, 0.0], -1.5, 1.5)  # out-of-range too
    sim = PointMassBatch(task, 2)  # two identical copies: batching must not mix them
    pos0 = gym_to_d4rl_pos(obs["observation"][:2], task.shape)
    vel0 = gym_to_d4rl_vec(obs["observation"][2:])
    sim.set(np.stack([pos0, pos0]), np.stack([vel0, vel0]))
    cells = set()
    for a in actions:
        o = env.step(d4rl_to_gym_vec(a))[0]["observation"]
        sim.step(np.stack([a, a]))
        ref = np.concatenate([gym_to_d4rl_pos(o[:2], task.shape), gym_to_d4rl_vec(o[2:])])
        for k in range(2):
            np.testing.assert_allclose(np.concatenate([sim.pos[k], sim.vel[k]]), ref, atol=1e-8)
        cells.add(tuple(pos_to_cell(sim.pos[0])))
    assert len(cells) >= 3 and all(not task.walls[c] for c in cells)  # it moved, and never into a wall


def test_q_iteration_paths():
    task = get_maze("umaze")
    free = [tuple(c) for c in task.free_cells]
    nxt = q_iteration(task.walls)
    s, t = free.index((3, 1)), free.index((1, 1))
    path = [free[s]]
    while s != t:
        s = nxt[t, s]
        path.append(free[s])
    assert path == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]  # the only route round the U
    assert all(nxt[i, i] == i for i in range(len(free)))


def test_dataset_determinism_and_validity(tmp_path, monkeypatch):
    cfg = Maze2DDataConfig(num_streams=4)
    a = generate_maze2d_dataset("umaze", 4000, seed=3, config=cfg, progress=False)
    b = generate_maze2d_dataset("umaze", 4000, seed=3, config=cfg, progress=False)
    c = generate_maze2d_dataset("umaze", 4000, seed=4, config=cfg, progress=False)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["observations"], c["observations"])
    assert a["observations"].shape == (4000, 4) and a["actions"].shape == (4000, 2)
    assert np.abs(a["actions"]).max() <= 1.0
    task = get_maze("umaze")
    cells = pos_to_cell(a["observations"][:, :2])
    assert not task.walls[cells[:, 0], cells[:, 1]].any()
    # ball radius 0.1 against walls of cell-size 1: centres stay >= ~0.1 inside the free area, which in
    # the D4RL frame of the U-maze is [0.4, 3.2]^2 (soft contacts allow a few mm of penetration)
    assert a["observations"][:, :2].min() > 0.38 and a["observations"][:, :2].max() < 3.22
    assert np.abs(a["observations"][:, 2:]).max() < 5.3  # |v| clipped to 5 before each 0.01 s step
    assert a["timeouts"].sum() >= 20 and not a["terminals"].any()  # goals get reached: ~80 steps each
    # cache round trip
    monkeypatch.setenv("DFORCE_CACHE", str(tmp_path))
    d1 = load_or_generate_maze2d("umaze", 2000, seed=1, progress=False)
    d2 = load_or_generate_maze2d("umaze", 2000, seed=1, progress=False)
    assert list(tmp_path.glob("maze2d/*.npz")) and np.array_equal(d1["actions"], d2["actions"])


def test_oracle_beats_random_on_umaze():
    """100 short U-Maze episodes: the oracle reaches the goal almost always (>= 95%) and random rarely.
    Random succeeds only from starts next to the goal (~30% of starts are in the goal's 2 cells)."""
    kw = dict(num_episodes=100, seed=0, max_episode_steps=150)
    oracle = evaluate_policy("umaze", OraclePolicy(), **kw)
    rand = evaluate_policy("umaze", RandomPolicy(0), **kw)
    assert oracle.success.mean() >= 0.95 and rand.success.mean() <= 0.5
    assert oracle.returns.mean() > 3 * rand.returns.mean()
    multi = evaluate_policy("medium", OraclePolicy(), num_episodes=64, seed=1, multi_goal=True, max_episode_steps=300)
    assert multi.success.mean() >= 0.95


def test_batch_env_api_and_plot(tmp_path):
    env = Maze2DBatchEnv("medium", 5, seed=0, multi_goal=True, max_episode_steps=4, obs_noise=0.1)
    obs = env.reset()
    assert obs.shape == (5, 4) and env.goals.shape == (5, 2)
    assert len({tuple(g) for g in np.round(env.goals)}) > 1  # random goals in Multi2D
    for t in range(4):
        obs, r, done, info = env.step(np.zeros((5, 2)))
    assert done.all() and r.shape == (5,) and not np.allclose(obs, info.true_obs)
    with pytest.raises(ConfigError):
        env.step(np.zeros((5, 2)))
    with pytest.raises(ConfigError):
        Maze2DBatchEnv("umaze", 2).step(np.zeros((3, 2)))
    png = plot_maze_paths("medium", {"executed": info.true_obs[:, :2]}, tmp_path / "p.png", goal=env.goals[0])
    assert png.stat().st_size > 1000


def test_benchmark_table_repeats_scores_as_raw_returns(tmp_path):
    """benchmarks/maze2d.py --merge renders the raw-return table from the normalized summary (exact linear map)."""
    bench = load_benchmark("maze2d")
    part = tmp_path / "part"
    part.mkdir()
    summary = {"single/medium": {"df": {"score_mean": 50.0, "score_se": 10.0, "episodes": 4}}}
    (part / "maze2d.json").write_text(json.dumps({"summary": summary, "training": {}, "command": "x",
                                                  "settings": {"episodes": 4}}))
    assert bench.main(["--merge", str(part), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "maze2d.md").read_text()
    raw_rows = [line for line in md.splitlines() if line.startswith("| single/medium")]
    assert len(raw_rows) == 2 and "50.0 ± 10.0 (n=4)" in raw_rows[0]
    # medium: R = 13.13 + 0.5 (277.39 - 13.13) = 145.26, se 10 x 2.6426; paper 149.4 raw = 51.6 normalized
    assert "145.3 ± 26.4" in raw_rows[1] and raw_rows[1].rstrip(" |").endswith("51.6")


def test_benchmark_merge_takes_only_the_named_mazes_of_a_folder(tmp_path):
    """--merge FOLDER=umaze keeps that folder's U-Maze rows, commands and settings, and drops its other mazes."""
    bench = load_benchmark("maze2d")
    row = lambda score, n: {"df": {"score_mean": score, "score_se": 1.0, "episodes": n}}  # noqa: E731
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, summary, command, settings in (
        (old, {"single/umaze": row(120.0, 100), "single/medium": row(90.0, 50)},
         "python benchmarks/maze2d.py --mazes umaze --quiet ; python benchmarks/maze2d.py --mazes medium --episodes 50",
         [{"episodes": 100}, {"episodes": 50}]),
        (new, {"single/medium": row(140.0, 100)}, "python benchmarks/maze2d.py --mazes medium", {"episodes": 100}),
    ):
        folder.mkdir()
        for maze in {k.split("/")[1] for k in summary}:
            (folder / f"maze2d_{maze}.png").write_bytes(f"{folder.name} {maze}".encode())
        (folder / "maze2d.json").write_text(json.dumps({"summary": summary, "command": command, "settings": settings,
                                                        "training": {k.split("/")[1]: {} for k in summary}}))
    assert bench.main(["--merge", f"{old}=umaze", str(new), "--out", str(tmp_path / "out")]) == 0
    merged = json.loads((tmp_path / "out" / "maze2d.json").read_text())
    assert merged["summary"]["single/umaze"]["df"]["score_mean"] == 120.0
    assert merged["summary"]["single/medium"]["df"]["episodes"] == 100  # the new run's, not the old 50
    assert "--episodes 50" not in merged["command"] and "--mazes umaze" in merged["command"]
    assert merged["settings"] == {"episodes": 100}
    assert sorted(merged["training"]) == ["medium", "umaze"]
    pngs = [(tmp_path / "out" / f"maze2d_{m}.png").read_text() for m in ("umaze", "medium")]
    assert pngs == ["old umaze", "new medium"]
    with pytest.raises(SystemExit, match="does not exist"):
        bench.main(["--merge", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="mediun"):
        bench.main(["--merge", f"{old}=mediun", "--out", str(tmp_path / "out")])


def test_benchmark_merge_combines_one_mazes_methods_from_two_folders(tmp_path):
    """The DF rows of a maze from one run and its Diffuser-style rows from another merge per method and planner."""
    bench = load_benchmark("maze2d")
    for name, method, kind in (("a", "df", "df"), ("b", "diffuser_actions", "diffuser")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "maze2d.json").write_text(json.dumps({
            "summary": {"single/large": {method: {"score_mean": 100.0, "score_se": 1.0, "episodes": 100}}},
            "command": f"python benchmarks/maze2d.py --mazes large --methods {method}", "settings": {"episodes": 100},
            "training": {"large": {kind: {"run_dir": f"runs/large_{kind}", "seconds": 1.0}}}}))
    assert bench.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    merged = json.loads((tmp_path / "out" / "maze2d.json").read_text())
    assert sorted(merged["summary"]["single/large"]) == ["df", "diffuser_actions"]
    assert sorted(merged["training"]["large"]) == ["df", "diffuser"]


def test_benchmark_train_only_reuses_trained_planners(tmp_path, capsys):
    """--train-only stops after the planners (a finished run is reused, not retrained) and evaluates nothing."""
    bench = load_benchmark("maze2d")
    for kind in ("df", "diffuser"):
        run = tmp_path / f"umaze_{kind}"
        run.mkdir()
        (run / "ema.safetensors").write_bytes(b"")
        (run / "train_time.json").write_text(json.dumps({"seconds": 12.0, "steps": 2500}))
    out = tmp_path / "out"
    assert bench.main(["--mazes", "umaze", "--train-only", "--runs", str(tmp_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("(12 s of training)") == 2 and not out.exists()


def test_benchmark_trains_only_the_planners_its_methods_use(tmp_path, monkeypatch):
    """--methods df_mcg df trains no Diffuser-style planner; random / oracle alone train none."""
    bench = load_benchmark("maze2d")
    trained = []

    class Stop(Exception):
        pass

    def fake_get_run(maze, kind, args):
        trained.append(kind)
        return tmp_path / f"{maze}_{kind}", 1.0

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(bench, "get_run", fake_get_run)
    monkeypatch.setattr(bench, "planner_for", stop)
    with pytest.raises(Stop):
        bench.main(["--mazes", "umaze", "--settings", "single", "--methods", "df_mcg", "df", "--out", str(tmp_path / "a")])
    assert trained == ["df"]
    trained.clear()
    assert bench.main(["--mazes", "umaze", "--settings", "single", "--methods", "random", "oracle", "--episodes", "4",
                       "--quiet", "--out", str(tmp_path / "b")]) == 0
    assert trained == []
    results = json.loads((tmp_path / "b" / "maze2d.json").read_text())
    assert results["training"] == {"umaze": {}} and set(results["summary"]["single/umaze"]) == {"random", "oracle"}
    oracle = results["summary"]["single/umaze"]["oracle"]
    assert len(oracle["episode_scores"]) == 4 and np.mean(oracle["episode_scores"]) == pytest.approx(oracle["score_mean"], abs=0.01)


def test_benchmark_pairs_mcg_and_plain_df_by_episode(tmp_path):
    """The paired table: per-episode differences of df_mcg and df (same starts and goals), only with both."""
    bench = load_benchmark("maze2d")
    row = {"df_mcg": {"episode_scores": [10.0, 20.0, 30.0, 5.0]}, "df": {"episode_scores": [8.0, 20.0, 25.0, 9.0]}}
    d = bench.paired_difference(row)
    diffs = np.array([2.0, 0.0, 5.0, -4.0])
    assert d["mean"] == pytest.approx(diffs.mean()) and d["se"] == pytest.approx(diffs.std(ddof=1) / 2)
    assert (d["ahead"], d["behind"], d["n"]) == (2, 1, 4)
    assert bench.paired_difference({"df": row["df"]}) is None
    assert bench.paired_difference({"df_mcg": row["df_mcg"], "df": {"episode_scores": [1.0]}}) is None
    for m in row:
        row[m].update(score_mean=float(np.mean(row[m]["episode_scores"])), score_se=1.0, episodes=4)
    results = {"summary": {"single/umaze": row}, "training": {}, "command": "x", "settings": {}}
    bench.write(results, bench.argparse.Namespace(out=str(tmp_path)))
    assert "| single/umaze | +0.8 ± 1.9 | 2 | 1 | 4 |" in (tmp_path / "maze2d.md").read_text()


def test_mcg_pool_pairs_within_a_seed_and_pools_across_seeds(tmp_path):
    """maze2d_mcg_pool.py: episodes pair within a folder (one seed), the pool concatenates the folders' differences
    (optionally without each cell's first run); bad folders fail with a message."""
    pool = load_benchmark("maze2d_mcg_pool")

    def folder(name, seed, a, b, cell="multi/medium"):
        d = tmp_path / name
        d.mkdir()
        cmd = f"python benchmarks/maze2d.py --methods df_mcg df --mcg 8 --seed {seed}"
        row = {"df_mcg": {"episode_scores": a, "score_mean": float(np.mean(a))},
               "df": {"episode_scores": b, "score_mean": float(np.mean(b))}}
        (d / "maze2d.json").write_text(json.dumps({"summary": {cell: row}, "command": cmd, "settings": {}}))
        return str(d)

    f0 = folder("s0", 0, [10.0, 20.0, 30.0], [8.0, 20.0, 25.0])  # differences 2, 0, 5
    f1 = folder("s1", 1, [1.0, 2.0], [4.0, 2.5])  # differences -3, -0.5
    res = pool.pool([f0, f1])
    runs = res["cells"]["multi/medium"]["runs"]
    assert [(r["seed"], r["mcg"], r["n"]) for r in runs] == [(0, [8], 3), (1, [8], 2)]
    d = np.array([2.0, 0.0, 5.0, -3.0, -0.5])
    p = res["cells"]["multi/medium"]["pooled"]
    assert p["mean"] == pytest.approx(d.mean(), abs=0.01) and p["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(5), abs=0.01)
    assert (p["ahead"], p["behind"], p["n"]) == (2, 2, 5) and res["all_cells"] == p
    confirm = pool.pool([f0, f1], exclude_first=True)["cells"]["multi/medium"]["pooled"]
    assert confirm["n"] == 2 and confirm["mean"] == pytest.approx(-1.75)
    assert pool.main([f0, f1, "--out", str(tmp_path / "out" / "pooled")]) == 0
    assert "**+0.7 ± 1.3**" in (tmp_path / "out" / "pooled.md").read_text()
    with pytest.raises(SystemExit, match="does not exist"):
        pool.pool([str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="no cell with both"):
        pool.pool([str(_only_df(tmp_path))])
    with pytest.raises(SystemExit, match="2 df_mcg episodes against 3 df"):
        pool.pool([folder("uneven", 0, [1.0, 2.0], [1.0, 2.0, 3.0])])


def _only_df(tmp_path):
    d = tmp_path / "only_df"
    d.mkdir()
    (d / "maze2d.json").write_text(json.dumps({"summary": {"single/umaze": {"df": {"episode_scores": [1.0]}}},
                                               "command": "x", "settings": {}}))
    return d


def test_benchmark_guidance_per_maze_is_a_valid_config():
    """benchmarks/maze2d.py's per-maze guidance overrides load on the preset; every maze scores the positions the
    forces lead to, Medium and Large with the data-geodesic distance, U-Maze with the Euclidean one."""
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig

    root = Path(__file__).parents[1]
    bench = load_benchmark("maze2d")
    assert sorted(bench.GUIDANCE) == sorted(bench.TRAIN_STEPS) == sorted(bench.SAMPLER) == ["large", "medium", "umaze"]
    for maze, overrides in bench.GUIDANCE.items():
        # on top of a run trained with the earlier guidance (planned positions, ρ = 10), as the benchmark loads it
        base = ["plan.reward_positions=planned", "plan.reward_weight=10", "plan.integration_window=0"]
        cfg = load_config(PlanningConfig, "planning_umaze_small",
                          [f"data.maze={maze}", *base, *overrides, *bench.SAMPLER[maze]])
        assert cfg.sampler.schedule == "pyramid" and cfg.sampler.uncertainty_scale == (1.0 if maze == "umaze" else 0.25)
        assert cfg.plan.reward_positions == cfg.plan.guidance_positions == "actions"
        assert cfg.plan.distance == ("euclidean" if maze == "umaze" else "data_geodesic")
        assert cfg.plan.reward_weight == 30.0
        assert cfg.plan.integration_window == 50


def test_diagnose_goal_behind_wall():
    """maze2d_diagnose.py's local-optimum check: is there a wall on the straight line from a position to its goal?"""
    diag = load_benchmark("maze2d_diagnose")
    # U-Maze: goal cell (1, 1); cell centres are at (i - 0.2, j - 0.2) in the D4RL frame
    goal = np.array([[0.8, 0.8], [0.8, 0.8], [0.8, 0.8]])
    pos = np.array([[2.8, 0.8],   # cell (3, 1): straight below the goal, wall cell (2, 1) in between
                    [0.8, 2.8],   # cell (1, 3): same corridor as the goal
                    [2.8, 2.8]])  # cell (3, 3): the line to the goal crosses wall cell (2, 2)
    assert diag.goal_behind_wall("umaze", pos, goal).tolist() == [True, False, True]


def test_diagnose_mcg_effect_measures_how_much_mcg_moves_the_gradient(monkeypatch):
    """maze2d_diagnose.py --mcg-effect: on each guided call with N > 1 it compares MCG's gradient on the kept tokens
    with plain guidance's (computed beside it) and measures the spread of the futures; zero change where nothing is
    redrawn, a change where the future is redrawn, and the call's result is MCG's own."""
    import torch

    import dforce.sampler as sampler
    from dforce.diffusion import NoiseSchedule
    from dforce.guidance import MCGConfig, goal_guidance
    from dforce.models import ModelConfig, build_model

    diag = load_benchmark("maze2d_diagnose")
    monkeypatch.setattr(sampler, "guided_prediction", sampler.guided_prediction)  # restored after the test
    real = sampler.guided_prediction
    effect = diag.MCGEffect()
    assert sampler.guided_prediction is effect
    K = 100
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = build_model(ModelConfig(width=16, depth=1), (2,), K).eval()
    for p in model.parameters():  # the zero-initialized output layers: let the future depend on the present
        if p.abs().max() == 0:
            p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    fn = lambda xr, kr, n: model(xr, kr)  # noqa: E731
    x, x0_prev = torch.randn(2, 4, 2), torch.randn(2, 4, 2)
    log_c = goal_guidance(torch.zeros(2, 2), [0, 1], token=-1)  # the last token: the present's gradient comes through it
    rest = lambda g: (None, torch.Generator().manual_seed(g))  # noqa: E731  clip_x0, generator (the sampler's order)
    mcg = MCGConfig(samples=4, redraw_above=0.9, future_grad="own")
    present = torch.tensor([[K // 5, K // 4, K // 2, K // 2]] * 2)  # nothing above 0.9 K: nothing redrawn
    future = torch.tensor([[K // 5, K // 4, K, K]] * 2)  # the last two redrawn
    _, g0 = effect(fn, sch, x, present, x0_prev, log_c, 0, mcg, *rest(0))
    _, g1 = effect(fn, sch, x, future, x0_prev, log_c, 0, mcg, *rest(0))
    torch.testing.assert_close(g1, real(fn, sch, x, future, x0_prev, log_c, 0, mcg, *rest(0))[1])
    s = effect.summary()
    assert s["mcg_calls"] == 2 and effect.rel[0] < 1e-5 < effect.rel[1]
    assert s["calls_changed_over_1pct"] == 0.5 and s["redrawn_tokens_per_row_median"] == 2.0
    assert len(effect.spread) == 1 and effect.spread[0] > 0
