"""A batched Maze2D environment: N episodes of the gymnasium-robotics PointMaze MuJoCo model at once.

The MjModel is built once by ``gymnasium_robotics`` itself (``Maze.make_maze`` + ``point.xml``, so walls,
contact parameters, damping, gear, dt = 0.01 and frame_skip = 1 are the library's), and all N states are
advanced together with ``mujoco.rollout`` (one C call per step). Each step repeats what
``PointEnv.step`` does: clip the action to [-1, 1], clip qvel to [-5, 5], one ``mj_step``.

Observations, goals and actions are in the D4RL frame (see :mod:`.layouts`); the D4RL task semantics
(reset distribution, fixed goal / random goals, sparse reward within 0.5, fixed episode length, no early
termination) are those of D4RL ``maze2d-*-v1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import rollout

from dforce.errors import ConfigError
from dforce.recipes.planning.maze2d.layouts import (
    GOAL_RADIUS,
    RESET_POS_NOISE,
    RESET_VEL_STD,
    MazeTask,
    cell_point,
    d4rl_to_gym_pos,
    d4rl_to_gym_vec,
    get_maze,
    gym_to_d4rl_pos,
    gym_to_d4rl_vec,
)

MAX_SPEED = 5.0  # PointEnv._clip_velocity (and D4RL MazeEnv.clip_velocity)
_STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS  # [time, qpos(2), qvel(2)] for the point mass


def build_point_maze_model(task: MazeTask) -> mujoco.MjModel:
    """The MjModel gymnasium-robotics' PointMazeEnv builds for this maze (maze_size_scaling=1, height 0.4)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnasium_robotics
        from gymnasium_robotics.envs.maze.maze_v4 import Maze

    xml = os.path.join(os.path.dirname(gymnasium_robotics.__file__), "envs", "assets", "point", "point.xml")
    _, tmp_xml = Maze.make_maze(xml, task.to_gym_map(), maze_size_scaling=1, maze_height=0.4)
    try:
        return mujoco.MjModel.from_xml_path(tmp_xml)
    finally:
        os.remove(tmp_xml)


class PointMassBatch:
    """N independent point-mass states in one MuJoCo model; positions/velocities in the D4RL frame."""

    def __init__(self, task: MazeTask, num: int):
        self.task, self.num = task, num
        self.model = build_point_maze_model(task)
        self._data = mujoco.MjData(self.model)
        self.state = np.zeros((num, mujoco.mj_stateSize(self.model, _STATE_SPEC)))  # (N, 5)

    def set(self, pos: np.ndarray, vel: np.ndarray) -> None:
        """pos, vel: (N, 2) in the D4RL frame."""
        self.state[:] = 0.0
        self.state[:, 1:3] = d4rl_to_gym_pos(pos, self.task.shape)
        self.state[:, 3:5] = d4rl_to_gym_vec(vel)

    @property
    def pos(self) -> np.ndarray:
        return gym_to_d4rl_pos(self.state[:, 1:3], self.task.shape)  # (N, 2)

    @property
    def vel(self) -> np.ndarray:
        return gym_to_d4rl_vec(self.state[:, 3:5])  # (N, 2)

    def step(self, actions: np.ndarray) -> None:
        """actions: (N, 2) forces in [-1, 1] (clipped), D4RL frame. One dt = 0.01 s physics step."""
        ctrl = d4rl_to_gym_vec(np.clip(actions, -1.0, 1.0))[:, None, :]  # (N, 1, 2)
        self.state[:, 3:5] = np.clip(self.state[:, 3:5], -MAX_SPEED, MAX_SPEED)
        out, _ = rollout.rollout(self.model, self._data, self.state, ctrl, nstep=1)
        self.state = out[:, 0].copy()


@dataclass
class StepInfo:
    """Extra per-step outputs of :meth:`Maze2DBatchEnv.step` (all (N,) or (N, 2) numpy arrays)."""

    success: np.ndarray  # (N,) bool: within GOAL_RADIUS of the goal this step
    true_obs: np.ndarray  # (N, 4) noise-free observation
    episode_return: np.ndarray  # (N,) return so far


class Maze2DBatchEnv:
    """``num_envs`` Maze2D episodes stepped in lock-step (D4RL maze2d-v1 semantics, MuJoCo physics).

    Args:
        maze: 'umaze' | 'medium' | 'large', a map file, an inline map, a list of rows, or a :class:`MazeTask`
            (:func:`~dforce.recipes.planning.maze2d.layouts.get_maze`).
        num_envs: N.
        seed: seeds the reset/goal sampling and observation noise.
        multi_goal: False = single task (D4RL's fixed goal cell); True = Multi2D (a random free cell + U(-0.1,
            0.1) per episode, as D4RL ``set_target()`` / Diffuser's multi-task evaluation).
        max_episode_steps: defaults to D4RL's 300 / 600 / 800 (custom mazes: by their diameter, ``custom_episode_steps``).
        obs_noise: std of Gaussian noise added to the *returned* observations only (default 0, as D4RL).

    ``reset() -> obs (N, 4)``; ``step(actions (N, 2)) -> obs, reward (N,), done (N,), StepInfo``.
    ``goals`` (N, 2) and ``episode_returns`` (N,) are attributes. Episodes never terminate early; all N
    finish together at ``max_episode_steps`` (``done`` all True), after which ``step`` raises.
    """

    def __init__(self, maze, num_envs: int, seed: int = 0, multi_goal: bool = False,
                 max_episode_steps: int | None = None, obs_noise: float = 0.0):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if obs_noise < 0:
            raise ConfigError(f"obs_noise must be >= 0, got {obs_noise}")
        self.task = get_maze(maze, max_episode_steps)
        self.num_envs, self.multi_goal, self.obs_noise = num_envs, multi_goal, obs_noise
        self.max_episode_steps = self.task.max_episode_steps
        self.rng = np.random.default_rng(seed)
        self.sim = PointMassBatch(self.task, num_envs)
        self.goals = np.zeros((num_envs, 2))
        self.episode_returns = np.zeros(num_envs)
        self.t = 0

    def _obs(self) -> tuple[np.ndarray, np.ndarray]:
        true = np.concatenate([self.sim.pos, self.sim.vel], axis=1)  # (N, 4) [x, y, vx, vy]
        noisy = true + self.obs_noise * self.rng.standard_normal(true.shape) if self.obs_noise > 0 else true
        return noisy, true

    def reset(self, start: np.ndarray | None = None, goals: np.ndarray | None = None) -> np.ndarray:
        """Start a new batch of episodes. D4RL ``reset_model``: a random free cell's point (a custom map's 'S' cells
        when it marks some) + U(-0.1, 0.1), velocity N(0, 0.1^2). ``start`` (N, 2) positions / ``goals`` (N, 2) override the sampling."""
        N, free = self.num_envs, self.task.free_cells
        if goals is None:
            if self.multi_goal:
                goals = cell_point(free[self.rng.integers(len(free), size=N)])
                goals = goals + self.rng.uniform(-RESET_POS_NOISE, RESET_POS_NOISE, size=(N, 2))
            elif len(self.task.single_goal_cells) > 1:  # a custom map with several 'G' cells: one per episode
                cells = self.task.single_goal_cells
                goals = cell_point(cells[self.rng.integers(len(cells), size=N)])
            else:
                goals = np.tile(self.task.goal, (N, 1))
        if start is None:
            starts = self.task.reset_cells  # the map's 'S' cells, else every free cell (D4RL)
            start = cell_point(starts[self.rng.integers(len(starts), size=N)])
            start = start + self.rng.uniform(-RESET_POS_NOISE, RESET_POS_NOISE, size=(N, 2))
            vel = RESET_VEL_STD * self.rng.standard_normal((N, 2))
        else:
            vel = np.zeros((N, 2))
        self.goals = np.asarray(goals, dtype=np.float64).reshape(N, 2).copy()
        self.sim.set(np.asarray(start, dtype=np.float64).reshape(N, 2), vel)
        self.episode_returns = np.zeros(N)
        self.t = 0
        return self._obs()[0]

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepInfo]:
        """actions: (N, 2) array or tensor in the D4RL frame, clipped to [-1, 1]."""
        if self.t >= self.max_episode_steps:
            raise ConfigError("Maze2DBatchEnv.step called after the episodes ended; call reset() first")
        actions = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ConfigError(f"actions must have shape ({self.num_envs}, 2), got {actions.shape}")
        self.sim.step(actions)
        self.t += 1
        obs, true = self._obs()
        success = np.linalg.norm(true[:, :2] - self.goals, axis=1) <= GOAL_RADIUS
        reward = success.astype(np.float64)
        self.episode_returns += reward
        done = np.full(self.num_envs, self.t >= self.max_episode_steps)
        return obs, reward, done, StepInfo(success, true, self.episode_returns.copy())
