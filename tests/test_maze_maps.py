"""Your own maze: map formats, validation errors (one line naming row/column), references (random 0 / oracle 100,
cached, settled before the rollout), and `dforce plan eval` of a custom-map run end to end on a tiny map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dforce.cli import main as cli_main
from dforce.errors import ConfigError, DataError
from dforce.recipes.planning.maze2d import Maze2DBatchEnv, OraclePolicy, RandomPolicy, evaluate_policy, get_maze
from dforce.recipes.planning.maze2d.maps import maze_diameter, parse_maze_map, read_map_file, resolve_map
from dforce.recipes.planning.maze2d.references import maze_references, score_scale

TINY = ["#######", "#S...##", "#.##..#", "#...G.#", "#######"]
WALLS = np.array([[c == "#" for c in r] for r in TINY])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DFORCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_every_map_format_gives_the_same_maze(tmp_path):
    as_digits = ["".join("1" if c == "#" else "0" for c in r) for r in TINY]
    grid = [[1 if c == "#" else 0 for c in r] for r in TINY]
    (tmp_path / "m.txt").write_text("\n".join(TINY) + "\n")
    (tmp_path / "digits.txt").write_text("\n".join(as_digits))
    (tmp_path / "spaced.txt").write_text("\n".join(" ".join(r) for r in as_digits))  # numpy savetxt style
    (tmp_path / "m.json").write_text(json.dumps(grid))
    (tmp_path / "m.yaml").write_text("maze:\n" + "".join(f"  - {r!r}\n" for r in TINY))
    (tmp_path / "grid.yml").write_text("".join(f"- {r}\n" for r in grid))
    specs = ["/".join(TINY), ";".join(TINY), "\n".join(TINY), TINY, grid, np.array(grid)] + [
        str(tmp_path / f) for f in ("m.txt", "digits.txt", "spaced.txt", "m.json", "m.yaml", "grid.yml")]
    for spec in specs:
        task = get_maze(spec)
        np.testing.assert_array_equal(task.walls, WALLS, err_msg=str(spec))
    # marked cells: only the text forms carry them (G goal, S start)
    t = get_maze(str(tmp_path / "m.txt"))
    assert t.name == "m" and t.goal_cells == ((3, 4),) and t.start_cells == ((1, 1),) and t.goal_cell == (3, 4)
    assert get_maze(str(tmp_path / "m.json")).goal_cell == (1, 1)  # no G: the first free cell, as D4RL
    assert get_maze("/".join(TINY)).name.startswith("custom-")
    # the Python API takes 1 as a wall in a text map too, and '#'/'1' mixed
    np.testing.assert_array_equal(get_maze(["1111111", "1S...11", "1.##..#", "1...G.1", "#######"]).walls, WALLS)


def test_marked_cells_choose_starts_and_goals():
    task = get_maze(["#######", "#S..G.#", "#.###.#", "#G...S#", "#######"])
    env = Maze2DBatchEnv(task, 64, seed=0)
    env.reset()
    starts = {tuple(c) for c in np.floor(env.sim.pos + 0.2 + 0.5).astype(int)}
    goals = {tuple(c) for c in np.round(env.goals).astype(int)}
    assert starts == {(1, 1), (3, 5)} and goals == {(1, 4), (3, 1)}
    multi = Maze2DBatchEnv(task, 64, seed=0, multi_goal=True)
    multi.reset()
    assert len({tuple(c) for c in np.round(multi.goals).astype(int)}) > 2  # Multi2D: any free cell


@pytest.mark.parametrize("layout, message", [
    (["#####", "#..#", "#####"], r"row 1 has 4 cells, row 0 has 5"),
    (["#####", "#.X.#", "#####"], r"unknown tile 'X' at row 1, column 2"),
    (["#####", "#...#", "##.##"], r"free cell at row 2, column 2 is on the border"),
    (["#####", "....#", "#####"], r"free cell at row 1, column 0 is on the border"),
    (["#####", "#.#.#", "#####"], r"free cell at row 1, column 3 is not connected to the free cell at row 1, column 1"),
    (["#####", "#####", "#####"], r"no free cell"),
    (["#####", "#...#"], r"at least 3 rows"),
    ([[1, 1, 1], [1, 2, 1], [1, 1, 1]], r"cell 2 at row 1, column 1 is not 0 \(free\) or 1 \(wall\)"),
])
def test_validation_errors_name_row_and_column(layout, message):
    with pytest.raises(DataError, match=message):
        parse_maze_map(layout)
    with pytest.raises(DataError, match=message):
        get_maze(layout)


def test_map_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text("[[1, 1, 1], [1, 0")
    with pytest.raises(DataError, match=r"bad.json: not valid JSON"):
        read_map_file(tmp_path / "bad.json")
    (tmp_path / "keys.yaml").write_text("rows: 3\n")
    with pytest.raises(DataError, match=r"expected a list of rows, or a mapping with a 'maze' list"):
        read_map_file(tmp_path / "keys.yaml")
    (tmp_path / "ragged.txt").write_text("#####\n#.G.#\n####\n")
    with pytest.raises(DataError, match=r"ragged.txt: row 2 has 4 cells"):
        get_maze(str(tmp_path / "ragged.txt"))
    with pytest.raises(ConfigError, match=r"not one of 'umaze'.*an existing map file or an inline map"):
        get_maze("no_such_file.txt")
    assert resolve_map("umaze") is None  # a D4RL name is not a map


def test_custom_maze_defaults_follow_its_size():
    assert maze_diameter(WALLS) == 6  # (1, 1) -> (3, 5) round either side of the block
    assert get_maze(TINY).max_episode_steps == 300  # 42 steps per diameter cell, at least 300
    assert get_maze(TINY, 123).max_episode_steps == 123
    from dforce.recipes.planning.maze2d.layouts import default_dataset_steps
    from dforce.recipes.planning.recipe import plan_tokens_for

    assert default_dataset_steps(get_maze(TINY)) == 1_000_000 and default_dataset_steps(get_maze("large")) == 4_000_000
    assert [plan_tokens_for(get_maze(m)) for m in ("umaze", "medium", "large")] == [20, 30, 40]  # the benchmark's
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig, train_steps_for, with_plan_tokens

    assert [train_steps_for(get_maze(m)) for m in ("umaze", "medium", "large")] == [2500, 2500, 5000]
    loops = Path(__file__).resolve().parents[1] / "benchmarks" / "maps" / "loops.txt"
    assert train_steps_for(get_maze(str(loops))) == 5000  # diameter 14: larger than Medium's 11
    cfg = load_config(PlanningConfig, "planning_maze", ["data.maze=large"])
    assert cfg.plan.candidates == 4  # the best of 4 guided plans (docs/your_data.md)
    assert cfg.train.steps is None and cfg.data.horizon is None  # resolved when training starts
    cfg = with_plan_tokens(cfg)
    assert (cfg.train.steps, cfg.data.horizon, cfg.data.window) == (5000, 40, 42)


def test_references_are_computed_once_cached_and_used(cache):
    ref = maze_references(TINY, False, episodes=6, seed=1)
    assert ref["computed"] and ref["oracle"]["return_mean"] > ref["random"]["return_mean"]
    again = maze_references(TINY, False, episodes=6, seed=1)
    assert not again["computed"] and again["oracle"] == ref["oracle"] and again["cache"] == ref["cache"]
    scale = score_scale(TINY, False, episodes=6, seed=1)
    assert scale.kind == "maze" and (scale.zero, scale.hundred) == (ref["random"]["return_mean"], ref["oracle"]["return_mean"])
    # the same episodes (seed) give the oracle 100 and the random policy 0 exactly
    assert evaluate_policy(TINY, OraclePolicy(seed=1), 6, seed=1).mean == pytest.approx(100.0)
    rnd = evaluate_policy(TINY, RandomPolicy(1), 6, seed=1)
    assert rnd.mean == pytest.approx(0.0, abs=1e-9) and "maze references" in rnd.normalization
    # D4RL's mazes keep D4RL's constants unless asked; a custom maze has none
    assert score_scale("umaze").kind == "d4rl" and score_scale("umaze", normalization="maze", episodes=4).kind == "maze"
    with pytest.raises(ConfigError, match="no D4RL reference scores"):
        score_scale(TINY, normalization="d4rl")


TRAIN = ["data.num_steps=40000", "data.horizon=6", "data.context_tokens=1", "model.width=32", "model.depth=1",
         "diffusion.num_levels=50", "train.steps=40", "train.warmup_steps=5", "train.checkpoint_every=1000",
         "sampler.steps=4"]


def test_plan_train_and_eval_a_custom_map_end_to_end(tmp_path, cache, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(TINY) + "\n")
    run = tmp_path / "run"
    assert cli_main(["data", "maze2d", "--maze", str(path), "--steps", "40000", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["maze"] == "tiny"
    assert cli_main(["plan", "train", "--maze", str(path), "--out", str(run), "--quiet", "--threads", "1", *TRAIN]) == 0
    capsys.readouterr()
    assert (run / "maze" / "tiny.txt").read_text().splitlines() == TINY
    path.unlink()  # the run evaluates on its own copy of the map
    assert cli_main(["plan", "eval", str(run), "--episodes", "3", "--episode-steps", "150", "--quiet",
                     "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["maze"] == "tiny" and report["setting"] == "single" and report["episode_steps"] == 150
    assert report["normalization"]["kind"] == "maze" and report["normalization"]["episodes"] == 3
    for key in ("score_mean", "return_mean", "success", "steps_to_goal_mean"):
        assert key in report
    assert (run / "eval_tiny_single.png").stat().st_size > 1000 and (run / "eval_tiny_single.json").exists()
    assert list((cache / "maze2d_references").glob("tiny-*-single-n3-s0-T150-*.json"))


def test_cli_map_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "open.txt").write_text("#####\n#...#\n#.#..\n#####\n")
    assert cli_main(["data", "maze2d", "--maze", str(tmp_path / "open.txt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 2, column 4 is on the border" in err[0] and err[0].startswith("error:")
    assert cli_main(["plan", "train", "--maze", "#####/#.#.#/#####", "--out", str(tmp_path / "r")]) == 2
    assert "not connected" in capsys.readouterr().err


def test_yaml_config_takes_a_map(tmp_path):
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig

    (tmp_path / "c.yaml").write_text("data:\n  maze:\n" + "".join(f"    - '{r}'\n" for r in TINY))
    cfg = load_config(PlanningConfig, tmp_path / "c.yaml")
    assert get_maze(cfg.data.maze).start_cells == ((1, 1),) and cfg.data.plan_tokens == 20
    (tmp_path / "d.yaml").write_text("data:\n  maze: |\n" + "".join(f"    {r}\n" for r in TINY))
    assert get_maze(load_config(PlanningConfig, tmp_path / "d.yaml").data.maze).goal_cell == (3, 4)
