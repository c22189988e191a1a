"""Maze2D planning with Diffusion Forcing (paper §4.2): one readable recipe.

Tokens. A step row is ``[a_t, o_{t+1}]`` (6 numbers: force, next [x, y, vx, vy]), z-scored with dataset
statistics; ``frame_stack`` (k, reference 10) consecutive rows make one token of shape ``(k, 6)``. Every
training segment starts with a *start token* ``[0, o_0] × k`` (zero force, the first observation
repeated), which is how an episode's first observation is shown to the model at execution. With
``data.markovian`` every training window starts with the start token of its own first observation instead,
and a plan is conditioned on the current observation only (the reference's ``context_frames: 0``).

Training. Windows of ``context_tokens + horizon`` tokens (any step offset) cut from the dataset's
segments, Algorithm 1 (independent levels = Diffusion Forcing; ``full_sequence`` = the Diffuser-style
baseline with the same backbone and data).

Execution (MPC, all episodes of a batch planned together). Every ``replan_every`` steps:
    1. the real history (start token + the completed real tokens, the last ``context_tokens`` of them)
       is committed to the model state at level 0 (posterior update with the real observations);
    2. a plan of ``horizon`` tokens is sampled with the pyramid schedule (causal uncertainty) and goal
       guidance on the x0 prediction (:func:`goal_distance_guidance`: distance to the goal plus a smooth
       count of steps inside the reward radius, scored on the planned positions or on the positions the
       planned velocities lead to), with Monte Carlo Guidance when ``sampler.mcg.samples > 1``; with
       ``plan.candidates`` n > 1, n plans per episode and the one the guidance objective scores highest is kept;
    3. the plan's *diffused actions* are executed directly (``executor=actions``) — or, for the Diffuser
       baseline, a PD controller tracks the planned states (``executor=pd``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dforce._utils import check_choice
from dforce.recipes.planning.maze2d import Maze2DBatchEnv, get_maze, load_or_generate_maze2d
from dforce.recipes.planning.maze2d.controller import EvalResult, eval_result
from dforce.recipes.planning.maze2d.references import score_scale
from dforce.recipes.planning.maze2d.geodesic import WALLS, GeodesicField
from dforce.recipes.planning.maze2d.maps import run_maze_file, save_run_maze
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict, from_dict
from dforce.engine.trainer import TrainConfig, train
from dforce.errors import CheckpointError, ConfigError, DataError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

ROW = 6  # numbers per step row: action (2) + next observation (4)
ACT = slice(0, 2)  # planned force inside a step row
POS = slice(2, 4)  # planned x, y inside a step row
VEL = slice(4, 6)  # planned vx, vy inside a step row
# env step (s): D4RL point.xml timestep, frame_skip 1. MuJoCo's semi-implicit Euler makes p_{t+1} = p_t + DT·v_{t+1}
# exact (to 1e-7 in the generated data; tested)
DT = 0.01
# what the guidance's distance term may score (goal_distance_guidance) and its reward term
DISTANCE_POSITIONS = ("planned", "integrated", "both", "actions")
REWARD_POSITIONS = ("planned", "integrated", "both", "actions")
DISTANCES = ("euclidean", "data_geodesic")  # what the distance term measures (ExecConfig.distance)
STATS_FILE = "stats.json"

# ---------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanDataConfig:
    # umaze | medium | large (D4RL maze2d-*-v1), a map file (.txt text map, .json/.yaml list of rows), an inline map
    # ('#####/#G..#/#####'), or a list of rows (YAML): dforce.recipes.planning.maze2d.maps
    maze: str | list = "umaze"
    num_steps: int | None = None  # dataset size (None: D4RL's 1M / 2M / 4M; custom mazes by free cells, default_dataset_steps)
    frame_stack: int = 10  # k step rows per token (reference: 10)
    context_tokens: int = 2  # real tokens committed before a plan (start token included)
    # planned tokens H (U-Maze: 200 steps ≥ the longest oracle path). None: from the maze's diameter as the benchmark
    # sets D4RL's (20 / 30 / 40 for U-Maze / Medium / Large: plan_tokens_for); training writes the number into the run
    horizon: int | None = None
    segments: str = "streams"  # streams: split where the data jumps (continuous rollouts) | timeouts: at every goal switch
    # True: every training window opens with a start token of its own first observation, and a plan sees only
    # the current observation (context_tokens is not used), so plans may start at any step (reference:
    # df_planning's context_frames 0, latent initialized from o_t). False: start tokens open data segments only
    markovian: bool = False

    def __post_init__(self):
        check_choice("data.segments", self.segments, ("streams", "timeouts"))
        for k in ("frame_stack", "context_tokens") + (("horizon",) if self.horizon is not None else ()):
            if getattr(self, k) < 1:
                raise ConfigError(f"data.{k} must be >= 1, got {getattr(self, k)}")
        get_maze(self.maze)  # fails clearly on a bad name, a missing file or an invalid map

    @property
    def plan_tokens(self) -> int:
        """Planned tokens H: ``horizon``, or the maze's default (:func:`plan_tokens_for`)."""
        return self.horizon if self.horizon is not None else plan_tokens_for(get_maze(self.maze))

    @property
    def context(self) -> int:
        """Real tokens before a plan: the start token of the current observation (markovian) or the last
        ``context_tokens`` tokens of the episode."""
        return 1 if self.markovian else self.context_tokens

    @property
    def window(self) -> int:
        return self.context + self.plan_tokens


# Planned tokens by maze diameter (cell moves of the longest shortest path): the benchmark's 20 / 30 / 40 tokens for
# U-Maze / Medium / Large (diameters 6 / 11 / 19); mazes larger than Large keep 40 (a plan of 400 steps: the
# data-geodesic guidance measures the distance along the maze, so the plan need not reach a far goal)
PLAN_TOKENS_BY_DIAMETER = ((8, 20), (15, 30), (None, 40))  # (max diameter, tokens)


# Training steps by maze diameter (train.steps: null): the benchmark's 2500 for U-Maze / Medium (diameters 6 / 11); a
# larger maze 5000 (the benchmark's Large planner trains 10 000; 5000 is the 2-CPU budget of planning_maze)
TRAIN_STEPS_BY_DIAMETER = ((15, 2500), (None, 5000))  # (max diameter, steps)


def train_steps_for(task) -> int:
    """The default training steps for a maze (:data:`TRAIN_STEPS_BY_DIAMETER`)."""
    from dforce.recipes.planning.maze2d.maps import maze_diameter

    d = maze_diameter(task.walls)
    return next(n for limit, n in TRAIN_STEPS_BY_DIAMETER if limit is None or d <= limit)


def plan_tokens_for(task) -> int:
    """The default planned tokens for a maze (:data:`PLAN_TOKENS_BY_DIAMETER`)."""
    from dforce.recipes.planning.maze2d.maps import maze_diameter

    d = maze_diameter(task.walls)
    return next(h for limit, h in PLAN_TOKENS_BY_DIAMETER if limit is None or d <= limit)


@dataclass(frozen=True)
class ExecConfig:
    """How plans are made and executed (``plan.*``). The defaults are the Maze2D benchmark's settings (the preset
    ``planning_maze``); docs/planning.md ("What we learned") gives the experiments behind them.

    Guidance positions (:func:`goal_distance_guidance`): ``planned``, the plan's position channels; ``integrated``,
    where the planned velocities lead; ``both``, the larger distance of the two; ``actions``, where the plan's forces
    (the executed channels) lead under the velocity response fitted to the data (:class:`ActionDynamics`). The
    data-geodesic distance and its wall rules: :mod:`dforce.recipes.planning.maze2d.geodesic`."""

    replan_every: int = 10  # env steps between plans (reference MPC: 10); a multiple of frame_stack unless markovian
    executor: str = "actions"  # actions: execute the diffused forces (DF) | pd: track the planned states (Diffuser)
    pd_kp: float = 1.0  # pd executor: a = kp (w_pos − pos) + kd (w_vel − vel), Diffuser's maze2d controller
    pd_kd: float = 1.0  # (Diffuser uses 1, 1)
    inpaint_goal: bool = False  # pd executor: the last planned position becomes the goal (Diffuser's goal inpainting)
    goal_velocity_weight: float = 0.2  # w: distance to the goal *state* (g, v = 0), sqrt(d² + w²‖v‖²)
    reward_weight: float = 30.0  # ρ: + ρ Σ_j σ((r − d_j)/τ), a smooth count of planned steps scoring reward (0: off)
    reward_radius: float = 0.5  # r: D4RL maze2d's reward radius
    reward_temperature: float = 0.1  # τ (world units) of the smooth in-radius indicator
    guidance_positions: str = "actions"  # what the distance term scores: planned | integrated | both | actions (below)
    reward_positions: str = "actions"  # the same for the reward term (both: a step counts when both are inside)
    integration_window: int = 50  # m > 0: integrated/actions positions restart from the plan's state m steps back
    candidates: int = 1  # n > 1: n guided plans per episode, run the best-scored (Diffuser's sort by value; n× cost)
    candidate_guidance_min: float = 1.0  # the n candidates' guidance scales run from this fraction of the scale to 1
    distance: str = "data_geodesic"  # euclidean (the paper) | data_geodesic (shortest path through the data's positions)
    geodesic_cell: float = 0.1  # grid spacing of the data_geodesic field (world units; a maze cell is 1)
    geodesic_outside_slope: float = 2.0  # the field's rise per unit of distance into space the data never visits
    geodesic_walls: str = "entry_side"  # a wall's value: entry_side (where the path entered) | nearest | higher_side

    # removed in dforce 0.2 (they lost their experiments, docs/planning.md): a saved config at the old off value loads
    RENAMED_KEYS: ClassVar[dict[str, tuple[str | None, object]]] = {
        "guidance_decay": (None, 1.0), "inpaint_arrival_radius": (None, 0.0), "geodesic_reward": (None, False),
    }

    def __post_init__(self):
        check_choice("plan.executor", self.executor, ("actions", "pd"))
        check_choice("plan.guidance_positions", self.guidance_positions, DISTANCE_POSITIONS)
        check_choice("plan.reward_positions", self.reward_positions, REWARD_POSITIONS)
        check_choice("plan.distance", self.distance, DISTANCES)
        check_choice("plan.geodesic_walls", self.geodesic_walls, WALLS)
        if self.geodesic_cell <= 0:
            raise ConfigError(f"plan.geodesic_cell must be > 0, got {self.geodesic_cell}")
        if self.geodesic_outside_slope <= 0:
            raise ConfigError(f"plan.geodesic_outside_slope must be > 0, got {self.geodesic_outside_slope}")
        if self.reward_temperature <= 0:
            raise ConfigError(f"plan.reward_temperature must be > 0, got {self.reward_temperature}")
        if self.replan_every < 1:
            raise ConfigError(f"plan.replan_every must be >= 1, got {self.replan_every}")
        if self.integration_window < 0:
            raise ConfigError(f"plan.integration_window must be >= 0, got {self.integration_window}")
        if self.candidates < 1:
            raise ConfigError(f"plan.candidates must be >= 1, got {self.candidates}")
        if not 0.0 <= self.candidate_guidance_min <= 1.0:
            raise ConfigError(f"plan.candidate_guidance_min must be in [0, 1], got {self.candidate_guidance_min}")


# Task defaults as subclasses (not default_factory instances), so a partial override such as
# ``diffusion.num_levels=100`` keeps the other planning defaults instead of the generic class defaults.
@dataclass(frozen=True)
class PlanDiffusionConfig(NoiseScheduleConfig):
    num_levels: int = 1000  # reference Maze2D: K = 1000, linear β, x0-prediction (REFERENCE.md §2)
    beta_schedule: str = "linear"
    objective: str = "x0"


@dataclass(frozen=True)
class PlanModelConfig(ModelConfig):
    width: int = 128  # ~0.37M params, 2-CPU size (reference MLP+GRU: 4.3M ≈ width 448)
    depth: int = 2


@dataclass(frozen=True)
class PlanTrainConfig(TrainConfig):
    # None: from the maze's diameter (train_steps_for: 2500 up to 15 cells, 5000 beyond; a 2-CPU budget, the reference
    # trains 120k steps at batch 4096); training writes the number into the run
    steps: int | None = None

    def __post_init__(self):
        if self.steps is None:  # resolved from the maze when training starts; check every other field now
            dataclasses.replace(self, steps=1)
        else:
            super().__post_init__()
    batch_size: int = 64
    lr: float = 1e-3  # small model, short run (reference: 2e-4)
    checkpoint_every: int = 500


@dataclass(frozen=True)
class PlanObjectiveConfig(ObjectiveConfig):
    # DF (independent levels, fused-SNR weights) as the objective's defaults; the running SNR starts time-discounted,
    # as the benchmark's planners were trained (dforce 0.1)
    fused_snr_init: str = "discounted"


@dataclass(frozen=True)
class PlanSamplerConfig(SamplerConfig):
    steps: int = 20  # DDIM steps (reference: 50; fewer for CPU planning)
    window: int = 20  # the planner overrides it with the planned tokens (data.horizon: one chunk = the whole plan)
    guidance_scale: float = 0.05  # step size of the guidance gradient on x̂0 (the benchmark's, every maze)
    uncertainty_scale: float = 0.25  # pyramid slope u: a token leads the next by u DDIM steps (the benchmark's M/L)


@dataclass(frozen=True)
class PlanningConfig:
    data: PlanDataConfig = field(default_factory=PlanDataConfig)
    diffusion: PlanDiffusionConfig = field(default_factory=PlanDiffusionConfig)
    model: PlanModelConfig = field(default_factory=PlanModelConfig)
    objective: PlanObjectiveConfig = field(default_factory=PlanObjectiveConfig)
    train: PlanTrainConfig = field(default_factory=PlanTrainConfig)
    sampler: PlanSamplerConfig = field(default_factory=PlanSamplerConfig)
    plan: ExecConfig = field(default_factory=ExecConfig)

    def __post_init__(self):
        if self.plan.replan_every % self.data.frame_stack and not self.data.markovian:
            raise ConfigError(f"plan.replan_every={self.plan.replan_every} must be a multiple of "
                              f"data.frame_stack={self.data.frame_stack} (or set data.markovian=true)")
        if self.plan.replan_every > self.data.frame_stack * self.data.plan_tokens:
            raise ConfigError("plan.replan_every must not exceed the planned steps (frame_stack × horizon)")


# ---------------------------------------------------------------------------------------------------
# data: normalization, segments, windows
# ---------------------------------------------------------------------------------------------------


@dataclass
class Normalizer:
    """Per-channel z-scoring of step rows ``[a (2), o (4)]``: ``mean, std: (6,)``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: dict[str, np.ndarray]) -> "Normalizer":
        rows = np.concatenate([data["actions"], data["observations"]], 1).astype(np.float64)
        return cls(rows.mean(0), rows.std(0) + 1e-6)

    def encode(self, rows):
        return (rows - self.mean) / self.std

    def decode(self, rows):
        return rows * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))


@dataclass(frozen=True)
class ActionDynamics:
    """The point mass's velocity response to the force, per axis (x, y): ``v_{t+1} = alpha·v_t + beta·a_t + bias``,
    fitted by least squares to a dataset's steps (:meth:`fit`). D4RL's point mass is damped and driven by the
    force, so away from walls this is nearly exact (the Large dataset: α 0.9957, β 0.2375; wall contacts are what it
    misses)."""

    alpha: tuple[float, float]
    beta: tuple[float, float]
    bias: tuple[float, float]

    @classmethod
    def fit(cls, data: dict[str, np.ndarray]) -> "ActionDynamics":
        """Least squares over the steps of ``data`` (``observations (N, 4)``, ``actions (N, 2)``) that continue the
        rollout (``p_{t+1} = p_t + DT·v_{t+1}``: resets and stream joins are left out)."""
        obs, act = data["observations"].astype(np.float64), data["actions"].astype(np.float64)
        cont = np.abs(obs[1:, :2] - obs[:-1, :2] - DT * obs[1:, 2:4]).max(1) < 1e-4  # (N-1,) continuing steps
        coef = []
        for ax in range(2):
            X = np.stack([obs[:-1, 2 + ax], act[:-1, ax], np.ones(len(act) - 1)], 1)[cont]
            coef.append(np.linalg.lstsq(X, obs[1:, 2 + ax][cont], rcond=None)[0])
        alpha, beta, bias = (tuple(float(c[i]) for c in coef) for i in range(3))
        if not all(0.0 < a < 1.0 for a in alpha):
            raise DataError(f"the data's fitted velocity decay alpha={alpha} is not in (0, 1): not a damped point mass")
        return cls(alpha, beta, bias)


def action_positions(dyn: ActionDynamics, p0: torch.Tensor, v0: torch.Tensor, forces: torch.Tensor,
                     planned: torch.Tensor, window: int = 0) -> torch.Tensor:
    """Where a plan's forces lead: positions ``(B, L, 2)`` after each step row, all world units.

    ``p0, v0: (B, 2)`` the real current state; ``forces: (B, L, 2)`` the plan's actions; ``planned: (B, L, 4)`` the
    plan's states ``[p, v]`` after each row. Row j's position is reached from an *anchor* state by the forces of the
    rows from the anchor on, under ``dyn`` and the semi-implicit Euler step ``p' = p + DT·v'``: the current state
    (``window`` 0, or within the first ``window`` rows), else the plan's own state ``window`` rows earlier. In closed
    form (prefix sums, no loop over rows): with ``u_i = β a_i + c`` and ``n`` rows from anchor state ``(p_s, v_s)``,
    ``p = p_s + DT·(v_s·α(1−αⁿ)/(1−α) + Σ_{i=s}^{j} u_i (1 − α^{j+1−i})/(1−α))``, in float64."""
    dtype = forces.dtype
    f = forces.double()
    alpha, beta, bias = (torch.tensor(v, dtype=torch.float64, device=f.device) for v in
                         (dyn.alpha, dyn.beta, dyn.bias))  # (2,) each
    B, L = f.shape[:2]
    rows = torch.arange(L, device=f.device)
    u = beta * f + bias  # (B, L, 2)
    zero = torch.zeros(B, 1, 2, dtype=torch.float64, device=f.device)
    U = torch.cat([zero, u.cumsum(1)], 1)  # (B, L+1, 2): U[k] = Σ_{i<k} u_i
    E = torch.cat([zero, (u * alpha ** -rows.unsqueeze(1).double()).cumsum(1)], 1)  # Σ_{i<k} α^{-i} u_i
    n = rows + 1  # (L,) state index after row j (0: the current state)
    anchor = (n - window).clamp(min=0) if window else torch.zeros_like(n)
    states = torch.cat([torch.cat([p0, v0], -1).double().unsqueeze(1), planned.double()], 1)  # (B, L+1, 4)
    ps, vs = states[:, anchor, :2], states[:, anchor, 2:]  # (B, L, 2) each
    steps = (n - anchor).unsqueeze(1).double()  # (L, 1)
    free = vs * alpha * (1 - alpha**steps) / (1 - alpha)  # Σ of the anchor velocity's decay over the rows
    driven = (U[:, n] - U[:, anchor] - alpha ** n.unsqueeze(1).double() * (E[:, n] - E[:, anchor])) / (1 - alpha)
    return (ps + DT * (free + driven)).to(dtype)


def split_segments(data: dict[str, np.ndarray], how: str = "streams") -> list[tuple[int, int]]:
    """``[(start, end)]`` step ranges (end exclusive). ``timeouts``: split after every flagged step;
    ``streams``: only where the flagged step is followed by a jump in position (a new rollout), since a
    goal switch does not interrupt the physics."""
    ends = np.flatnonzero(data["timeouts"])
    if how == "streams":
        obs = data["observations"]
        nxt = np.minimum(ends + 1, len(obs) - 1)
        pred = obs[ends, :2] + 0.01 * obs[ends, 2:]  # dt = 0.01
        jump = np.linalg.norm(obs[nxt, :2] - pred, axis=1) > 0.2
        ends = ends[jump | (ends == len(obs) - 1)]
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [(int(s), int(e) + 1) for s, e in zip(starts, ends) if e + 1 - s >= 2]


def start_rows(obs0: np.ndarray, k: int) -> np.ndarray:
    """The start token's raw rows ``(N, k, 6)`` for first observations ``obs0: (N, 4)``."""
    n = len(obs0)
    return np.concatenate([np.zeros((n, k, 2)), np.repeat(obs0[:, None], k, 1)], -1)


class MazeWindows:
    """Training windows of ``T`` tokens of ``k`` rows from every segment, at any step offset.

    Each segment becomes ``[start token rows (k), [a_t, o_{t+1}] rows...]`` (normalized) in one flat
    array; a window starts either at a segment's start token or at any real row. With ``cfg.markovian``
    every window starting at real row t opens instead with the start token of ``o_t`` (the observation
    before that row), followed by ``T - 1`` tokens of real rows.
    ``get_batch(idx (B,)) -> {"x": (B, T, k, 6)}``.
    """

    def __init__(self, data: dict[str, np.ndarray], cfg: PlanDataConfig, norm: Normalizer):
        k, T = cfg.frame_stack, cfg.window
        self.markovian = cfg.markovian
        need = (T - 1) * k if self.markovian else T * k  # real rows a window reads
        chunks, firsts, starts, n = [], [], [], 0
        for s, e in split_segments(data, cfg.segments):
            obs, act = data["observations"][s:e], data["actions"][s:e]
            real = np.concatenate([act[:-1], obs[1:]], 1)  # (e-s-1, 6): [a_t, o_{t+1}]
            if self.markovian:
                rows, first = real, start_rows(obs[:-1], 1)[:, 0]  # the start row [0, o_t] of each real row
                offsets = np.arange(len(rows) - need + 1)
            else:
                rows = np.concatenate([start_rows(obs[:1], k)[0], real])
                offsets = np.concatenate([[0], np.arange(k, len(rows) - need + 1)])
            if len(rows) >= need:
                starts.append(n + offsets)
                chunks.append(rows)
                if self.markovian:
                    firsts.append(first)
                n += len(rows)
        if not chunks:
            raise DataError(f"no data segment is long enough for a window of {T} tokens × {k} steps")
        self.rows = torch.from_numpy(norm.encode(np.concatenate(chunks)).astype(np.float32))  # (N, 6)
        self.firsts = (torch.from_numpy(norm.encode(np.concatenate(firsts)).astype(np.float32))
                       if self.markovian else None)  # (N, 6)
        self.starts = torch.from_numpy(np.concatenate(starts))
        self.T, self.k = T, k
        self.offsets = torch.arange(need)

    def __len__(self) -> int:
        return len(self.starts)

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        start = self.starts[idx]
        rows = self.rows[start.unsqueeze(1) + self.offsets]  # (B, need, 6)
        if self.markovian:
            rows = torch.cat([self.firsts[start].unsqueeze(1).expand(-1, self.k, -1), rows], 1)
        return {"x": rows.view(len(idx), self.T, self.k, ROW)}


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------


def train_planner(cfg: PlanningConfig, run_dir: str | Path | None, device: str = "cpu", progress: bool = True,
                  resume: bool = False, data: dict | None = None):
    """Train a planner (DF or, with ``objective.level_strategy=full_sequence``, Diffuser-style).

    Returns ``(TrainResult, Normalizer)``; writes the trainer's files plus ``stats.json`` to ``run_dir`` (and a custom
    maze's map as ``maze/<name>.txt``, which :func:`load_planner` evaluates on). The saved config holds the planned
    tokens as a number (``data.horizon``; None resolves to the maze's default first)."""
    cfg = with_plan_tokens(cfg)
    torch.manual_seed(cfg.train.seed)
    data = data if data is not None else load_or_generate_maze2d(cfg.data.maze, cfg.data.num_steps, progress=progress)
    norm = Normalizer.fit(data)
    ds = MazeWindows(data, cfg.data, norm)
    schedule = NoiseSchedule(cfg.diffusion)
    model = build_model(cfg.model, (cfg.data.frame_stack, ROW), cfg.diffusion.num_levels)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_bytes(Path(run_dir) / STATS_FILE, json.dumps(norm.to_dict()).encode())
        save_run_maze(get_maze(cfg.data.maze), run_dir)
    result = train(model, schedule, ds, cfg.train, cfg.objective, run_dir=run_dir, config_dict=config_to_dict(cfg),
                   resume=resume, device=device, progress=progress)
    if run_dir is not None:
        ckpt.atomic_write_bytes(Path(run_dir) / "train_time.json",
                                json.dumps({"seconds": result.seconds, "steps": result.step}).encode())
    return result, norm


def with_plan_tokens(cfg: PlanningConfig) -> PlanningConfig:
    """``cfg`` with ``data.horizon`` and ``train.steps`` as numbers (None: the maze's defaults, :func:`plan_tokens_for`,
    :func:`train_steps_for`)."""
    if cfg.data.horizon is None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, horizon=cfg.data.plan_tokens))
    if cfg.train.steps is None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=train_steps_for(get_maze(cfg.data.maze))))
    return cfg


def load_planner(run_dir: str | Path, device: str = "cpu", weights: str = "auto"):
    """``(cfg, model, schedule, norm)`` from a run directory written by :func:`train_planner`.

    ``weights``: ema | raw | auto. ``auto`` takes the EMA weights only once the run is long enough for the
    EMA to have forgotten its initialization (steps · (1 − decay) ≥ 3, i.e. < 5 % initial weight left);
    a short run (e.g. 1000 steps at decay 0.999 keeps 37 % of the random init) uses the raw weights.
    """
    check_choice("weights", weights, ("auto", "ema", "raw"))
    run_dir = Path(run_dir)
    for f in (ckpt.CONFIG_FILE, STATS_FILE):
        if not (run_dir / f).exists():
            raise CheckpointError(f"{run_dir} is not a planning run directory (missing {f})")
    conf = ckpt.load_yaml(run_dir / ckpt.CONFIG_FILE)
    saved_map = run_maze_file(run_dir)
    if saved_map is not None and isinstance(conf.get("data"), dict):  # the run's own copy of its custom map
        conf["data"]["maze"] = str(saved_map)
    cfg = from_dict(PlanningConfig, conf)
    norm = Normalizer.from_dict(json.loads((run_dir / STATS_FILE).read_text()))
    model = build_model(cfg.model, (cfg.data.frame_stack, ROW), cfg.diffusion.num_levels)
    if weights == "auto":
        steps = cfg.train.steps
        if (run_dir / "train_time.json").exists():
            steps = json.loads((run_dir / "train_time.json").read_text()).get("steps", steps)
        weights = "ema" if steps * (1 - cfg.train.ema_decay) >= 3 and (run_dir / ckpt.EMA_FILE).exists() else "raw"
    wfile = run_dir / (ckpt.EMA_FILE if weights == "ema" else ckpt.MODEL_FILE)
    if not wfile.exists():
        raise CheckpointError(f"{run_dir} has no {wfile.name}")
    ckpt.load_weights(model, wfile)
    return cfg, model.to(device).eval(), NoiseSchedule(cfg.diffusion).to(device), norm


# ---------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------


def goal_distance_guidance(goal_n: torch.Tensor, norm: Normalizer, vel_weight: float = 0.0,
                           reward_weight: float = 0.0, reward_radius: float = 0.5, reward_temperature: float = 0.1,
                           start: torch.Tensor | None = None, distance_positions: str = "planned",
                           reward_positions: str = "planned", window: int = 0, distance_fn=None,
                           velocity: torch.Tensor | None = None, dynamics: ActionDynamics | None = None):
    """log c(x̂0) = Σ_{planned steps j} (−sqrt(‖p_j − g‖² + w² ‖v_j‖²) + ρ σ((r − ‖p_j − g‖)/τ)), world units.

    With ``vel_weight`` w = 0 the first term is the distance of every planned position to the goal; w > 0
    measures the distance to the goal *state* (g, zero velocity). The second term (``reward_weight`` ρ > 0)
    is a smooth count of the planned steps inside the reward radius r, i.e. the D4RL return of the plan.
    ``goal_n: (B, 2)`` goal in normalized coordinates. The plan tokens are ``(B·N, H, k, 6)``.

    Which p_j each term scores (``distance_positions``, ``reward_positions``): ``planned``, the plan's position
    channels; ``integrated``, ``start + DT · Σ_{i≤j} v_i`` (where the planned velocities lead from the world
    position ``start: (B, 2)``); ``both``: the distance term takes the larger of the two distances, and in the
    reward term a step counts when both are inside the radius (the product of the two indicators). ``window``
    m > 0 anchors the integration on the plan's own position m steps earlier, ``p_{j−m} + DT · Σ_{j−m<i≤j} v_i``
    (from ``start`` for j ≤ m): velocities that do not match the positions still show, while walls (which only
    the planned positions respect) bend the sum every m steps. ``actions``: where the plan's forces (the channels
    that are executed) lead from the current state (``start``, ``velocity: (B, 2)`` world) under the velocity
    response ``dynamics`` (:func:`action_positions`; the same window).

    ``distance_fn(p: (B·N, H·k, 2) world) -> (B·N, H·k)`` replaces ‖p_j − g‖ in the first term (e.g. the dataset's
    shortest-path distance, :meth:`dforce.recipes.planning.maze2d.geodesic.GeodesicField.distance_fn`); the reward
    term keeps the Euclidean distance, as the env's reward.
    """
    check_choice("distance_positions", distance_positions, DISTANCE_POSITIONS)
    check_choice("reward_positions", reward_positions, REWARD_POSITIONS)
    if start is None and (distance_positions != "planned" or reward_positions != "planned"):
        raise ConfigError("integrated guidance positions need the start position")
    if "actions" in (distance_positions, reward_positions) and (velocity is None or dynamics is None):
        raise ConfigError("guidance positions 'actions' need the current velocity and the fitted dynamics")
    std = torch.as_tensor(norm.std, dtype=torch.float32)
    mean = torch.as_tensor(norm.mean, dtype=torch.float32)

    def log_c(x0_hat: torch.Tensor, t0: int) -> torch.Tensor:
        s = x0_hat.flatten(1, 2)  # (B·N, H·k, 6)
        rep = s.shape[0] // goal_n.shape[0]  # MCG replicas per episode
        g = goal_n.to(s).repeat_interleave(rep, 0).unsqueeze(1)  # (B·N, 1, 2) normalized
        v = s[..., VEL] * std[VEL].to(s) + mean[VEL].to(s)  # (B·N, H·k, 2) world

        goal = g * std[POS].to(s) + mean[POS].to(s)  # (B·N, 1, 2) world

        offsets: dict[str, torch.Tensor] = {}  # per kind, once per call (both terms may score the same positions)

        def offset(kind: str) -> torch.Tensor:  # world position − goal (B·N, H·k, 2)
            if kind not in offsets:
                offsets[kind] = positions_minus_goal(kind)
            return offsets[kind]

        def positions_minus_goal(kind: str) -> torch.Tensor:
            if kind == "planned":
                return (s[..., POS] - g) * std[POS].to(s)
            if kind == "actions":
                world = s * std.to(s) + mean.to(s)  # (B·N, H·k, 6) world rows
                p0, v0 = (t.to(s).repeat_interleave(rep, 0) for t in (start, velocity))  # (B·N, 2) each
                return action_positions(dynamics, p0, v0, world[..., ACT], world[..., 2:], window) - goal
            p0 = start.to(s).repeat_interleave(rep, 0).unsqueeze(1)  # (B·N, 1, 2)
            if not window:
                return p0 + DT * v.cumsum(1) - goal
            planned = torch.cat([p0, s[..., POS] * std[POS].to(s) + mean[POS].to(s)], 1)  # (B·N, L+1, 2): 0 = start
            moved = torch.cat([torch.zeros_like(p0), DT * v.cumsum(1)], 1)  # (B·N, L+1, 2) displacement since start
            anchor = (torch.arange(1, s.shape[1] + 1, device=s.device) - window).clamp(min=0)  # (L,) where step j starts
            return planned[:, anchor] + moved[:, 1:] - moved[:, anchor] - goal

        def dist2(kind: str, fn=None) -> torch.Tensor:  # squared distance to the goal (B·N, H·k), world units
            if fn is not None:  # e.g. the shortest path through the data
                return fn(offset(kind) + goal).pow(2)
            return offset(kind).pow(2).sum(-1)

        if distance_positions == "both":
            dd = torch.maximum(dist2("planned", distance_fn), dist2("integrated", distance_fn))
        else:
            dd = dist2(distance_positions, distance_fn)
        d = (dd + vel_weight**2 * v.pow(2).sum(-1) + 1e-6).sqrt() if vel_weight else (dd + 1e-6).sqrt()
        if reward_weight:
            inside = lambda kind: torch.sigmoid(  # noqa: E731
                (reward_radius - (dist2(kind) + 1e-6).sqrt()) / reward_temperature)
            r = inside("planned") * inside("integrated") if reward_positions == "both" else inside(reward_positions)
            d = d - reward_weight * r
        return -d.sum(1)

    return log_c


@dataclass
class Plan:
    actions: np.ndarray  # (N, H·k, 2) raw planned forces
    states: np.ndarray  # (N, H·k, 4) raw planned next observations
    seconds: float  # wall time of this (batched) planning call


class Planner:
    """Plans for N episodes at once from their real histories (see the module docstring).

    ``plan(obs_hist (t+1, N, 4), act_hist (t, N, 2), goals (N, 2), generator) -> Plan``; ``t`` must be a
    multiple of ``frame_stack``.
    """

    def __init__(self, cfg: PlanningConfig, model, schedule: NoiseSchedule, norm: Normalizer, device="cpu",
                 sampler: SamplerConfig | None = None, geodesic: GeodesicField | None = None):
        self.cfg, self.model, self.schedule, self.norm = cfg, model, schedule, norm
        self.device = torch.device(device)
        s = sampler or cfg.sampler
        self.sampler = dataclasses.replace(s, window=cfg.data.plan_tokens)  # one chunk = the plan
        self.geodesic = geodesic  # plan.distance=data_geodesic: built from the training data on first use
        self.dynamics: ActionDynamics | None = None  # guidance positions "actions": fitted to the data on first use

    def action_dynamics(self) -> ActionDynamics:
        """The velocity response to the force fitted to the planner's training data (guidance positions
        ``actions``)."""
        if self.dynamics is None:
            d = self.cfg.data
            self.dynamics = ActionDynamics.fit(load_or_generate_maze2d(d.maze, d.num_steps, progress=False))
        return self.dynamics

    def geodesic_field(self) -> GeodesicField:
        """The shortest-path field over the positions of the planner's training data (``plan.distance``)."""
        if self.geodesic is None:
            d, pc = self.cfg.data, self.cfg.plan
            data = load_or_generate_maze2d(d.maze, d.num_steps, progress=False)
            self.geodesic = GeodesicField.from_positions(data["observations"][:, :2], pc.geodesic_cell,
                                                          outside_slope=pc.geodesic_outside_slope,
                                                          walls=pc.geodesic_walls)
        return self.geodesic

    def context(self, obs_hist: np.ndarray, act_hist: np.ndarray) -> torch.Tensor:
        """Real tokens ``(N, C, k, 6)``: start token + completed real tokens, the last ``context_tokens``; with
        ``data.markovian`` the start token of the current observation only (C = 1)."""
        k, C = self.cfg.data.frame_stack, self.cfg.data.context
        if self.cfg.data.markovian:
            tok = self.norm.encode(start_rows(obs_hist[-1], k))[:, None]  # (N, 1, k, 6)
            return torch.as_tensor(tok, dtype=torch.float32, device=self.device)
        t = len(act_hist)
        if t % k:
            raise ConfigError(f"plans start every frame_stack={k} steps, got t={t}")
        rows = [start_rows(obs_hist[0], k)]
        if t:
            real = np.concatenate([act_hist, obs_hist[1:]], -1).transpose(1, 0, 2)  # (N, t, 6)
            rows.append(real)
        rows = np.concatenate(rows, 1)[:, -C * k:]  # (N, C'·k, 6)
        tok = self.norm.encode(rows).reshape(len(rows), -1, k, ROW)
        return torch.as_tensor(tok, dtype=torch.float32, device=self.device)

    def plan(self, obs_hist: np.ndarray, act_hist: np.ndarray, goals: np.ndarray,
             generator: torch.Generator | None = None, guided: bool = True) -> Plan:
        """Plans ``(N, H·k, ·)`` for the N episodes of ``obs_hist (t+1, N, 4)``; with ``plan.candidates`` n > 1 (and
        guidance) n plans per episode are sampled as one batch of N·n and each episode keeps its best-scored one."""
        t0 = time.perf_counter()
        pc = self.cfg.plan
        n = pc.candidates if guided else 1
        ctx = self.context(obs_hist, act_hist).repeat_interleave(n, 0)  # (N·n, C, k, 6)
        goal_n = torch.as_tensor((goals - self.norm.mean[2:4]) / self.norm.std[2:4], dtype=torch.float32,
                                 device=self.device).repeat_interleave(n, 0)  # (N·n, 2)
        now = torch.as_tensor(obs_hist[-1], dtype=torch.float32, device=self.device)  # (N, 4) world: [p, v]
        dyn = self.action_dynamics() if "actions" in (pc.guidance_positions, pc.reward_positions) else None
        dist = None
        if pc.distance == "data_geodesic":
            # one field per episode: its n candidates (and MCG futures) are consecutive rows, which distance_fn maps
            dist = self.geodesic_field().distance_fn(goals, self.device)
        guide = goal_distance_guidance(goal_n, self.norm, pc.goal_velocity_weight, pc.reward_weight, pc.reward_radius,
                                       pc.reward_temperature, now[:, :2].repeat_interleave(n, 0), pc.guidance_positions,
                                       pc.reward_positions, pc.integration_window, dist,
                                       velocity=now[:, 2:].repeat_interleave(n, 0), dynamics=dyn)
        steer = guide
        if n > 1 and pc.candidate_guidance_min != 1.0:  # log c scaled per candidate = its own guidance scale
            w = torch.linspace(pc.candidate_guidance_min, 1.0, n, device=self.device).repeat(len(goals))  # (N·n,)
            steer = lambda x0, t0: guide(x0, t0) * w.repeat_interleave(x0.shape[0] // len(w))  # noqa: E731
        out = sample(self.model, self.schedule, self.sampler, length=self.cfg.data.plan_tokens, context=ctx,
                     guidance=steer if guided else None, generator=generator)
        tokens = out.x[:, out.context_len:]  # (N·n, H, k, 6) normalized
        if n > 1:
            best = guide(tokens, 0).view(-1, n).argmax(1)  # (N,) each episode's highest log c
            tokens = tokens.view(-1, n, *tokens.shape[1:])[torch.arange(len(best), device=best.device), best]
        plan = tokens.flatten(1, 2).double().cpu().numpy()  # (N, H·k, 6)
        raw = self.norm.decode(plan)
        if self.cfg.plan.inpaint_goal:
            raw[:, -1, 2:4] = goals
        return Plan(np.clip(raw[..., :2], -1, 1), raw[..., 2:], time.perf_counter() - t0)


def force_path(planner: Planner, obs: np.ndarray, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Where a plan's forces ``actions (L, 2)`` lead from the real state ``obs (4,)``: positions ``(L, 2)``
    (:func:`action_positions` without a window; ``states (L, 4)`` are the plan's own, unused then)."""
    dyn = planner.action_dynamics()
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)[None])  # noqa: E731
    return action_positions(dyn, t(obs[:2]), t(obs[2:]), t(actions), t(states), 0)[0].numpy()


def pd_action(target: np.ndarray, obs: np.ndarray, gains=(1.0, 1.0)) -> np.ndarray:
    """Diffuser's maze2d controller: ``a = kp (w_pos − pos) + kd (w_vel − vel)``; (N, 4) each → (N, 2)."""
    return np.clip(gains[0] * (target[:, :2] - obs[:, :2]) + gains[1] * (target[:, 2:] - obs[:, 2:]), -1, 1)


@dataclass
class RolloutResult:
    result: EvalResult
    executed: np.ndarray  # (N, T+1, 4) real observations
    first_plan: np.ndarray  # (N, H·k, 4) the first plan's states
    goals: np.ndarray  # (N, 2)
    plan_seconds: list[float]  # wall time of each batched planning call
    # episode 0, every plan: (env step, where the plan's forces lead from the real state (H·k, 2), plan states (H·k, 4))
    plans0: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)

    def final_plan(self, episode: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
        """``(step, force path (H·k, 2), states (H·k, 4))`` of the last plan episode 0 made before it first reached the
        goal (the plan that brought it there; its last plan when it never arrived). The force path is where the
        plan's forces (the executed channels) lead from the state it was made in, under the velocity response fitted
        to the data (:func:`action_positions`): what the planner does, where the plan's position channels are only
        what it predicts. Only episode 0's plans are kept."""
        if episode != 0 or not self.plans0:
            raise ConfigError("only episode 0's plans are recorded")
        first = self.result.steps_to_goal[0] if self.result.steps_to_goal is not None else -1
        before = [p for p in self.plans0 if first < 0 or p[0] < first]
        return (before or self.plans0)[-1]


def run_planner(planner: Planner, maze, episodes: int = 100, multi_goal: bool = False, seed: int = 0,
                executor: str | None = None, max_episode_steps: int | None = None, progress: bool = False,
                guided: bool = True, starts: np.ndarray | None = None, scale=None) -> RolloutResult:
    """Closed-loop MPC episodes, all ``episodes`` in one batch (``starts (N, 2)`` overrides the random
    start positions). Scores are D4RL-normalized on D4RL's mazes and normalized against the maze's random (0) and
    oracle (100) references on the same episodes elsewhere (``scale``: a
    :class:`~dforce.recipes.planning.maze2d.references.ScoreScale`; by default :func:`score_scale`, computed or read
    from its cache *before* the rollout, so a maze that cannot be scored fails at once)."""
    executor = executor or planner.cfg.plan.executor
    check_choice("executor", executor, ("actions", "pd"))
    if scale is None:
        scale = score_scale(maze, multi_goal, episodes, seed, max_episode_steps=max_episode_steps)
    env = Maze2DBatchEnv(maze, episodes, seed=seed, multi_goal=multi_goal, max_episode_steps=max_episode_steps)
    obs = env.reset(start=starts)
    gen = torch.Generator(device=planner.device).manual_seed(seed)
    obs_hist, act_hist, times, plans0 = [obs], [], [], []
    first_hit = np.full(episodes, -1, dtype=np.int64)
    r = planner.cfg.plan.replan_every
    plan, first = None, None
    from tqdm.auto import tqdm

    for t in tqdm(range(env.max_episode_steps), desc=f"plan {env.task.name}", disable=not progress, leave=False):
        if t % r == 0:
            ah = np.stack(act_hist) if act_hist else np.zeros((0, episodes, 2))
            plan = planner.plan(np.stack(obs_hist), ah, env.goals, gen, guided)
            times.append(plan.seconds)
            first = plan.states if first is None else first
            plans0.append((t, force_path(planner, obs[0], plan.actions[0], plan.states[0]), plan.states[0].copy()))
        j = t % r
        a = plan.actions[:, j] if executor == "actions" else pd_action(plan.states[:, j], obs, (planner.cfg.plan.pd_kp, planner.cfg.plan.pd_kd))
        obs, _, done, info = env.step(a)
        first_hit = np.where((first_hit < 0) & info.success, env.t, first_hit)
        obs_hist.append(obs)
        act_hist.append(a)
    res = eval_result(env.episode_returns, first_hit >= 0, first_hit, scale)
    return RolloutResult(res, np.stack(obs_hist, 1), first, env.goals.copy(), times, plans0)
