"""Compositional generation on the cross dataset (paper §4.3): memory reproduces, MPC stitches.

One Diffusion Forcing model (recurrent backbone) is trained on the four corner-to-corner diagonals of
:func:`dforce.recipes.compositional.data.make_cross_dataset` (tokens: 2-D positions scaled to [-1, 1]). Training
examples are a mix of whole paths and short crops starting anywhere (right-padded, masked), so the same
model can continue a path both from a full history and from a fresh latent. Every token is conditioned on
its time step ``t / (T - 1)`` (the clock an MPC controller has): from a fresh latent a lone position on an
arm of the X is then unambiguous (outbound early, inbound late) except at the centre at mid-time, where
all four arms meet — without it a memoryless walk turns back and forth on the arms and stalls.

Two sampling modes, both from that model:
    memory  the whole horizon in one rollout (pyramid schedule, latent carried): the model remembers
            which diagonal it is on and reproduces the X ("cross");
    mpc     short plans with no long memory: at each step the latent is reset, the last ``mpc_context``
            positions are absorbed, ``mpc_horizon`` tokens are sampled and only the first is kept. At the
            centre the model no longer knows its diagonal and can switch arms: V shapes ("stitched"),
            or go on straight (cross) or back (a return, "stitched" too).
:func:`dforce.recipes.compositional.data.classify_paths` labels the samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dforce.recipes.compositional.data import CrossConfig, classify_paths, make_cross_dataset, plot_paths
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict
from dforce.engine.trainer import TrainConfig, TrainResult, train
from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

MODES = ("memory", "mpc")


@dataclass(frozen=True)
class CompositionalConfig:
    n_paths: int = 2000  # training trajectories (directions balanced)
    data_seed: int = 0
    cross: CrossConfig = field(default_factory=CrossConfig)  # T = 32 steps per path
    crop_len: int = 6  # length of the short training crops (>= mpc_context + mpc_horizon)
    crop_fraction: float = 0.5  # share of training examples that are crops (the rest: whole paths)
    diffusion: NoiseScheduleConfig = field(
        default_factory=lambda: NoiseScheduleConfig(num_levels=100, beta_schedule="cosine", objective="x0"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="rnn", width=64, depth=2))
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(weighting="min_snr"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=2e-3,
                                                                   ema_decay=0.995, checkpoint_every=500))
    sample_steps: int = 10  # DDIM steps for both modes
    mpc_context: int = 1  # positions absorbed into a fresh latent before each short plan
    mpc_horizon: int = 4  # tokens per short plan (only the first is kept)

    def __post_init__(self):
        if self.n_paths < 4:
            raise ConfigError(f"n_paths must be >= 4 (one per direction), got {self.n_paths}")
        if not 2 <= self.crop_len <= self.cross.T:
            raise ConfigError(f"crop_len={self.crop_len} must be in [2, cross.T={self.cross.T}]")
        if not 0.0 <= self.crop_fraction <= 1.0:
            raise ConfigError(f"crop_fraction must be in [0, 1], got {self.crop_fraction}")
        if self.mpc_context < 1 or self.mpc_horizon < 1 or self.sample_steps < 1:
            raise ConfigError("mpc_context, mpc_horizon and sample_steps must be >= 1")
        if self.model.backbone != "rnn":
            raise ConfigError("compositional needs model.backbone=rnn (MPC resets the GRU latent)")


def to_tokens(paths: np.ndarray) -> torch.Tensor:
    """``(N, T, 2)`` unit-square positions -> ``(N, T, 2)`` tokens in [-1, 1]."""
    return torch.as_tensor(2.0 * np.asarray(paths, np.float32) - 1.0)


def to_paths(tokens: torch.Tensor) -> np.ndarray:
    return ((tokens.detach().cpu().float().numpy() + 1.0) / 2.0).astype(np.float32)


class CropDataset:
    """Whole paths and short crops of them, for ``train``. Index ``i`` -> path ``i % n`` and a variant
    ``i // n``; variants below ``round(V * (1 - crop_fraction))`` are the whole path, the others a crop
    of ``crop_len`` tokens at a start cycling over every position, right-padded with ``mask`` False.
    ``get_batch(idx) -> {"x": (B, T, 2), "mask": (B, T), "cond": (B, T, 1)}`` (cond: each token's time
    step in the path over ``T - 1``)."""

    def __init__(self, tokens: torch.Tensor, crop_len: int, crop_fraction: float):
        self.x, self.crop_len = tokens, crop_len
        self.n, self.T = tokens.shape[:2]
        self.starts = self.T - crop_len + 1
        self.variants = 2 * self.starts  # enough variants for every start at any fraction
        self.n_full = int(round(self.variants * (1.0 - crop_fraction)))

    def __len__(self) -> int:
        return self.n * self.variants

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        path, var = idx % self.n, idx // self.n
        crop = var >= self.n_full
        start = torch.where(crop, (var - self.n_full) % self.starts, torch.zeros_like(var))  # (B,)
        t = torch.arange(self.T)
        src = (start[:, None] + t).clamp(max=self.T - 1)  # (B, T)
        x = self.x[path[:, None], src]  # (B, T, 2)
        mask = torch.where(crop[:, None], t < self.crop_len, torch.ones_like(t, dtype=torch.bool))
        clock = (src.float() / (self.T - 1))[..., None]  # (B, T, 1)
        return {"x": torch.where(mask[..., None], x, torch.zeros_like(x)), "mask": mask, "cond": clock}


def build(cfg: CompositionalConfig):
    schedule = NoiseSchedule(cfg.diffusion)
    return build_model(cfg.model, (2,), cfg.diffusion.num_levels, cond_dim=1), schedule


def _clock(n: int, t0: int, length: int, T: int, device) -> torch.Tensor:
    """The conditioning ``(n, length, 1)`` of time steps ``t0 .. t0 + length - 1`` of a ``T``-step path."""
    t = torch.arange(t0, t0 + length, device=device, dtype=torch.float32) / (T - 1)
    return t[None, :, None].expand(n, -1, 1)


def train_model(cfg: CompositionalConfig, run_dir: str | Path | None = None, device: str = "cpu",
                progress: bool = True, resume: bool = False) -> TrainResult:
    torch.manual_seed(cfg.train.seed)
    paths, _ = make_cross_dataset(cfg.n_paths, seed=cfg.data_seed, config=cfg.cross)
    data = CropDataset(to_tokens(paths), cfg.crop_len, cfg.crop_fraction)
    model, schedule = build(cfg)
    return train(model, schedule, data, cfg.train, cfg.objective, run_dir=run_dir, config_dict=config_to_dict(cfg),
                 resume=resume, device=device, progress=progress)


@torch.no_grad()
def sample_memory(model, schedule: NoiseSchedule, cfg: CompositionalConfig, n: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Whole-horizon samples with the latent carried: ``(n, T, 2)`` paths."""
    scfg = SamplerConfig(steps=cfg.sample_steps, schedule="pyramid", window=cfg.cross.T, clip_x0=1.0,
                         stabilization_level=1)
    g = torch.Generator(device=device).manual_seed(seed)
    out = sample(model, schedule, scfg, length=cfg.cross.T, batch=n, token_shape=(2,), generator=g, device=device,
                 cond=_clock(n, 0, cfg.cross.T, cfg.cross.T, device))
    return to_paths(out.x)


@torch.no_grad()
def sample_mpc(model, schedule: NoiseSchedule, cfg: CompositionalConfig, n: int, seed: int = 0,
               device: str | torch.device = "cpu") -> np.ndarray:
    """Memoryless MPC samples: the first position from a fresh latent, then each next position is the first
    token of a plan of up to ``mpc_horizon`` tokens (not past the path's last step) sampled after absorbing
    only the last ``mpc_context`` positions, with their time steps, into a reset latent. Returns
    ``(n, T, 2)`` paths."""
    scfg = SamplerConfig(steps=cfg.sample_steps, schedule="pyramid", window=cfg.mpc_horizon, clip_x0=1.0,
                         stabilization_level=1)
    g = torch.Generator(device=device).manual_seed(seed)
    T = cfg.cross.T
    x = sample(model, schedule, scfg, length=1, batch=n, token_shape=(2,), generator=g, device=device,
               cond=_clock(n, 0, 1, T, device)).x  # (n, 1, 2): a path start
    for t in range(T - 1):  # x holds steps 0..t
        ctx = x[:, -cfg.mpc_context:]
        h = min(cfg.mpc_horizon, T - 1 - t)
        cond = _clock(n, t + 1 - ctx.shape[1], ctx.shape[1] + h, T, device)
        out = sample(model, schedule, scfg, length=h, context=ctx, cond=cond, generator=g)  # fresh latent
        x = torch.cat([x, out.x[:, ctx.shape[1] : ctx.shape[1] + 1]], 1)
    return to_paths(x)


def fractions(labels: np.ndarray) -> dict:
    return {lab: float(np.mean(labels == lab)) for lab in ("cross", "stitched", "other")}


def load_run(run_dir: str | Path, device: str = "cpu"):
    cfg = ckpt.read_run_config(run_dir, CompositionalConfig, "compositional")
    model, schedule = build(cfg)
    ckpt.load_weights(model, ckpt.sampling_weights(run_dir))
    return cfg, model.to(device).eval(), schedule.to(device)


def sample_run(run_dir: str | Path, n: int = 200, out: str | Path | None = None, seed: int = 0,
               device: str = "cpu") -> dict:
    """Sample ``n`` paths per mode from a trained run, classify, plot (``<out>/{memory,mpc}.png``), and
    return ``{mode: {"cross", "stitched", "other": fraction, "samples": n, "plot": path}}``."""
    cfg, model, schedule = load_run(run_dir, device)
    out = Path(out) if out is not None else Path(run_dir) / "samples"
    report = {}
    for mode, fn in (("memory", sample_memory), ("mpc", sample_mpc)):
        paths = fn(model, schedule, cfg, n, seed=seed, device=device)
        labels = classify_paths(paths)
        png = plot_paths(paths, out / f"{mode}.png", labels, title=f"{mode}: {n} samples")
        np.save(out / f"{mode}_paths.npy", paths)
        report[mode] = {**fractions(labels), "samples": n, "plot": str(png)}
    return report
