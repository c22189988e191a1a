"""History guidance (DFoT, Song et al. 2025): classifier-free guidance whose condition is the history.

A Diffusion Forcing model is trained with every token at its own level, so the *same* network predicts the
tokens being generated given the history clean (ε(h)), given no history (every history token at level K: ε(∅)),
given a partly noised history (level k_f: ε(h_kf)) or given only the last w history tokens (ε(h_w)). History
guidance runs several such *copies* of the prediction and extrapolates away from the less informed ones
(ω: ``history_guidance.scale``; DFoT's guidance scale w is 1 + ω):

    vanilla     (HG-v)  ε = ε(h) + ω (ε(h) − ε(∅))                                   2 copies
    fractional  (HG-f)  ε = ε(h) + ω (ε(h) − ε(h_kf))                                2 copies
    temporal    (HG-t)  ε = ε(h) + ω Σ_i λ_i (ε(h_wi) − ε(∅)),  Σ λ_i = 1            2 + (windows ≠ 0) copies
                        (window 0 is the whole history, i.e. the vanilla term)

The tokens being generated have the same values and levels in every copy, so the combination, whose weights
sum to 1, is the same whichever quantity the network predicts (ε, x0 or v are affine in one another at a fixed
x_k and level): it is applied to the raw prediction.

``stabilized_*`` variants show *generated* history at the sampler's ``stabilization_level`` in the conditional
copy (dforce's default Diffusion Forcing sampling, and DFoT's stabilized HG); the plain variants show it clean
(level 0), as DFoT's unstabilized HG: the sampler's stabilization is set aside for the whole rollout. Ground-truth
history (context, known tokens) is always shown at its own level in the conditional copy.

Cost: all copies run in **one batched forward** per row (copy-major: rows ``g·B + b``), against a model state
that holds every copy's view of the history (:class:`HistoryCopies`); a model with ``forward_copies(x, levels,
cond, state, G)`` (the video ConvGRU) computes what the copies share (the encoding of the row's tokens) once. Copies whose history levels do not depend
on a token's age (the conditional one, ∅, h_kf) absorb each committed token once, at their own level; a temporal
window copy is rebuilt from the last history tokens when new ones are committed (a recurrent model: from its
initial state over the last w tokens; a stateless one: over its kept context with older tokens at level K).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dforce._utils import check_choice
from dforce.errors import ConfigError

HG_MODES = ("none", "vanilla", "fractional", "temporal", "stabilized_vanilla", "stabilized_fractional",
            "stabilized_temporal")


@dataclass(frozen=True)
class HistoryGuidanceConfig:
    mode: str = "none"  # none | vanilla | fractional | temporal | stabilized_{vanilla,fractional,temporal}
    scale: float = 0.0  # ω ≥ 0 (0: no guidance); DFoT's scale w = 1 + ω (its HG-v used w = 1.5..2)
    fractional_level: float = 0.5  # HG-f: history level k_f of the "unconditional" copy, as a fraction of K
    windows: tuple[int, ...] = (0, 4)  # HG-t: history windows in tokens (0 = the whole history), one copy each
    weights: tuple[float, ...] = (0.5, 0.5)  # HG-t: λ_i of each window's term (normalized to sum 1)

    def __post_init__(self):
        check_choice("sampler.history_guidance.mode", self.mode, HG_MODES)
        if not (self.scale >= 0 and self.scale < float("inf")):
            raise ConfigError(f"sampler.history_guidance.scale must be a finite number >= 0, got {self.scale}")
        if not 0.0 < self.fractional_level < 1.0:
            raise ConfigError(f"sampler.history_guidance.fractional_level must be in (0, 1) (a fraction of K), "
                              f"got {self.fractional_level}")
        if not self.windows or any(int(w) != w or w < 0 for w in self.windows):
            raise ConfigError(f"sampler.history_guidance.windows must be whole numbers >= 0 (0 = whole history), "
                              f"got {list(self.windows)}")
        if len(set(self.windows)) != len(self.windows):
            raise ConfigError(f"sampler.history_guidance.windows must differ from each other, got {list(self.windows)}")
        if len(self.weights) != len(self.windows) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"sampler.history_guidance.weights must be {len(self.windows)} numbers >= 0 (one per "
                              f"window) with a positive sum, got {list(self.weights)}")

    @property
    def active(self) -> bool:
        return self.mode != "none" and self.scale > 0

    @property
    def base(self) -> str:
        """The mode without its ``stabilized_`` prefix."""
        return self.mode.removeprefix("stabilized_")

    def stabilization(self, level: int) -> int:
        """The level generated history is shown at in the conditional copy: ``level`` (the sampler's) for
        ``none`` and the stabilized modes, 0 for the plain ones (DFoT's unstabilized history guidance)."""
        return level if self.mode == "none" or self.mode.startswith("stabilized_") else 0

    def copies(self, num_levels: int) -> list[tuple[str, int]]:
        """The copies of one row: ``[(kind, param)]`` with kind ``cond`` (always first), ``empty``, ``level``
        (history at raw level ``param``) or ``window`` (the last ``param`` history tokens)."""
        out = [("cond", 0)]
        if self.base == "vanilla":
            out.append(("empty", num_levels))
        elif self.base == "fractional":
            out.append(("level", max(1, round(self.fractional_level * num_levels))))
        elif self.base == "temporal":
            out += [("window", int(w)) for w in self.windows if w > 0] + [("empty", num_levels)]
        return out

    def combination(self, num_levels: int) -> torch.Tensor:
        """Weights ``(G,)`` of the copies' predictions (they sum to 1): ε = Σ_g c_g ε_g."""
        ω, kinds = self.scale, self.copies(num_levels)
        c = torch.zeros(len(kinds), dtype=torch.float64)
        c[0] = 1.0
        if self.base in ("vanilla", "fractional"):
            c[0] += ω
            c[1] -= ω
        elif self.base == "temporal":
            lam = torch.tensor(self.weights, dtype=torch.float64) / sum(self.weights)
            slot = {("window", w): i for i, (k, w) in enumerate(kinds) if k == "window"}
            for w, l in zip(self.windows, lam.tolist()):
                c[0 if w == 0 else slot[("window", int(w))]] += ω * l
            c[-1] -= ω  # ε(∅), once per unit of λ
        return c


# ---------------------------------------------------------------------------------------------------
# batch operations on model states (the backbones' state types)
# ---------------------------------------------------------------------------------------------------


def state_cat(states: list):
    """Concatenate model states along the batch: RNN/ConvGRU latents ``(depth, B, ...)`` (dim 1), the
    transformer's ``KVCache`` (a dataclass with per-layer ``keys``/``values`` ``(B, H, L, hd)``; equal lengths),
    the stateless adapter's ``(x, levels, cond)`` (equal lengths) and tuples whose ``batch_dims`` attribute names
    each part's batch dimension (a ``prev_frame`` ConvGRU's latent and last token). Duck-typed: the core imports
    no model."""
    s0 = states[0]
    if s0 is None:
        return None
    if isinstance(s0, torch.Tensor):
        return torch.cat(states, 1)
    if _is_cache(s0):
        if len({s.length for s in states}) > 1 or len({s.offset for s in states}) > 1:
            raise ConfigError("history guidance: KV caches of different lengths cannot share one batch")
        cat = lambda name: [torch.cat([getattr(s, name)[i] for s in states], 0) for i in range(len(s0.keys))]  # noqa: E731
        return dataclasses.replace(s0, keys=cat("keys"), values=cat("values"), store=None, start=0)
    if isinstance(s0, tuple):  # batch_dims: where each part keeps the batch (a model's NamedTuple state); default 0
        dims = getattr(s0, "batch_dims", (0,) * len(s0))
        parts = (None if s0[i] is None else torch.cat([s[i] for s in states], d) for i, d in enumerate(dims))
        return type(s0)(*parts) if hasattr(s0, "_fields") else tuple(parts)
    raise ConfigError(f"history guidance does not know how to batch a model state of type {type(s0).__name__}")


def state_take(state, start: int, stop: int):
    """Batch rows ``[start, stop)`` of a model state (the types of :func:`state_cat`)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state[:, start:stop]
    if _is_cache(state):
        return dataclasses.replace(state, keys=[k[start:stop] for k in state.keys],
                                   values=[v[start:stop] for v in state.values], store=None, start=0)
    if isinstance(state, tuple):
        dims = getattr(state, "batch_dims", (0,) * len(state))
        parts = (None if s is None else s.narrow(d, start, stop - start) for s, d in zip(state, dims))
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    raise ConfigError(f"history guidance does not know how to slice a model state of type {type(state).__name__}")


def _is_cache(state) -> bool:
    return dataclasses.is_dataclass(state) and all(hasattr(state, a) for a in ("keys", "values", "offset", "store"))


def _repeat_rows(t: torch.Tensor | None, g: int) -> torch.Tensor | None:
    """``(B, ...)`` → ``(g·B, ...)`` copy-major."""
    return None if t is None else t.repeat(g, *((1,) * (t.ndim - 1)))


class HistoryCopies:
    """The G copies of a row under history guidance and the model state that holds their views of the history.

    *History* is what the chunk being generated is conditioned on: the context, the tokens of earlier chunks and
    known (given) tokens. Tokens the chunk itself finishes are committed into every copy as they are (the chunk is
    one joint generation, shown alike to all copies); when the chunk ends they become history, and every copy
    other than the conditional one is rebuilt once from its state at the chunk's start (:meth:`end_chunk`).

    Args:
        cfg: the (active) history guidance settings.
        net: the stateful model (``absorb``/``forward``/``init_state``).
        schedule: the noise schedule (history tokens are re-noised to each copy's level).
        batch: B.
    """

    def __init__(self, cfg: HistoryGuidanceConfig, net, schedule, batch: int, device=None):
        self.cfg, self.net, self.schedule, self.B = cfg, net, schedule, batch
        self.K = schedule.num_levels
        self.kinds = cfg.copies(self.K)
        self.G = len(self.kinds)
        self.lvl = [i for i, (k, _) in enumerate(self.kinds) if k in ("empty", "level")]  # rebuilt from the snapshot
        self.win = [i for i, (k, _) in enumerate(self.kinds) if k == "window"]  # rebuilt from the last tokens
        self.weights = cfg.combination(self.K)
        self.device = device
        self.state = self.snap = self.init = None  # (G·B) copy-major; snap: at the current chunk's start
        self.hist = None  # (clean (B, n, *D), noise, levels (n,) long, cond (B, n, C) | None): the last tokens
        self.keep = max([w for k, w in self.kinds if k == "window"], default=0)

    def start(self, state):
        """Begin from ``state`` (None: the model's initial state); a given state is the history of every copy."""
        if state is not None and self.G > 1:
            raise ConfigError("history guidance needs the history as context or known tokens (each copy sees it at "
                              "its own level), not a model state to continue from")
        self.init = self.net.init_state(self.B, self.device)
        self.state = self.snap = state_cat([self.init] * self.G)

    def _levels(self, kind: str, param: int, levels: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        """A copy's levels ``(n,)`` of history tokens whose conditional levels are ``levels: (n,)``."""
        if kind == "cond":
            return levels
        if kind == "empty":
            return torch.full_like(levels, self.K)
        if kind == "level":
            return levels.clamp(min=param)
        return torch.where(age < param, levels, torch.full_like(levels, self.K))  # window

    def _absorb(self, copies: list[int], clean, noise, lv: torch.Tensor, cond, state):
        """``absorb`` the tokens into the states of ``copies`` (``(len(copies)·B)`` rows of ``state``) at per-copy
        levels ``lv: (len(copies), n)``: one call."""
        g = len(copies)
        lv = lv.repeat_interleave(self.B, 0)  # (g·B, n)
        x = self.schedule.add_noise(_repeat_rows(clean, g), lv, _repeat_rows(noise, g))
        return self.net.absorb(x, lv, _repeat_rows(cond, g), state)

    def _rows(self, state, copies: list[int]):
        return state_cat([state_take(state, i * self.B, (i + 1) * self.B) for i in copies])

    def commit(self, clean: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None,
               known: torch.Tensor | None = None):
        """Commit tokens the chunk finished (``clean: (B, n, *D)``, shown at ``levels: (n,)`` with ``noise``) into
        every copy alike; known tokens among them (``known: (n,)`` bool) are history: each copy's own level."""
        lv = levels.expand(self.G, -1)
        if known is not None and bool(known.any()):
            lv = torch.stack([torch.where(known, self._levels(k, p, levels), levels) if k in ("empty", "level")
                              else levels for k, p in self.kinds])
        self.state = self._absorb(list(range(self.G)), clean, noise, lv, cond, self.state)

    def end_chunk(self, clean: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None,
                  committed: bool = True):
        """The chunk's tokens (or the context: ``committed=False``) become history: ``clean: (B, n, *D)`` at
        conditional levels ``levels: (n,)``. The conditional copy keeps its state (or absorbs them when not
        ``committed``); the others are rebuilt with the tokens at their own levels."""
        parts = {}
        if committed:
            parts[0] = state_take(self.state, 0, self.B)
        redo = ([] if committed else [0]) + self.lvl
        if redo:
            lv = torch.stack([self._levels(*self.kinds[i], levels) for i in redo])
            st = self._absorb(redo, clean, noise, lv, cond, self._rows(self.snap, redo))
            parts.update({i: state_take(st, j * self.B, (j + 1) * self.B) for j, i in enumerate(redo)})
        if self.win:
            new = (clean, noise, levels, cond)
            self.hist = new if self.hist is None else tuple(
                None if a is None else torch.cat([a, b], 1 if a.ndim > 1 else 0) for a, b in zip(self.hist, new))
            span = self._span(parts[0])
            if span is not None:
                self.hist = tuple(None if a is None else (a[:, -span:] if a.ndim > 1 else a[-span:]) for a in self.hist)
            hc, hn, hl, hcond = self.hist
            age = torch.arange(hc.shape[1] - 1, -1, -1, device=hl.device)
            lv = torch.stack([self._levels(*self.kinds[i], hl, age) for i in self.win])
            st = self._absorb(self.win, hc, hn, lv, hcond, state_cat([self.init] * len(self.win)))
            parts.update({i: state_take(st, j * self.B, (j + 1) * self.B) for j, i in enumerate(self.win)})
        self.state = self.snap = state_cat([parts[i] for i in range(self.G)])

    def _span(self, cond_state) -> int | None:
        """How many of the last history tokens a window copy re-reads: the longest window (a recurrent state then
        starts from the model's initial state), or the conditional copy's kept context (a stateless model)."""
        if isinstance(cond_state, torch.Tensor) or hasattr(cond_state, "batch_dims"):  # a recurrent state
            return self.keep
        if isinstance(cond_state, tuple):
            return None if cond_state[0] is None else cond_state[0].shape[1]
        raise ConfigError("history_guidance temporal needs a recurrent backbone or a stateless (non-causal) model: "
                          "the transformer's KV cache holds a single history window")

    def cond_state(self):
        """The conditional copy's state ``(B)`` (to continue a rollout without guidance)."""
        return state_take(self.state, 0, self.B)

    def inputs(self, x: torch.Tensor, levels: torch.Tensor, known: torch.Tensor | None, known_clean, known_noise):
        """The G copies of a row's model input, copy-major: ``x: (B, n, *D)``, ``levels: (B, n)`` →
        ``(G·B, n, *D)``, ``(G·B, n)``. Known tokens in the row (``known: (n,)`` bool, their clean values and noise
        ``(B, n, *D)``) are history: each copy shows them at its own level (a window copy: as they are)."""
        xs, ls = _repeat_rows(x, self.G), _repeat_rows(levels, self.G)
        if known is None or not bool(known.any()):
            return xs, ls
        ls = torch.cat([torch.where(known, self._levels(k, p, levels), levels) if k in ("empty", "level") else levels
                        for k, p in self.kinds], 0)
        kn = known.reshape(1, -1, *((1,) * (x.ndim - 2)))
        redo = self.schedule.add_noise(_repeat_rows(known_clean, self.G), ls, _repeat_rows(known_noise, self.G))
        return torch.where(kn, redo, xs), ls

    def combine(self, pred: torch.Tensor) -> torch.Tensor:
        """Σ_g c_g · pred_g for ``pred: (G·B·r, n, *D)`` copy-major (r: MCG replicas) → ``(B·r, n, *D)``."""
        p = pred.to(torch.promote_types(pred.dtype, torch.float32)).unflatten(0, (self.G, -1))
        w = self.weights.to(p).reshape(self.G, *((1,) * (p.ndim - 1)))
        return (p * w).sum(0)

    def predict(self, x, levels, cond, autocast, known=None, known_clean=None, known_noise=None, replicas: int = 1):
        """One batched forward of every copy and the guided prediction ``(B·r, n, *D)``.

        ``x: (B·r, n, *D)``, ``levels: (B·r, n)``, ``cond: (B·r, n, C)`` with ``replicas`` r consecutive rows per
        batch row (MCG), known-token arguments as :meth:`inputs`."""
        state = self.state if replicas == 1 else self.net.repeat_state(self.state, replicas)
        shared = known is None or not bool(known.any())  # every copy sees the same tokens
        with autocast:
            if shared and hasattr(self.net, "forward_copies"):  # the model shares the per-token work of the copies
                pred = self.net.forward_copies(x, levels, cond, state, self.G)
            else:
                xs, ls = self.inputs(x, levels, known, known_clean, known_noise)
                pred = self.net.forward(xs, ls, _repeat_rows(cond, self.G), state)
        return self.combine(pred)
