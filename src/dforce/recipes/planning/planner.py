"""Maze2D planning execution: the goal guidance on a plan's x0 prediction (:func:`goal_distance_guidance`), the
MPC planner that plans all episodes of a batch together (:class:`Planner`, :class:`Plan`), the executors' helpers
(:func:`force_path`, :func:`pd_action`) and closed-loop rollouts (:func:`run_planner`, :class:`RolloutResult`).
The recipe's steps are described in :mod:`dforce.recipes.planning.recipe`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dforce._utils import check_choice
from dforce.recipes.planning.maze2d import Maze2DBatchEnv, load_or_generate_maze2d
from dforce.recipes.planning.maze2d.controller import EvalResult, eval_result
from dforce.recipes.planning.maze2d.references import score_scale
from dforce.recipes.planning.maze2d.geodesic import GeodesicField
from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError
from dforce.sampler import SamplerConfig, sample
from dforce.recipes.planning.config import (ACT, DISTANCE_POSITIONS, DT, POS, REWARD_POSITIONS, ROW, VEL,
                                            PlanningConfig)
from dforce.recipes.planning.windows import ActionDynamics, Normalizer, action_positions, start_rows


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
    """Plans for N episodes at once from their real histories (see :mod:`dforce.recipes.planning.recipe`).

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
