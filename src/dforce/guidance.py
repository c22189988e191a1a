"""Guidance: ∇_x log c(x̂0) through the causal model, and Monte Carlo Guidance (MCG).

A guidance function scores the model's clean-token prediction: ``log_c(x0_hat (B, T, *D), t0) -> (B,)``
(higher is better; ``t0`` is the absolute index of the first token in the window). Its gradient with
respect to the *noisy* tokens flows back through the model, so a cost on far-future tokens pushes the
near tokens that cause it (Diffusion Forcing, Algorithm 2, line 10).

Monte Carlo Guidance: far-future tokens are noisy, so one draw of them is one possible future. MCG
averages the gradient over N futures: replica 0 is the current sequence, replicas 1..N-1 redraw every
noisy token from q(x_k | x̂0) with fresh noise (tokens at level K become independent samples of the
future). All N replicas go through the model as one batch (one forward per row, batch N×), and a
straight-through construction makes each replica's gradient land on the shared tokens.
"""

from __future__ import annotations

from typing import Callable

import torch

from dforce.diffusion import NoiseSchedule

GuidanceFn = Callable[[torch.Tensor, int], torch.Tensor]


def guided_prediction(
    model_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    schedule: NoiseSchedule,
    x: torch.Tensor,
    levels: torch.Tensor,
    x0_prev: torch.Tensor,
    log_c: GuidanceFn,
    t0: int,
    mcg_samples: int = 1,
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
        mcg_samples: N (1 = plain guidance on the current sample).
    Returns:
        ``(pred, grad)``: the model's prediction for ``x`` (replica 0, detached) and
        ``E_futures[∇_x log c]`` of shape ``x.shape``.
    """
    B = x.shape[0]
    N = max(1, int(mcg_samples))
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        xr = leaf.unsqueeze(1).expand(B, N, *x.shape[1:])  # (B, N, T, *D)
        lr = levels.unsqueeze(1).expand(B, N, *levels.shape[1:])
        if N > 1:
            fresh = torch.randn(xr.shape, device=x.device, dtype=x.dtype, generator=generator)
            redraw = schedule.add_noise(
                x0_prev.unsqueeze(1).expand_as(xr).flatten(0, 1), lr.flatten(0, 1), fresh.flatten(0, 1)
            ).view_as(xr)
            keep = torch.zeros(B, N, *levels.shape[1:], dtype=torch.bool, device=x.device)
            keep[:, 0] = True  # replica 0 is the sequence itself
            keep = keep | (lr == 0)  # clean tokens are not redrawn
            keep = keep.reshape(*keep.shape, *((1,) * (xr.ndim - keep.ndim)))
            xr = torch.where(keep, xr, xr + (redraw - xr).detach())  # value = redraw, gradient → leaf
        xr, lr = xr.flatten(0, 1), lr.flatten(0, 1)
        pred = model_fn(xr, lr, N).float()
        x0_hat, _ = schedule.to_x0_eps(xr, lr, pred, clip_x0)
        score = log_c(x0_hat, t0)
        if score.shape != (B * N,):
            raise ValueError(f"guidance function must return one log c per sample, shape ({B * N},), got {tuple(score.shape)}")
        (grad,) = torch.autograd.grad(score.sum() / N, leaf)
    return pred.view(B, N, *pred.shape[1:])[:, 0].detach(), grad


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
