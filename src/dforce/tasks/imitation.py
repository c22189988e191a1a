"""Imitation with memory on fruit swap (paper §4.4): a Diffusion Forcing policy executed with MPC.

Tokens are ``x_t = [a_{t-1}, o_t]`` (26-D: the 3-D action that led to observation ``o_t``, the 13-D
state vector scaled to [-1, 1], and the 10 offsets fruit/slot minus gripper, which make the reach and place
motions a near-linear read-out); the first token carries the "open, still" action ``[0, 0, -1]``.
The recurrent latent summarises every committed token, so the policy remembers the start layout that
the current observation no longer shows (see :mod:`dforce.data.fruit_swap` for why that matters).

**Observations are the 13-D state vector** (the paper used 32 px images through a conv encoder); this
first version is state-only. The corruption kinds of :mod:`dforce.data.corruption` act on it directly.

MPC loop, per env step t (all envs batched, :class:`DiffusionPolicy`):
    1. commit the real token ``[a_{t-1}, o_t]`` to the latent with ``absorb`` at level 0 — or, when the
       observation is flagged corrupted, re-noised to ``corrupt_level`` (K = missing: a pure prior step);
    2. every ``execute`` steps, sample a plan of ``horizon`` tokens from that latent (``sample(state=...)``)
       and queue its first ``execute`` actions;
    3. return the next queued action.

Methods (one backbone, three recipes):
    df                Diffusion Forcing: independent levels, whole episodes, latent kept (memory).
    markov_diffusion  "diffusion policy": same model and loss on windows of 1 + horizon tokens; at test
                      time the latent is reset every step and only the current token is absorbed.
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
from dforce.data.fruit_swap import ACTION_DIM, STATE_DIM, Demos, FruitSwapConfig, FruitSwapEnv, make_demos
from dforce.data.sequences import WindowDataset
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict
from dforce.engine.trainer import TrainConfig, TrainResult, train
from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

METHODS = ("df", "markov_diffusion", "next_frame")
REL_DIM = 10  # (A, B, slot 1-3) minus gripper, 2-D each
TOKEN_DIM = ACTION_DIM + STATE_DIM + REL_DIM  # 26
START_ACTION = (0.0, 0.0, -1.0)  # the "open, still" action placed in the first token


@dataclass(frozen=True)
class PolicyConfig:
    horizon: int = 4  # H tokens planned per MPC step (reference Maze2D replans every 10 of 300-600 steps)
    execute: int = 1  # actions executed from each plan before replanning
    steps: int = 10  # DDIM sampling steps (paper robot: 25; 10 keeps 100-episode evals ~1 min on CPU)
    uncertainty_scale: float = 1.0  # pyramid slope: later plan tokens start noisier (paper's causal uncertainty)
    stabilization_level: int = 1  # level generated plan tokens are committed at inside a plan (~1% of K)
    clip_x0: float = 1.0  # tokens are scaled to [-1, 1]
    corrupt_level: int | None = None  # level a flagged-corrupted observation is fed at (None = K, missing)

    def __post_init__(self):
        for k in ("horizon", "execute", "steps"):
            if getattr(self, k) < 1:
                raise ConfigError(f"policy.{k} must be >= 1, got {getattr(self, k)}")
        if self.execute > self.horizon:
            raise ConfigError(f"policy.execute={self.execute} must be <= policy.horizon={self.horizon}")


@dataclass(frozen=True)
class ImitationConfig:
    method: str = "df"  # df | markov_diffusion | next_frame (module docstring)
    n_demos: int = 150  # paper: 150 demonstrations
    demo_seed: int = 0
    diffusion: NoiseScheduleConfig = field(  # paper robot: x0-prediction
        default_factory=lambda: NoiseScheduleConfig(num_levels=100, beta_schedule="cosine", objective="x0"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="rnn", width=128, depth=2))
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(weighting="min_snr"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=32, lr=1e-3,
                                                                   ema_decay=0.995, checkpoint_every=500))
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        if self.n_demos < 1:
            raise ConfigError(f"n_demos must be >= 1, got {self.n_demos}")
        if self.model.backbone != "rnn":
            raise ConfigError("imitation needs model.backbone=rnn (the policy resets/carries the GRU latent)")


# ---------------------------------------------------------------- tokens


def encode_tokens(prev_actions: np.ndarray, states: np.ndarray) -> torch.Tensor:
    """``prev_actions: (..., 3)`` in [-1, 1], ``states: (..., 13)`` in [0, 1] -> tokens ``(..., 26)`` in [-1, 1]:
    ``[action, 2 * state - 1, positions[3:13] - gripper]``."""
    a = np.asarray(prev_actions, np.float32)
    st = np.asarray(states, np.float32)
    rel = st[..., 3:13] - np.tile(st[..., 0:2], 5)  # (..., 10)
    return torch.from_numpy(np.concatenate([a, 2.0 * st - 1.0, rel], -1))


def episode_tokens(states: np.ndarray, actions: np.ndarray, final_state: np.ndarray) -> torch.Tensor:
    """One demo -> tokens ``(T + 1, 26)``: ``[START_ACTION, o_0], [a_0, o_1], ..., [a_{T-1}, o_T]``."""
    prev = np.concatenate([np.asarray([START_ACTION], np.float32), actions], 0)
    obs = np.concatenate([states, final_state[None]], 0)
    return encode_tokens(prev, obs)


def final_states(demos: Demos, config: FruitSwapConfig | None = None) -> list[np.ndarray]:
    """The observation after each demo's last action (demos store observations before each action);
    replays the deterministic env from the demo's seed."""
    out = []
    for seed, acts in zip(demos.seeds, demos.actions):
        env = FruitSwapEnv(config)
        env.reset(seed=seed)
        for a in acts:
            obs = env.step(a)[0]
        out.append(obs["state"])
    return out


def demo_sequences(demos: Demos, config: FruitSwapConfig | None = None) -> list[torch.Tensor]:
    """All demos as token sequences, each ``(T_i + 1, 26)``."""
    return [episode_tokens(s, a, f) for s, a, f in zip(demos.states, demos.actions, final_states(demos, config))]


def make_dataset(cfg: ImitationConfig, sequences: list[torch.Tensor]) -> WindowDataset:
    """Whole (right-padded) episodes for df / next_frame; windows of ``1 + horizon`` tokens for the
    Markovian baseline, which never sees more than the current observation."""
    if cfg.method == "markov_diffusion":
        return WindowDataset(sequences, 1 + cfg.policy.horizon)
    return WindowDataset(sequences, max(len(s) for s in sequences))


def objective_for(cfg: ImitationConfig) -> ObjectiveConfig:
    strategy = "teacher_forcing" if cfg.method == "next_frame" else "independent"
    return replace(cfg.objective, level_strategy=strategy)


# ---------------------------------------------------------------- policy


class DiffusionPolicy:
    """The MPC policy for :func:`dforce.data.fruit_swap.evaluate` (module docstring, steps 1-3).

    Args:
        model, schedule: a trained backbone and its noise schedule.
        cfg: MPC / sampling settings.
        memory: keep the latent across steps (False: reset it every step — the Markovian baseline).
        schedule_name: sampling matrix (pyramid for DF, autoregressive for next-frame diffusion).
        corruption_mask: ``() -> (N,) bool`` flags of this step's corrupted observations (e.g.
            ``lambda: hook.mask`` of a :class:`~dforce.data.corruption.CorruptionHook`), or None.
        use_corruption_levels: feed flagged observations at ``cfg.corrupt_level`` (False: at level 0).
    ``self.fed_levels`` holds the ``(N,)`` levels the last observation tokens were absorbed at.
    """

    def __init__(self, model, schedule: NoiseSchedule, cfg: PolicyConfig, memory: bool = True,
                 schedule_name: str = "pyramid", corruption_mask: Callable[[], np.ndarray] | None = None,
                 use_corruption_levels: bool = True, seed: int = 0, device: str | torch.device = "cpu"):
        self.model, self.schedule, self.cfg, self.memory = model, schedule, cfg, memory
        self.device = torch.device(device)
        K = schedule.num_levels
        self.corrupt_level = K if cfg.corrupt_level is None else int(cfg.corrupt_level)
        if not 0 <= self.corrupt_level <= K:
            raise ConfigError(f"policy.corrupt_level={cfg.corrupt_level} must be in [0, K={K}]")
        self.scfg = SamplerConfig(steps=cfg.steps, schedule=schedule_name, uncertainty_scale=cfg.uncertainty_scale,
                                  window=cfg.horizon, stabilization_level=min(cfg.stabilization_level, K),
                                  clip_x0=cfg.clip_x0)
        self.corruption_mask, self.use_corruption_levels = corruption_mask, use_corruption_levels
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.seed = seed

    def reset(self, n: int) -> None:
        self.n = n
        self.state = self.model.init_state(n, self.device)
        self.prev_action = np.tile(np.asarray(START_ACTION, np.float32), (n, 1))
        self.queue = np.zeros((n, 0, ACTION_DIM), np.float32)
        self.fed_levels = np.zeros(n, np.int64)
        self.generator.manual_seed(self.seed)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, states: np.ndarray, active: np.ndarray) -> np.ndarray:
        """``states: (N, 13)`` -> actions ``(N, 3)`` (images unused: state-only observations)."""
        if not hasattr(self, "n") or len(states) != self.n:
            self.reset(len(states))
        tok = encode_tokens(self.prev_action, states).to(self.device)[:, None]  # (N, 1, 26)
        levels = np.zeros(self.n, np.int64)
        if self.corruption_mask is not None and self.use_corruption_levels:
            levels = np.where(np.asarray(self.corruption_mask(), bool), self.corrupt_level, 0)
        self.fed_levels = levels
        lv = torch.from_numpy(levels).to(self.device)[:, None]  # (N, 1)
        noise = torch.randn(tok.shape, device=self.device, generator=self.generator)
        tok = self.schedule.add_noise(tok, lv, noise)
        base = self.state if self.memory else self.model.init_state(self.n, self.device)
        state = self.model.absorb(tok, lv, None, base)
        if self.memory:
            self.state = state
        if self.queue.shape[1] == 0 or not self.memory:
            out = sample(self.model, self.schedule, self.scfg, length=self.cfg.horizon, batch=self.n,
                         token_shape=(TOKEN_DIM,), state=state, generator=self.generator, device=self.device)
            k = 1 if not self.memory else self.cfg.execute
            self.queue = out.x[:, :k, :ACTION_DIM].clamp(-1, 1).cpu().numpy()
        action, self.queue = self.queue[:, 0], self.queue[:, 1:]
        self.prev_action = action.astype(np.float32)
        return action.astype(np.float64)


def make_policy(model, schedule: NoiseSchedule, cfg: ImitationConfig, corruption_mask=None, seed: int = 0,
                device: str | torch.device = "cpu") -> DiffusionPolicy:
    """The recipe's policy for ``cfg.method`` (memory / schedule / corruption handling per the docstring)."""
    return DiffusionPolicy(
        model, schedule, cfg.policy, memory=cfg.method != "markov_diffusion",
        schedule_name="autoregressive" if cfg.method == "next_frame" else "pyramid",
        corruption_mask=corruption_mask, use_corruption_levels=cfg.method != "next_frame", seed=seed, device=device)


# ---------------------------------------------------------------- recipe


def build(cfg: ImitationConfig):
    """``(model, schedule)`` for the config (untrained)."""
    schedule = NoiseSchedule(cfg.diffusion)
    model = build_model(cfg.model, (TOKEN_DIM,), cfg.diffusion.num_levels)
    return model, schedule


def train_policy(cfg: ImitationConfig, run_dir: str | Path | None = None, device: str = "cpu",
                 progress: bool = True, demos: Demos | None = None, resume: bool = False) -> TrainResult:
    """Make (cached) expert demos, train the backbone with the method's objective; writes ``run_dir``."""
    torch.manual_seed(cfg.train.seed)
    demos = demos if demos is not None else make_demos(cfg.n_demos, seed=cfg.demo_seed, progress=progress)
    dataset = make_dataset(cfg, demo_sequences(demos))
    model, schedule = build(cfg)
    return train(model, schedule, dataset, cfg.train, objective_for(cfg), run_dir=run_dir,
                 config_dict=config_to_dict(cfg), resume=resume, device=device, progress=progress)


def load_run(run_dir: str | Path, device: str = "cpu"):
    """``(cfg, model (EMA weights, eval mode), schedule)`` from a training run directory."""
    cfg = ckpt.read_run_config(run_dir, ImitationConfig, "imitation")
    model, schedule = build(cfg)
    ckpt.load_weights(model, ckpt.sampling_weights(run_dir))
    return cfg, model.to(device).eval(), schedule.to(device)


def evaluate_run(run_dir: str | Path, episodes: int = 100, seed: int = 0, corruption: str | None = None,
                 fraction: float = 0.25, device: str = "cpu") -> dict:
    """Success rate of a trained run's policy over ``episodes`` fresh episodes, optionally with a
    :class:`~dforce.data.corruption.CorruptionHook` corrupting ``fraction`` of the steps."""
    from dforce.data.corruption import CorruptionHook
    from dforce.data.fruit_swap import evaluate

    cfg, model, schedule = load_run(run_dir, device)
    hook = None if corruption is None else CorruptionHook(corruption, fraction, seed=seed)
    policy = make_policy(model, schedule, cfg, corruption_mask=None if hook is None else (lambda: hook.mask),
                         seed=seed, device=device)
    res = evaluate(policy, n_episodes=episodes, seed=seed, obs_hook=hook)
    return {"run": str(run_dir), "method": cfg.method, "episodes": episodes, "success_rate": res.success_rate,
            "success_by_layout": {int(k): float(res.success[res.layouts == k].mean())
                                  for k in np.unique(res.layouts)},
            "mean_length": float(res.lengths.mean()), "corruption": corruption,
            "fraction": fraction if corruption else 0.0}
