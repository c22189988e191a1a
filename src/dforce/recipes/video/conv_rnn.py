"""Recurrent Diffusion Forcing backbone with a *spatial* latent (ConvGRU), for frame tokens.

The paper's video model is a convolutional encoder/decoder around a recurrent latent that is itself a
feature map: z_t = ConvGRU(z_{t-1}, enc(x_t^{k_t}, k_t, a_t)) with z_t of shape ``(Cz, h, w)``. A single
vector per frame (:class:`dforce.models.rnn.RecurrentDenoiser` + a conv codec) is too small a latent
to carry a frame across time; a map keeps *where* things are, and a 3x3 gate convolution moves them.

Per token t (all convs are per frame, so causality in T is the GRU's):
    e = level_emb(k_t) + action_proj(a_t)                                   (B, T, E)
    encoder: stem → [FiLM(e) residual block → stride-2 conv] × n → bottom map f_t  (c, h, w)
    z_t = ConvGRU_stack(z_{t-1}, f_t)                                         (depth, Cz, h, w)
    decoder: 1x1(cat(z_t, f_t)) → [FiLM(e) block with U-Net skip of the noisy frame → up] × n → 3x3 conv
The skips give the decoder the detail of the noisy input token, the latent the past.

State protocol (as every backbone): ``forward`` predicts tokens after ``state`` without changing it,
``absorb`` commits tokens and returns the new state ``(depth, B, Cz, h, w)``, ``init_state`` /
``repeat_state``. ``forward_clean_past`` is the two-stream teacher-forcing pass (every token noisy on
a clean past, in parallel over T).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dforce.errors import ConfigError
from dforce.models.layers import LevelEmbedding
from dforce.recipes.video.codec import halvings


class PrevFrameState(NamedTuple):
    """State of a ``prev_frame`` model: the latent and the last token as it was given. ``batch_dims`` says where
    each part keeps the batch, so history guidance can stack and slice states (``dforce.history_guidance``)."""

    z: torch.Tensor  # (depth, B, Cz, h, w)
    x_prev: torch.Tensor  # (B, C, H, W)
    k_prev: torch.Tensor  # (B,) int
    batch_dims = (1, 0, 0)  # a class attribute (not a field): the batch dimension of z, x_prev, k_prev


class FiLMBlock(nn.Module):
    """Residual block ``h + conv3x3(SiLU(FiLM_e(h)))``; FiLM starts as the identity (zero-init)."""

    def __init__(self, ch: int, emb: int):
        super().__init__()
        self.film = nn.Linear(emb, 2 * ch)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``h: (N, ch, H, W)``, ``e: (N, emb)``."""
        scale, shift = self.film(e)[..., None, None].chunk(2, 1)
        return h + self.conv(F.silu(h * (1 + scale) + shift))


class ConvGRUCell(nn.Module):
    """GRU with 3x3 convolutions (Shi et al. 2015 / Ballas et al. 2016): maps ``(N, Cin, h, w)``, ``(N, C, h, w)``."""

    def __init__(self, cin: int, ch: int):
        super().__init__()
        self.gates = nn.Conv2d(cin + ch, 2 * ch, 3, padding=1)
        self.cand = nn.Conv2d(cin + ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, u = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        c = torch.tanh(self.cand(torch.cat([x, r * h], 1)))
        return h + u * (c - h)


class ConvGRUDenoiser(nn.Module):
    """Spatial-latent recurrent denoiser for frame tokens ``x: (B, T, C, H, W)``.

    Args:
        frame_shape: ``(C, H, W)`` of a token (``C`` may hold stacked frames); square frames.
        num_levels: K of the noise schedule.
        cond_dim: per-token action vector size (0 = none).
        channels: encoder/decoder channels at full resolution, doubled per halving up to ``max_channels``.
        latent_side: side ``h = w`` of the recurrent map (a power-of-two fraction of H).
        latent_channels: channels ``Cz`` of the recurrent map.
        depth: stacked ConvGRU cells.
        causal: False adds a second ConvGRU stack run backwards in time, and the decoder reads both latents, so
            a token sees the tokens after it too (keyframes, interpolation; DFoT's "any subset" conditioning).
            Such a model keeps no state: ``absorb`` is refused, and the sampler passes the committed tokens with
            every chunk.
        prev_frame: also feed the *previous token* as it was given (``x_{t−1}`` at its level, full resolution) and its
            noise level (a constant channel ``k_{t−1}/K``) to the stem of token t. The recurrent map is
            ``latent_side``² (8 × 8 for 64 px frames): too coarse to carry a 2-pixel ball or paddle, which vanished
            from rollouts; the previous token brings them at full resolution (pixel-space refinement). Causal: token
            t sees tokens < t only, at the levels they were given. The state becomes ``(z, x_{t−1}, k_{t−1})``.
    """

    def __init__(self, frame_shape: tuple[int, int, int], num_levels: int, cond_dim: int = 0, channels: int = 32,
                 max_channels: int = 64, latent_side: int = 8, latent_channels: int = 64, depth: int = 1,
                 causal: bool = True, prev_frame: bool = False):
        super().__init__()
        self.causal = bool(causal)
        self.prev_frame, self.num_levels = prev_frame, num_levels
        C, H, W = frame_shape
        if H != W:
            raise ConfigError(f"video frames must be square, got {H}x{W}")
        n = halvings(H, latent_side)
        self.frame_shape, self.cond_dim, self.depth = tuple(frame_shape), cond_dim, depth
        self.latent = (latent_channels, latent_side, latent_side)
        ch = [min(channels * 2**i, max_channels) for i in range(n + 1)]  # per resolution H / 2^i
        E = 4 * channels  # embedding of (level, action), as a DDPM U-Net's time embedding (4 x base channels)
        self.chans = ch
        self.level_emb = LevelEmbedding(E, num_levels)
        self.cond_proj = nn.Linear(cond_dim, E) if cond_dim > 0 else None
        self.stem = nn.Conv2d(C + (C + 1 if prev_frame else 0), ch[0], 3, padding=1)
        self.enc = nn.ModuleList(FiLMBlock(c, E) for c in ch)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(ch[:-1], ch[1:]))
        self.cells = nn.ModuleList(ConvGRUCell(ch[-1] if i == 0 else latent_channels, latent_channels)
                                   for i in range(depth))
        self.mid = nn.Conv2d(latent_channels + ch[-1], ch[-1], 1)
        if not self.causal:  # the backward-in-time stack, read through its own (zero-initialized) 1x1 conv
            self.cells_back = nn.ModuleList(ConvGRUCell(ch[-1] if i == 0 else latent_channels, latent_channels)
                                            for i in range(depth))
            self.mid_back = nn.Conv2d(latent_channels, ch[-1], 1)
            nn.init.zeros_(self.mid_back.weight)
            nn.init.zeros_(self.mid_back.bias)
        # a causal run's weights start a bidirectional model (train.init_from): the backward stack starts fresh and,
        # zero-initialized, leaves the model equal to the causal one at step 0
        self.init_allow_missing = () if self.causal else ("cells_back.", "mid_back.")
        self.merge = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in ch)
        self.dec = nn.ModuleList(FiLMBlock(c, E) for c in ch)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 4, 2, 1) for a, b in zip(ch[:-1], ch[1:]))
        self.head = nn.Conv2d(ch[0], C, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # -- state ---------------------------------------------------------------------------------------

    def init_state(self, batch: int, device=None):
        """Zero latent ``(depth, B, Cz, h, w)``; with ``prev_frame`` a :class:`PrevFrameState` ``(z, x_prev (B, C, H,
        W) zeros, k_prev (B,) = K)`` (no previous token: shown as pure noise)."""
        z = torch.zeros(self.depth, batch, *self.latent, device=device)
        if not self.prev_frame:
            return z
        return PrevFrameState(z, torch.zeros(batch, *self.frame_shape, device=device),
                              torch.full((batch,), self.num_levels, dtype=torch.long, device=device))

    @staticmethod
    def repeat_state(state, n: int):
        """Repeat each batch element's state ``n`` times (latent ``(L, B, ...)`` → ``(L, B·n, ...)``)."""
        if state is None:
            return None
        if isinstance(state, PrevFrameState):
            return PrevFrameState(*(t.repeat_interleave(n, dim=d) for t, d in zip(state, state.batch_dims)))
        return state.repeat_interleave(n, dim=1)

    def _split_state(self, state, x: torch.Tensor):
        """``(z or None, previous-token inputs (B, T, C + 1, H, W) or None)`` for tokens ``x: (B, T, C, H, W)``."""
        if not self.prev_frame:
            return state, None
        B, T = x.shape[:2]
        z, xp, kp = state if state is not None else self.init_state(B, x.device)
        return z, (xp.to(x.dtype), kp)

    def _prev_inputs(self, x: torch.Tensor, levels: torch.Tensor, prev) -> torch.Tensor | None:
        """Token t's previous token and its level channel: ``(B, T, C + 1, H, W)`` from ``x: (B, T, C, H, W)``,
        ``levels: (B, T)`` and the state's last token ``prev = (x_prev (B, C, H, W), k_prev (B,))``."""
        if prev is None:
            return None
        xp, kp = prev
        px = torch.cat([xp.unsqueeze(1), x[:, :-1]], 1)  # (B, T, C, H, W)
        pk = torch.cat([kp.to(levels.device).view(-1, 1), levels[:, :-1]], 1).to(x.dtype) / self.num_levels  # (B, T)
        return torch.cat([px, pk[..., None, None, None].expand(*px.shape[:2], 1, *px.shape[3:])], 2)

    # -- pieces --------------------------------------------------------------------------------------

    def _emb(self, levels: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        e = self.level_emb(levels)  # (B, T, E)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError(f"this model was built with cond_dim={self.cond_dim}; pass cond of shape (B, T, C)")
            e = e + self.cond_proj(cond.to(e.dtype))
        return F.silu(e).flatten(0, 1)  # (B·T, E)

    def _encode(self, x: torch.Tensor, e: torch.Tensor, prev: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x: (B, T, C, H, W)`` (and ``prev: (B, T, C + 1, H, W)``, :meth:`_prev_inputs`) → bottom maps
        ``(B, T, c, h, w)`` and per-level skips ``(B·T, c_i, ...)``."""
        B, T = x.shape[:2]
        h = self.stem((x if prev is None else torch.cat([x, prev], 2)).flatten(0, 1))
        skips = []
        for i, blk in enumerate(self.enc):
            h = blk(h, e)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return h.view(B, T, *h.shape[1:]), skips

    def _step(self, f: torch.Tensor, z: torch.Tensor, cells=None) -> torch.Tensor:
        """One ConvGRU-stack update: ``f: (N, c, h, w)``, ``z: (depth, N, Cz, h, w)`` → new ``z``."""
        out, inp = [], f
        for cell, zl in zip(self.cells if cells is None else cells, z):
            inp = cell(inp, zl)
            out.append(inp)
        return torch.stack(out)

    def _unroll(self, f: torch.Tensor, state: torch.Tensor | None, backwards: bool = False) -> torch.Tensor:
        """``f: (B, T, c, h, w)`` → every state after token t, ``(T, depth, B, Cz, h, w)`` (the RNN unroll;
        ``backwards``: the backward stack from the last token, states in token order)."""
        z = (torch.zeros(self.depth, f.shape[0], *self.latent, device=f.device, dtype=f.dtype) if state is None
             else state.to(f.dtype))
        zs = []
        order = range(f.shape[1] - 1, -1, -1) if backwards else range(f.shape[1])
        for t in order:
            z = self._step(f[:, t], z, self.cells_back if backwards else None)
            zs.append(z)
        return torch.stack(zs[::-1] if backwards else zs)

    def _decode(self, z: torch.Tensor, f: torch.Tensor, skips: list[torch.Tensor], e: torch.Tensor,
                zb: torch.Tensor | None = None) -> torch.Tensor:
        """Top-layer latent ``z: (N, Cz, h, w)`` (and the backward stack's ``zb``) + bottom map ``f: (N, c, h, w)`` →
        prediction ``(N, C, H, W)``."""
        h = self.mid(torch.cat([z, f], 1))
        if zb is not None:
            h = h + self.mid_back(zb)
        for i in reversed(range(len(self.chans))):
            h = self.dec[i](self.merge[i](torch.cat([h, skips[i]], 1)), e)
            if i > 0:
                h = self.ups[i - 1](F.silu(h))
        return self.head(F.silu(h))

    # -- protocol ------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None):
        """Predict every token of ``x: (B, T, C, H, W)`` at ``levels: (B, T)`` after latent ``state``."""
        B, T = x.shape[:2]
        e = self._emb(levels, cond)
        z0, prev = self._split_state(state, x)
        f, skips = self._encode(x, e, self._prev_inputs(x, levels, prev))
        z = self._unroll(f, z0)[:, -1].transpose(0, 1).flatten(0, 1)  # top layer, (B·T, Cz, h, w)
        zb = None
        if not self.causal:
            if state is not None:
                raise ValueError("a bidirectional model (model.causal=false) keeps no state: pass every token")
            zb = self._unroll(f, None, backwards=True)[:, -1].transpose(0, 1).flatten(0, 1)  # (B·T, Cz, h, w)
        return self._decode(z, f.flatten(0, 1), skips, e, zb).view(B, T, *self.frame_shape)

    def forward_copies(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None, state,
                       copies: int) -> torch.Tensor:
        """:meth:`forward` of the same tokens ``x: (B, T, C, H, W)`` after ``copies`` latents (``state: (depth,
        copies·B, ...)``, copy-major), e.g. history guidance's copies: the encoder (and its skips) runs once, the
        ConvGRU and the decoder per copy. Returns ``(copies·B, T, C, H, W)``, equal to :meth:`forward` of the
        repeated tokens. (With ``prev_frame`` each copy's previous token differs: the encoder runs per copy.)"""
        rep = lambda t: t.repeat(copies, *((1,) * (t.ndim - 1)))  # noqa: E731  copy-major
        if self.prev_frame or not self.causal:
            return self.forward(rep(x), rep(levels), None if cond is None else rep(cond), state)
        B, T = x.shape[:2]
        e = self._emb(levels, cond)
        f, skips = self._encode(x, e)
        f = rep(f)
        z = self._unroll(f, state)[:, -1].transpose(0, 1).flatten(0, 1)  # top layer, (copies·B·T, Cz, h, w)
        return self._decode(z, f.flatten(0, 1), [rep(s) for s in skips], rep(e)).view(copies * B, T, *self.frame_shape)

    def absorb(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None):
        """Commit tokens to the latent (posterior update at their levels); returns ``(depth, B, Cz, h, w)`` (with
        ``prev_frame``: ``(z, x[:, -1], levels[:, -1])``)."""
        if not self.causal:
            raise ValueError("a bidirectional model (model.causal=false) keeps no state to absorb tokens into")
        z0, prev = self._split_state(state, x)
        f, _ = self._encode(x, self._emb(levels, cond), self._prev_inputs(x, levels, prev))
        z = self._unroll(f, z0)[-1]
        return PrevFrameState(z, x[:, -1], levels[:, -1]) if self.prev_frame else z

    def forward_clean_past(self, x: torch.Tensor, levels: torch.Tensor, clean: torch.Tensor,
                           cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing on every token at once: predict noisy ``x_t`` (level ``levels[:, t]``) from the
        latent of the *clean* tokens ``< t``. ``x, clean: (B, T, C, H, W)`` → ``(B, T, C, H, W)``.

        The clean sequence is unrolled once (states z_0..z_{T-1}); token t then takes one ConvGRU step
        from z_{t-1} (zeros for t = 0) with its noisy input, for all t in parallel.
        """
        B, T = x.shape[:2]
        clean_levels = torch.zeros_like(levels)
        _, prev0 = self._split_state(None, clean)  # no token before the window
        prev_clean = self._prev_inputs(clean, clean_levels, prev0)  # token t's previous token: clean[t-1] at level 0
        fc, _ = self._encode(clean, self._emb(clean_levels, cond), prev_clean)
        zc = self._unroll(fc, None)  # (T, depth, B, ...)
        prev = torch.cat([torch.zeros_like(zc[:1]), zc[:-1]])  # state before token t
        prev = prev.permute(1, 2, 0, 3, 4, 5).flatten(1, 2)  # (depth, B·T, Cz, h, w)
        e = self._emb(levels, cond)
        f, skips = self._encode(x, e, prev_clean)
        f = f.flatten(0, 1)
        z = self._step(f, prev)[-1]
        return self._decode(z, f, skips, e).view(B, T, *self.frame_shape)
