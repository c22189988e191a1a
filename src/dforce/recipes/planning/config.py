"""Maze2D planning: the run configuration (``PlanningConfig`` and its sections ``data``, ``diffusion``, ``model``,
``objective``, ``train``, ``sampler``, ``plan``), the maze-size defaults they resolve to (:func:`plan_tokens_for`,
:func:`train_steps_for`) and the step-row layout constants (``ROW``, ``ACT``/``POS``/``VEL``, ``DT``) shared by the
data windows (:mod:`dforce.recipes.planning.windows`), the planner (:mod:`dforce.recipes.planning.planner`) and
training (:mod:`dforce.recipes.planning.recipe`, whose docstring describes the recipe)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from dforce._utils import check_choice
from dforce.recipes.planning.maze2d import get_maze
from dforce.recipes.planning.maze2d.geodesic import WALLS
from dforce.diffusion import NoiseScheduleConfig
from dforce.engine.trainer import TrainConfig
from dforce.errors import ConfigError
from dforce.models import ModelConfig
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig

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
# larger maze 5000 (the benchmark's Large planner trains 10 000; 5000 is the 2-CPU budget of planning_maze; a map of
# diameter 14 gained 8.5 points with random goals from 2500 to 5000, docs/your_data.md)
TRAIN_STEPS_BY_DIAMETER = ((11, 2500), (None, 5000))  # (max diameter, steps)


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
    candidates: int = 4  # n > 1: n guided plans per replanning, run the best-scored (Diffuser's sort by value; n× cost)
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
    # None: from the maze's diameter (train_steps_for: 2500 up to 11 cells, 5000 beyond; a 2-CPU budget, the reference
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
