"""Causal transformer backbone with per-token noise-level conditioning (adaLN-zero) and a KV cache.

Paper Appendix B.1 / the v1.5 reference: a causal (masked) transformer whose every token carries its own
noise level. Each block modulates LayerNorm outputs with a per-token (shift, scale, gate) computed from
the token's level embedding plus its conditioning (DiT's adaLN-zero, Peebles & Xie 2023). Positions use
rotary embeddings (RoPE, Su et al. 2021), which depend only on relative offsets, so a sliding KV cache
can drop old tokens without re-indexing.

``absorb`` appends tokens' keys/values to a :class:`KVCache`; ``forward`` predicts new tokens attending
to the cache and causally to each other without changing it. Already-clean tokens are never recomputed.
``forward_absorb`` does both in one pass (commit the first tokens, predict the rest): one read of the
weights instead of two, which is what a call costs at small batch. In inference the cache lives in
preallocated buffers (:class:`KVStore`): a pass writes its tokens' keys/values after the cache instead of
concatenating cache and tokens, and a commit moves a view; and the blocks multiply by memoized transposed copies of
their weights (:func:`linear`), which small products run faster on.

Without ``cond``, a block's adaLN modulation depends only on the token's level: in inference, the state
memoizes it for every level (:class:`LevelTable`, built once per rollout), so a call gathers rows of a
table instead of running the level embedding and ``depth + 1`` modulation layers.

Inference passes that write into the buffers run each block as :meth:`Block.forward_stored` (the same function in
fewer operators), or, with :meth:`CausalTransformer.use_fused_kernel` (``sampler.fused_kernel``), all blocks in one
call of dforce's C++ kernel (:mod:`dforce.models.fused`, fp32 CPU): at a rollout's batch sizes a Python pass costs
more in per-operator dispatch than in arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dforce.models import fused
from dforce.models.layers import FlatTokenDecoder, FlatTokenEncoder, LevelEmbedding

# the per-level modulation table is memoized only below this size (K=1000, width 128, depth 4: 13 MB)
LEVEL_TABLE_MAX_BYTES = 64 * 2**20
LN_EPS = 1e-6  # LayerNorm epsilon (DiT's adaLN-zero blocks)
ROPE_TABLE_MIN = 1024  # positions whose RoPE rotations are tabulated at first use (doubled when exceeded)
# inference passes write keys/values into preallocated buffers (KVStore); False: concatenate cache and tokens every
# pass, as before (`python benchmarks/sampling.py --kv-store-ab` times the two)
KV_STORE = True
KV_STORE_MIN_SLACK = 8  # free slots of a new KVStore past its cache, at least (else the cache's length: see KVStore)
# inference passes multiply by transposed, contiguous copies of the blocks' weights (addmm without a transposed operand:
# faster at a rollout's few rows); False: F.linear on the weights as stored
# (`python benchmarks/sampling.py --transposed-weights-ab` times the two)
TRANSPOSED_WEIGHTS = True
# inference passes that write into a KVStore run each block as :meth:`Block.forward_stored` (the same function in about
# half the operators: a rollout's small calls cost per operator); False: :meth:`Block.forward` as in training
# (`python benchmarks/sampling.py --lean-pass-ab` times the two)
LEAN_PASS = True


@dataclass
class LevelTable:
    """Level-only conditioning of a model without ``cond``, precomputed for every level ``0..K``.

    ``ada: (K+1, depth, 6W)`` each block's adaLN modulation; ``out: (K+1, 2W)`` the output layer's;
    ``version``: the weights' version counters when it was built (a changed weight rebuilds it).
    """

    ada: torch.Tensor
    out: torch.Tensor
    version: int


@dataclass
class KVStore:
    """Preallocated per-layer key/value buffers ``(B, heads, capacity, head_dim)`` that the caches of a rollout are
    views of (inference only: no autograd through the in-place writes).

    A pass writes its new tokens' keys/values into the slots after the cache and attends to one view of cache +
    tokens (no concatenation); a commit only moves the view. ``end``: one past the newest committed slot. Only a
    state whose cache ends there writes into the store (its slots after ``end`` hold nothing committed); any
    other state (an older one reused, a branch) copies its cache into a fresh store, so states never see each
    other's writes. A store has as many free slots as its cache is long (at least ``KV_STORE_MIN_SLACK``): a
    full store is replaced by a fresh one, one cache copy per that many committed tokens.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    end: int

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]


@dataclass
class KVCache:
    """Per-layer keys/values ``(B, heads, L, head_dim)`` of committed tokens; ``offset`` = tokens seen;
    ``table``: the memoized :class:`LevelTable` (inference only; shared by the states of one rollout);
    ``store``, ``start``: the :class:`KVStore` that ``keys``/``values`` are views of, from slot ``start``
    (inference), or None."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    offset: int = 0
    table: LevelTable | None = None
    store: KVStore | None = None
    start: int = 0

    @property
    def length(self) -> int:
        return 0 if not self.keys else self.keys[0].shape[2]


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 10000.0):
    """cos/sin tables ``(T, head_dim/2)`` for integer positions ``(T,)`` (``torch.complex(cos, sin)``: the
    rotation :func:`apply_rope` takes)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.float().unsqueeze(1) * inv  # (T, hd/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels ``(2i, 2i+1)`` of ``x: (..., T, hd)`` by ``rot = cos + i sin`` (complex64
    ``(T, hd/2)``, broadcast): one complex multiply (x₁ + i x₂)·rot on a view, in fp32 (also under
    bf16 autocast)."""
    fp32 = x.dtype == torch.float32  # (dtype checks skip no-op conversion calls: per-op overhead matters here)
    xc = torch.view_as_complex((x if fp32 else x.float()).unflatten(-1, (-1, 2)))
    out = torch.view_as_real(xc * rot).flatten(-2)
    return out if fp32 else out.to(x.dtype)


def linear(x: torch.Tensor, layer: nn.Linear, weight_t: torch.Tensor | None) -> torch.Tensor:
    """``layer(x)`` for ``x: (..., in)``; with ``weight_t`` (the layer's weight transposed, contiguous ``(in, out)``;
    inference only) one addmm over the rows of ``x`` instead of ``F.linear``'s product with a transposed view."""
    if weight_t is None:
        return F.linear(x, layer.weight, layer.bias)
    return torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), weight_t).view(*x.shape[:-1], weight_t.shape[1])


def modulate(x, shift, scale_plus_one):
    return torch.addcmul(shift, x, scale_plus_one)  # x * (1 + scale) + shift in one op


def scale_offset(width: int, chunks: int, scale_chunks: tuple[int, ...]) -> torch.Tensor:
    """``(chunks · width,)``: 1 on the ``scale_chunks`` of an adaLN output of ``chunks`` chunks, 0 elsewhere, so
    that ``ada(c) + offset`` carries ``1 + scale`` (what :func:`modulate` multiplies by) in one op."""
    offset = torch.zeros(chunks, width)
    offset[list(scale_chunks)] = 1.0
    return offset.flatten()


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[-1].weight)
        nn.init.zeros_(self.ada[-1].bias)
        # (shift, scale, gate) before attention and before the MLP: chunks 1 and 4 are scales
        self.register_buffer("scale_offset", scale_offset(width, 6, (1, 4)), persistent=False)
        self.dropout = dropout

    def forward(self, h, mod, rot, past_kv=None, mask=None, slot=None, weights_t=None):
        """``h: (B, T, W)``; ``mod: (B or 1, T, 6W)`` the adaLN modulation (:meth:`modulation`; 1: shared by
        the batch); ``rot: (T, hd/2)`` complex; ``past_kv``: cached ``(k, v)`` each ``(B, H, L, hd)``;
        ``mask: (T, L + T)`` bool (True = attend) or None for "every cached token + causal"; ``slot``: ``(keys,
        values, start, L)``, the layer's :class:`KVStore` buffers with the cache at ``[start, start + L)`` (the T
        tokens are written after it; ``past_kv`` is not read); ``weights_t``: the transposed weights of ``qkv``,
        ``proj`` and the MLP's two layers (:meth:`CausalTransformer._weights_t`; inference) or None. Returns (h,
        (k, v) of cache + the T tokens, each ``(B, H, L + T, hd)``), so that committing them needs no second
        concatenation.

        Written with ``F.*`` calls on the layers' weights (not the submodules' ``__call__``): at the batch
        sizes of a rollout a call costs about as much in per-op overhead as in arithmetic."""
        B, T, W = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # (B or 1, T, W) each; scales + 1
        x = modulate(F.layer_norm(h, (W,), eps=LN_EPS), shift1, scale1)
        wq, wp, w1, w2 = weights_t or (None,) * 4
        qkv = linear(x, self.qkv, wq).view(B, T, 3, self.heads, W // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k = apply_rope(qkv[:2], rot).unbind(0)  # q and k rotated together
        v = qkv[2]
        L = 0
        if slot is not None:
            bk, bv, start, L = slot
            bk[:, :, start + L : start + L + T] = k  # after the cache: no concatenation
            bv[:, :, start + L : start + L + T] = v
            k, v = bk[:, :, start : start + L + T], bv[:, :, start : start + L + T]
        elif past_kv is not None and past_kv[0].shape[2] > 0:
            L = past_kv[0].shape[2]
            pk, pv = past_kv if past_kv[0].dtype == k.dtype else (t.to(k.dtype) for t in past_kv)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        if L > 0:
            # new token i sees every cached token and new tokens j <= i (a single new token sees all: no mask)
            if mask is None and T > 1:
                mask = torch.ones(T, L + T, dtype=torch.bool, device=h.device).tril(diagonal=L)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        att = att.transpose(1, 2).reshape(B, T, W)
        drop = self.dropout if self.training else 0.0
        out = linear(att, self.proj, wp)
        h = torch.addcmul(h, gate1, F.dropout(out, drop) if drop else out)
        x = modulate(F.layer_norm(h, (W,), eps=LN_EPS), shift2, scale2)
        fc1, _, fc2 = self.mlp  # unpacking: cheaper than two Sequential lookups
        out = linear(F.gelu(linear(x, fc1, w1), approximate="tanh"), fc2, w2)
        h = torch.addcmul(h, gate2, F.dropout(out, drop) if drop else out)
        return h, (k, v)  # (B, H, L + T, hd) each

    def forward_stored(self, h, mods, rot, slot, mask, weights_t):
        """:meth:`forward` of an inference pass that writes into a :class:`KVStore` (no autograd, no dropout), in
        fewer operators: ``h: (B, T, W)``; ``mods``: the six ``(B or 1, T, W)`` modulation parts (shift, 1 + scale,
        gate before attention, then before the MLP); ``rot: (T, 1, 1, hd/2)`` complex; ``slot``, ``mask``,
        ``weights_t`` (not None) as in :meth:`forward`. Returns h ``(B, T, W)`` (the keys/values are in the store).

        What it leaves out: the ``(3, B, H, T, hd)`` permute of q/k/v (q and k are rotated in place of the qkv
        layout and written to the store as views), the per-call chunking of the modulation (the caller splits all
        blocks' at once) and the returned ``(k, v)`` views."""
        B, T, W = h.shape
        H, hd = self.heads, W // self.heads
        bk, bv, start, L = slot
        wq, wp, w1, w2 = weights_t
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        x = torch.addcmul(shift1, F.layer_norm(h, (W,), eps=LN_EPS), scale1)
        qkv = torch.addmm(self.qkv.bias, x.view(B * T, W), wq).view(B, T, 3, H, hd)
        # q and k rotated together: (B, T, 2, H, hd/2) complex times rot (T, 1, 1, hd/2)
        qk = torch.view_as_real(torch.view_as_complex(qkv[:, :, :2].unflatten(-1, (-1, 2))) * rot).flatten(-2)
        end = start + L + T
        bk[:, :, start + L : end] = qk[:, :, 1].transpose(1, 2)  # (B, H, T, hd), after the cache
        bv[:, :, start + L : end] = qkv[:, :, 2].transpose(1, 2)
        att = F.scaled_dot_product_attention(qk[:, :, 0].transpose(1, 2), bk[:, :, start:end], bv[:, :, start:end],
                                             attn_mask=mask, is_causal=mask is None and L == 0 and T > 1)
        att = att.transpose(1, 2).reshape(B * T, W)
        h = torch.addcmul(h, gate1, torch.addmm(self.proj.bias, att, wp).view(B, T, W))
        x = torch.addcmul(shift2, F.layer_norm(h, (W,), eps=LN_EPS), scale2).view(B * T, W)
        fc1, _, fc2 = self.mlp
        out = torch.addmm(fc2.bias, F.gelu(torch.addmm(fc1.bias, x, w1), approximate="tanh"), w2)
        return torch.addcmul(h, gate2, out.view(B, T, W))

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """adaLN modulation ``(..., 6W)`` (shift, 1 + scale, gate before attention, then before the MLP) of the
        conditioning ``c: (..., W)``."""
        return self.ada(c) + self.scale_offset


class CausalTransformer(nn.Module):
    """Causal transformer denoiser over ``x: (B, T, *D)``, ``levels: (B, T)``, ``cond: (B, T, C)``.

    Args:
        token_shape, num_levels, cond_dim, width, depth, encoder, decoder: as :class:`RecurrentDenoiser`.
        heads: attention heads (width must divide).
        mlp_ratio: hidden size of each block's MLP relative to ``width``.
        max_context: cached tokens kept by ``absorb`` (a sliding window; ``None`` keeps all). Bounded memory
            for rollouts of any length; set it to training length minus the sampling window.
        causal: False makes it bidirectional (DFoT's architecture): every token attends to every token of the
            call, still with its own level through adaLN. Such a model keeps no KV cache (committed tokens would
            depend on later ones): ``absorb`` and a non-empty ``state`` are refused, and the sampler re-reads the
            committed tokens with each chunk (``dforce.sampler.StatelessDenoiser``).
    """

    def __init__(
        self,
        token_shape: tuple[int, ...],
        num_levels: int,
        cond_dim: int = 0,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_context: int | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        causal: bool = True,
    ):
        super().__init__()
        self.causal = bool(causal)
        if width % heads or (width // heads) % 2:
            raise ValueError(f"model.width={width} must be divisible by model.heads={heads} into even head sizes")
        self.token_shape = tuple(token_shape)
        self.cond_dim = cond_dim
        self.width, self.depth, self.heads = width, depth, heads
        self.max_context = max_context
        self.encoder = encoder or FlatTokenEncoder(self.token_shape, width)
        self.level_emb = LevelEmbedding(width, num_levels)
        self.cond_proj = nn.Linear(cond_dim, width) if cond_dim > 0 else None
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=LN_EPS)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.ada_out[-1].weight)
        nn.init.zeros_(self.ada_out[-1].bias)
        self.register_buffer("out_scale_offset", scale_offset(width, 2, (1,)), persistent=False)  # (shift, scale)
        self.decoder = decoder or FlatTokenDecoder(self.token_shape, width)
        self._rot_table = None  # RoPE rotations of the first positions (see _rotation)
        self._weights_t_memo = None  # (key, per-block transposed weights): see _weights_t
        self._fused = False  # inference passes in the C++ kernel (use_fused_kernel; dforce.models.fused)

    # -- state ---------------------------------------------------------------------------------------

    def init_state(self, batch: int, device=None) -> KVCache:
        return KVCache([], [], 0)

    @staticmethod
    def repeat_state(state: KVCache | None, n: int) -> KVCache | None:
        if state is None:
            return None
        rep = lambda ts: [t.repeat_interleave(n, dim=0) for t in ts]  # noqa: E731
        return KVCache(rep(state.keys), rep(state.values), state.offset, state.table)

    # -- level-only conditioning ---------------------------------------------------------------------

    def _level_version(self) -> int:
        """Sum of the version counters of the weights a :class:`LevelTable` is made of (changes on any
        in-place update: optimizer step, ``load_state_dict``). The parameter list is gathered once."""
        params = self.__dict__.get("_level_param_list")
        if params is None:
            params = [*self.level_emb.parameters(), *(p for blk in self.blocks for p in blk.ada.parameters()),
                      *self.ada_out.parameters()]
            self.__dict__["_level_param_list"] = params
        return sum(p._version for p in params)

    def level_table(self) -> LevelTable:
        """Every block's adaLN modulation and the output layer's for all levels ``0..K`` (fp32, no autocast).
        Ordinary tensors even when built while sampling in inference mode: the sampler then hands the state back
        without copying this table (13 MB at K=1000, width 128, depth 4) on every call."""
        device = self.level_emb.freqs.device
        with torch.inference_mode(False), torch.no_grad(), torch.autocast(device.type, enabled=False):
            c = self.level_emb(torch.arange(self.level_emb.num_levels + 1, device=device))  # (K+1, W)
            ada = torch.stack([blk.modulation(c) for blk in self.blocks], dim=1)  # (K+1, depth, 6W)
            out = self.out_modulation(c)  # (K+1, 2W)
        return LevelTable(ada, out, self._level_version())

    def _table(self, state: KVCache | None) -> LevelTable | None:
        """The state's memoized :class:`LevelTable` (built on first use), or None where it does not apply:
        training (grad enabled), models with ``cond``, no state, or a table over ``LEVEL_TABLE_MAX_BYTES``."""
        if state is None or self.cond_proj is not None or torch.is_grad_enabled():
            return None
        size = (self.level_emb.num_levels + 1) * (6 * self.depth + 2) * self.width * 4
        if size > LEVEL_TABLE_MAX_BYTES:
            return None
        if state.table is None or state.table.version != self._level_version():
            state.table = self.level_table()
        return state.table

    def _conditioning(self, levels: torch.Tensor, cond, state, want_out: bool):
        """Per-token conditioning of ``levels: (B, T)``: (every block's modulation ``(B or 1, T, depth, 6W)``,
        output modulation ``(B or 1, T, 2W)`` or None without ``want_out``, cond embedding ``(B, T, W)`` to add to
        the tokens or None).

        Levels broadcast over the batch (stride 0, as the sampler passes them) and no cond: the modulation
        is the same for all rows, so it is computed (or looked up) once, with batch dim 1."""
        shared = levels.shape[0] > 1 and levels.stride(0) == 0 and self.cond_proj is None
        lv = levels[:1] if shared else levels
        table = self._table(state)
        if table is not None:
            return table.ada[lv], table.out[lv] if want_out else None, None
        c = self.level_emb(lv)  # (1 or B, T, W)
        cc = None
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError(f"this model was built with cond_dim={self.cond_dim}; pass cond of shape (B, T, C)")
            cc = self.cond_proj(cond.to(c.dtype))
            c = c + cc
        mods = torch.stack([blk.modulation(c) for blk in self.blocks], dim=2)
        return mods, self.out_modulation(c) if want_out else None, cc

    def out_modulation(self, c: torch.Tensor) -> torch.Tensor:
        """Output layer's adaLN modulation ``(..., 2W)``: (shift, 1 + scale) of ``c: (..., W)``."""
        return self.ada_out(c) + self.out_scale_offset

    # -- inference weights ---------------------------------------------------------------------------

    def _weights_t(self) -> list[tuple[torch.Tensor, ...]] | None:
        """Per block, the weights of ``qkv``, ``proj`` and the MLP's two layers transposed and contiguous, ``(in,
        out)`` each (:func:`linear`), or None with grad enabled (training, guidance: gradients reach the weights
        through ``F.linear``) or without ``TRANSPOSED_WEIGHTS``. Memoized (0.8 MB at width 128, depth 4) and rebuilt
        when a weight changes: its storage (``.to``, ``load_state_dict`` of other tensors) or its version counter
        (optimizer steps, in-place copies)."""
        if torch.is_grad_enabled() or not TRANSPOSED_WEIGHTS:
            return None
        weights = self.__dict__.get("_weights_t_params")  # gathered once (module attribute lookups cost)
        if weights is None:
            weights = [lin.weight for b in self.blocks for lin in (b.qkv, b.proj, b.mlp[0], b.mlp[2])]
            self.__dict__["_weights_t_params"] = weights
        key = tuple((w.data_ptr(), w._version) for w in weights)
        memo = self._weights_t_memo
        if memo is None or memo[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, also when built while sampling
                wt = [w.t().contiguous() for w in weights]
            memo = (key, [tuple(wt[4 * i : 4 * i + 4]) for i in range(self.depth)])
            self._weights_t_memo = memo
        return memo[1]

    def use_fused_kernel(self, on: bool = True) -> bool:
        """Run fp32 CPU inference passes (those :meth:`Block.forward_stored` runs) in dforce's C++ kernel
        (:mod:`dforce.models.fused`: built on first use, about a minute; ConfigError where it cannot be built); other
        passes (training, guidance, bf16, GPU) keep the Python blocks. Returns the previous setting."""
        previous = self._fused
        if on:
            fused.load()  # builds it here, not in the first pass
        self._fused = bool(on)
        return previous

    def _kernel_params(self):
        """What the C++ kernel reads besides the blocks' transposed weights, gathered once (module attribute lookups
        cost): (the blocks' biases, the flat token encoder's MLP weights or None for another encoder, the same of
        the decoder)."""
        params = self.__dict__.get("_kernel_params_memo")
        if params is None:
            mlp = lambda m: [m.net.net[0].weight, m.net.net[0].bias, m.net.net[3].weight, m.net.net[3].bias]  # noqa: E731
            params = ([lin.bias for b in self.blocks for lin in (b.qkv, b.proj, b.mlp[0], b.mlp[2])],
                      mlp(self.encoder) if type(self.encoder) is FlatTokenEncoder else None,
                      mlp(self.decoder) if type(self.decoder) is FlatTokenDecoder else None)
            self.__dict__["_kernel_params_memo"] = params
        return params

    def _kernel_pass(self, x, cc, mods, out_mod, rot, store, L, n_commit, weights_t, want_out):
        """:meth:`_run` in the C++ kernel: ``x: (B, T, *D)`` tokens, ``cc`` their cond embedding or None, ``mods: (B
        or 1, T, depth, 6W)``, ``out_mod: (B or 1, T, 2W)`` or None, ``rot: (T, hd/2)`` complex. The flat token
        encoder (without ``cc``) and decoder run inside the kernel, other ones around it. Returns what ``_run``
        returns (no per-block keys/values: they are in the store)."""
        B, T = x.shape[:2]
        biases, enc, dec = self._kernel_params()
        encode, decode = enc is not None and cc is None, dec is not None and want_out
        h = x.reshape(B, T, -1) if encode else self.encoder(x) if cc is None else self.encoder(x) + cc
        drop = 0 if self.max_context is None or n_commit in (0, T) else max(L + n_commit - self.max_context, 0)
        st, start = store
        out = fused.load().fused_pass(
            h.contiguous(), enc if encode else [], mods.contiguous(), torch.view_as_real(rot).contiguous(), st.keys,
            st.values, start, L, n_commit, drop, [w for wt in weights_t for w in wt], biases, self.heads, LN_EPS,
            dec if decode else [], out_mod if decode else x.new_empty(0))
        if decode:
            out = out.view(B, T - n_commit, *self.decoder.token_shape)
        elif want_out:  # hidden states: the model's own decoder
            out = self._output(out, out_mod, n_commit)
        return out if want_out else None, None, store

    # -- core ----------------------------------------------------------------------------------------

    def _rotation(self, offset: int, T: int, device) -> torch.Tensor:
        """RoPE rotations ``(T, hd/2)`` complex of positions ``offset .. offset + T - 1``, sliced from a
        table of the first positions (grown by doubling; elementwise, so the same values as computing them)."""
        table = self._rot_table
        if table is None or table.shape[0] < offset + T or table.device != torch.device(device):
            with torch.inference_mode(False):  # an ordinary tensor even when built while sampling (training reuses it)
                pos = torch.arange(max(2 * (offset + T), ROPE_TABLE_MIN), device=device)
                table = torch.complex(*rope_tables(pos, self.width // self.heads))
            self._rot_table = table
        return table[offset : offset + T]

    def _commit_mask(self, T: int, L: int, n_commit: int, device) -> torch.Tensor | None:
        """Attention mask ``(T, L + T)`` of a pass over T tokens after L cached ones whose first ``n_commit``
        are committed: causal after the cache, and the other tokens do not see the cached tokens that the
        commit pushes out of ``max_context`` (exactly as if they were committed first). None: no such tokens."""
        drop = 0 if self.max_context is None else L + n_commit - self.max_context
        if n_commit == 0 or n_commit == T or drop <= 0:
            return None
        mask = torch.ones(T, L + T, dtype=torch.bool, device=device).tril(diagonal=L)
        mask[n_commit:, :drop] = False
        return mask

    def _writable_store(self, state: KVCache | None, T: int, like: torch.Tensor) -> tuple[KVStore, int] | None:
        """``(store, start)``: a :class:`KVStore` with the state's cache at ``[start, start + L)`` and room for T
        more tokens after it, of ``like``'s dtype / device (the state's own store where it may write there, else
        a fresh one with the cache copied in), or None with grad enabled (training, guidance: concatenation) or
        without ``KV_STORE``."""
        if state is None or torch.is_grad_enabled() or not KV_STORE:
            return None
        L, st = state.length, state.store
        if (st is not None and st.end == state.start + L and state.start + L + T <= st.capacity
                and st.keys[0].dtype == like.dtype and st.keys[0].device == like.device):
            return st, state.start
        shape = (like.shape[0], self.heads, L + T + max(L, T, KV_STORE_MIN_SLACK), self.width // self.heads)
        new = KVStore([like.new_empty(shape) for _ in self.blocks], [like.new_empty(shape) for _ in self.blocks], L)
        for buf, cached in zip(new.keys + new.values, state.keys + state.values):
            buf[:, :, :L] = cached
        return new, 0

    def _run(self, x, levels, cond, state: KVCache | None, n_commit: int, want_out: bool):
        """One pass over ``x: (B, T, *D)`` after the cached tokens; its first ``n_commit`` tokens are the ones
        being committed. Returns (prediction of tokens ``[n_commit, T)``: ``(B, T - n_commit, *D)``, or None
        without ``want_out``; per block the ``(k, v)`` of the cache + the T tokens, ``(B, H, L + T, hd)`` (None after
        the lean blocks: they are in the store); the
        ``(store, start)`` they are views of, or None)."""
        B, T = x.shape[:2]
        if not self.causal:
            return self._run_bidirectional(x, levels, cond, state, n_commit, want_out)
        mods, out_mod, cc = self._conditioning(levels, cond, state, want_out)
        offset, L = (0, 0) if state is None else (state.offset, state.length)
        rot = self._rotation(offset, T, x.device)  # (T, hd/2)
        weights_t = self._weights_t() or [None] * self.depth
        if (self._fused and weights_t[0] is not None and x.device.type == "cpu"
                and x.dtype == mods.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
            store = self._writable_store(state, T, x)
            if store is not None:  # the C++ kernel: fp32 CPU inference
                return self._kernel_pass(x, cc, mods, out_mod, rot, store, L, n_commit, weights_t, want_out)
        h = self.encoder(x)
        if cc is not None:
            h = h + cc
        if mods.dtype != h.dtype:
            mods = mods.to(h.dtype)
        mask = self._commit_mask(T, L, n_commit, x.device)
        if mask is None and L > 0 and T > 1:  # every cached token + causal, built once for all blocks
            mask = torch.ones(T, L + T, dtype=torch.bool, device=x.device).tril(diagonal=L)
        store = self._writable_store(state, T, h)
        if (LEAN_PASS and store is not None and weights_t[0] is not None and h.dtype == torch.float32
                and not torch.is_autocast_enabled(h.device.type)):  # fp32 inference: the lean blocks
            parts = mods.unflatten(-1, (6, self.width)).flatten(2, 3).unbind(2)  # depth * 6 of (B or 1, T, W)
            rot = rot.view(T, 1, 1, -1)
            for i, blk in enumerate(self.blocks):
                slot = (store[0].keys[i], store[0].values[i], store[1], L)
                h = blk.forward_stored(h, parts[6 * i : 6 * i + 6], rot, slot, mask, weights_t[i])
            return self._output(h, out_mod, n_commit) if want_out else None, None, store
        mods = mods.unbind(2)
        all_kv = []  # per block: (k, v) of the cached + new tokens, (B, H, L + T, hd)
        for i, blk in enumerate(self.blocks):
            if store is not None:
                slot = (store[0].keys[i], store[0].values[i], store[1], L)
                h, kv = blk(h, mods[i], rot, None, mask, slot, weights_t[i])
            else:
                past = None if state is None or not state.keys else (state.keys[i], state.values[i])
                h, kv = blk(h, mods[i], rot, past, mask, None, weights_t[i])
            all_kv.append(kv)
        return self._output(h, out_mod, n_commit) if want_out else None, all_kv, store

    def _run_bidirectional(self, x, levels, cond, state, n_commit: int, want_out: bool):
        """:meth:`_run` of a bidirectional model (``causal=False``): one pass in which every token sees every
        other; no cache (a state with cached tokens, or committing tokens, is refused)."""
        if n_commit or (state is not None and state.length > 0):
            raise ValueError("a bidirectional transformer (model.causal=false) keeps no KV cache: pass every token "
                             "to forward() (the sampler does this for you)")
        T = x.shape[1]
        mods, out_mod, cc = self._conditioning(levels, cond, None, want_out)
        h = self.encoder(x)
        if cc is not None:
            h = h + cc
        mods = mods.to(h.dtype).unbind(2)
        rot = self._rotation(0, T, x.device)
        everything = torch.ones(T, T, dtype=torch.bool, device=x.device)  # no causal mask
        for i, blk in enumerate(self.blocks):
            h, _ = blk(h, mods[i], rot, None, everything, None, None)
        return self._output(h, out_mod, 0) if want_out else None, None, None

    def _output(self, h: torch.Tensor, out_mod: torch.Tensor, n_commit: int) -> torch.Tensor:
        """Prediction ``(B, T - n_commit, *D)`` of the last tokens of the final hidden states ``h: (B, T, W)``."""
        shift, scale = out_mod[:, n_commit:].to(h.dtype).chunk(2, dim=-1)
        return self.decoder(modulate(self.norm_out(h[:, n_commit:]), shift, scale))

    def _commit(self, state: KVCache, all_kv, n: int, store: tuple[KVStore, int] | None = None) -> KVCache:
        """The new cache: ``state`` plus the first ``n`` new tokens of ``all_kv``, the last ``max_context`` kept
        (with a ``(store, start)``: views of the store, which now ends after the n tokens)."""
        keep = state.length + n
        drop = 0 if self.max_context is None else max(keep - self.max_context, 0)
        if store is not None:
            st, start = store
            st.end = start + keep
            a, b = start + drop, start + keep
            return KVCache([k[:, :, a:b] for k in st.keys], [v[:, :, a:b] for v in st.values], state.offset + n,
                           state.table, st, a)
        keys, values = [], []
        for k, v in all_kv:
            k, v = k[:, :, drop:keep], v[:, :, drop:keep]
            # contiguous: the next calls concatenate these several times, and torch.cat copies a strided view
            # about twice as slowly (one copy here per commit instead)
            keys.append(k.detach().contiguous())
            values.append(v.detach().contiguous())
        return KVCache(keys, values, state.offset + n, state.table)

    def forward(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None):
        """Predict every token of ``x: (B, T, *D)`` at ``levels: (B, T)`` after the cached tokens in ``state``."""
        return self._run(x, levels, cond, state, 0, True)[0]

    def absorb(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None) -> KVCache:
        """Commit tokens: append their keys/values (computed at their levels) to the cache."""
        state = state if state is not None else self.init_state(x.shape[0])
        _, all_kv, store = self._run(x, levels, cond, state, x.shape[1], False)  # cache + new tokens at once
        return self._commit(state, all_kv, x.shape[1], store)

    def forward_absorb(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor | None = None, state=None,
                       n_commit: int = 0) -> tuple[torch.Tensor, KVCache]:
        """``absorb`` the first ``n_commit`` tokens of ``x: (B, T, *D)`` and predict the others, in one pass.

        Equals ``absorb(x[:, :n])`` followed by ``forward(x[:, n:])`` on the new state (the predicted tokens
        attend to the cache as the commit leaves it), with one read of the weights instead of two.
        Returns (prediction ``(B, T - n_commit, *D)``, the state with the committed tokens).
        """
        state = state if state is not None else self.init_state(x.shape[0])
        out, all_kv, store = self._run(x, levels, cond, state, n_commit, True)
        return out, self._commit(state, all_kv, n_commit, store)
