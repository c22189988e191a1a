"""Guidance: ∇_x log c(x̂0) through the causal model, and Monte Carlo Guidance (MCG).

A guidance function scores the model's clean-token prediction: ``log_c(x0_hat (B, T, *D), t0) -> (B,)``
(higher is better; ``t0`` is the absolute index of the first token in the window). Its gradient with
respect to the *noisy* tokens flows back through the model, so a cost on far-future tokens pushes the
near tokens that cause it (Diffusion Forcing, Algorithm 2, line 10).

Monte Carlo Guidance: far-future tokens are noisy, so one draw of them is one possible future. MCG
averages the gradient over N futures: replica 0 is the current sequence, replicas 1..N-1 redraw the
future's noisy tokens (which ones: below) from q(x_k | x̂0) with fresh noise (tokens at level K become independent samples of the
future). All N replicas go through the model as one batch (one forward per row, batch N×), and a
straight-through construction makes each replica's gradient land on the shared tokens. A row with nothing to redraw
runs one forward of the sequence itself (the replicas would all equal it).

The options are one :class:`MCGConfig` (``sampler.mcg.*``). Which tokens are "the future" is ``redraw_above`` (a
fraction of K): only tokens whose level is above it are redrawn. A high threshold (0.9, the default) keeps the partly
denoised present and averages over futures of it (the paper's "sample the future given the current token"); 0 redraws
every noisy token, including the nearly clean ones being guided, so their gradient is taken at other values of
themselves (8.7-26 points below plain guidance on Maze2D Medium/Large, docs/planning.md). What gradient a redrawn token
itself gets is ``future_grad``: ``"own"`` takes it from replica 0 alone, at the token's own value, so MCG's average
applies only to the tokens every replica keeps; ``"replicas"`` averages it over the N replicas, taken at the values they
drew for it (straight-through). Variants that lost their experiments (sampled futures with extra DDIM steps, keeping
the first m tokens by position) were removed in 0.2; their results are in docs/planning.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError

GuidanceFn = Callable[[torch.Tensor, int], torch.Tensor]
MCG_FUTURE_GRADS = ("own", "replicas")  # what gradient a redrawn token gets (see the module docstring)


@dataclass(frozen=True)
class MCGConfig:
    """Monte Carlo Guidance (paper §3.4): the guidance gradient averaged over N sampled futures (``sampler.mcg``)."""

    samples: int = 1  # N futures per guided row (1: plain guidance on the current sample)
    # redraw only tokens above this fraction of K: the unstarted future (0.9: the Maze2D benchmark's; 0: every noisy
    # token, the present included)
    redraw_above: float = 0.9
    # a redrawn token's own gradient: own (replica 0's, at its own value; the benchmark's) | replicas (averaged)
    future_grad: str = "own"

    def __post_init__(self):
        check_choice("sampler.mcg.future_grad", self.future_grad, MCG_FUTURE_GRADS)
        if self.samples < 1:
            raise ConfigError(f"sampler.mcg.samples must be >= 1, got {self.samples}")
        if not 0.0 <= self.redraw_above < 1.0:
            raise ConfigError(f"sampler.mcg.redraw_above must be in [0, 1), got {self.redraw_above}")


def guided_prediction(
    model_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    schedule: NoiseSchedule,
    x: torch.Tensor,
    levels: torch.Tensor,
    x0_prev: torch.Tensor,
    log_c: GuidanceFn,
    t0: int,
    mcg: MCGConfig = MCGConfig(),
    clip_x0: float | None = None,
    generator: torch.Generator | None = None,
):
    """One guided model evaluation.

    Args:
        model_fn: ``model_fn(x_rep (B·N, T, *D), levels_rep (B·N, T), n) -> prediction``; ``n`` tells the
            caller how many times each batch row was replicated (to repeat its state/conditioning).
        x: ``(B, T, *D)`` current tokens (model input); levels ``(B, T)``.
        x0_prev: ``(B, T, *D)`` the previous row's x̂0 (zeros before the first row), used to redraw futures.
        log_c: guidance function; t0: index of the first token.
        mcg: N futures, which tokens replicas 1..N-1 redraw, and what gradient a redrawn token gets.
    Returns:
        ``(pred, grad)``: the model's prediction for ``x`` (replica 0, detached) and
        ``E_futures[∇_x log c]`` of shape ``x.shape``.
    """
    B = x.shape[0]
    N = mcg.samples
    future = mcg_future(levels, schedule.num_levels, mcg.redraw_above)  # (B, T)
    if N > 1 and not bool(future.any()):
        # nothing to redraw: the N replicas would all be the sequence itself, so one forward gives the same gradient
        # (the redraw noise is still drawn, so the generator's later draws do not depend on this shortcut)
        torch.randn((B, N, *x.shape[1:]), device=x.device, dtype=x.dtype, generator=generator)
        N = 1
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        xr = leaf.unsqueeze(1).expand(B, N, *x.shape[1:])  # (B, N, T, *D)
        lr = levels.unsqueeze(1).expand(B, N, *levels.shape[1:])
        redrawn = mask = None
        if N > 1:
            fresh = torch.randn(xr.shape, device=x.device, dtype=x.dtype, generator=generator)
            redraw = schedule.add_noise(
                x0_prev.unsqueeze(1).expand_as(xr).flatten(0, 1), lr.flatten(0, 1), fresh.flatten(0, 1)
            ).view_as(xr)
            redrawn = future.unsqueeze(1).expand(B, N, -1).clone()  # (B, N, T)
            redrawn[:, 0] = False  # replica 0 is the sequence itself
            mask = redrawn.reshape(*redrawn.shape, *((1,) * (xr.ndim - redrawn.ndim)))
            if mcg.future_grad == "own":  # a redrawn value passes no gradient: replica 0 alone grads the future
                xr = torch.where(mask, redraw.detach(), xr)
            else:
                xr = torch.where(mask, xr + (redraw - xr).detach(), xr)  # value = redraw, gradient → leaf
        xr, lr = xr.flatten(0, 1), lr.flatten(0, 1)
        pred = model_fn(xr, lr, N).float()
        x0_hat, _ = schedule.to_x0_eps(xr, lr, pred, clip_x0)
        score = log_c(x0_hat, t0)
        if score.shape != (B * N,):
            raise ValueError(f"guidance function must return one log c per sample, shape ({B * N},), got {tuple(score.shape)}")
        (grad,) = torch.autograd.grad(score.sum() / N, leaf)
    if mask is not None and mcg.future_grad == "own":  # the future's gradient came from one replica: undo the 1/N
        grad = torch.where(mask[:, 1], grad * N, grad)  # (B, T, 1...): the tokens replica 1 (as every other) redrew
    return pred.view(B, N, *pred.shape[1:])[:, 0].detach(), grad


def mcg_future(levels: torch.Tensor, num_levels: int, redraw_above: float = 0.9) -> torch.Tensor:
    """Which tokens MCG's replicas redraw: ``(B, T) bool`` for ``levels: (B, T)``, the noisy tokens above
    ``redraw_above``·K."""
    return (levels > redraw_above * num_levels) & (levels > 0)


# ---------------------------------------------------------------------------------------------------
# ready-made guidance functions
# ---------------------------------------------------------------------------------------------------


def goal_guidance(goal: torch.Tensor, dims: slice | list[int], token: int | None = -1) -> GuidanceFn:
    """log c = −‖x̂0[token, dims] − goal‖² (``token=None``: summed over every token of the window).

    Args:
        goal: ``(B, len(dims))`` target values (e.g. a 2-D goal position in the token's state part).
        dims: which channels of the (flat) token hold the guided quantity.
        token: which token of the window is scored (-1: the last one).
    """

    def log_c(x0_hat: torch.Tensor, t0: int) -> torch.Tensor:
        sel = x0_hat.flatten(2)[..., dims]  # (B·N, T, G)
        g = goal.to(sel).repeat_interleave(sel.shape[0] // goal.shape[0], dim=0).unsqueeze(1)
        d = (sel - g).pow(2).sum(-1)  # (B·N, T)
        return -(d.sum(1) if token is None else d[:, token])

    return log_c
