"""Training objective (Diffusion Forcing, Algorithm 1): noise-level strategies and loss weighting.

One call of the model per batch with per-token levels ``k: (B, T)``; any RNN unroll stays inside the
backbone. Tokens at level 0 carry no loss (nothing to denoise: they are the clean context the model
learns to condition on), nor do masked (padding) tokens.

Noise-level strategies:
    independent      k_t ~ U{0..K} for every token (Diffusion Forcing)
    full_sequence    one k ~ U{1..K} shared by the whole sequence (full-sequence diffusion baseline)
    teacher_forcing  a random position p per sequence: tokens < p clean (level 0), token p at k ~ U{1..K},
                     tokens > p hidden (level K, no loss) — next-token diffusion on a clean past (baseline)

Loss weights (per token, from the token's SNR; γ = snr_clip):
    uniform    1
    min_snr    min(SNR, γ) turned into the objective's space (Hang et al. 2023): eps: min(SNR,γ)/SNR,
               x0: min(SNR,γ), v: min(SNR,γ)/(SNR+1)
    fused_snr  the reference's time-discounted SNR (``compute_loss_weights`` in buoyancy99/diffusion-forcing):
               s̃_t = min(SNR_t, γ)/γ; c_0 = s̃_0, c_t = d·c_{t-1} + (1-d)·s̃_t;
               f̃_t = 1 − (1 − d·c_{t-1})(1 − s̃_t) (c_{-1} = 0), i.e. how much is known about token t from its
               past and itself (f_t likewise with the unclipped SNR_t/γ); then the min_snr formula with
               (min(SNR, γ), SNR) ← (γ·f̃_t, γ·f_t) (REFERENCE.md §1, decay d ≈ 0.8–0.96).
               ``fused_snr_init="discounted"`` starts the running mean at c_0 = (1-d)·s̃_0 instead (dforce ≤ 0.1)

Conditioning dropout (DFoT, "noise as masking"; applied on top of the drawn levels, off by default):
    clean_token_prob   each token is shown clean (level 0, no loss) with this probability: exact given tokens
                       at any positions (keyframes, interpolation) are otherwise rare (P(k = 0) = 1/(K+1))
    masked_token_prob  each token is fully masked (level K) with this probability: "this token is unknown"
    masked_prefix_prob with this probability per sequence a random-length prefix is at level K: the model learns
                       to predict with the history dropped, the ε(∅) that vanilla history guidance subtracts
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import torch

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError

LEVEL_STRATEGIES = ("independent", "full_sequence", "teacher_forcing")
WEIGHTINGS = ("uniform", "min_snr", "fused_snr")
FUSED_SNR_INITS = ("first_token", "discounted")


@dataclass(frozen=True)
class ObjectiveConfig:
    level_strategy: str = "independent"  # independent (DF) | full_sequence | teacher_forcing
    weighting: str = "fused_snr"  # uniform | min_snr | fused_snr
    snr_clip: float = 5.0  # γ of min-SNR weighting (Hang et al. 2023 use 5)
    fused_snr_decay: float = 0.8  # d, discount of the running SNR along time (reference video: 0.8)
    # c_0 of the running SNR: first_token = s̃_0 (the reference's recurrence) | discounted = (1-d)·s̃_0 (dforce 0.1)
    fused_snr_init: str = "first_token"
    # conditioning dropout (DFoT; see the module docstring): per-token clean / per-token masked (level K) /
    # per-sequence masked random prefix probabilities; 0 = plain Diffusion Forcing levels
    clean_token_prob: float = 0.0
    masked_token_prob: float = 0.0
    masked_prefix_prob: float = 0.0
    # few-step students only (model.shortcut_steps > 0, dforce.shortcut): share of training sequences that learn
    # self-consistency targets (two half steps = one full step) instead of the DF loss (Frans et al. 2024: 1/4)
    shortcut_fraction: float = 0.25
    # removed keys (lost their experiment, docs/few_step.md "What we learned"): old runs' configs still load
    RENAMED_KEYS: ClassVar[dict[str, tuple[str | None, object]]] = {"shortcut_sorted": (None, 0.0)}

    def __post_init__(self):
        check_choice("objective.level_strategy", self.level_strategy, LEVEL_STRATEGIES)
        check_choice("objective.weighting", self.weighting, WEIGHTINGS)
        check_choice("objective.fused_snr_init", self.fused_snr_init, FUSED_SNR_INITS)
        if not self.snr_clip > 0:
            raise ConfigError(f"objective.snr_clip must be > 0, got {self.snr_clip}")
        if not 0.0 <= self.fused_snr_decay < 1.0:
            raise ConfigError(f"objective.fused_snr_decay must be in [0, 1), got {self.fused_snr_decay}")
        for name in ("clean_token_prob", "masked_token_prob", "masked_prefix_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"objective.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.clean_token_prob + self.masked_token_prob > 1.0:
            raise ConfigError("objective.clean_token_prob + objective.masked_token_prob must be <= 1, got "
                              f"{self.clean_token_prob + self.masked_token_prob}")
        if not 0.0 <= self.shortcut_fraction <= 1.0:
            raise ConfigError(f"objective.shortcut_fraction must be in [0, 1], got {self.shortcut_fraction}")

    @property
    def drops_conditioning(self) -> bool:
        return bool(self.clean_token_prob or self.masked_token_prob or self.masked_prefix_prob)


class LossOutput(NamedTuple):
    loss: torch.Tensor  # () scalar: weighted mean over tokens that carry loss
    token_loss: torch.Tensor  # (B, T) unweighted per-token MSE (0 where no loss)
    levels: torch.Tensor  # (B, T) the levels that were drawn
    weights: torch.Tensor  # (B, T) loss weights (0 where no loss)


def sample_levels(
    strategy: str,
    batch: int,
    tokens: int,
    num_levels: int,
    device=None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw training levels. Returns ``(levels (B, T) long, loss_mask (B, T) bool)``."""
    check_choice("objective.level_strategy", strategy, LEVEL_STRATEGIES)
    K = num_levels
    kw = dict(device=device, generator=generator)
    if strategy == "independent":
        k = torch.randint(0, K + 1, (batch, tokens), **kw)
        return k, k > 0
    if strategy == "full_sequence":
        k = torch.randint(1, K + 1, (batch, 1), **kw).expand(batch, tokens).contiguous()
        return k, torch.ones(batch, tokens, dtype=torch.bool, device=device)
    p = torch.randint(0, tokens, (batch, 1), **kw)  # teacher_forcing
    t = torch.arange(tokens, device=device).unsqueeze(0)
    noisy = torch.randint(1, K + 1, (batch, 1), **kw)
    k = torch.where(t < p, torch.zeros_like(t), torch.where(t == p, noisy, torch.full_like(t, K)))
    return k, (t == p).expand(batch, tokens)


def condition_dropout(levels: torch.Tensor, loss_mask: torch.Tensor, cfg: ObjectiveConfig, num_levels: int,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the conditioning-dropout options of ``cfg`` to drawn ``levels: (B, T)`` (module docstring).

    Clean tokens (level 0) carry no loss; masked ones (level K) keep theirs (predicting an unknown token is
    unconditional generation). Returns the new ``(levels, loss_mask)``."""
    if not cfg.drops_conditioning:
        return levels, loss_mask
    B, T = levels.shape
    kw = dict(device=levels.device, generator=generator)
    u = torch.rand((B, T), **kw)
    clean = u < cfg.clean_token_prob
    masked = (u >= cfg.clean_token_prob) & (u < cfg.clean_token_prob + cfg.masked_token_prob)
    cut = torch.randint(1, T + 1, (B, 1), **kw)  # prefix length 1..T
    prefix = (torch.rand((B, 1), **kw) < cfg.masked_prefix_prob) & (torch.arange(T, device=levels.device) < cut)
    masked = (masked | prefix) & ~clean
    levels = torch.where(clean, torch.zeros_like(levels), torch.where(masked, torch.full_like(levels, num_levels),
                                                                      levels))
    return levels, (loss_mask | masked) & ~clean


def fused_snr(snr: torch.Tensor, snr_clip: float, decay: float,
              init: str = "first_token") -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's fused SNR along time, vectorized. ``snr: (B, T)``.

    Returns ``(fused_clipped, fused)`` in SNR units (× γ): the combination 1 − (1 − d·c_{t-1})(1 − s)
    with s = min(SNR, γ)/γ and with s = SNR/γ. The discounted running mean (c_0 = s̃_0 for ``first_token``,
    the reference; (1-d)·s̃_0 for ``discounted``; then c_t = d·c_{t-1} + (1-d)·s̃_t) is a lower-triangular
    matrix product (exact, O(T²); T is a training window of at most a few hundred tokens), so there is no
    Python loop over time.
    """
    check_choice("objective.fused_snr_init", init, FUSED_SNR_INITS)
    T = snr.shape[1]
    s_clip = snr.clamp(max=snr_clip) / snr_clip  # s̃_t in [0, 1]
    t = torch.arange(T, device=snr.device, dtype=snr.dtype)
    lag = t.unsqueeze(1) - t.unsqueeze(0)  # (T, T): t - j
    decay_mat = torch.where(lag >= 0, (1 - decay) * decay ** lag.clamp(min=0), torch.zeros_like(lag))
    if init == "first_token":  # c_0 = s̃_0 carries weight d^t (not (1-d)·d^t) into c_t
        decay_mat[:, 0] = decay ** t
    c = s_clip @ decay_mat.T  # (B, T): c_t = Σ_{j≤t} (1-d) d^{t-j} s̃_j
    past = 1 - decay * torch.nn.functional.pad(c[:, :-1], (1, 0))  # 1 − d·c_{t-1}, c_{-1} = 0
    fused_clipped = 1 - past * (1 - s_clip)
    fused = 1 - past * (1 - snr / snr_clip)
    return fused_clipped * snr_clip, fused * snr_clip


def loss_weights(levels: torch.Tensor, schedule: NoiseSchedule, cfg: ObjectiveConfig) -> torch.Tensor:
    """Per-token loss weights ``(B, T)`` for integer ``levels: (B, T)``."""
    snr = schedule.snr[levels].float()
    if cfg.weighting == "uniform":
        return torch.ones_like(snr)
    if cfg.weighting == "fused_snr":
        clipped, snr = fused_snr(snr, cfg.snr_clip, cfg.fused_snr_decay, cfg.fused_snr_init)
    else:
        clipped = snr.clamp(max=cfg.snr_clip)
    if schedule.objective == "eps":
        return clipped / snr.clamp(min=1e-8)
    if schedule.objective == "x0":
        return clipped
    return clipped / (snr + 1)


Denoiser = Callable[..., torch.Tensor]


def diffusion_forcing_loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cfg: ObjectiveConfig,
    cond: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    levels: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    entry_weights: torch.Tensor | None = None,
) -> LossOutput:
    """Algorithm 1: noise every token to its own level, predict, weighted MSE.

    Args:
        model: ``model(x_noisy (B,T,*D), levels (B,T), cond) -> (B,T,*D)`` prediction in the schedule's
            objective; must be causal in T.
        schedule: the :class:`NoiseSchedule` (its ``objective`` picks the target).
        x0: ``(B, T, *D)`` clean sequences.
        cfg: level strategy and weighting.
        cond: optional ``(B, T, C)`` per-token conditioning (e.g. actions).
        mask: optional ``(B, T)`` bool, True for real tokens; use right-padding for variable lengths
            (a causal model never sees the padding from earlier tokens).
        levels, noise: override the random draws (tests).
        entry_weights: optional ``(prod(D),)`` weights of the flattened token entries in the per-token MSE
            (e.g. up-weighting the action entries of a ``[a, o]`` token), or ``(B, T, prod(D))`` per token (e.g.
            up-weighting the pixels that move in a video frame); None: uniform.
    """
    B, T = x0.shape[:2]
    if levels is None:
        levels, loss_mask = sample_levels(cfg.level_strategy, B, T, schedule.num_levels, x0.device, generator)
        levels, loss_mask = condition_dropout(levels, loss_mask, cfg, schedule.num_levels, generator)
    else:
        loss_mask = levels > 0
    if mask is not None:
        loss_mask = loss_mask & mask.bool()
        # padded tokens are shown as pure noise so they carry no information even to a non-causal model
        levels = torch.where(mask.bool(), levels, torch.full_like(levels, schedule.num_levels))
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_noisy = schedule.add_noise(x0, levels, noise)
    pred = model(x_noisy, levels, cond)
    target = schedule.target(x0, levels, noise)
    sq = (pred.float() - target.float()).pow(2).flatten(2)  # (B, T, prod(D))
    if entry_weights is not None:
        if entry_weights.shape not in (sq.shape[-1:], sq.shape):
            raise ValueError(f"entry_weights has shape {tuple(entry_weights.shape)}, expected ({sq.shape[-1]},) "
                             f"or {tuple(sq.shape)}")
        sq = sq * entry_weights.to(sq.device, sq.dtype)
    token_loss = sq.mean(-1)  # (B, T)
    weights = loss_weights(levels, schedule, cfg) * loss_mask
    token_loss = token_loss * loss_mask
    loss = (token_loss * weights).sum() / loss_mask.sum().clamp(min=1)
    return LossOutput(loss, token_loss.detach(), levels, weights)
