"""Guidance: ∇_x log c(x̂0) through the causal model, and Monte Carlo Guidance (MCG).

A guidance function scores the model's clean-token prediction: ``log_c(x0_hat (B, T, *D), t0) -> (B,)``
(higher is better; ``t0`` is the index, among the generated tokens, of the first token of ``x0_hat``). The sampler
passes the current chunk from its first token: tokens already committed (clean, fixed) followed by the x̂0 of the
tokens still moving, so a cost that integrates along the window (e.g. positions from velocities) sees all of it. Its gradient with
respect to the *noisy* tokens flows back through the model, so a cost on far-future tokens pushes the
near tokens that cause it (Diffusion Forcing, Algorithm 2, line 10).

Monte Carlo Guidance: far-future tokens are noisy, so one draw of them is one possible future. MCG
averages the gradient over N futures: replica 0 is the current sequence, replicas 1..N-1 redraw the
future's noisy tokens (which ones: below) from q(x_k | x̂0) with fresh noise (tokens at level K become independent samples of the
future). All N replicas go through the model as one batch (one forward per row, batch N×), and a
straight-through construction makes each replica's gradient land on the shared tokens. A row with nothing to redraw
runs one forward of the sequence itself (the replicas would all equal it).

Which tokens are "the future" is ``mcg_redraw_above`` (a fraction of K): only tokens whose level is above it are
redrawn. 0 redraws every noisy token, including the nearly clean ones being guided, so their gradient is taken at
other values of themselves; a high threshold keeps the partly denoised present and averages over futures of it
(closer to the paper's "sample the future given the current token"). From pure noise a one-step x̂0 is close to the
*mean* future, so ``mcg_future_steps`` > 0 runs that many more (no-grad) DDIM steps on the redrawn tokens and scores
the resulting *samples* of the future (the gradient still flows through the first x̂0, straight-through).

``mcg_keep_first`` = m > 0 names the present by position instead: the first m tokens of the row are kept, every later
noisy token is redrawn (at its own level, from q(x_k | x̂0)), so MCG acts in every row of a pyramid, not only while
part of the plan is above the threshold (both rules apply together: a token is redrawn when it is past the first m
and above the threshold).

What gradient a redrawn token itself gets is ``mcg_future_grad``: ``"replicas"`` averages it over the N replicas, taken
at the values they drew for it (straight-through); ``"own"`` takes it from replica 0 alone, at the token's own value
(never at a value it does not have), so MCG's average applies only to the tokens every replica keeps.
"""

from __future__ import annotations

from typing import Callable

import torch

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule

GuidanceFn = Callable[[torch.Tensor, int], torch.Tensor]
MCG_FUTURE_GRADS = ("replicas", "own")  # what gradient a redrawn token gets (see the module docstring)


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
    mcg_redraw_above: float = 0.0,
    mcg_future_steps: int = 0,
    mcg_future_grad: str = "replicas",
    mcg_keep_first: int = 0,
    prefix: torch.Tensor | None = None,
):
    """One guided model evaluation.

    Args:
        model_fn: ``model_fn(x_rep (B·N, T, *D), levels_rep (B·N, T), n) -> prediction``; ``n`` tells the
            caller how many times each batch row was replicated (to repeat its state/conditioning).
        x: ``(B, T, *D)`` current tokens (model input); levels ``(B, T)``.
        x0_prev: ``(B, T, *D)`` the previous row's x̂0 (zeros before the first row), used to redraw futures.
        log_c: guidance function; t0: index of the first token.
        mcg_samples: N (1 = plain guidance on the current sample).
        mcg_redraw_above: replicas 1..N-1 redraw the tokens whose level is above this fraction of K.
        mcg_future_steps: extra (no-grad) DDIM steps that take each redrawn future to level 0, so the guidance
            scores a sample of it rather than its one-step x̂0 (which, from pure noise, is the mean future).
        mcg_future_grad: a redrawn token's gradient: ``"replicas"`` (averaged over the N replicas, at their values)
            or ``"own"`` (replica 0's, at its own value).
        mcg_keep_first: replicas keep the first m tokens of ``x`` (the present) and redraw the later noisy ones.
        prefix: ``(B, a, *D)`` tokens before ``x`` in the window that ``log_c`` scores (committed, fixed values:
            no gradient), so that ``log_c`` sees the window from its first token, ``t0``; None: ``x`` starts there.
    Returns:
        ``(pred, grad)``: the model's prediction for ``x`` (replica 0, detached) and
        ``E_futures[∇_x log c]`` of shape ``x.shape``.
    """
    check_choice("mcg_future_grad", mcg_future_grad, MCG_FUTURE_GRADS)
    B = x.shape[0]
    N = max(1, int(mcg_samples))
    future = mcg_future(levels, schedule.num_levels, mcg_redraw_above, mcg_keep_first)  # (B, T)
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
            if mcg_future_grad == "own":  # a redrawn value passes no gradient: replica 0 alone grads the future
                xr = torch.where(mask, redraw.detach(), xr)
            else:
                xr = torch.where(mask, xr + (redraw - xr).detach(), xr)  # value = redraw, gradient → leaf
        xr, lr = xr.flatten(0, 1), lr.flatten(0, 1)
        pred = model_fn(xr, lr, N).float()
        x0_hat, eps_hat = schedule.to_x0_eps(xr, lr, pred, clip_x0)
        if redrawn is not None and mcg_future_steps > 0 and bool(redrawn.any()):  # nothing redrawn: nothing to sample
            sampled = _sample_futures(model_fn, schedule, xr, lr, x0_hat, eps_hat, redrawn, mcg_future_steps, clip_x0)
            x0_hat = x0_hat + (sampled - x0_hat).detach()  # value = the sampled futures, gradient through x̂0
        if prefix is not None and prefix.shape[1] > 0:
            x0_hat = torch.cat([prefix.to(x0_hat).repeat_interleave(N, 0), x0_hat], 1)
        score = log_c(x0_hat, t0)
        if score.shape != (B * N,):
            raise ValueError(f"guidance function must return one log c per sample, shape ({B * N},), got {tuple(score.shape)}")
        (grad,) = torch.autograd.grad(score.sum() / N, leaf)
    if mask is not None and mcg_future_grad == "own":  # the future's gradient came from one replica: undo the 1/N
        grad = torch.where(mask[:, 1], grad * N, grad)  # (B, T, 1...): the tokens replica 1 (as every other) redrew
    return pred.view(B, N, *pred.shape[1:])[:, 0].detach(), grad


def mcg_future(levels: torch.Tensor, num_levels: int, redraw_above: float = 0.0, keep_first: int = 0) -> torch.Tensor:
    """Which tokens MCG's replicas redraw: ``(B, T) bool`` for ``levels: (B, T)``, the noisy tokens above
    ``redraw_above``·K and, with ``keep_first`` = m > 0, past the row's first m tokens."""
    future = (levels > redraw_above * num_levels) & (levels > 0)
    if keep_first > 0:
        future &= torch.arange(levels.shape[-1], device=levels.device) >= keep_first  # past the present
    return future


def _sample_futures(model_fn, schedule: NoiseSchedule, x: torch.Tensor, levels: torch.Tensor, x0_hat: torch.Tensor,
                    eps_hat: torch.Tensor, redrawn: torch.Tensor, steps: int, clip_x0: float | None) -> torch.Tensor:
    """Denoise the redrawn tokens of replicas 1..N-1 to level 0 in ``steps + 1`` DDIM steps (eta 0, no grad).

    Args:
        x, levels, x0_hat, eps_hat: ``(B·N, T, *D)`` / ``(B·N, T)`` the replicas, their levels and first predictions.
        redrawn: ``(B, N, T)`` bool, which tokens are redrawn futures (all False in replica 0).
    Returns:
        ``(B·N, T, *D)``: ``x0_hat`` with every redrawn token replaced by its sample (detached).
    """
    B, N = redrawn.shape[:2]
    sub = lambda t: t.detach().view(B, N, *t.shape[1:])[:, 1:].flatten(0, 1)  # noqa: E731  replicas 1..N-1
    with torch.no_grad():
        xs, k0, x0, eps, fut = sub(x), sub(levels), sub(x0_hat), sub(eps_hat), redrawn[:, 1:].flatten(0, 1)
        k_from = k0
        for j in range(1, steps + 2):
            if j > 1:
                x0, eps = schedule.to_x0_eps(xs, k_from, model_fn(xs, k_from, N - 1).float(), clip_x0)
            k_to = torch.where(fut, k0 * (steps + 1 - j) // (steps + 1), k0)  # the present stays where it is
            xs = schedule.step(xs, k_from, k_to, x0, eps)
            k_from = k_to
        out = x0_hat.detach().clone().view(B, N, *x0_hat.shape[1:])
        f = fut.reshape(*fut.shape, *((1,) * (xs.ndim - fut.ndim)))
        out[:, 1:] = torch.where(f, xs, out[:, 1:].flatten(0, 1)).view(B, N - 1, *xs.shape[1:])
    return out.flatten(0, 1)


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
