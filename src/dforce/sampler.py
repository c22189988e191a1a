"""Diffusion Forcing sampling (Algorithm 2), driven by a scheduling matrix, with caching and rollouts.

A rollout generates ``length`` new tokens after an optional clean context, in chunks of ``window`` tokens.
Each chunk sweeps the rows of a scheduling matrix (:mod:`dforce.scheduling`): row m → m+1 moves every
token from its level ``𝒦[m, t]`` to ``𝒦[m+1, t]`` with one batched model call and one per-token reverse
step (:meth:`NoiseSchedule.step`). What makes it cheap:

    * committed tokens live in the model's *state* (RNN latent, transformer KV cache): ground-truth
      context at level 0, and each generated token as soon as it and every token before it are clean;
    * a row evaluates only the tokens from the first uncommitted one to the last one that changes
      (causality: later tokens cannot affect them) — one batched forward, no loop over tokens;
    * memory is bounded by the window (plus the transformer's ``max_context`` cache), not the length;
      only the returned tokens grow with it (``keep_last`` / ``on_chunk`` stream them instead);
    * a finished token is committed in the same model call as the next row's prediction
      (``forward_absorb``, where the model has it): one pass over the weights instead of two;
    * the per-row bookkeeping (which tokens to evaluate, which to commit) is a :func:`row_plan` computed
      once per chunk shape on the CPU, so the row loop does no host-device syncs; without guidance or x̂0
      clipping the reverse step of every row is an affine map of (x, prediction, noise) whose per-token
      coefficients (:func:`row_coefficients`) are computed once per chunk shape too;
    * ``precision="bf16"`` runs the model calls under autocast (the diffusion update stays fp32);
    * without guidance the whole rollout runs under ``torch.inference_mode`` (no autograd bookkeeping on the many
      small views of a call); the returned tokens and state are copied out of it, so callers get ordinary tensors.

Stabilization (paper §3.4): generated context is shown to the model re-noised to a small level
``stabilization_level`` (with noise drawn once per token), so the model does not trust its own outputs
as ground truth; ground-truth context stays at level 0. Returned tokens are always the clean values.

Any callable ``f(x, levels, cond) -> prediction`` works: without ``absorb``/``init_state`` it is wrapped
in :class:`StatelessDenoiser`, which re-reads the kept context every call (the reference's cost model).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar, NamedTuple

import torch
from tqdm.auto import tqdm

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule, sampling_levels
from dforce.errors import ConfigError, DataError
from dforce.guidance import GuidanceFn, MCGConfig, guided_prediction
from dforce.scheduling import SCHEDULES, make_schedule, validate_schedule


PRECISIONS = ("fp32", "bf16")


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
    mcg: MCGConfig = field(default_factory=MCGConfig)  # Monte Carlo Guidance (guidance.MCGConfig; samples 1 = off)
    skip_inactive: bool = True  # evaluate only tokens that change (False: whole chunk every row, reference)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the model calls; the diffusion update stays fp32)
    inference_mode: bool = True  # unguided rollouts under torch.inference_mode (False: no_grad, as guided ones)
    # transformer only: fp32 CPU inference passes in dforce's C++ kernel (built once, ~1 min; dforce.models.fused)
    fused_kernel: bool = False
    # keys of dforce 0.1 configs: old name -> new dotted name under sampler (None: removed; accepted only at the old
    # default, which was a no-op). Saved runs keep loading (engine.config applies the renames).
    RENAMED_KEYS: ClassVar[dict[str, tuple[str | None, object]]] = {
        "mcg_samples": ("mcg.samples", None), "mcg_redraw_above": ("mcg.redraw_above", None),
        "mcg_future_grad": ("mcg.future_grad", None), "mcg_future_steps": (None, 0), "mcg_keep_first": (None, 0),
    }

    def __post_init__(self):
        check_choice("sampler.schedule", self.schedule, SCHEDULES)
        check_choice("sampler.method", self.method, ("ddim", "ddpm"))
        check_choice("sampler.precision", self.precision, PRECISIONS)
        if self.steps < 1:
            raise ConfigError(f"sampler.steps must be >= 1, got {self.steps}")
        if self.window < 1:
            raise ConfigError(f"sampler.window must be >= 1, got {self.window}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"sampler.eta must be in [0, 1], got {self.eta}")
        if self.stabilization_level < 0:
            raise ConfigError(f"sampler.stabilization_level must be >= 0, got {self.stabilization_level}")
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


def _outside_inference(obj):
    """``obj`` with every inference-mode tensor in it (nested in tuples, lists, dicts and dataclasses) cloned into an
    ordinary one, which later autograd and in-place writes accept."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.is_inference() else obj
    if isinstance(obj, (list, tuple)):
        items = [_outside_inference(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)  # NamedTuple or plain
    if isinstance(obj, dict):
        return {k: _outside_inference(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _outside_inference(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


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
    keep_last: int | None = None,
    on_chunk: Callable[[int, torch.Tensor], None] | None = None,
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
        keep_last: keep only the last N generated tokens (bounded output memory for endless rollouts);
            ``x`` is then ``(B, C + min(N, L), *D)``. None keeps all.
        on_chunk: ``on_chunk(t0, x_chunk (B, h, *D))`` called with each finished chunk of clean generated
            tokens (``t0``: index of its first token among the generated ones), e.g. to stream to disk. In an
            unguided rollout it runs inside ``torch.inference_mode``: ``.clone()`` a chunk you keep and will later
            write into or use with autograd.
    Returns:
        :class:`SampleOutput` with ``x: (B, C + L, *D)``.
    """
    args = dict(length=length, batch=batch, token_shape=token_shape, context=context, cond=cond, guidance=guidance,
                matrix=matrix, state=state, generator=generator, device=device, progress=progress, keep_last=keep_last,
                on_chunk=on_chunk)
    if cfg.fused_kernel:  # the model runs its passes in the C++ kernel for this rollout
        if not hasattr(model, "use_fused_kernel"):
            raise ConfigError(f"sampler.fused_kernel=true needs the transformer backbone (model.backbone=transformer); "
                              f"this model is a {type(model).__name__}")
        previous = model.use_fused_kernel(True)
        try:
            return sample(model, schedule, dataclasses.replace(cfg, fused_kernel=False), **args)
        finally:
            model.use_fused_kernel(previous)
    if cfg.inference_mode and (guidance is None or cfg.guidance_scale == 0.0) and not torch.is_inference_mode_enabled():
        # nothing needs gradients: run the rollout in inference mode, hand back ordinary tensors
        with torch.inference_mode():
            out = sample(model, schedule, cfg, **args)
        return out._replace(x=_outside_inference(out.x), state=_outside_inference(out.state))
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
    step_levels_cpu = sampling_levels(S, K)  # (S+1,)
    k_stab = int(cfg.stabilization_level)
    if k_stab > K:
        raise ConfigError(f"sampler.stabilization_level must be <= num_levels={K}, got {k_stab}")
    if matrix is not None:
        matrix = validate_schedule(matrix, None, S, "custom scheduling matrix")
    use_guidance = guidance is not None and cfg.guidance_scale != 0.0
    if keep_last is not None and keep_last < 0:
        raise ConfigError(f"keep_last must be >= 0 or None, got {keep_last}")
    randn = lambda shape: torch.randn(shape, device=device, generator=generator)  # noqa: E731

    if state is None:
        state = net.init_state(batch, device)
    if C > 0:
        zeros = torch.zeros(1, C, dtype=torch.long, device=device).expand(batch, -1)
        state = net.absorb(context.float(), zeros, None if cond is None else cond[:, :C], state)

    chunks, t = [], 0
    while t < length:
        h = min(cfg.window, length - t)
        chunks.append((t, h))
        t += h
    full = use_guidance or not cfg.skip_inactive
    affine = not use_guidance and cfg.clip_x0 is None  # the reverse step is affine in (x, pred, noise)
    plans = {}  # chunk width h -> (rows, raw levels (M, h), model-input levels (M, h), per-row affine step)
    for _, h in chunks:
        if h not in plans:
            mat = matrix[:, :h] if matrix is not None else make_schedule(cfg.schedule, h, S, cfg.uncertainty_scale)
            lv = step_levels_cpu[mat.cpu()]  # (M, h) raw levels
            lv_in = torch.where(lv == 0, torch.full_like(lv, k_stab), lv)  # clean tokens shown at k_stab
            rows, lv, lv_in = row_plan(lv, full), lv.to(device), lv_in.to(device)
            coefs = None
            if affine:
                coefs = row_coefficients(schedule, lv, lv_in, len(token_shape), cfg.eta, cfg.method)
                coefs = [tuple(c[r.m, r.a : r.b] for c in coefs) for r in rows]  # per row: 3 × (b-a, *1)
            plans[h] = (rows, lv, lv_in, coefs)
    bar = tqdm(total=sum(plans[h][1].shape[0] - 1 for _, h in chunks), desc="sampling", disable=not progress,
               leave=False)
    autocast = (torch.autocast(torch.device(device or "cpu").type, torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())  # a disabled autocast still costs a few µs per row
    stochastic = cfg.eta > 0 or cfg.method == "ddpm"

    # commit finished tokens with the next row's call (one pass) where the model can; guidance re-runs the model
    # on repeated states, so it commits at once
    fuse = hasattr(net, "forward_absorb") and not use_guidance
    pending = None  # a _Commit waiting for the next model call
    out, kept, calls, evaluated = [], 0, 0, 0
    for t0, h in chunks:
        rows, lv, lv_in, coefs = plans[h]
        x = randn((batch, h, *token_shape))
        x0_hat = torch.zeros_like(x) if use_guidance else None  # previous row's x̂0 (MCG redraws futures)
        stab_noise = randn(x.shape)
        zero_noise = None if stochastic else torch.zeros_like(x)
        c_chunk = None if cond is None else cond[:, C + t0 : C + t0 + h]
        for i, r in enumerate(rows):
            a, b = r.a, r.b
            xs = x[:, a:b]
            kf = kt = k_in = None  # per-token levels (B, b-a): only the general step and re-noising read them
            if coefs is None or r.any_clean:
                kf, kt = lv[r.m, a:b].expand(batch, -1), lv[r.m + 1, a:b].expand(batch, -1)
                k_in = lv_in[r.m, a:b].expand(batch, -1)
            if r.any_clean:  # clean-but-uncommitted generated tokens are shown at the stabilization level too
                done = (kf == 0).reshape(*kf.shape, *((1,) * (xs.ndim - 2)))
                x_in = torch.where(done, schedule.add_noise(xs, k_in, stab_noise[:, a:b]), xs)
            else:
                x_in = xs
            cs = None if c_chunk is None else c_chunk[:, a:b]
            if use_guidance:
                fn = lambda xr, kr, n: _autocast_call(  # noqa: E731
                    autocast, net.forward, xr, kr, None if cs is None else cs.repeat_interleave(n, 0),
                    net.repeat_state(state, n),
                )
                pred, grad = guided_prediction(
                    fn, schedule, x_in, k_in, x0_hat[:, a:b], guidance, t0, cfg.mcg, cfg.clip_x0, generator,
                )
            else:
                with autocast:
                    pred, state = _predict(net, x_in, lv_in[r.m : r.m + 1, a:b], cs, state, pending)
                pending = None
            pred = pred.float()
            calls += 1
            evaluated += b - a
            if coefs is not None:  # the same reverse step, as x·A + pred·P (+ noise·N) with precomputed A, P, N
                A, P, N = coefs[i]
                x_new = torch.addcmul(xs * A, pred, P)
                x[:, a:b] = torch.addcmul(x_new, randn(xs.shape), N) if stochastic else x_new
            else:
                _step_row(schedule, cfg, x, xs, x_in, pred, kf, kt, k_in, a, b, x0_hat, grad if use_guidance else None,
                          randn(xs.shape) if stochastic else zero_noise[:, a:b])
            if r.commit_to > a:  # commit the clean prefix of the chunk into the model state
                sl = slice(a, r.commit_to)
                # levels shared by the batch are passed expanded (stride 0): models may compute per-level work once
                ks = torch.full((1, r.commit_to - a), k_stab, dtype=torch.long, device=device).expand(batch, -1)
                x_commit = schedule.add_noise(x[:, sl], ks, stab_noise[:, sl])
                pending = _Commit(x_commit, ks[:1], None if c_chunk is None else c_chunk[:, sl])
                if not fuse:
                    with autocast:
                        state = net.absorb(x_commit, ks, pending.cond, state)
                    pending = None
        bar.update(lv.shape[0] - 1)
        if on_chunk is not None:
            on_chunk(t0, x)
        out.append(x)
        kept += h
        while keep_last is not None and out and kept - out[0].shape[1] >= keep_last:
            kept -= out.pop(0).shape[1]  # drop whole chunks that fall out of the kept tail
    bar.close()
    if pending is not None:  # the last finished tokens: no next call to ride along with
        with autocast:
            state = net.absorb(pending.x, pending.levels.expand(batch, -1), pending.cond, state)
    gen = torch.cat(out, 1) if out else torch.zeros(batch, 0, *token_shape, device=device)
    if keep_last is not None:
        gen = gen[:, gen.shape[1] - min(keep_last, gen.shape[1]) :]
    full_x = gen if context is None else torch.cat([context.to(gen), gen], 1)
    return SampleOutput(full_x, C, state, calls, evaluated)


def _step_row(schedule, cfg, x, xs, x_in, pred, kf, kt, k_in, a, b, x0_hat, grad, noise):
    """The general reverse step of one row (x̂0 clipping, guidance): writes ``x[:, a:b]`` in place."""
    x0s, eps = schedule.to_x0_eps(x_in, k_in, pred, cfg.clip_x0)
    if x0_hat is not None:
        x0_hat[:, a:b] = x0s
    x_new = schedule.step(xs, kf, kt, x0s, eps, cfg.eta, noise, cfg.method)
    if grad is not None:
        mv = (kf != kt).reshape(*kf.shape, *((1,) * (xs.ndim - 2)))
        x_new = torch.where(mv, x_new + cfg.guidance_scale * grad, x_new)
    x[:, a:b] = x_new


def row_coefficients(schedule: NoiseSchedule, lv: torch.Tensor, lv_in: torch.Tensor, token_ndim: int, eta: float,
                     method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every row's reverse step as an affine map ``x_{m+1} = A·x_m + P·pred + N·noise`` per token.

    Without x̂0 clipping, :meth:`NoiseSchedule.to_x0_eps` and :meth:`NoiseSchedule.step` are affine in
    (tokens, prediction, noise), so applying them to unit inputs gives the coefficients exactly (up to
    rounding); tokens that do not move get A = 1, P = N = 0. Moving tokens are never clean, so the model
    input equals the token there.

    Args:
        lv, lv_in: ``(M, h)`` raw and model-input levels of the chunk (:func:`row_plan`'s ``lv``).
        token_ndim: number of token dims D.
    Returns:
        ``(A, P, N)``, each ``(M - 1, h, *(1,) * token_ndim)``; row m moves tokens from ``lv[m]`` to ``lv[m+1]``.
    """
    kf, kt, k_in = lv[:-1], lv[1:], lv_in[:-1]
    one = torch.ones(*kf.shape, *((1,) * token_ndim), device=lv.device)
    zero = torch.zeros_like(one)

    def step(x, pred, noise):
        x0, eps = schedule.to_x0_eps(x, k_in, pred)
        return schedule.step(x, kf, kt, x0, eps, eta, noise, method)

    return step(one, zero, zero), step(zero, one, zero), step(zero, zero, one)


class _Commit(NamedTuple):
    """Clean tokens waiting to be committed into the model state with the next model call."""

    x: torch.Tensor  # (B, n, *D) tokens re-noised to the stabilization level
    levels: torch.Tensor  # (1, n) their levels (shared by the batch)
    cond: torch.Tensor | None  # (B, n, C_dim) their conditioning


def _predict(net, x: torch.Tensor, levels: torch.Tensor, cond, state, pending: _Commit | None):
    """One model call predicting ``x: (B, T, *D)`` at ``levels: (1, T)`` (shared by the batch, passed expanded:
    stride 0) after ``state``; a ``pending`` commit rides along in the same pass (``forward_absorb``).
    Returns (prediction ``(B, T, *D)``, the state with the pending tokens committed)."""
    B = x.shape[0]
    if pending is None:
        return net.forward(x, levels.expand(B, -1), cond, state), state
    n = pending.x.shape[1]
    both = torch.cat([pending.levels, levels], 1).expand(B, -1)  # (B, n + T), stride 0 over the batch
    c = None if cond is None else torch.cat([pending.cond, cond], 1)
    return net.forward_absorb(torch.cat([pending.x, x], 1), both, c, state, n)


class RowPlan(NamedTuple):
    """The work of one row of a chunk (all indices are token positions inside the chunk)."""

    m: int  # the row: tokens move from level lv[m] to lv[m + 1]
    a: int  # first evaluated token = first uncommitted one
    b: int  # one past the last evaluated token (last moving one + 1, or h when evaluating everything)
    commit_to: int  # after the row, tokens [a, commit_to) are clean with a clean prefix: commit them
    any_clean: bool  # some token in [a, b) is clean already (shown re-noised at the stabilization level)


def row_plan(lv: torch.Tensor, evaluate_all: bool = False) -> list[RowPlan]:
    """Per-row work of one chunk from its raw-level matrix ``lv: (M, h)`` (CPU), computed once per shape.

    Rows where no token moves are dropped. ``a`` is the length of the clean prefix at row m (levels never
    increase, so it only grows and equals the number of committed tokens); ``b`` the last moving token + 1
    (causality: tokens after it cannot change the ones that move), or ``h`` with ``evaluate_all``.
    """
    M, h = lv.shape
    moving = lv[:-1] != lv[1:]  # (M-1, h)
    lead = (lv == 0).long().cumprod(1).sum(1).tolist()  # (M,) clean-prefix length per row
    last = torch.where(moving, torch.arange(h), torch.full_like(lv[:-1], -1)).max(1).values.tolist()
    clean = (lv[:-1] == 0).long().cumsum(1)  # (M-1, h) running count of clean tokens
    rows = []
    for m in range(M - 1):
        if last[m] < 0:
            continue
        a, b = lead[m], (h if evaluate_all else last[m] + 1)
        n_clean = int(clean[m, b - 1]) - (int(clean[m, a - 1]) if a > 0 else 0)
        rows.append(RowPlan(m, a, b, lead[m + 1], n_clean > 0))
    return rows


def _autocast_call(autocast, fn, *args):
    with autocast:
        return fn(*args)


def _params(model):
    return model.parameters() if hasattr(model, "parameters") else iter(())
