"""Per-token Gaussian diffusion: noise schedules, forward noising, parameterizations, reverse steps.

Everything here works on a *level per token*: ``x: (B, T, *D)`` with ``levels: (B, T)`` integers in
``[0, K]``. Level 0 is the clean token (ᾱ_0 = 1), level K the noisiest (ᾱ_K ≈ 0, or exactly 0 with the
zero-terminal-SNR rescale). Tables are indexed by level and have ``K + 1`` entries.

References:
    DDPM (Ho et al. 2020) for the linear schedule and the ancestral posterior;
    improved DDPM (Nichol & Dhariwal 2021) for the cosine schedule;
    Jabri et al. 2022 ("RIN") / Chen 2023 for the sigmoid schedule;
    DDIM (Song et al. 2021) for the eta-parameterized non-Markovian step and strided sampling;
    Salimans & Ho 2022 for v-prediction;
    Lin et al. 2024 ("Common diffusion noise schedules are flawed") for the zero-terminal-SNR rescale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dforce._utils import check_choice, gather_levels
from dforce.errors import ConfigError, ScheduleError

BETA_SCHEDULES = ("linear", "cosine", "sigmoid")
OBJECTIVES = ("eps", "x0", "v")

# ---------------------------------------------------------------------------------------------------
# beta schedules: pure functions of K returning float64 betas of shape (K,)
# ---------------------------------------------------------------------------------------------------


def linear_beta_schedule(num_levels: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """DDPM's linear betas, rescaled so any K spans the same noise range as K=1000 (Ho et al. 2020)."""
    scale = 1000.0 / num_levels
    return torch.linspace(beta_start * scale, beta_end * scale, num_levels, dtype=torch.float64).clamp(max=0.999)


def cosine_beta_schedule(num_levels: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ(t) = cos²((t/K + s)/(1 + s) · π/2) (Nichol & Dhariwal 2021, eq. 17); betas clipped at 0.999."""
    t = torch.linspace(0, num_levels, num_levels + 1, dtype=torch.float64) / num_levels
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)


def sigmoid_beta_schedule(num_levels: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid ᾱ schedule (Jabri et al. 2022, arXiv 2212.11972, Algorithm 1); better for large inputs."""
    t = torch.linspace(0, num_levels, num_levels + 1, dtype=torch.float64) / num_levels
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    abar = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    abar = abar / abar[0]
    return (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift/scale sqrt(ᾱ) so ᾱ_K = 0 exactly while keeping ᾱ_1 (Lin et al. 2024, Algorithm 1)."""
    sqrt_abar = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


# ---------------------------------------------------------------------------------------------------
# the schedule object: buffers indexed by level, per-token add_noise / conversions / reverse step
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseScheduleConfig:
    num_levels: int = 1000  # K; the reference uses 1000 for video/time series (REFERENCE.md §2)
    beta_schedule: str = "cosine"  # linear | cosine | sigmoid
    zero_terminal_snr: bool = False  # rescale so level K is pure noise (needs objective v or x0)
    objective: str = "v"  # what the network predicts: eps | x0 | v

    def __post_init__(self):
        if not 1 <= self.num_levels <= 1_000_000:  # 1e6: 1000x the reference's K; beyond, the tables alone fill RAM
            raise ConfigError(f"diffusion.num_levels must be in [1, 1000000], got {self.num_levels}")
        check_choice("diffusion.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        check_choice("diffusion.objective", self.objective, OBJECTIVES)
        if self.zero_terminal_snr and self.objective == "eps":
            raise ConfigError(
                "diffusion.zero_terminal_snr=true needs diffusion.objective 'v' or 'x0': at SNR 0 the clean "
                "token cannot be recovered from an eps prediction"
            )


class NoiseSchedule(nn.Module):
    """Discrete Gaussian diffusion with a noise level per token.

    Buffers (shape ``(K+1,)``, computed in float64, stored as float32), index = noise level:
        alphas_cumprod[k]                 ᾱ_k, with ᾱ_0 = 1
        sqrt_alphas_cumprod[k]            √ᾱ_k
        sqrt_one_minus_alphas_cumprod[k]  √(1-ᾱ_k)
        sqrt_recip_alphas_cumprod[k]      1/√ᾱ_k        (∞ at ᾱ=0 is clamped; eps-objective forbids ZTSNR)
        sqrt_recipm1_alphas_cumprod[k]    √(1/ᾱ_k - 1)
        snr[k]                            ᾱ_k / (1-ᾱ_k) (∞ at k=0 is clamped to 1e8)
    """

    def __init__(self, config: NoiseScheduleConfig | None = None, **kwargs):
        super().__init__()
        config = config or NoiseScheduleConfig(**kwargs)
        self.config = config
        self.num_levels = K = config.num_levels
        self.objective = config.objective
        betas = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule, "sigmoid": sigmoid_beta_schedule}[
            config.beta_schedule
        ](K)
        if config.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])  # (K+1,)
        abar_safe = abar.clamp(min=1e-12)

        def register(name: str, val: torch.Tensor):
            self.register_buffer(name, val.to(torch.float32), persistent=False)

        register("betas", torch.cat([torch.zeros(1, dtype=torch.float64), betas]))
        register("alphas_cumprod", abar)
        register("sqrt_alphas_cumprod", abar.sqrt())
        register("sqrt_one_minus_alphas_cumprod", (1 - abar).clamp(min=0).sqrt())
        register("sqrt_recip_alphas_cumprod", abar_safe.rsqrt())
        register("sqrt_recipm1_alphas_cumprod", (1 / abar_safe - 1).clamp(min=0).sqrt())
        register("snr", (abar / (1 - abar).clamp(min=1e-8)).clamp(max=1e8))

    # -- helpers -------------------------------------------------------------------------------------

    def _at(self, name: str, levels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``buffer[levels]`` broadcast against ``x: (B, T, *D)``; ``levels: (B, T)``."""
        return gather_levels(getattr(self, name), levels, x.ndim).to(x.dtype)

    def check_levels(self, levels: torch.Tensor, name: str = "levels") -> None:
        if levels.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ScheduleError(f"{name} must be an integer tensor, got {levels.dtype}")
        lo, hi = int(levels.min()), int(levels.max())
        if lo < 0 or hi > self.num_levels:
            raise ScheduleError(f"{name} must lie in [0, {self.num_levels}], got values in [{lo}, {hi}]")

    # -- forward process -----------------------------------------------------------------------------

    def add_noise(self, x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """q(x_k | x_0) = N(√ᾱ_k x_0, (1-ᾱ_k) I), each token at its own level.

        Args:
            x0: ``(B, T, *D)`` clean tokens.
            levels: ``(B, T)`` integer levels in ``[0, K]``; 0 returns the token unchanged.
            noise: ``(B, T, *D)`` standard normal noise (drawn if None).
        """
        noise = torch.randn_like(x0) if noise is None else noise
        return self._at("sqrt_alphas_cumprod", levels, x0) * x0 + self._at(
            "sqrt_one_minus_alphas_cumprod", levels, x0
        ) * noise

    # -- parameterizations (x_k = √ᾱ x0 + √(1-ᾱ) ε ;  v = √ᾱ ε - √(1-ᾱ) x0) --------------------------

    def x0_from_eps(self, x_k, levels, eps):
        """x0 = x_k/√ᾱ - √(1/ᾱ - 1) ε."""
        return self._at("sqrt_recip_alphas_cumprod", levels, x_k) * x_k - self._at(
            "sqrt_recipm1_alphas_cumprod", levels, x_k
        ) * eps

    def eps_from_x0(self, x_k, levels, x0):
        """ε = (x_k/√ᾱ - x0) / √(1/ᾱ - 1); at level 0 (no noise) ε is undefined and returned as 0."""
        num = self._at("sqrt_recip_alphas_cumprod", levels, x_k) * x_k - x0
        den = self._at("sqrt_recipm1_alphas_cumprod", levels, x_k)
        return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))

    def x0_from_v(self, x_k, levels, v):
        """x0 = √ᾱ x_k - √(1-ᾱ) v."""
        return self._at("sqrt_alphas_cumprod", levels, x_k) * x_k - self._at(
            "sqrt_one_minus_alphas_cumprod", levels, x_k
        ) * v

    def eps_from_v(self, x_k, levels, v):
        """ε = √(1-ᾱ) x_k + √ᾱ v."""
        return self._at("sqrt_one_minus_alphas_cumprod", levels, x_k) * x_k + self._at(
            "sqrt_alphas_cumprod", levels, x_k
        ) * v

    def v_from(self, x0, levels, eps):
        """v = √ᾱ ε - √(1-ᾱ) x0."""
        return self._at("sqrt_alphas_cumprod", levels, x0) * eps - self._at(
            "sqrt_one_minus_alphas_cumprod", levels, x0
        ) * x0

    def target(self, x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression target for this schedule's objective (eps | x0 | v)."""
        if self.objective == "eps":
            return noise
        if self.objective == "x0":
            return x0
        return self.v_from(x0, levels, noise)

    def to_x0_eps(self, x_k: torch.Tensor, levels: torch.Tensor, pred: torch.Tensor, clip_x0: float | None = None):
        """Turn a network output (in this schedule's objective) into (x̂0, ε̂); optional x̂0 clipping.

        Returns:
            ``(x0_hat, eps_hat)``, both ``x_k.shape``.
        """
        if self.objective == "eps":
            x0 = self.x0_from_eps(x_k, levels, pred)
        elif self.objective == "x0":
            x0 = pred
        else:
            x0 = self.x0_from_v(x_k, levels, pred)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if self.objective == "eps" and clip_x0 is None:
            eps = pred
        elif self.objective == "v" and clip_x0 is None:
            eps = self.eps_from_v(x_k, levels, pred)
        else:
            eps = self.eps_from_x0(x_k, levels, x0)
        return x0, eps

    # -- reverse process -----------------------------------------------------------------------------

    def step(
        self,
        x: torch.Tensor,
        k_from: torch.Tensor,
        k_to: torch.Tensor,
        x0_hat: torch.Tensor,
        eps_hat: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        method: str = "ddim",
    ) -> torch.Tensor:
        """Move every token from its own level ``k_from[b,t]`` to its own ``k_to[b,t] <= k_from[b,t]``.

        Symbols (DDIM, Song et al. 2021, eq. 12; s = k_to, t = k_from):
            ᾱ_t, ᾱ_s      alphas_cumprod at the two levels
            σ             eta · √((1-ᾱ_s)/(1-ᾱ_t)) · √(1 - ᾱ_t/ᾱ_s)
            x_s           √ᾱ_s x̂0 + √(1-ᾱ_s-σ²) ε̂ + σ z

        Steps:
            1. gather ᾱ for both levels per token;
            2. ``method="ddim"``: the DDIM update above (eta=0 deterministic, eta=1 = ancestral);
               ``method="ddpm"``: the exact Gaussian posterior q(x_s | x_t, x̂0) (DDPM eq. 7 for any s<t);
            3. tokens with ``k_to == k_from`` are returned untouched (bitwise), so clean tokens stay clean.

        Args:
            x: ``(B, T, *D)`` tokens at levels ``k_from``.
            k_from, k_to: ``(B, T)`` integer levels.
            x0_hat, eps_hat: ``(B, T, *D)`` predictions (see :meth:`to_x0_eps`).
            eta: DDIM stochasticity in [0, 1] (ignored by ``ddpm``).
            noise: ``(B, T, *D)`` standard normal noise for the stochastic part (drawn if None).
            method: ``"ddim"`` or ``"ddpm"``.
        Returns:
            ``(B, T, *D)`` tokens at levels ``k_to``.
        """
        check_choice("sampler.method", method, ("ddim", "ddpm"))
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"sampler.eta must be in [0, 1], got {eta}")
        a_t = self._at("alphas_cumprod", k_from, x)
        a_s = self._at("alphas_cumprod", k_to, x)
        noise = torch.randn_like(x) if noise is None else noise
        if method == "ddim":
            var = (1 - a_s) / (1 - a_t).clamp(min=1e-12) * (1 - a_t / a_s.clamp(min=1e-12))
            sigma = eta * var.clamp(min=0).sqrt()
            dir_coef = (1 - a_s - sigma**2).clamp(min=0).sqrt()
            x_new = a_s.sqrt() * x0_hat + dir_coef * eps_hat + sigma * noise
        else:
            beta_ts = 1 - a_t / a_s.clamp(min=1e-12)  # β_{t|s}
            denom = (1 - a_t).clamp(min=1e-12)
            mean = a_s.sqrt() * beta_ts / denom * x0_hat + (a_t / a_s.clamp(min=1e-12)).sqrt() * (1 - a_s) / denom * x
            var = beta_ts * (1 - a_s) / denom
            x_new = mean + var.clamp(min=0).sqrt() * noise
        moving = (k_to != k_from).reshape(*k_to.shape, *((1,) * (x.ndim - k_to.ndim)))
        return torch.where(moving, x_new, x)


def sampling_levels(num_steps: int, num_levels: int) -> torch.Tensor:
    """DDIM-style subsequence: raw level for each sampling step s = 0..S (``(S+1,)`` long, 0 → 0, S → K).

    Scheduling matrices are written in step units 0..S; this maps them onto the K raw levels the network
    was trained on (evenly spaced, rounded), so sampling can use S < K steps.
    """
    if not 1 <= num_steps <= num_levels:
        raise ConfigError(f"sampler.steps must be in [1, {num_levels}] (the number of noise levels), got {num_steps}")
    return torch.linspace(0, num_levels, num_steps + 1, dtype=torch.float64).round().long()
