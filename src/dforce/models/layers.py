"""Building blocks shared by the backbones: noise-level embedding, MLPs, token encoder/decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LevelEmbedding(nn.Module):
    """Sinusoidal embedding of an integer noise level followed by an MLP (DDPM/Transformer style).

    ``levels: (B, T) int`` → ``(B, T, dim)``.
    """

    def __init__(self, dim: int, num_levels: int, freq_dim: int = 64):
        super().__init__()
        self.num_levels = num_levels
        self.freq_dim = freq_dim
        half = freq_dim // 2
        # frequencies for positions in [0, 1000] (levels are rescaled to that range whatever K is)
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        t = levels.float() * (1000.0 / self.num_levels)
        args = t.unsqueeze(-1) * self.freqs  # (B, T, half)
        return self.mlp(torch.cat([args.sin(), args.cos()], dim=-1))


class MLP(nn.Module):
    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, dim_hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(dim_hidden, dim_out)
        )

    def forward(self, x):
        # F.* on the layers' weights: the submodules' __call__ overhead is a large part of a small-batch call
        fc1, _, drop, fc2 = self.net
        h = F.silu(F.linear(x, fc1.weight, fc1.bias))
        return F.linear(drop(h) if self.training and drop.p > 0 else h, fc2.weight, fc2.bias)


class FlatTokenEncoder(nn.Module):
    """Default token encoder: flatten ``(B, T, *D)`` → ``(B, T, width)`` with an MLP."""

    def __init__(self, token_shape: tuple[int, ...], width: int):
        super().__init__()
        self.token_shape = tuple(token_shape)
        self.net = MLP(math.prod(self.token_shape), width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(2))


class FlatTokenDecoder(nn.Module):
    """Default token decoder: ``(B, T, width)`` → ``(B, T, *D)`` (last layer zero-initialized)."""

    def __init__(self, token_shape: tuple[int, ...], width: int):
        super().__init__()
        self.token_shape = tuple(token_shape)
        self.net = MLP(width, width, math.prod(self.token_shape))
        nn.init.zeros_(self.net.net[-1].weight)
        nn.init.zeros_(self.net.net[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).reshape(*h.shape[:2], *self.token_shape)
