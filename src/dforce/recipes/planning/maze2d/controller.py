"""Q-iteration waypoint controller (D4RL ``WaypointController``), reference policies and evaluation.

The controller plans over maze cells with Q-iteration (gamma 0.99) toward a target cell, follows the
greedy cell path one waypoint at a time with the PD law ``clip(10 (w - p) - v, -1, 1)``, and moves to the
next waypoint when within ``reach_radius`` of the current one (D4RL: 0.1). Everything is batched over
N independent streams (numpy), so it drives :class:`~.env.Maze2DBatchEnv` and the dataset generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dforce.recipes.planning.maze2d.layouts import MazeTask, cell_center, cell_point, pos_to_cell

# ----------------------------------------------------------------------------- planning


def q_iteration(walls: np.ndarray, gamma: float = 0.99, num_iters: int | None = None) -> np.ndarray:
    """Next-cell table from Q-iteration on the cell grid, for every target at once.

    Grid MDP as D4RL ``gridcraft``: actions stay/up/down/left/right, a move into a wall stays, reward 1 on
    arriving at the target cell. ``num_iters`` defaults to the number of free cells (enough to converge;
    D4RL used 50, which also converges on its mazes).
    Returns ``nxt`` (C, C) int: ``nxt[t, c]`` = index (into ``argwhere(~walls)``) of the greedy next cell
    from cell c toward target cell t (``nxt[t, t] == t``). Ties break in the action order above.
    """
    free = np.argwhere(~walls)  # (C, 2)
    C = len(free)
    index = -np.ones(walls.shape, dtype=np.int64)
    index[free[:, 0], free[:, 1]] = np.arange(C)
    moves = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])
    succ = np.empty((C, len(moves)), dtype=np.int64)  # (C, A) successor cell index
    for a, d in enumerate(moves):
        n = free + d
        ok = ~walls[n[:, 0], n[:, 1]]
        succ[:, a] = np.where(ok, index[n[:, 0], n[:, 1]], np.arange(C))
    reward = np.eye(C)  # (targets, cells): 1 on arriving at the target
    V = np.zeros((C, C))
    for _ in range(num_iters or C):
        Q = reward[:, succ] + gamma * V[:, succ]  # (T, C, A)
        V = Q.max(axis=-1)
    return np.take_along_axis(succ[None].repeat(C, 0), Q.argmax(-1)[..., None], -1)[..., 0]  # (T, C)


# ----------------------------------------------------------------------------- controller


@dataclass(frozen=True)
class ControllerConfig:
    p_gain: float = 10.0  # D4RL WaypointController p_gain
    d_gain: float = -1.0  # D4RL WaypointController d_gain
    reach_radius: float = 0.1  # D4RL solve_thresh: switch waypoint when this close
    solve_radius: float = 0.1  # D4RL solve_thresh: "goal reached" when this close to the final point
    jitter: float = 0.2  # D4RL: waypoint = cell point - U(0, 0.2) per axis (not on the target cell)
    at_center: bool = False  # False: waypoints at D4RL's integer cell points; True: at true cell centres


D4RL_CONTROLLER = ControllerConfig()
# The oracle: waypoints at true centres, no jitter, and the next waypoint taken 0.4 before the current one
# so the mass does not stop in every cell (tuned here; D4RL's 0.1 stops nearly dead at each waypoint).
ORACLE_CONTROLLER = ControllerConfig(reach_radius=0.4, jitter=0.0, at_center=True)


class WaypointController:
    """N independent waypoint followers on one maze (D4RL frame).

    ``set_target(mask, pos, target_cells, final_points)`` starts new plans for the streams in ``mask``;
    ``act(pos, vel) -> (actions (N, 2), solved (N,) bool)``.
    """

    def __init__(self, task: MazeTask, num: int, rng: np.random.Generator, config: ControllerConfig = D4RL_CONTROLLER):
        self.task, self.num, self.rng, self.cfg = task, num, rng, config
        self.free = task.free_cells
        self.index = -np.ones(task.shape, dtype=np.int64)
        self.index[self.free[:, 0], self.free[:, 1]] = np.arange(len(self.free))
        self.nxt = q_iteration(task.walls)
        self.target = np.zeros(num, dtype=np.int64)  # target cell index
        self.final = np.zeros((num, 2))  # where the stream stops (target point or the true goal)
        self.wp_cell = np.zeros(num, dtype=np.int64)
        self.wp = np.zeros((num, 2))

    def _cell_index(self, pos: np.ndarray) -> np.ndarray:
        cells = pos_to_cell(pos)
        cells = np.clip(cells, 0, np.array(self.task.shape) - 1)
        idx = self.index[cells[:, 0], cells[:, 1]]
        # a mass pressed into a wall can read as the wall cell by a hair: use the nearest free cell then
        bad = idx < 0
        if bad.any():
            d = np.linalg.norm(cell_center(self.free)[None] - pos[bad][:, None], axis=-1)
            idx[bad] = d.argmin(1)
        return idx

    def _advance(self, mask: np.ndarray) -> None:
        """Move the streams in ``mask`` to the next waypoint of their plan."""
        if not mask.any():
            return
        nxt = self.nxt[self.target[mask], self.wp_cell[mask]]
        base = cell_center(self.free[nxt]) if self.cfg.at_center else cell_point(self.free[nxt])
        base = base - self.rng.uniform(0.0, self.cfg.jitter, size=base.shape) if self.cfg.jitter > 0 else base
        is_final = nxt == self.target[mask]
        self.wp[mask] = np.where(is_final[:, None], self.final[mask], base)
        self.wp_cell[mask] = nxt

    def set_target(self, mask: np.ndarray, pos: np.ndarray, target_cells: np.ndarray, final_points: np.ndarray) -> None:
        """New plans for streams in ``mask`` (N,) bool from positions ``pos`` (N, 2) to ``target_cells`` /
        ``final_points`` (M, 2) given for the M masked streams."""
        if not mask.any():
            return
        tc = np.asarray(target_cells)
        self.target[mask] = self.index[tc[:, 0], tc[:, 1]]
        self.final[mask] = final_points
        self.wp_cell[mask] = self._cell_index(pos[mask])
        self._advance(mask)

    def act(self, pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PD action toward the current waypoint; pos, vel (N, 2). Returns (actions (N, 2), solved (N,))."""
        solved = np.linalg.norm(pos - self.final, axis=1) < self.cfg.solve_radius
        wp = np.where(solved[:, None], self.final, self.wp)
        action = np.clip(self.cfg.p_gain * (wp - pos) + self.cfg.d_gain * vel, -1.0, 1.0)
        reached = (np.linalg.norm(pos - self.wp, axis=1) < self.cfg.reach_radius) & (self.wp_cell != self.target)
        self._advance(reached & ~solved)
        return action, solved


# ----------------------------------------------------------------------------- policies + evaluation


class RandomPolicy:
    """Uniform random forces in [-1, 1]^2 (the benchmark's 'random' reference row)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def reset(self, env) -> None:
        self.num = env.num_envs

    def __call__(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(len(obs), 2))


class OraclePolicy:
    """The Q-iteration waypoint controller run closed-loop to each episode's goal (the 'oracle' row)."""

    def __init__(self, config: ControllerConfig = ORACLE_CONTROLLER, seed: int = 0):
        self.cfg, self.rng = config, np.random.default_rng(seed)

    def reset(self, env) -> None:
        obs = env.sim.pos
        self.ctrl = WaypointController(env.task, env.num_envs, self.rng, self.cfg)
        all_ = np.ones(env.num_envs, dtype=bool)
        self.ctrl.set_target(all_, obs, pos_to_cell(env.goals), env.goals)

    def __call__(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return self.ctrl.act(obs[:, :2], obs[:, 2:])[0]


@dataclass
class EvalResult:
    """Normalized-score summary over episodes: ``mean`` +- ``sem`` (standard error); per-episode arrays."""

    mean: float
    sem: float
    scores: np.ndarray  # (E,) normalized scores
    returns: np.ndarray  # (E,) raw returns
    success: np.ndarray  # (E,) bool, goal ever reached
    steps_to_goal: np.ndarray | None = None  # (E,) int, env steps until first inside the goal radius (-1: never)
    normalization: str = "d4rl"  # what the scores are normalized against (ScoreScale.describe())

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.sem:.1f} (n={len(self.scores)}, success {self.success.mean():.0%})"

    @property
    def mean_steps_to_goal(self) -> float | None:
        """Mean env steps to the first arrival over the episodes that arrived (None: none did)."""
        if self.steps_to_goal is None or not (self.steps_to_goal >= 0).any():
            return None
        return float(self.steps_to_goal[self.steps_to_goal >= 0].mean())

    def summary(self) -> dict:
        """JSON-ready numbers: score (mean, standard error), raw return, success rate, steps to the goal."""
        steps = self.mean_steps_to_goal
        return {"score_mean": round(self.mean, 2), "score_se": round(self.sem, 2), "episodes": int(len(self.scores)),
                "return_mean": round(float(self.returns.mean()), 2), "success": round(float(self.success.mean()), 3),
                "steps_to_goal_mean": None if steps is None else round(steps, 1), "normalization": self.normalization}


def eval_result(returns: np.ndarray, success: np.ndarray, steps_to_goal: np.ndarray | None, scale) -> EvalResult:
    """An :class:`EvalResult` from raw returns ``(E,)`` and a score scale (``ScoreScale``: ``score(returns)``)."""
    scores = np.asarray(scale.score(returns), dtype=np.float64)
    sem = scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else 0.0
    return EvalResult(float(scores.mean()), float(sem), scores, np.asarray(returns, dtype=np.float64).copy(),
                      np.asarray(success, dtype=bool), steps_to_goal, scale.describe())


def rollout_returns(maze, policy, num_episodes: int = 100, seed: int = 0, multi_goal: bool = False,
                    max_episode_steps: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``num_episodes`` episodes in parallel; ``policy`` has ``reset(env)`` and
    ``__call__(obs (N, 4), goals (N, 2)) -> actions (N, 2)``.

    Returns raw ``(returns (E,), success (E,) bool, steps_to_goal (E,) int, -1 when never inside the radius)``."""
    from dforce.recipes.planning.maze2d.env import Maze2DBatchEnv

    env = Maze2DBatchEnv(maze, num_episodes, seed=seed, multi_goal=multi_goal, max_episode_steps=max_episode_steps)
    obs = env.reset()
    policy.reset(env)
    first = np.full(num_episodes, -1, dtype=np.int64)
    done = np.zeros(num_episodes, dtype=bool)
    while not done.all():
        obs, _, done, info = env.step(policy(obs, env.goals))
        first = np.where((first < 0) & info.success, env.t, first)
    return env.episode_returns.copy(), first >= 0, first


def evaluate_policy(maze, policy, num_episodes: int = 100, seed: int = 0, multi_goal: bool = False,
                    max_episode_steps: int | None = None, scale=None) -> EvalResult:
    """Run ``num_episodes`` episodes in parallel (:func:`rollout_returns`). Scores are D4RL-normalized on D4RL
    mazes and normalized against the maze's random and oracle references on custom mazes (``scale``: a
    :class:`~dforce.recipes.planning.maze2d.references.ScoreScale`; default :func:`~.references.score_scale` of these
    episodes, checked before the rollout)."""
    from dforce.recipes.planning.maze2d.references import score_scale

    if scale is None:
        scale = score_scale(maze, multi_goal, num_episodes, seed, max_episode_steps=max_episode_steps)
    return eval_result(*rollout_returns(maze, policy, num_episodes, seed, multi_goal, max_episode_steps), scale)
