"""Diffusion Forcing sampling (Algorithm 2), driven by a scheduling matrix, with caching and rollouts.

A rollout generates ``length`` new tokens after an optional clean context, in chunks of ``window`` tokens.
Each chunk sweeps the rows of a scheduling matrix (:mod:`dforce.scheduling`): row m → m+1 moves every
token from its level ``𝒦[m, t]`` to ``𝒦[m+1, t]`` with one batched model call and one per-token reverse
step (:meth:`NoiseSchedule.step`). What makes it cheap:

    * committed tokens live in the model's *state* (RNN latent, transformer KV cache): ground-truth
      context at level 0, and each generated token as soon as it and every token before it are clean;
    * a row evaluates only the tokens from the first uncommitted one to the last one that changes
      (causality: later tokens cannot affect them) — one batched forward, no loop over tokens;
    * memory is bounded by the window (plus the transformer's ``max_context`` cache), not the length.

Stabilization (paper §3.4): generated context is shown to the model re-noised to a small level
``stabilization_level`` (with noise drawn once per token), so the model does not trust its own outputs
as ground truth; ground-truth context stays at level 0. Returned tokens are always the clean values.

Any callable ``f(x, levels, cond) -> prediction`` works: without ``absorb``/``init_state`` it is wrapped
in :class:`StatelessDenoiser`, which re-reads the kept context every call (the reference's cost model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule, sampling_levels
from dforce.errors import ConfigError, DataError
from dforce.guidance import GuidanceFn, guided_prediction
from dforce.scheduling import SCHEDULES, make_schedule, validate_schedule


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 50  # S sampling steps (DDIM subsequence of the K levels); reference planning: 50
    schedule: str = "pyramid"  # full_sequence | autoregressive | pyramid | trapezoid
    uncertainty_scale: float = 1.0  # pyramid/trapezoid slope u (levels of extra noise per token)
    window: int = 16  # tokens denoised together per chunk (keep ≤ the training length)
    method: str = "ddim"  # ddim | ddpm (exact Gaussian posterior; equals ddim with eta=1)
    eta: float = 0.0  # DDIM stochasticity in [0, 1]
    stabilization_level: int = 10  # raw level generated context is shown at (~1% of K=1000, paper §3.4)
    clip_x0: float | None = None  # clamp x̂0 to [-c, c] (None: off)
    guidance_scale: float = 0.0  # step size of ∇ log c added to moving tokens (reference planning: 8-12)
    mcg_samples: int = 1  # Monte Carlo Guidance futures N (1 = no MCG)
    skip_inactive: bool = True  # evaluate only tokens that change (False: whole chunk every row, reference)

    def __post_init__(self):
        check_choice("sampler.schedule", self.schedule, SCHEDULES)
        check_choice("sampler.method", self.method, ("ddim", "ddpm"))
        if self.steps < 1:
            raise ConfigError(f"sampler.steps must be >= 1, got {self.steps}")
        if self.window < 1:
            raise ConfigError(f"sampler.window must be >= 1, got {self.window}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"sampler.eta must be in [0, 1], got {self.eta}")
        if self.stabilization_level < 0:
            raise ConfigError(f"sampler.stabilization_level must be >= 0, got {self.stabilization_level}")
        if self.mcg_samples < 1:
            raise ConfigError(f"sampler.mcg_samples must be >= 1, got {self.mcg_samples}")
        if self.uncertainty_scale < 0:
            raise ConfigError(f"sampler.uncertainty_scale must be >= 0, got {self.uncertainty_scale}")


class SampleOutput(NamedTuple):
    x: torch.Tensor  # (B, C + L, *D): context followed by the generated tokens (clean values)
    context_len: int  # C
    state: object  # the model state after the last committed token (to continue the rollout)
    model_calls: int  # number of forward passes (one per evaluated row)
    tokens_evaluated: int  # Σ over calls of tokens passed to the model (per batch row)


class StatelessDenoiser:
    """Adapter giving a plain ``f(x, levels, cond)`` the state protocol by re-reading kept context.

    State: ``(x (B, L, *D), levels (B, L), cond (B, L, C) | None)`` of committed tokens, truncated to the
    last ``max_context`` tokens (None keeps all). Every ``forward`` recomputes the whole context — this is
    the cost model of the reference implementation and the uncached baseline of the benchmarks.
    """

    def __init__(self, fn, max_context: int | None = None):
        self.fn = fn
        self.max_context = max_context

    def init_state(self, batch: int, device=None):
        return None

    @staticmethod
    def repeat_state(state, n: int):
        if state is None:
            return None
        return tuple(None if s is None else s.repeat_interleave(n, dim=0) for s in state)

    def forward(self, x, levels, cond=None, state=None):
        if state is None:
            return self.fn(x, levels, cond)
        cx, ck, cc = state
        T = x.shape[1]
        full_cond = None if cond is None else torch.cat([cc.to(cond), cond], dim=1)
        return self.fn(torch.cat([cx.to(x), x], 1), torch.cat([ck, levels], 1), full_cond)[:, -T:]

    __call__ = forward

    def absorb(self, x, levels, cond=None, state=None):
        if state is not None:
            x = torch.cat([state[0], x], 1)
            levels = torch.cat([state[1], levels], 1)
            cond = None if cond is None else torch.cat([state[2], cond], 1)
        if self.max_context is not None:
            x, levels = x[:, -self.max_context :], levels[:, -self.max_context :]
            cond = None if cond is None else cond[:, -self.max_context :]
        return (x.detach(), levels, None if cond is None else cond.detach())


def as_stateful(model, max_context: int | None = None):
    """Return ``model`` if it implements the state protocol, else wrap it in :class:`StatelessDenoiser`."""
    if all(hasattr(model, a) for a in ("absorb", "init_state", "repeat_state")):
        return model
    return StatelessDenoiser(model, max_context)


def _check_inputs(context, cond, batch, length, token_shape):
    if context is not None:
        if tuple(context.shape[2:]) != tuple(token_shape) or context.shape[0] != batch:
            raise DataError(
                f"context must have shape (B={batch}, C, *{tuple(token_shape)}), got {tuple(context.shape)}"
            )
        if not torch.isfinite(context).all():
            raise DataError("context contains NaN or inf values")
    C = 0 if context is None else context.shape[1]
    if cond is not None:
        if cond.ndim != 3 or cond.shape[0] != batch or cond.shape[1] < C + length:
            raise DataError(
                f"cond must have shape (B={batch}, context+length={C + length}, C_dim), got {tuple(cond.shape)}"
            )
        if not torch.isfinite(cond).all():
            raise DataError("cond contains NaN or inf values")
    if length < 0:
        raise ConfigError(f"length must be >= 0, got {length}")
    return C


@torch.no_grad()
def sample(
    model,
    schedule: NoiseSchedule,
    cfg: SamplerConfig,
    *,
    length: int,
    batch: int | None = None,
    token_shape: tuple[int, ...] | None = None,
    context: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    guidance: GuidanceFn | None = None,
    matrix: torch.Tensor | None = None,
    state=None,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
) -> SampleOutput:
    """Generate ``length`` tokens after ``context`` (Algorithm 2 with sliding windows).

    Args:
        model: a backbone from :mod:`dforce.models` (stateful) or any ``f(x, levels, cond)`` callable.
        schedule: the trained :class:`NoiseSchedule` (its objective decides how predictions are read).
        cfg: sampling settings (steps, schedule, window, stabilization, guidance, ...).
        length: number of new tokens L.
        batch, token_shape: B and D (inferred from ``context`` when given).
        context: ``(B, C, *D)`` ground-truth tokens, committed at level 0 and returned unchanged.
        cond: ``(B, C + L, C_dim)`` per-token conditioning (e.g. actions) for context and new tokens.
        guidance: ``log_c(x0_hat (B, T_win, *D), t0) -> (B,)``; needs ``cfg.guidance_scale != 0``.
        matrix: custom scheduling matrix ``(M, window)`` in step units (validated); the last, shorter
            chunk uses its first columns.
        state: a model state to continue from (e.g. ``SampleOutput.state`` of an earlier call).
        generator: torch RNG for reproducible noise.
    Returns:
        :class:`SampleOutput` with ``x: (B, C + L, *D)``.
    """
    if context is not None:
        batch, token_shape = context.shape[0], tuple(context.shape[2:])
        device = context.device
    if batch is None or token_shape is None:
        raise ConfigError("sample() needs either context or both batch and token_shape")
    C = _check_inputs(context, cond, batch, length, token_shape)
    device = device or (cond.device if cond is not None else None) or next(iter(_params(model)), torch.zeros(0)).device
    net = as_stateful(model)
    K = schedule.num_levels
    S = cfg.steps
    step_levels = sampling_levels(S, K).to(device)  # (S+1,)
    k_stab = int(cfg.stabilization_level)
    if k_stab > K:
        raise ConfigError(f"sampler.stabilization_level must be <= num_levels={K}, got {k_stab}")
    if matrix is not None:
        matrix = validate_schedule(matrix, None, S, "custom scheduling matrix")
    use_guidance = guidance is not None and cfg.guidance_scale != 0.0
    randn = lambda shape: torch.randn(shape, device=device, generator=generator)  # noqa: E731

    if state is None:
        state = net.init_state(batch, device)
    if C > 0:
        zeros = torch.zeros(batch, C, dtype=torch.long, device=device)
        state = net.absorb(context.float(), zeros, None if cond is None else cond[:, :C], state)

    chunks, t = [], 0
    while t < length:
        h = min(cfg.window, length - t)
        mat = matrix[:, :h] if matrix is not None else make_schedule(cfg.schedule, h, S, cfg.uncertainty_scale)
        chunks.append((t, h, mat.to(device)))
        t += h
    bar = tqdm(total=sum(m.shape[0] - 1 for _, _, m in chunks), desc="sampling", disable=not progress, leave=False)

    out, calls, evaluated = [], 0, 0
    for t0, h, mat in chunks:
        lv = step_levels[mat]  # (M, h) raw levels
        x = randn((batch, h, *token_shape))
        x0_hat = torch.zeros_like(x)
        stab_noise = randn(x.shape)
        c_chunk = None if cond is None else cond[:, C + t0 : C + t0 + h]
        committed = 0
        for m in range(lv.shape[0] - 1):
            bar.update(1)
            k_from, k_to = lv[m], lv[m + 1]  # (h,)
            moving = k_from != k_to
            if not moving.any():
                continue
            a = committed
            b = h if (use_guidance or not cfg.skip_inactive) else int(moving.nonzero().max()) + 1
            xs, kf, kt = x[:, a:b], k_from[a:b].expand(batch, -1), k_to[a:b].expand(batch, -1)
            # clean-but-uncommitted generated tokens are shown at the stabilization level too
            done = (kf == 0).reshape(*kf.shape, *((1,) * (xs.ndim - 2)))
            k_in = torch.where(kf == 0, torch.full_like(kf, k_stab), kf)
            x_in = torch.where(done, schedule.add_noise(xs, k_in, stab_noise[:, a:b]), xs)
            cs = None if c_chunk is None else c_chunk[:, a:b]
            if use_guidance:
                fn = lambda xr, kr, n: net.forward(  # noqa: E731
                    xr, kr, None if cs is None else cs.repeat_interleave(n, 0), net.repeat_state(state, n)
                )
                pred, grad = guided_prediction(
                    fn, schedule, x_in, k_in, x0_hat[:, a:b], guidance, t0, cfg.mcg_samples, cfg.clip_x0, generator
                )
            else:
                pred = net.forward(x_in, k_in, cs, state).float()
            calls += 1
            evaluated += b - a
            x0s, eps = schedule.to_x0_eps(x_in, k_in, pred, cfg.clip_x0)
            x0_hat[:, a:b] = x0s
            noise = randn(xs.shape) if (cfg.eta > 0 or cfg.method == "ddpm") else torch.zeros_like(xs)
            x_new = schedule.step(xs, kf, kt, x0s, eps, cfg.eta, noise, cfg.method)
            if use_guidance:
                mv = (kf != kt).reshape(done.shape)
                x_new = torch.where(mv, x_new + cfg.guidance_scale * grad, x_new)
            x[:, a:b] = x_new
            # commit the clean prefix of the chunk into the model state
            n_done = 0
            while committed + n_done < h and int(k_to[committed + n_done]) == 0:
                n_done += 1
            if n_done:
                sl = slice(committed, committed + n_done)
                ks = torch.full((batch, n_done), k_stab, dtype=torch.long, device=device)
                x_commit = schedule.add_noise(x[:, sl], ks, stab_noise[:, sl])
                state = net.absorb(x_commit, ks, None if c_chunk is None else c_chunk[:, sl], state)
                committed += n_done
        out.append(x)
    bar.close()
    gen = torch.cat(out, 1) if out else torch.zeros(batch, 0, *token_shape, device=device)
    full = gen if context is None else torch.cat([context.to(gen), gen], 1)
    return SampleOutput(full, C, state, calls, evaluated)


def _params(model):
    return model.parameters() if hasattr(model, "parameters") else iter(())
