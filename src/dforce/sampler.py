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
in :class:`StatelessDenoiser`, which re-reads the kept context every call (the reference's cost model). So is a
model with ``causal = False`` (bidirectional: it cannot keep a state of committed tokens), whose rows then evaluate
the whole chunk.

Known tokens (``known=``, :mod:`dforce.known`): given tokens at any positions stay at their level in every row (a
clean known prefix is context) and are committed as ground truth. History guidance
(``cfg.history_guidance``, :mod:`dforce.history_guidance`): each row's model call carries G copies of the row whose
states see the history at different levels, combined into one prediction.
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
from dforce.history_guidance import HistoryCopies, HistoryGuidanceConfig
from dforce.known import check_known, chunk_levels
from dforce.scheduling import SCHEDULES, make_schedule, validate_schedule
from dforce.shortcut import step_conditioned


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
    # history guidance (DFoT): guide with copies of the row that see the history dropped / noised / windowed
    history_guidance: HistoryGuidanceConfig = field(default_factory=HistoryGuidanceConfig)
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
    known=None,
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
        guidance: ``log_c(x0_hat (B, T_win, *D), t0) -> (B,)``; needs ``cfg.guidance_scale != 0``. ``x0_hat`` is
            the current chunk from its first token (committed tokens at their values, the others' x̂0), ``t0``
            the index of that token among the generated ones.
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
        known: ``(values (B, L, *D), mask (L,) or (B, L) bool[, level])``: tokens among the L generated positions
            that are given (:mod:`dforce.known`): they stay at ``level`` (default 0: exact) for the whole sampling
            and are returned as given; the rest are generated. A clean known prefix is the same as ``context``.
            Keyframes after generated tokens need a model that looks ahead (``model.causal=false``); a causal model
            carries them forward only. ``batch``/``token_shape`` are inferred from the values.
    Returns:
        :class:`SampleOutput` with ``x: (B, C + L, *D)``.
    """
    args = dict(length=length, batch=batch, token_shape=token_shape, context=context, cond=cond, guidance=guidance,
                matrix=matrix, state=state, generator=generator, device=device, progress=progress, keep_last=keep_last,
                on_chunk=on_chunk, known=known)
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
    hgc_cfg = cfg.history_guidance
    if known is not None and context is None and batch is None:
        batch, token_shape = known[0].shape[0], tuple(known[0].shape[2:])
    if context is not None:
        batch, token_shape = context.shape[0], tuple(context.shape[2:])
        device = context.device
    if batch is None or token_shape is None:
        raise ConfigError("sample() needs either context, known tokens or both batch and token_shape")
    C = _check_inputs(context, cond, batch, length, token_shape)
    C_user, L_user = C, length
    device = device or (cond.device if cond is not None else None) or next(iter(_params(model)), torch.zeros(0)).device
    dtype = context.dtype if context is not None else torch.get_default_dtype()
    causal = getattr(model, "causal", True)
    # a model that looks ahead cannot keep a state of committed tokens: it re-reads them with the chunk every call
    net = as_stateful(model) if causal else StatelessDenoiser(model, getattr(model, "max_context", None))
    K = schedule.num_levels
    S = cfg.steps
    step_levels_cpu = sampling_levels(S, K)  # (S+1,)
    if int(cfg.stabilization_level) > K:
        raise ConfigError(f"sampler.stabilization_level must be <= num_levels={K}, got {cfg.stabilization_level}")
    k_stab = hgc_cfg.stabilization(int(cfg.stabilization_level))  # plain history guidance modes show history clean
    if matrix is not None:
        matrix = validate_schedule(matrix, None, S, "custom scheduling matrix")
    net = step_conditioned(net, S, K, matrix)  # a few-step student takes its step size from the matrix (shortcut)
    use_guidance = guidance is not None and cfg.guidance_scale != 0.0
    if keep_last is not None and keep_last < 0:
        raise ConfigError(f"keep_last must be >= 0 or None, got {keep_last}")
    randn = lambda shape: torch.randn(shape, device=device, generator=generator, dtype=dtype)  # noqa: E731

    kn, prefix = None, None
    if known is not None:
        kn = check_known(known, batch, length, token_shape, K, device)
        n = kn.prefix_len()
        if n:  # a clean known prefix is prefix context
            prefix = kn.values[:, :n].to(dtype)
            context = prefix if context is None else torch.cat([context.to(dtype), prefix], 1)
            kn, C, length = kn.tail(n), C + n, length - n
        if not bool(kn.mask.any()):
            kn = None
    hgc = HistoryCopies(hgc_cfg, net, schedule, batch, device) if hgc_cfg.active else None

    if hgc is not None:
        hgc.start(state)
        if C > 0:
            zeros = torch.zeros(C, dtype=torch.long, device=device)
            ctx = context.to(dtype)
            hgc.end_chunk(ctx, torch.zeros_like(ctx), zeros, None if cond is None else cond[:, :C], committed=False)
        state = None
    else:
        if state is None:
            state = net.init_state(batch, device)
        if C > 0:
            zeros = torch.zeros(1, C, dtype=torch.long, device=device).expand(batch, -1)
            state = net.absorb(context.to(dtype), zeros, None if cond is None else cond[:, :C], state)

    chunks, t = [], 0
    while t < length:
        h = min(cfg.window, length - t)
        chunks.append((t, h))
        t += h
    full = use_guidance or not cfg.skip_inactive or not causal
    affine = not use_guidance and cfg.clip_x0 is None  # the reverse step is affine in (x, pred, noise)
    plans = {}  # (chunk width, known pattern) -> _ChunkPlan
    for t0, h in chunks:
        km = None if kn is None else kn.mask[t0 : t0 + h].cpu()
        key = (h, None if km is None or not bool(km.any()) else tuple(km.tolist()))
        if key not in plans:
            km = None if key[1] is None else km
            mat = matrix[:, :h] if matrix is not None else make_schedule(cfg.schedule, h, S, cfg.uncertainty_scale)
            plans[key] = _chunk_plan(schedule, step_levels_cpu[mat.cpu()], km, 0 if kn is None else kn.level, k_stab,
                                     full, affine, len(token_shape), cfg, device)
    bar = tqdm(total=sum(_plan_for(plans, kn, t0, h).lv.shape[0] - 1 for t0, h in chunks), desc="sampling",
               disable=not progress, leave=False)
    autocast = (torch.autocast(torch.device(device or "cpu").type, torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())  # a disabled autocast still costs a few µs per row
    stochastic = cfg.eta > 0 or cfg.method == "ddpm"

    # commit finished tokens with the next row's call (one pass) where the model can; guidance re-runs the model
    # on repeated states and history guidance commits each copy at its own level, so they commit at once
    fuse = hasattr(net, "forward_absorb") and not use_guidance and hgc is None
    pending = None  # a _Commit waiting for the next model call
    out, kept, calls, evaluated = [], 0, 0, 0
    for t0, h in chunks:
        plan = _plan_for(plans, kn, t0, h)
        rows, lv, lv_in, coefs, fixed = plan.rows, plan.lv, plan.lv_in, plan.coefs, plan.fixed
        x = randn((batch, h, *token_shape))
        x0_hat = torch.zeros_like(x) if use_guidance else None  # previous row's x̂0 (MCG redraws futures)
        stab_noise = randn(x.shape)
        zero_noise = None if stochastic else torch.zeros_like(x)
        c_chunk = None if cond is None else cond[:, C + t0 : C + t0 + h]
        kv = fmask = None
        if fixed is not None:  # known tokens: set once, at their level, and never moved
            kv = kn.values[:, t0 : t0 + h].to(dtype)
            fmask = fixed.reshape(1, h, *((1,) * len(token_shape)))
            klv = torch.full((1, h), kn.level, dtype=torch.long, device=device).expand(batch, -1)
            x = torch.where(fmask, schedule.add_noise(kv, klv, stab_noise), x)

        def commit(lo: int, hi: int):
            """Commit chunk tokens [lo, hi) (clean generated ones at k_stab, known ones at their level)."""
            nonlocal state, pending
            sl = slice(lo, hi)
            clean = x[:, sl] if kv is None else torch.where(fmask[:, sl], kv[:, sl], x[:, sl])
            ks = plan.commit_levels[sl]  # (n,)
            cs = None if c_chunk is None else c_chunk[:, sl]
            if hgc is not None:
                hgc.commit(clean, stab_noise[:, sl], ks, cs, None if fixed is None else fixed[sl])
                return
            if pending is not None:  # the previous chunk's last tokens, not yet ridden along: commit them first
                with autocast:
                    state = net.absorb(pending.x, pending.levels.expand(batch, -1), pending.cond, state)
                pending = None
            # levels shared by the batch are passed expanded (stride 0): models may compute per-level work once
            ks = ks.unsqueeze(0).expand(batch, -1)
            x_commit = schedule.add_noise(clean, ks, stab_noise[:, sl])
            pending = _Commit(x_commit, ks[:1], cs)
            if not fuse:
                with autocast:
                    state = net.absorb(x_commit, ks, cs, state)
                pending = None

        if plan.pre > 0:  # known tokens opening the chunk: history before its first row
            commit(0, plan.pre)
        for i, r in enumerate(rows):
            a, b = r.a, r.b
            xs = x[:, a:b]
            kf = kt = k_in = None  # per-token levels (B, b-a): only the general step and re-noising read them
            if coefs is None or r.any_clean or hgc is not None:
                kf, kt = lv[r.m, a:b].expand(batch, -1), lv[r.m + 1, a:b].expand(batch, -1)
                k_in = lv_in[r.m, a:b].expand(batch, -1)
            if r.any_clean:  # clean-but-uncommitted generated tokens are shown at the stabilization level too
                done = (kf == 0).reshape(*kf.shape, *((1,) * (xs.ndim - 2)))
                if fixed is not None:
                    done = done & ~fmask[:, a:b]
                x_in = torch.where(done, schedule.add_noise(xs, k_in, stab_noise[:, a:b]), xs)
            else:
                x_in = xs
            cs = None if c_chunk is None else c_chunk[:, a:b]
            kargs = (None,) * 3 if fixed is None else (fixed[a:b], kv[:, a:b], stab_noise[:, a:b])
            if use_guidance:
                rep = lambda t, n: None if t is None else t.repeat_interleave(n, 0)  # noqa: E731
                if hgc is not None:
                    fn = lambda xr, kr, n: hgc.predict(  # noqa: E731
                        xr, kr, rep(cs, n), autocast, kargs[0], rep(kargs[1], n), rep(kargs[2], n), n)
                else:
                    fn = lambda xr, kr, n: _autocast_call(  # noqa: E731
                        autocast, net.forward, xr, kr, rep(cs, n), net.repeat_state(state, n))
                # guidance scores the chunk from its first token (t0): the committed ones are fixed values
                done_x = x[:, :a] if kv is None else torch.where(fmask[:, :a], kv[:, :a], x[:, :a])
                pred, grad = guided_prediction(
                    fn, schedule, x_in, k_in, x0_hat[:, a:b], guidance, t0, cfg.mcg, cfg.clip_x0, generator,
                    prefix=done_x,
                )
            elif hgc is not None:
                pred = hgc.predict(x_in, k_in, cs, autocast, *kargs)
            else:
                with autocast:
                    pred, state = _predict(net, x_in, lv_in[r.m : r.m + 1, a:b], cs, state, pending)
                pending = None
            pred = pred.to(x.dtype)
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
                commit(a, r.commit_to)
        bar.update(lv.shape[0] - 1)
        if kv is not None:  # the given tokens are returned as given
            x = torch.where(fmask, kv, x)
        if hgc is not None:  # the chunk becomes history: each copy's own view of it
            hgc.end_chunk(x, stab_noise, plan.commit_levels, c_chunk)
        if on_chunk is not None:
            on_chunk(t0 + C - C_user, x)
        out.append(x)
        kept += h
        while keep_last is not None and out and kept - out[0].shape[1] >= keep_last:
            kept -= out.pop(0).shape[1]  # drop whole chunks that fall out of the kept tail
    bar.close()
    if pending is not None:  # the last finished tokens: no next call to ride along with
        with autocast:
            state = net.absorb(pending.x, pending.levels.expand(batch, -1), pending.cond, state)
    if hgc is not None:
        state = hgc.cond_state()
    if prefix is not None and (keep_last is None or kept < keep_last):
        out.insert(0, prefix)
    gen = torch.cat(out, 1) if out else torch.zeros(batch, 0, *token_shape, device=device, dtype=dtype)
    if keep_last is not None:
        gen = gen[:, gen.shape[1] - min(keep_last, gen.shape[1]) :]
    full_x = gen if C_user == 0 else torch.cat([context[:, :C_user].to(gen), gen], 1)
    return SampleOutput(full_x, C_user, state, calls, evaluated)


class _ChunkPlan(NamedTuple):
    """Everything about one chunk shape that the row loop reads (computed once per shape, see :func:`row_plan`)."""

    rows: list  # RowPlan per row that moves a token
    lv: torch.Tensor  # (M, h) raw levels
    lv_in: torch.Tensor  # (M, h) model-input levels (clean generated tokens at k_stab)
    coefs: list | None  # per row the affine reverse step (A, P, N), or None for the general step
    fixed: torch.Tensor | None  # (h,) bool: known tokens (never move), or None
    commit_levels: torch.Tensor  # (h,) the level each token is committed at (k_stab, or a known token's level)
    pre: int  # known tokens opening the chunk, committed before its first row


def _chunk_plan(schedule, lv, fixed, known_level, k_stab, full, affine, token_ndim, cfg, device) -> _ChunkPlan:
    """The :class:`_ChunkPlan` of a chunk with raw levels ``lv: (M, h)`` (CPU) and known tokens ``fixed: (h,)``."""
    lv, lv_in = chunk_levels(lv, fixed, known_level, k_stab)
    rows = row_plan(lv, full, fixed)
    done0 = lv[0] == 0 if fixed is None else (lv[0] == 0) | fixed
    pre = int(done0.long().cumprod(0).sum())
    commit_levels = torch.full((lv.shape[1],), k_stab, dtype=torch.long)
    if fixed is not None:
        commit_levels[fixed] = known_level
    lv, lv_in = lv.to(device), lv_in.to(device)
    coefs = None
    if affine:
        coefs = row_coefficients(schedule, lv, lv_in, token_ndim, cfg.eta, cfg.method)
        coefs = [tuple(c[r.m, r.a : r.b] for c in coefs) for r in rows]  # per row: 3 × (b-a, *1)
    return _ChunkPlan(rows, lv, lv_in, coefs, None if fixed is None else fixed.to(device), commit_levels.to(device),
                      pre)


def _plan_for(plans: dict, kn, t0: int, h: int) -> _ChunkPlan:
    km = None if kn is None else kn.mask[t0 : t0 + h]
    return plans[(h, None if km is None or not bool(km.any()) else tuple(km.cpu().tolist()))]


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
    any_clean: bool  # some generated token in [a, b) is clean already (shown re-noised at the stabilization level)


def row_plan(lv: torch.Tensor, evaluate_all: bool = False, fixed: torch.Tensor | None = None) -> list[RowPlan]:
    """Per-row work of one chunk from its raw-level matrix ``lv: (M, h)`` (CPU), computed once per shape.

    Rows where no token moves are dropped. ``a`` is the length of the finished prefix at row m (clean tokens and
    the known ones, ``fixed: (h,)`` bool, at whatever level they are given; levels never increase, so it only
    grows and equals the number of committed tokens); ``b`` the last moving token + 1 (causality: tokens after it
    cannot change the ones that move), or ``h`` with ``evaluate_all``.
    """
    M, h = lv.shape
    moving = lv[:-1] != lv[1:]  # (M-1, h)
    finished = lv == 0 if fixed is None else (lv == 0) | fixed
    lead = finished.long().cumprod(1).sum(1).tolist()  # (M,) finished-prefix length per row
    last = torch.where(moving, torch.arange(h), torch.full_like(lv[:-1], -1)).max(1).values.tolist()
    gen_clean = lv[:-1] == 0 if fixed is None else (lv[:-1] == 0) & ~fixed
    clean = gen_clean.long().cumsum(1)  # (M-1, h) running count of clean generated tokens
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
