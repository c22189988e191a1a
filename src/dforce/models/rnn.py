"""The paper's recurrent Diffusion Forcing backbone (Chen et al. 2024, §3.2).

A latent z_t is updated from the *noisy* token and its level, z_t = GRU(z_{t-1}, enc(x_t^{k_t}, k_t, c_t)),
and an output head reads the prediction for token t from z_t (and the token's own input features).
With k_t = 0 the update is a Bayes-filter posterior step, with k_t = K a prior step.

The latent is the backbone's *state*: ``absorb`` commits tokens (returns the new latent) and ``forward``
predicts tokens that follow a given latent without changing it, so a sampler never re-reads a committed
token and a rollout's memory does not grow with its length.
"""

from __future__ import annotations

import torch
from torch import nn

from dforce.models.layers import MLP, FlatTokenDecoder, FlatTokenEncoder, LevelEmbedding


class RecurrentDenoiser(nn.Module):
    """GRU-stack denoiser over tokens ``x: (B, T, *D)`` with levels ``(B, T)`` and conditioning ``(B, T, C)``.

    Args:
        token_shape: ``D`` (the per-token shape).
        num_levels: K of the noise schedule (for the level embedding).
        cond_dim: size of the per-token conditioning vector (0 = none).
        width: latent size of the GRU (reference time series: 1024; small presets: 64-256).
        depth: number of GRU layers (reference time series: 4).
        encoder / decoder: optional modules replacing the flat MLP token encoder/decoder (e.g. convs for
            frames); they map ``(B, T, *D) → (B, T, width)`` and ``(B, T, width) → (B, T, *D)``.
    State: ``(depth, B, width)`` GRU hidden state; ``None`` means zeros.
    """

    def __init__(
        self,
        token_shape: tuple[int, ...],
        num_levels: int,
        cond_dim: int = 0,
        width: int = 128,
        depth: int = 2,
        dropout: float = 0.0,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        self.token_shape = tuple(token_shape)
        self.cond_dim = cond_dim
        self.width, self.depth = width, depth
        self.encoder = encoder or FlatTokenEncoder(self.token_shape, width)
        self.level_emb = LevelEmbedding(width, num_levels)
        self.cond_proj = nn.Linear(cond_dim, width) if cond_dim > 0 else None
        self.in_norm = nn.LayerNorm(width)
        self.gru = nn.GRU(width, width, num_layers=depth, batch_first=True, dropout=dropout if depth > 1 else 0.0)
        self.head = MLP(2 * width, 2 * width, width, dropout)
        self.decoder = decoder or FlatTokenDecoder(self.token_shape, width)

    # -- state ---------------------------------------------------------------------------------------

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(self.depth, batch, self.width, device=device)

    @staticmethod
    def repeat_state(state: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Repeat each batch element's state ``n`` times (``(L, B, W)`` → ``(L, B·n, W)``)."""
        return None if state is None else state.repeat_interleave(n, dim=1)

    # -- core ----------------------------------------------------------------------------------------

    def _inputs(self, x, levels, cond):
        B, T = x.shape[:2]
        h = self.encoder(x) + self.level_emb(levels)  # (B, T, W)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError(f"this model was built with cond_dim={self.cond_dim}; pass cond of shape (B, T, C)")
            h = h + self.cond_proj(cond.to(h.dtype))
        return self.in_norm(h)

    def _run(self, x, levels, cond, state):
        inp = self._inputs(x, levels, cond)
        if state is not None:
            state = state.to(inp.dtype).contiguous()
        z, h_n = self.gru(inp, state)  # z: (B, T, W) latents z_t; h_n: (L, B, W)
        return inp, z, h_n

    def forward(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None):
        """Predict every token of ``x: (B, T, *D)`` at ``levels: (B, T)`` after latent ``state``."""
        inp, z, _ = self._run(x, levels, cond, state)
        return self.decoder(self.head(torch.cat([z, inp], dim=-1)))  # (B, T, *D)

    def absorb(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None):
        """Commit tokens to the latent (posterior update at their levels); returns the new state."""
        return self._run(x, levels, cond, state)[2]
