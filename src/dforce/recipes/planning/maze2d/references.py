"""What a Maze2D score is normalized against: D4RL's constants, or references computed on the maze itself.

D4RL's normalized score ``100 (R − ref_min) / (ref_max − ref_min)`` exists for its three mazes only. A custom maze has
no such constants, so its scores are normalized against two policies run on **the same episodes** (same seed: the
same starts and goals) by the same command: the uniform-random policy scores 0 and the waypoint oracle
(:data:`~.controller.ORACLE_CONTROLLER`, Q-iteration over the map's cells) scores 100:

    score = 100 (R − R_random) / (R_oracle − R_random)

with ``R_*`` the mean raw return over those episodes. The references are cached per maze (walls and marked cells),
setting (single goal or Multi2D), episode count, seed and episode length under ``cache_dir('maze2d_references')``;
they take seconds (numpy + batched MuJoCo). :func:`score_scale` is what every evaluation calls *before* its rollout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from dforce._utils import cache_dir, check_choice
from dforce.errors import ConfigError
from dforce.recipes.planning.maze2d.layouts import MazeTask, get_maze

NORMALIZATIONS = ("auto", "d4rl", "maze")  # auto: d4rl on D4RL's mazes, maze (random = 0, oracle = 100) elsewhere
REFERENCES_VERSION = 1  # bump when the reference policies or the environment change (part of the cache key)


@dataclass(frozen=True)
class ScoreScale:
    """A linear score: ``100 (R − zero) / (hundred − zero)`` for raw returns R.

    kind: ``d4rl`` (D4RL's ref_min / ref_max) or ``maze`` (mean returns of the random and oracle policies on the same
    episodes). ``detail``: where the two numbers come from (JSON-ready)."""

    kind: str
    zero: float
    hundred: float
    detail: dict = field(default_factory=dict)

    def score(self, returns: float | np.ndarray) -> np.ndarray:
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.zero) / (self.hundred - self.zero)

    def describe(self) -> str:
        if self.kind == "d4rl":
            return f"d4rl (ref_min {self.zero:g} = 0, ref_max {self.hundred:g} = 100)"
        d = self.detail
        return (f"maze references (random policy {self.zero:.2f} = 0, waypoint oracle {self.hundred:.2f} = 100; mean "
                f"raw returns of the same {d.get('episodes')} episodes, seed {d.get('seed')})")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "zero_return": self.zero, "hundred_return": self.hundred, "text": self.describe(),
                **self.detail}


def _cache_file(task: MazeTask, multi_goal: bool, episodes: int, seed: int):
    parsed = task.parsed_map()
    setting = "multi" if multi_goal else "single"
    name = f"{task.name}-{parsed.digest()}-{setting}-n{episodes}-s{seed}-T{task.max_episode_steps}-v{REFERENCES_VERSION}"
    return cache_dir("maze2d_references") / f"{name}.json"


def maze_references(maze, multi_goal: bool = False, episodes: int = 100, seed: int = 0,
                    max_episode_steps: int | None = None) -> dict:
    """Mean raw returns (and success rates) of the random and the oracle policy on ``episodes`` episodes of ``maze``
    at ``seed``: ``{"random": {...}, "oracle": {...}, "episodes", "seed", "episode_steps", "cache", "computed"}``.
    Cached (a second call reads the file: ``computed`` False)."""
    from dforce.engine.checkpoint import atomic_write_bytes
    from dforce.recipes.planning.maze2d.controller import OraclePolicy, RandomPolicy, rollout_returns

    task = get_maze(maze, max_episode_steps)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    path = _cache_file(task, multi_goal, episodes, seed)
    if path.exists():
        try:
            ref = json.loads(path.read_text())
            return {**ref, "cache": str(path), "computed": False}
        except ValueError:
            pass  # a damaged cache file (we wrote it atomically, so only by hand): recompute
    t0 = time.perf_counter()
    ref: dict = {"maze": task.name, "map": task.parsed_map().to_text(), "setting": "multi" if multi_goal else "single",
                 "episodes": episodes, "seed": seed, "episode_steps": task.max_episode_steps}
    for name, policy in (("random", RandomPolicy(seed)), ("oracle", OraclePolicy(seed=seed))):
        returns, success, first = rollout_returns(task, policy, episodes, seed, multi_goal)
        ref[name] = {"return_mean": float(returns.mean()), "success": float(success.mean()),
                     "steps_to_goal_mean": float(first[first >= 0].mean()) if (first >= 0).any() else None}
    ref["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_bytes(path, json.dumps(ref, indent=1).encode())
    return {**ref, "cache": str(path), "computed": True}


def score_scale(maze, multi_goal: bool = False, episodes: int = 100, seed: int = 0, normalization: str = "auto",
                max_episode_steps: int | None = None) -> ScoreScale:
    """The scale an evaluation of ``episodes`` episodes at ``seed`` reports its scores on (checked before any rollout).

    ``normalization``: ``auto`` (D4RL's constants on its mazes, the maze's own references elsewhere), ``d4rl``
    (a ConfigError on a custom maze), ``maze`` (random = 0, oracle = 100 on these episodes; any maze)."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    task = get_maze(maze, max_episode_steps)
    if normalization == "d4rl" or (normalization == "auto" and task.is_d4rl):
        if not task.is_d4rl:
            raise ConfigError(f"maze {task.name!r} has no D4RL reference scores; use normalization 'maze' (random = 0, "
                              "oracle = 100 on the same episodes) or 'auto'")
        return ScoreScale("d4rl", float(task.ref_min), float(task.ref_max), {"maze": task.name})
    ref = maze_references(task, multi_goal, episodes, seed)
    lo, hi = ref["random"]["return_mean"], ref["oracle"]["return_mean"]
    if hi <= lo:
        raise ConfigError(f"maze {task.name!r}: the oracle's mean return ({hi:.2f}) is not above the random policy's "
                          f"({lo:.2f}) over {episodes} episodes; a normalized score is undefined (more episodes or a "
                          "longer episode)")
    detail = {k: ref[k] for k in ("maze", "setting", "episodes", "seed", "episode_steps", "cache")}
    detail.update(random=ref["random"], oracle=ref["oracle"])
    return ScoreScale("maze", lo, hi, detail)
