"""Convolutional per-frame encoder/decoder ("frames as tokens") for the causal backbones.

The backbone sees one ``width`` vector per frame token. A single vector is a tight bottleneck for a
whole frame, so, like the reference's U-Net denoiser, the decoder also receives *skip connections*
from the encoder's feature maps of the same noisy input frame ``x_t^{k_t}``: the recurrent latent (or
the transformer's attention) supplies the past, the skips supply the spatial detail of the token
being denoised. Both are strictly per-frame, so causality in T is the backbone's.

Encoder and decoder are separate modules (passed as ``encoder`` / ``decoder`` to
:func:`dforce.models.build_model`, which call them in that order inside one ``forward``); they share a
plain, non-module :class:`SkipBuffer` through which the encoder hands its feature maps to the decoder.
``absorb`` (encoder only) leaves stale maps in it, which the next ``forward`` overwrites first.

Shapes: encoder ``(B, T, C, H, W) -> (B, T, width)``; decoder ``(B, T, width) -> (B, T, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dforce.errors import ConfigError


@dataclass(frozen=True)
class CodecConfig:
    channels: int = 32  # conv channels at the first downsampled resolution; x2 per further level (DCGAN-style)
    max_channels: int = 128  # cap on channels per level (keeps 64 px affordable on CPU)
    bottom: int = 8  # spatial side of the lowest feature map (8x8 as the reference U-Net's deepest level)
    skips: bool = True  # U-Net skips from the noisy input frame to the decoder (reference denoiser design)

    def __post_init__(self):
        if self.channels < 1 or self.max_channels < self.channels:
            raise ConfigError(f"codec.channels must be in [1, codec.max_channels], got {self.channels}")
        if self.bottom < 1 or self.bottom & (self.bottom - 1):
            raise ConfigError(f"codec.bottom must be a power of two, got {self.bottom}")


class SkipBuffer:
    """Feature maps handed from the encoder to the decoder within one forward call (not a module)."""

    def __init__(self):
        self.maps: list[torch.Tensor] = []

    def __deepcopy__(self, memo):  # EMA copies the model: the copy gets its own (empty) buffer
        new = SkipBuffer()
        memo[id(self)] = new
        return new


def halvings(size: int, bottom: int) -> int:
    """Number of stride-2 steps from ``size`` to ``bottom`` (sides of square maps); a clear error if impossible."""
    n, s = 0, size
    while s > bottom:
        if s % 2:
            raise ConfigError(f"frame side {size} must halve evenly down to codec.bottom={bottom}")
        s //= 2
        n += 1
    if s != bottom:
        raise ConfigError(f"frame side {size} cannot reach codec.bottom={bottom} by halving")
    return n


class ConvBlock(nn.Module):
    """SiLU → 3x3 conv, residual (pre-activation ResNet block with one conv and no norm: CPU-cheap;
    GroupNorm's backward cost as much as the convs here)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv(F.silu(x))


class ConvFrameEncoder(nn.Module):
    """Strided convs ``(B, T, C, H, W) -> (B, T, width)``; stores per-level maps in ``buffer``."""

    def __init__(self, frame_shape: tuple[int, int, int], width: int, cfg: CodecConfig, buffer: SkipBuffer):
        super().__init__()
        C, H, W = frame_shape
        if H != W:
            raise ConfigError(f"video frames must be square, got {H}x{W}")
        n = halvings(H, cfg.bottom)
        self.chans = [min(cfg.channels * 2**i, cfg.max_channels) for i in range(max(n, 1))]
        self.buffer, self.skips = buffer, cfg.skips
        self.stem = nn.Conv2d(C, self.chans[0], 4 if n else 3, 2 if n else 1, 1)  # full res -> H/2 at once
        self.blocks = nn.ModuleList(ConvBlock(c) for c in self.chans)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(self.chans[:-1], self.chans[1:]))
        self.out = nn.Linear(self.chans[-1] * cfg.bottom**2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        h = self.stem(x.flatten(0, 1))
        maps = [x.flatten(0, 1)]  # the raw noisy frame itself is the full-resolution skip
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            maps.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        if self.skips:
            self.buffer.maps = maps
        return self.out(F.silu(h).flatten(1)).view(B, T, -1)


class ConvFrameDecoder(nn.Module):
    """``(B, T, width) -> (B, T, C, H, W)``: vector → bottom map, then upsampling with skips and FiLM.

    Every level is modulated (scale, shift) by the token's vector, which carries the noise level and the
    backbone's memory of the past, so the decoder knows how far to trust the noisy skip features.
    """

    def __init__(self, frame_shape: tuple[int, int, int], width: int, cfg: CodecConfig, buffer: SkipBuffer,
                 chans: list[int]):
        super().__init__()
        C, H, _ = frame_shape
        self.frame_shape, self.bottom = tuple(frame_shape), cfg.bottom
        self.buffer, self.skips = buffer, cfg.skips
        self.up_to_full = H != cfg.bottom
        self.chans = chans
        self.inp = nn.Linear(width, chans[-1] * cfg.bottom**2)
        m = 2 if cfg.skips else 1
        self.merge = nn.ModuleList(nn.Conv2d(m * c, c, 1) for c in chans)
        self.blocks = nn.ModuleList(ConvBlock(c) for c in chans)
        self.film = nn.ModuleList(nn.Linear(width, 2 * c) for c in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 4, 2, 1) for a, b in zip(chans[:-1], chans[1:]))
        c0 = chans[0]
        self.final_up = nn.ConvTranspose2d(c0, c0, 4, 2, 1) if self.up_to_full else nn.Identity()
        self.head = nn.Conv2d(c0 + (C if cfg.skips else 0), C, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        B, T = v.shape[:2]
        vf = v.flatten(0, 1)
        h = self.inp(vf).view(B * T, self.chans[-1], self.bottom, self.bottom)
        maps = self.buffer.maps if self.skips else None
        if self.skips and (not maps or maps[0].shape[0] != B * T):
            raise RuntimeError("ConvFrameDecoder with skips must run right after its encoder on the same tokens")
        for i in reversed(range(len(self.chans))):
            if self.skips:
                h = torch.cat([h, maps[i + 1]], 1)
            h = self.merge[i](h)
            scale, shift = self.film[i](vf).chunk(2, -1)
            h = self.blocks[i](h * (1 + scale[..., None, None]) + shift[..., None, None])
            if i > 0:
                h = self.ups[i - 1](F.silu(h))
        h = self.final_up(F.silu(h))
        if self.skips:
            h = torch.cat([F.silu(h), maps[0]], 1)
            self.buffer.maps = []
        return self.head(h).view(B, T, *self.frame_shape)


def frame_codec(frame_shape: tuple[int, int, int], width: int, cfg: CodecConfig = CodecConfig()):
    """Build a matching ``(encoder, decoder)`` pair for frames ``(C, H, W)`` and backbone ``width``."""
    buffer = SkipBuffer()
    enc = ConvFrameEncoder(tuple(frame_shape), width, cfg, buffer)
    dec = ConvFrameDecoder(tuple(frame_shape), width, cfg, buffer, enc.chans)
    return enc, dec
