"""D4RL-style Maze2D offline datasets: continuous rollouts of the noisy waypoint controller.

As D4RL ``scripts/generation/generate_maze2d_datasets.py --noisy``: the controller drives the mass toward
a random goal (a free cell's point + U(-0.1, 0.1)); actions get N(0, 0.5^2) noise and are clipped; when the
controller declares the goal reached (within 0.1 of the target cell's point) or after ``max_episode_steps``
the step is flagged in ``timeouts`` and a new random goal is drawn *without* resetting the mass.

Difference (for speed): ``num_streams`` such continuous rollouts run side by side (batched MuJoCo) and are
concatenated stream after stream; each stream starts from a D4RL reset and its last step is flagged in
``timeouts``, so no goal segment crosses a stream boundary. D4RL used a single stream.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dforce._utils import cache_dir
from dforce.recipes.planning.maze2d.controller import D4RL_CONTROLLER, WaypointController
from dforce.recipes.planning.maze2d.env import PointMassBatch
from dforce.recipes.planning.maze2d.layouts import (
    default_dataset_steps,
    GOAL_RADIUS,
    RESET_POS_NOISE,
    RESET_VEL_STD,
    MazeTask,
    cell_point,
    get_maze,
)
from dforce.errors import ConfigError, DataError

DATASET_VERSION = 1  # bump when the generator changes (part of the cache file name)
KEYS = ("observations", "actions", "goals", "rewards", "timeouts", "terminals")


@dataclass(frozen=True)
class Maze2DDataConfig:
    action_noise: float = 0.5  # D4RL generate_maze2d_datasets.py --noisy: act + N(0, 0.5^2)
    num_streams: int = 64  # parallel continuous rollouts (D4RL: 1); see module docstring


def _random_goals(task: MazeTask, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """D4RL ``set_target()``: a random free cell and its point + U(-0.1, 0.1). Returns (cells, goals)."""
    cells = task.free_cells[rng.integers(len(task.free_cells), size=n)]
    return cells, cell_point(cells) + rng.uniform(-RESET_POS_NOISE, RESET_POS_NOISE, size=(n, 2))


def generate_maze2d_dataset(maze, num_steps: int | None = None, seed: int = 0,
                            config: Maze2DDataConfig = Maze2DDataConfig(), progress: bool = True) -> dict[str, np.ndarray]:
    """Generate a dataset; returns arrays observations (N, 4) [x, y, vx, vy], actions (N, 2), goals (N, 2),
    rewards (N,) (sparse, of the next state), timeouts (N,) bool (end of a goal segment), terminals (N,)
    bool (all False: the task never terminates). D4RL frame; float32 like D4RL's hdf5 files."""
    task = get_maze(maze)
    num_steps = int(num_steps or default_dataset_steps(task))
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    S = max(1, min(config.num_streams, num_steps // 1000 or 1))  # streams of >= 1000 steps
    T = -(-num_steps // S)  # steps per stream
    rng = np.random.default_rng(seed)
    sim = PointMassBatch(task, S)
    ctrl = WaypointController(task, S, rng, D4RL_CONTROLLER)
    start_cells = task.free_cells[rng.integers(len(task.free_cells), size=S)]  # D4RL reset_model
    sim.set(cell_point(start_cells) + rng.uniform(-RESET_POS_NOISE, RESET_POS_NOISE, (S, 2)),
            RESET_VEL_STD * rng.standard_normal((S, 2)))
    all_ = np.ones(S, dtype=bool)
    cells, goals = _random_goals(task, rng, S)
    ctrl.set_target(all_, sim.pos, cells, cell_point(cells))  # D4RL aims at the goal cell's integer point
    ts = np.zeros(S, dtype=np.int64)

    obs = np.empty((T, S, 4), np.float32)
    act = np.empty((T, S, 2), np.float32)
    goal = np.empty((T, S, 2), np.float32)
    rew = np.empty((T, S), np.float32)
    tout = np.empty((T, S), bool)
    try:
        from tqdm import tqdm

        bar = tqdm(total=T * S, desc=f"maze2d-{task.name}", unit="step", unit_scale=True, disable=not progress)
    except ImportError:  # tqdm is optional
        bar = None
    for t in range(T):
        pos, vel = sim.pos, sim.vel
        a, solved = ctrl.act(pos, vel)
        a = np.clip(a + config.action_noise * rng.standard_normal(a.shape), -1.0, 1.0)
        done = solved | (ts >= task.max_episode_steps)
        obs[t, :, :2], obs[t, :, 2:] = pos, vel
        act[t], goal[t], tout[t] = a, goals, done
        sim.step(a)
        rew[t] = np.linalg.norm(sim.pos - goals, axis=1) <= GOAL_RADIUS
        ts += 1
        if done.any():
            cells, new_goals = _random_goals(task, rng, int(done.sum()))
            goals[done] = new_goals
            ctrl.set_target(done, sim.pos, cells, cell_point(cells))
            ts[done] = 0
        if bar is not None and (t % 200 == 0 or t == T - 1):
            bar.update((t + 1) * S - bar.n)
    if bar is not None:
        bar.close()
    tout[-1] = True  # end of every stream
    flat = lambda x: np.swapaxes(x, 0, 1).reshape(S * T, *x.shape[2:])[:num_steps]  # stream after stream
    data = {"observations": flat(obs), "actions": flat(act), "goals": flat(goal), "rewards": flat(rew),
            "timeouts": flat(tout), "terminals": np.zeros(num_steps, bool)}
    data["timeouts"][-1] = True
    return data


def dataset_path(maze, num_steps: int | None = None, seed: int = 0, config: Maze2DDataConfig = Maze2DDataConfig()) -> Path:
    task = get_maze(maze)
    num_steps = int(num_steps or default_dataset_steps(task))
    name = task.name
    if not task.is_d4rl:  # the walls decide the data (a map's G/S cells and its name do not)
        name += "-" + hashlib.sha1(np.packbits(task.walls).tobytes() + str(task.walls.shape).encode()).hexdigest()[:8]
    tag = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:6]
    return cache_dir("maze2d") / f"maze2d-{name}-n{num_steps}-s{seed}-v{DATASET_VERSION}-{tag}.npz"


def load_maze2d_npz(path: Path | str) -> dict[str, np.ndarray]:
    """Load and validate a dataset file (DataError on a missing key, bad shape or non-finite values)."""
    try:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Maze2D dataset ({e})") from None
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise DataError(f"{path}: Maze2D dataset lacks {', '.join(missing)}")
    n = len(data["observations"])
    shapes = {"observations": (n, 4), "actions": (n, 2), "goals": (n, 2), "rewards": (n,), "timeouts": (n,), "terminals": (n,)}
    for k, s in shapes.items():
        if data[k].shape != s:
            raise DataError(f"{path}: {k} has shape {data[k].shape}, expected {s}")
    if not all(np.isfinite(data[k]).all() for k in ("observations", "actions", "goals")):
        raise DataError(f"{path}: Maze2D dataset contains NaN/inf")
    return data


def load_or_generate_maze2d(maze, num_steps: int | None = None, seed: int = 0, progress: bool = True,
                            config: Maze2DDataConfig = Maze2DDataConfig()) -> dict[str, np.ndarray]:
    """The cached dataset under ``cache_dir('maze2d')``, generated (and saved) on first use.

    Default sizes: 1M / 2M / 4M steps for umaze / medium / large (D4RL maze2d-*-v1)."""
    path = dataset_path(maze, num_steps, seed, config)
    if path.exists():
        return load_maze2d_npz(path)
    t0 = time.time()
    data = generate_maze2d_dataset(maze, num_steps, seed, config, progress)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    if progress:
        print(f"saved {path} ({len(data['observations'])} steps, {time.time() - t0:.0f} s)")
    return data


def dataset_stats(data: dict[str, np.ndarray]) -> dict[str, object]:
    """Summary statistics (for the report / CLI): sizes, segment lengths, per-dim mean/std/min/max."""
    seg_ends = np.flatnonzero(data["timeouts"])
    seg_len = np.diff(np.concatenate([[-1], seg_ends]))
    out: dict[str, object] = {"steps": len(data["observations"]), "segments": len(seg_ends),
                              "segment_len_mean": float(seg_len.mean()), "reward_mean": float(data["rewards"].mean())}
    for k, names in (("observations", ("x", "y", "vx", "vy")), ("actions", ("ax", "ay"))):
        x = data[k].astype(np.float64)
        for i, n in enumerate(names):
            out[n] = dict(mean=round(float(x[:, i].mean()), 3), std=round(float(x[:, i].std()), 3),
                          min=round(float(x[:, i].min()), 3), max=round(float(x[:, i].max()), 3))
    out["speed_mean"] = float(np.linalg.norm(data["observations"][:, 2:], axis=1).mean())
    out["action_saturated_frac"] = float((np.abs(data["actions"]) >= 1.0).mean())
    return out
