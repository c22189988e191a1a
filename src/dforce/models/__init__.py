"""Causal backbones. Both implement the stateful denoiser protocol used by :mod:`dforce.sampler`:

    forward(x (B,T,*D), levels (B,T), cond (B,T,C) | None, state=None) -> prediction (B,T,*D)
    absorb(x, levels, cond, state) -> new state        (commit tokens; RNN latent / KV cache)
    init_state(batch, device) -> state;  repeat_state(state, n) -> state with each batch row repeated n×
    forward_absorb(x, levels, cond, state, n_commit) -> (prediction of x[:, n:], new state)   (optional:
        absorb the first n tokens and predict the rest in one pass; the transformer has it)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dforce._resources import check_model_size
from dforce._utils import check_choice
from dforce.errors import ConfigError
from dforce.models.rnn import RecurrentDenoiser
from dforce.models.transformer import CausalTransformer, KVCache

BACKBONES = ("rnn", "transformer")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "rnn"  # rnn (paper §3.2) | transformer (paper App. B.1)
    width: int = 128  # latent / embedding size (reference time series GRU: 1024)
    depth: int = 2  # GRU layers or transformer blocks (reference time series GRU: 4)
    heads: int = 4  # transformer attention heads
    mlp_ratio: float = 4.0  # transformer MLP hidden size / width (standard ViT/DiT value)
    dropout: float = 0.0
    max_context: int | None = None  # transformer KV-cache window (None = unbounded)
    # False: bidirectional, tokens also see later ones (DFoT's transformer; keyframes/interpolation); no KV cache.
    # The vector GRU is causal only; the video recipe's spatial ConvGRU runs both ways with causal=false
    causal: bool = True
    # few-step student (dforce.shortcut): the most sampling steps per token it is trained for, a power of two; it
    # samples with S = shortcut_steps / 2^j (e.g. 32: S = 32, 16, ..., 1). 0: an ordinary Diffusion Forcing model
    shortcut_steps: int = 0

    def __post_init__(self):
        check_choice("model.backbone", self.backbone, BACKBONES)
        for k in ("width", "depth", "heads"):
            if getattr(self, k) < 1:
                raise ConfigError(f"model.{k} must be >= 1, got {getattr(self, k)}")
        if self.backbone == "transformer" and (self.width % self.heads or (self.width // self.heads) % 2):
            raise ConfigError(f"model.width={self.width} must split into model.heads={self.heads} even-sized heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.max_context is not None and self.max_context < 1:
            raise ConfigError(f"model.max_context must be >= 1 or null, got {self.max_context}")
        if self.shortcut_steps:
            from dforce.shortcut import check_max_steps

            check_max_steps(self.shortcut_steps)


def build_model(
    cfg: ModelConfig,
    token_shape: tuple[int, ...],
    num_levels: int,
    cond_dim: int = 0,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> nn.Module:
    """Instantiate the configured backbone for tokens of ``token_shape`` and ``cond_dim`` conditioning."""
    common = dict(token_shape=tuple(token_shape), num_levels=num_levels, cond_dim=cond_dim, width=cfg.width,
                  depth=cfg.depth, dropout=cfg.dropout, encoder=encoder, decoder=decoder)

    if cfg.backbone == "rnn" and not cfg.causal:
        raise ConfigError("model.causal=false needs model.backbone=transformer (the GRU backbone is causal only)")

    def build():
        if cfg.backbone == "rnn":
            return RecurrentDenoiser(**common)
        return CausalTransformer(**common, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, max_context=cfg.max_context,
                                 causal=cfg.causal)

    check_model_size(build, cfg.width, cfg.depth)  # a 4 TB typo is one error line, not the OOM killer
    model = build()
    if cfg.shortcut_steps:  # a few-step student: the level embedding also takes a step size (dforce.shortcut)
        from dforce.shortcut import make_student

        make_student(model, cfg.shortcut_steps)
    return model


__all__ = ["ModelConfig", "build_model", "RecurrentDenoiser", "CausalTransformer", "KVCache", "BACKBONES"]
