"""Imitation with memory on fruit swap (paper §4.4): a Diffusion Forcing policy executed with MPC.

Step tokens are ``[a_{t-1}, o_t]`` (26-D: the 3-D action that led to observation ``o_t``, the 13-D state
vector scaled to [-1, 1], and the 10 offsets fruit/slot minus gripper measured in env steps and clipped to
[-1, 1], which make the reach/place velocities a clipped copy and "arrived, close the gripper" an easy
read-out); the first carries the "open, still" action ``[0, 0, -1]``. ``frame_stack`` k consecutive step
tokens form one model token (:func:`stack_tokens`, as the reference stacks Maze2D tokens): the policy plans
and executes k actions at a time and the GRU runs k times fewer steps (training ~4x faster at k = 4).
The recurrent latent summarises every committed token, so the policy remembers the start layout that
the current observation no longer shows (see :mod:`dforce.recipes.imitation.fruit_swap` for why that matters).

**Observations are the 13-D state vector** (the paper used 32 px images through a conv encoder); this
first version is state-only. The corruption kinds of :mod:`dforce.recipes.imitation.corruption` act on it directly.

MPC loop, per env step t (all envs batched, :class:`DiffusionPolicy`):
    1. every k steps commit the real token (the last k ``[a, o]`` steps) to the latent with ``absorb`` at
       level 0 — flagged-corrupted observations in it are imputed (``policy.impute``: the plan's prediction
       of them, or inpainted given the token's clean steps and real actions, :func:`inpaint_token`) and the
       token is committed at the stabilization level, or at ``corrupt_level`` (K = missing: a pure prior
       step) when all of its observations are flagged;
    2. when the queue is empty, sample a plan of ``horizon`` tokens from that latent (``sample(state=...)``)
       and queue the actions of its first ``execute`` tokens;
    2'. ``policy.replan="step"`` (the preset): in between commits, with m of the executing token's k steps
       observed, re-plan its remaining k - m actions by inpainting the token (observed steps known,
       flagged observations unknown) and the ``horizon - 1`` after it: the policy is closed-loop at every
       env step while the model still works on k-step tokens;
    3. return the next queued action.

Methods (one backbone, three recipes):
    df                Diffusion Forcing: independent levels, whole episodes, latent kept (memory).
    markov_diffusion  "diffusion policy": same model and loss on windows of 1 + horizon tokens; at test
                      time the latent is reset at every replan and only the current token is absorbed
                      (use ``frame_stack=1`` so that token is the current observation only).
    next_frame        next-token diffusion: ``level_strategy=teacher_forcing`` on whole episodes, an
                      autoregressive sampling schedule; it only knows clean context, so corrupted
                      observations are committed at level 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dforce._utils import check_choice
from dforce.recipes.imitation.fruit_swap import ACTION_DIM, STATE_DIM, DemoNoise, Demos, FruitSwapConfig, make_demos
from dforce.data.sequences import WindowDataset
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig, sampling_levels
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict
from dforce.engine.trainer import TrainConfig, TrainResult, train
from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

METHODS = ("df", "markov_diffusion", "next_frame")
IMPUTE = ("plan", "inpaint")
REPLAN = ("token", "step")
REL_DIM = 10  # (A, B, slot 1-3) minus gripper, 2-D each
TOKEN_DIM = ACTION_DIM + STATE_DIM + REL_DIM  # 26
START_ACTION = (0.0, 0.0, -1.0)  # the "open, still" action placed in the first token
OFFSET_SCALE = FruitSwapConfig.max_speed  # offsets are measured in env steps (see encode_tokens)


@dataclass(frozen=True)
class PolicyConfig:
    horizon: int = 4  # H tokens planned per MPC step (reference Maze2D replans every 10 of 300-600 steps)
    execute: int = 1  # actions executed from each plan before replanning
    steps: int = 10  # DDIM sampling steps (paper robot: 25; 10 keeps 100-episode evals ~1 min on CPU)
    uncertainty_scale: float = 1.0  # pyramid slope: later plan tokens start noisier (paper's causal uncertainty)
    stabilization_level: int = 1  # level generated plan tokens are committed at inside a plan (~1% of K)
    clip_x0: float = 1.0  # tokens are scaled to [-1, 1]
    corrupt_level: int | None = None  # level a token whose observations are all flagged is fed at (None = K, missing)
    imputed_level: int | None = None  # level a token with some flagged (imputed) steps is fed at (None = stabilization_level)
    replan: str = "token"  # "token": plan once per token, execute its k actions open-loop; "step": after every
    # env step re-plan the rest of the executing token by inpainting given its observed steps (closed loop)
    impute: str = "plan"  # flagged steps of a partly corrupted token: "plan" (the executing plan's guess) or
    # "inpaint" (denoise them given the token's clean steps, its real actions and the memory: inpaint_token)

    def __post_init__(self):
        for k in ("horizon", "execute", "steps"):
            if getattr(self, k) < 1:
                raise ConfigError(f"policy.{k} must be >= 1, got {getattr(self, k)}")
        check_choice("policy.impute", self.impute, IMPUTE)
        check_choice("policy.replan", self.replan, REPLAN)
        if self.execute > self.horizon:
            raise ConfigError(f"policy.execute={self.execute} must be <= policy.horizon={self.horizon}")


@dataclass(frozen=True)
class ImitationConfig:
    method: str = "df"  # df | markov_diffusion | next_frame (module docstring)
    n_demos: int = 150  # paper: 150 demonstrations
    offset_scale: float = OFFSET_SCALE  # fruit/slot-minus-gripper offsets divided by this, clipped to [-1, 1]
    frame_stack: int = 1  # env steps per token (reference Maze2D: 10); see stack_tokens
    demo_seed: int = 0
    demo_noise: DemoNoise = field(default_factory=DemoNoise)  # DART perturbations while recording (fruit_swap.DemoNoise)
    action_loss_weight: float = 1.0  # loss weight of the action entries relative to the observation entries
    diffusion: NoiseScheduleConfig = field(  # paper robot: x0-prediction
        default_factory=lambda: NoiseScheduleConfig(num_levels=100, beta_schedule="cosine", objective="x0"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="rnn", width=128, depth=2))
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(weighting="min_snr"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=32, lr=1e-3,
                                                                   ema_decay=0.995, checkpoint_every=500))
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        if self.frame_stack < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {self.frame_stack}")
        if not self.offset_scale > 0:
            raise ConfigError(f"offset_scale must be > 0, got {self.offset_scale}")
        if not self.action_loss_weight > 0:
            raise ConfigError(f"action_loss_weight must be > 0, got {self.action_loss_weight}")
        if self.n_demos < 1:
            raise ConfigError(f"n_demos must be >= 1, got {self.n_demos}")


# ---------------------------------------------------------------- tokens


def encode_tokens(prev_actions: np.ndarray, states: np.ndarray, offset_scale: float = OFFSET_SCALE) -> torch.Tensor:
    """``prev_actions: (..., 3)`` in [-1, 1], ``states: (..., 13)`` in [0, 1] -> tokens ``(..., 26)`` in [-1, 1]:
    ``[action, 2 * state - 1, clip((positions[3:13] - gripper) / offset_scale, -1, 1)]``.

    With ``offset_scale`` = the env's step length the offsets are "how many steps away" per axis: the
    expert's reach velocity is a clipped copy of them and "arrived" (1/5 of a step) is a large, easily
    read change, where raw offsets (scale 1) put the grasp decision in the third decimal."""
    a = np.asarray(prev_actions, np.float32)
    st = np.asarray(states, np.float32)
    rel = np.clip((st[..., 3:13] - np.tile(st[..., 0:2], 5)) / offset_scale, -1.0, 1.0)  # (..., 10)
    return torch.from_numpy(np.concatenate([a, 2.0 * st - 1.0, rel], -1).astype(np.float32))


def episode_tokens(states: np.ndarray, actions: np.ndarray, final_state: np.ndarray,
                   offset_scale: float = OFFSET_SCALE) -> torch.Tensor:
    """One demo -> tokens ``(T + 1, 26)``: ``[START_ACTION, o_0], [a_0, o_1], ..., [a_{T-1}, o_T]``."""
    prev = np.concatenate([np.asarray([START_ACTION], np.float32), actions], 0)
    obs = np.concatenate([states, final_state[None]], 0)
    return encode_tokens(prev, obs, offset_scale)


def stack_tokens(base: torch.Tensor, k: int) -> torch.Tensor:
    """Step tokens ``base: (T + 1, 26)`` (``[START_ACTION, o_0], [a_0, o_1], ...``) -> stacked tokens
    ``(ceil((T + k) / k), k * 26)``.

    Token 0 is ``k`` copies of the first step token (the robot idle at its start), token j >= 1 holds steps
    ``(j-1)k + 1 .. jk``: the ``k`` actions executed after the last observation of token j-1 and the ``k``
    observations they led to. So the policy, having committed token j-1, plans token j, executes its ``k``
    actions open-loop and commits the real token j. The tail is padded with the last observation and the
    "open, still" action. ``k = 1`` returns ``base`` unchanged.
    """
    if k == 1:
        return base
    T1 = base.shape[0]
    pad = (-(T1 - 1)) % k  # steps after the first until the length is a multiple of k
    still = base[-1:].clone()
    still[:, :ACTION_DIM] = torch.tensor(START_ACTION)
    seq = torch.cat([base[:1].expand(k, -1), base[1:], still.expand(pad, -1)], 0)  # (k + T + pad, 26)
    return seq.reshape(-1, k * base.shape[-1])


def final_states(demos: Demos, config: FruitSwapConfig | None = None) -> list[np.ndarray]:
    """The observation after each demo's last action (demos store observations before each action)."""
    return list(demos.finals)


def demo_sequences(demos: Demos, config: FruitSwapConfig | None = None, offset_scale: float = OFFSET_SCALE,
                   frame_stack: int = 1) -> list[torch.Tensor]:
    """All demos as token sequences, each ``(ceil((T_i + k) / k), k * 26)`` for ``frame_stack`` k
    (``(T_i + 1, 26)`` for k = 1)."""
    return [stack_tokens(episode_tokens(s, a, f, offset_scale), frame_stack)
            for s, a, f in zip(demos.states, demos.actions, final_states(demos, config))]


def make_dataset(cfg: ImitationConfig, sequences: list[torch.Tensor]) -> WindowDataset:
    """Whole (right-padded) episodes for df / next_frame; windows of ``1 + horizon`` tokens for the
    Markovian baseline, which never sees more than the current observation."""
    if cfg.method == "markov_diffusion":
        return WindowDataset(sequences, 1 + cfg.policy.horizon)
    return WindowDataset(sequences, max(len(s) for s in sequences))


def entry_weights(cfg: ImitationConfig) -> torch.Tensor | None:
    """Loss weights of a stacked token's ``k * 26`` entries: ``action_loss_weight`` on the 3 action entries of
    each step, 1 elsewhere, normalised to mean 1 (so the loss scale and the min-SNR weights keep their
    meaning); None when uniform. The actions are 12 of 104 entries at ``frame_stack`` 4, yet they are all
    the policy executes."""
    if cfg.action_loss_weight == 1.0:
        return None
    w = torch.ones(cfg.frame_stack, TOKEN_DIM)
    w[:, :ACTION_DIM] = cfg.action_loss_weight
    w = w.flatten()
    return w / w.mean()


def objective_for(cfg: ImitationConfig) -> ObjectiveConfig:
    strategy = "teacher_forcing" if cfg.method == "next_frame" else "independent"
    return replace(cfg.objective, level_strategy=strategy)


# ---------------------------------------------------------------- policy


@torch.no_grad()
def inpaint_token(model, schedule: NoiseSchedule, tok: torch.Tensor, known: torch.Tensor, state, steps: int,
                  clip_x0: float | None = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the unknown entries of one token by replacement inpainting: DDIM from level K to 0 in ``steps``
    steps after the committed ``state`` (the memory), the known entries re-noised to the current level
    before every model call and put back into x̂0.

    ``tok: (N, T, D)`` (unknown entries: any value; all T tokens share one level per step), ``known: (N, T,
    D)`` bool -> ``(N, T, D)`` with the known entries equal to ``tok``."""
    (N, T), dev = tok.shape[:2], tok.device
    lv = sampling_levels(steps, schedule.num_levels).tolist()  # (S + 1,) ascending: 0 .. K
    x = torch.randn(tok.shape, device=dev, generator=generator)
    for s in range(steps, 0, -1):
        kf = torch.full((N, T), lv[s], dtype=torch.long, device=dev)
        kt = torch.full((N, T), lv[s - 1], dtype=torch.long, device=dev)
        noise = torch.randn(tok.shape, device=dev, generator=generator)
        x = torch.where(known, schedule.add_noise(tok, kf, noise), x)
        x0, eps = schedule.to_x0_eps(x, kf, model.forward(x, kf, None, state).float(), clip_x0)
        x0 = torch.where(known, tok, x0)
        x = schedule.step(x, kf, kt, x0, eps)
    return torch.where(known, tok, x)


class DiffusionPolicy:
    """The MPC policy for :func:`dforce.recipes.imitation.fruit_swap.evaluate` (module docstring, steps 1-3).

    Args:
        model, schedule: a trained backbone and its noise schedule.
        cfg: MPC / sampling settings (``horizon`` and ``execute`` count tokens of ``frame_stack`` steps).
        memory: keep the latent across steps (False: reset it every replan — the Markovian baseline).
        schedule_name: sampling matrix (pyramid for DF, autoregressive for next-frame diffusion).
        corruption_mask: ``() -> (N,) bool`` flags of this step's corrupted observations (e.g.
            ``lambda: hook.mask`` of a :class:`~dforce.recipes.imitation.corruption.CorruptionHook`), or None.
        use_corruption_levels: replace flagged observations by the plan's prediction of them and commit the
            token at ``cfg.imputed_level`` (default: the stabilization level), or at ``cfg.corrupt_level``
            (default K: missing) when every observation in it is flagged (False: commit them as clean, level 0).
        frame_stack: env steps per token (the run's ``frame_stack``).
    ``self.fed_levels`` holds the ``(N,)`` levels the last committed tokens were absorbed at.
    """

    def __init__(self, model, schedule: NoiseSchedule, cfg: PolicyConfig, memory: bool = True,
                 schedule_name: str = "pyramid", corruption_mask: Callable[[], np.ndarray] | None = None,
                 use_corruption_levels: bool = True, seed: int = 0, device: str | torch.device = "cpu",
                 offset_scale: float = OFFSET_SCALE, frame_stack: int = 1):
        self.model, self.schedule, self.cfg, self.memory = model, schedule, cfg, memory
        self.offset_scale, self.k = offset_scale, int(frame_stack)
        self.device = torch.device(device)
        K = schedule.num_levels
        self.corrupt_level = K if cfg.corrupt_level is None else int(cfg.corrupt_level)
        if not 0 <= self.corrupt_level <= K:
            raise ConfigError(f"policy.corrupt_level={cfg.corrupt_level} must be in [0, K={K}]")
        self.imputed_level = min(cfg.stabilization_level, K) if cfg.imputed_level is None else int(cfg.imputed_level)
        if not 0 <= self.imputed_level <= K:
            raise ConfigError(f"policy.imputed_level={cfg.imputed_level} must be in [0, K={K}]")
        self.scfg = SamplerConfig(steps=cfg.steps, schedule=schedule_name, uncertainty_scale=cfg.uncertainty_scale,
                                  window=cfg.horizon, stabilization_level=min(cfg.stabilization_level, K),
                                  clip_x0=cfg.clip_x0)
        self.corruption_mask, self.use_corruption_levels = corruption_mask, use_corruption_levels
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.seed = seed

    def reset(self, n: int) -> None:
        self.n, self.t = n, 0
        self.state = self.model.init_state(n, self.device)
        self.prev_action = np.tile(np.asarray(START_ACTION, np.float32), (n, 1))
        self.queue = np.zeros((n, 0, ACTION_DIM), np.float32)
        self.steps: list[torch.Tensor] = []  # step tokens (N, 26) since the last commit
        self.flags: list[np.ndarray] = []  # their (N,) corruption flags
        self.plan = None  # (N, k, 26) the executing token as planned (None before the first plan)
        self.plans = None  # (N, e, k, 26) the executed tokens of the last plan
        self.fed_levels = np.zeros(n, np.int64)
        self.generator.manual_seed(self.seed)

    def _commit(self) -> torch.Tensor:
        """Build the real token from the buffered steps, absorb it, return the new latent ``(L, N, W)``."""
        steps = torch.stack(self.steps, 1)  # (N, k, 26); at t = 0: k copies of the first step
        flags = np.stack(self.flags, 1)  # (N, k)
        levels = np.zeros(self.n, np.int64)
        if self.use_corruption_levels and flags.any():
            f = torch.from_numpy(flags).to(self.device)[..., None]  # (N, k, 1)
            if self.cfg.impute == "inpaint" and self.t > 0:  # the model's posterior given the clean steps
                known = (~f).expand_as(steps).clone()
                known[..., :ACTION_DIM] = True  # executed actions are real
                filled = inpaint_token(self.model, self.schedule, steps.reshape(self.n, 1, -1),
                                       known.reshape(self.n, 1, -1), self.state if self.memory else None,
                                       self.cfg.steps, self.cfg.clip_x0, self.generator)
                steps = torch.where(f, filled.reshape(steps.shape), steps)
            elif self.plan is not None:  # the prior's guess for the flagged observations (actions are real)
                obs = torch.where(f, self.plan[..., ACTION_DIM:], steps[..., ACTION_DIM:])
                steps = torch.cat([steps[..., :ACTION_DIM], obs], -1)
            levels = np.where(flags.all(1), self.corrupt_level,
                              np.where(flags.any(1), self.imputed_level, 0))
        self.fed_levels = levels
        tok = steps.reshape(self.n, 1, -1)  # (N, 1, k * 26)
        lv = torch.from_numpy(levels).to(self.device)[:, None]  # (N, 1)
        noise = torch.randn(tok.shape, device=self.device, generator=self.generator)
        tok = self.schedule.add_noise(tok, lv, noise)
        base = self.state if self.memory else self.model.init_state(self.n, self.device)
        state = self.model.absorb(tok, lv, None, base)
        if self.memory:
            self.state = state
        self.steps, self.flags = [], []
        return state

    def _replan_within_token(self) -> None:
        """Inpaint the executing token (its ``m`` observed steps known, flagged observations not) and the
        ``horizon - 1`` after it from the memory; queue the token's remaining ``k - m`` actions."""
        m, H, n = len(self.steps), self.cfg.horizon, self.n
        tok = torch.zeros(n, H, self.k, TOKEN_DIM, device=self.device)
        tok[:, 0, :m] = torch.stack(self.steps, 1)
        known = torch.zeros(tok.shape, dtype=torch.bool, device=self.device)
        known[:, 0, :m] = True
        if self.use_corruption_levels and self.flags:
            flags = torch.from_numpy(np.stack(self.flags, 1)).to(self.device)  # (N, m)
            known[:, 0, :m, ACTION_DIM:] &= ~flags[..., None]
        out = inpaint_token(self.model, self.schedule, tok.reshape(n, H, -1), known.reshape(n, H, -1), self.state,
                            self.cfg.steps, self.cfg.clip_x0, self.generator).reshape(n, H, self.k, TOKEN_DIM)
        self.plan = out[:, 0]
        self.queue = out[:, 0, m:, :ACTION_DIM].clamp(-1, 1).cpu().numpy()

    @torch.no_grad()
    def __call__(self, images: np.ndarray, states: np.ndarray, active: np.ndarray) -> np.ndarray:
        """``states: (N, 13)`` -> actions ``(N, 3)`` (images unused: state-only observations)."""
        if not hasattr(self, "n") or len(states) != self.n:
            self.reset(len(states))
        flags = np.zeros(self.n, bool)
        if self.corruption_mask is not None:
            flags = np.asarray(self.corruption_mask(), bool)
        step = encode_tokens(self.prev_action, states, self.offset_scale).to(self.device)  # (N, 26)
        reps = self.k if self.t == 0 else 1  # token 0: the first step repeated (see stack_tokens)
        self.steps += [step] * reps
        self.flags += [flags] * reps
        if len(self.steps) == self.k:  # a whole token observed: commit it
            state = self._commit()
            if self.queue.shape[1] == 0:  # plan executed: replan from the latent
                out = sample(self.model, self.schedule, self.scfg, length=self.cfg.horizon, batch=self.n,
                             token_shape=(self.k * TOKEN_DIM,), state=state, generator=self.generator,
                             device=self.device)
                e = self.cfg.execute if self.memory else 1  # without memory each replan sees one token only
                self.plans = out.x.reshape(self.n, self.cfg.horizon, self.k, TOKEN_DIM)[:, :e]  # (N, e, k, 26)
                self.queue = self.plans[..., :ACTION_DIM].reshape(self.n, -1, ACTION_DIM).clamp(-1, 1).cpu().numpy()
            self.plan = self.plans[:, -(self.queue.shape[1] // self.k)]  # the token being executed now
        elif self.cfg.replan == "step" and self.memory:  # m steps of the executing token seen: re-plan the rest
            self._replan_within_token()
        action, self.queue = self.queue[:, 0], self.queue[:, 1:]
        self.prev_action = action.astype(np.float32)
        self.t += 1
        return action.astype(np.float64)


def make_policy(model, schedule: NoiseSchedule, cfg: ImitationConfig, corruption_mask=None, seed: int = 0,
                device: str | torch.device = "cpu") -> DiffusionPolicy:
    """The recipe's policy for ``cfg.method`` (memory / schedule / corruption handling per the docstring)."""
    return DiffusionPolicy(
        model, schedule, cfg.policy, memory=cfg.method != "markov_diffusion",
        schedule_name="autoregressive" if cfg.method == "next_frame" else "pyramid",
        corruption_mask=corruption_mask, use_corruption_levels=cfg.method != "next_frame", seed=seed, device=device,
        offset_scale=cfg.offset_scale, frame_stack=cfg.frame_stack)


# ---------------------------------------------------------------- recipe


def build(cfg: ImitationConfig):
    """``(model, schedule)`` for the config (untrained)."""
    schedule = NoiseSchedule(cfg.diffusion)
    model = build_model(cfg.model, (cfg.frame_stack * TOKEN_DIM,), cfg.diffusion.num_levels)
    return model, schedule


def train_policy(cfg: ImitationConfig, run_dir: str | Path | None = None, device: str = "cpu",
                 progress: bool = True, demos: Demos | None = None, resume: bool = False) -> TrainResult:
    """Make (cached) expert demos, train the backbone with the method's objective; writes ``run_dir``."""
    torch.manual_seed(cfg.train.seed)
    demos = demos if demos is not None else make_demos(cfg.n_demos, seed=cfg.demo_seed, progress=progress,
                                                       noise=cfg.demo_noise)
    dataset = make_dataset(cfg, demo_sequences(demos, offset_scale=cfg.offset_scale, frame_stack=cfg.frame_stack))
    model, schedule = build(cfg)
    return train(model, schedule, dataset, cfg.train, objective_for(cfg), run_dir=run_dir,
                 config_dict=config_to_dict(cfg), resume=resume, device=device, progress=progress,
                 entry_weights=entry_weights(cfg))


def load_run(run_dir: str | Path, device: str = "cpu"):
    """``(cfg, model (EMA weights, eval mode), schedule)`` from a training run directory."""
    cfg = ckpt.read_run_config(run_dir, ImitationConfig, "imitation")
    model, schedule = build(cfg)
    ckpt.load_weights(model, ckpt.sampling_weights(run_dir))
    return cfg, model.to(device).eval(), schedule.to(device)


def evaluate_run(run_dir: str | Path, episodes: int = 100, seed: int = 0, corruption: str | None = None,
                 fraction: float = 0.25, device: str = "cpu", policy_overrides: list[str] = ()) -> dict:
    """Success rate of a trained run's policy over ``episodes`` fresh episodes, optionally with a
    :class:`~dforce.recipes.imitation.corruption.CorruptionHook` corrupting ``fraction`` of the steps.
    ``policy_overrides``: ``["policy.horizon=4", ...]`` changes to the run's (eval-only) policy settings."""
    import yaml

    from dforce.recipes.imitation.corruption import CorruptionHook
    from dforce.recipes.imitation.fruit_swap import evaluate
    from dforce.engine.config import from_dict

    cfg, model, schedule = load_run(run_dir, device)
    if policy_overrides:
        pol = config_to_dict(cfg.policy)
        for kv in policy_overrides:
            key, sep, val = kv.partition("=")
            name = key.removeprefix("policy.")
            if not sep or name not in pol:
                raise ConfigError(f"--set {kv!r}: expected policy.KEY=VALUE with KEY one of {sorted(pol)}")
            pol[name] = yaml.safe_load(val)
        cfg = replace(cfg, policy=from_dict(PolicyConfig, pol, "policy."))
    hook = None if corruption is None else CorruptionHook(corruption, fraction, seed=seed)
    policy = make_policy(model, schedule, cfg, corruption_mask=None if hook is None else (lambda: hook.mask),
                         seed=seed, device=device)
    res = evaluate(policy, n_episodes=episodes, seed=seed, obs_hook=hook)
    return {"run": str(run_dir), "method": cfg.method, "episodes": episodes, "success_rate": res.success_rate,
            "success_by_layout": {int(k): float(res.success[res.layouts == k].mean())
                                  for k in np.unique(res.layouts)},
            "mean_length": float(res.lengths.mean()), "corruption": corruption,
            "fraction": fraction if corruption else 0.0, "policy": config_to_dict(cfg.policy)}
