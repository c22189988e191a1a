"""The fast sampler does the same work once: same tokens as full recomputation, bounded memory, streaming.

Models get small random weights everywhere (the zero-initialized adaLN gates / output layers would make a
freshly built transformer ignore its context, and such a test could not fail).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model
from dforce.sampler import SamplerConfig, StatelessDenoiser, row_plan, sample

K = 50  # noise levels: small so the tests are quick; nothing depends on its value



def _model(backbone: str, max_context=None, cond_dim: int = 0, width: int = 32):
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone=backbone, width=width, depth=2, heads=2, max_context=max_context), (3,),
                    K, cond_dim=cond_dim).eval()
    for p in m.parameters():
        p.data.normal_(0, 0.15)
    return m


def _schedule():
    return NoiseSchedule(NoiseScheduleConfig(num_levels=K, objective="v"))


def _draw(net, cfg, length=13, batch=3, ctx=None, cond=None, **kw):
    g = torch.Generator().manual_seed(7)
    if ctx is None:
        return sample(net, _schedule(), cfg, length=length, batch=batch, token_shape=(3,), cond=cond, generator=g, **kw)
    return sample(net, _schedule(), cfg, length=length, context=ctx, cond=cond, generator=g, **kw)


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
@pytest.mark.parametrize("schedule", ["pyramid", "autoregressive"])
@pytest.mark.parametrize("cond_dim", [0, 2])  # 0: the transformer computes adaLN once per level (shared levels)
def test_cached_equals_full_recompute(backbone, schedule, cond_dim):
    """Cached state + only-changing tokens == the reference cost model (re-read everything every row).

    The transformer runs with an unbounded cache: with ``max_context`` the cached keys of an old token were
    computed while it could still see tokens that have since left the window, whereas re-reading the kept
    window recomputes them without that past — the two differ by design (the cache keeps more information).
    Tolerance 1e-5: same noise stream, fp32, only the summation order of the batched matmuls differs.
    """
    model = _model(backbone, cond_dim=cond_dim)
    ctx = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(1))
    cond = torch.randn(3, 4 + 13, 2, generator=torch.Generator().manual_seed(2)) if cond_dim else None
    cfg = SamplerConfig(steps=3, schedule=schedule, window=5, stabilization_level=2)
    fast = _draw(model, cfg, ctx=ctx, cond=cond)
    ref_net = StatelessDenoiser(lambda x, k, c: model(x, k, c))
    slow = _draw(ref_net, SamplerConfig(steps=3, schedule=schedule, window=5, stabilization_level=2,
                                        skip_inactive=False), ctx=ctx, cond=cond)
    assert fast.x.shape == slow.x.shape == (3, 17, 3)
    torch.testing.assert_close(fast.x, slow.x, rtol=0, atol=1e-5)
    assert fast.model_calls == slow.model_calls
    # ours evaluates each token once per step; the reference the whole chunk every row (its re-read
    # context is not even counted in tokens_evaluated)
    assert fast.tokens_evaluated == 13 * 3
    assert slow.tokens_evaluated > fast.tokens_evaluated


def test_truncated_cache_differs_from_rereading_the_window():
    """The documented exception: a sliding KV cache is not the same model as re-encoding the window."""
    model = _model("transformer", max_context=4)
    cfg = SamplerConfig(steps=2, schedule="autoregressive", window=4, stabilization_level=0)
    fast = _draw(model, cfg, length=12)
    slow = _draw(StatelessDenoiser(lambda x, k, c: model(x, k, c), max_context=4), cfg, length=12)
    torch.testing.assert_close(fast.x[:, :5], slow.x[:, :5], rtol=0, atol=1e-5)  # until the window is full
    assert (fast.x - slow.x).abs().max() > 1e-4


def test_row_plan_evaluates_each_token_once_per_step():
    S, h = 4, 6
    for name, height in (("pyramid", S + h), ("autoregressive", S * h + 1)):
        from dforce.scheduling import make_schedule

        rows = row_plan(make_schedule(name, h, S))
        assert sum(r.b - r.a for r in rows) == S * h  # the floor: S evaluations per token
        assert rows[-1].commit_to == h and len(rows) == height - 1
        assert all(not r.any_clean for r in rows)  # clean tokens are committed at once, never re-shown


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_memory_does_not_grow_with_rollout_length(backbone):
    model = _model(backbone, max_context=8, width=16)
    cfg = SamplerConfig(steps=2, schedule="full_sequence", window=16)

    def state_numel(state):
        if isinstance(state, torch.Tensor):
            return state.numel()
        return sum(t.numel() for t in state.keys + state.values)

    short, long = _draw(model, cfg, length=100, batch=2), _draw(model, cfg, length=1000, batch=2)
    assert state_numel(short.state) == state_numel(long.state)
    if backbone == "transformer":
        assert long.state.length == 8 and long.state.offset == 1000  # capped cache, positions keep counting


def test_keep_last_and_on_chunk_stream_the_same_tokens():
    model = _model("rnn")
    cfg = SamplerConfig(steps=2, schedule="pyramid", window=4)
    full = _draw(model, cfg, length=14)
    chunks = []
    tail = _draw(model, cfg, length=14, keep_last=6, on_chunk=lambda t0, x: chunks.append((t0, x.clone())))
    assert tail.x.shape == (3, 6, 3)
    torch.testing.assert_close(tail.x, full.x[:, -6:], rtol=0, atol=0)
    assert [t0 for t0, _ in chunks] == [0, 4, 8, 12]
    torch.testing.assert_close(torch.cat([x for _, x in chunks], 1), full.x, rtol=0, atol=0)
    with pytest.raises(ConfigError):
        _draw(model, cfg, length=4, keep_last=-1)


def test_bf16_autocast_stays_close_to_fp32():
    """bf16 has an 8-bit mantissa (~0.4% relative); a 13-token rollout with S=3 stays within 0.1 here."""
    model = _model("transformer")
    fp32 = _draw(model, SamplerConfig(steps=3, schedule="pyramid", window=5))
    bf16 = _draw(model, SamplerConfig(steps=3, schedule="pyramid", window=5, precision="bf16"))
    assert bf16.x.dtype == torch.float32
    assert 0 < (fp32.x - bf16.x).abs().max() < 0.1
    with pytest.raises(ConfigError):
        SamplerConfig(precision="fp8")


def test_transformer_shared_levels_match_per_token_levels():
    """Levels broadcast over the batch (stride 0) take the once-per-level adaLN path: same predictions and
    the same cache as the per-token path (fp32; only the matmul row count differs, tolerance 1e-5)."""
    model = _model("transformer")
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(4, 5, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    k_shared = torch.randint(0, K + 1, (1, 5), generator=g).expand(4, -1)
    z_shared = torch.zeros(1, 6, dtype=torch.long).expand(4, -1)
    with torch.no_grad():
        st_shared, st_dense = model.absorb(ctx, z_shared), model.absorb(ctx, z_shared.contiguous())
        for a, b in zip(st_shared.keys + st_shared.values, st_dense.keys + st_dense.values):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        shared, dense = model(x, k_shared, None, st_shared), model(x, k_shared.contiguous(), None, st_dense)
    torch.testing.assert_close(shared, dense, rtol=0, atol=1e-5)
    assert shared.abs().max() > 1e-2  # the prediction is not trivially zero


class _SeparateCommits:
    """The transformer without ``forward_absorb``: the sampler commits with separate ``absorb`` calls."""

    def __init__(self, model):
        self.model = model
        self.init_state, self.repeat_state = model.init_state, model.repeat_state
        self.forward, self.absorb = model.forward, model.absorb

    def __call__(self, *a):
        return self.model(*a)


@pytest.mark.parametrize("schedule", ["pyramid", "autoregressive"])
def test_fused_commit_equals_separate_commits_with_sliding_cache(schedule):
    """Committing finished tokens inside the next call (``forward_absorb``) gives the same tokens and cache as
    separate ``absorb`` calls, also once the rollout (3 windows) pushes tokens out of ``max_context``
    (fp32; only the matmul row counts differ, tolerance 1e-5)."""
    model = _model("transformer", max_context=4)
    cfg = SamplerConfig(steps=3, schedule=schedule, window=4, stabilization_level=2)
    fused, separate = _draw(model, cfg, length=12), _draw(_SeparateCommits(model), cfg, length=12)
    torch.testing.assert_close(fused.x, separate.x, rtol=0, atol=1e-5)
    assert fused.model_calls == separate.model_calls
    assert fused.state.offset == separate.state.offset == 12 and fused.state.length == 4
    for a, b in zip(fused.state.keys + fused.state.values, separate.state.keys + separate.state.values):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_commit", [1, 3, 6])  # 6 > max_context: the commit alone overflows the cache
def test_forward_absorb_equals_absorb_then_forward(n_commit):
    model = _model("transformer", max_context=5)
    g = torch.Generator().manual_seed(4)
    ctx, x = torch.randn(2, 4, 3, generator=g), torch.randn(2, n_commit + 2, 3, generator=g)
    levels = torch.randint(0, K + 1, (2, n_commit + 2), generator=g)
    with torch.no_grad():
        state = model.absorb(ctx, torch.zeros(2, 4, dtype=torch.long))
        pred, fused = model.forward_absorb(x, levels, None, state, n_commit)
        separate = model.absorb(x[:, :n_commit], levels[:, :n_commit], None, state)
        ref = model(x[:, n_commit:], levels[:, n_commit:], None, separate)
    torch.testing.assert_close(pred, ref, rtol=0, atol=1e-5)
    assert fused.offset == separate.offset == 4 + n_commit and fused.length == separate.length == 5
    for a, b in zip(fused.keys + fused.values, separate.keys + separate.values):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_kv_store_states_do_not_see_each_others_writes():
    """In inference the cache is a view of preallocated buffers that later passes write into. Reusing an older
    state after a newer commit, or branching two states off one, must not change what any of them predicts:
    every prediction equals the one made with grad enabled (plain concatenation, no store), tolerance 1e-5.
    With ``max_context`` the store stays bounded over many commits (it is replaced when full, not grown)."""
    model = _model("transformer", max_context=5)
    g = torch.Generator().manual_seed(6)
    ctx, y = torch.randn(2, 4, 3, generator=g), torch.randn(2, 2, 3, generator=g)
    pieces = [torch.randn(2, n, 3, generator=g) for n in (1, 2, 3)]
    lv = torch.randint(0, K + 1, (2, 2), generator=g)
    zeros = lambda x: torch.zeros(x.shape[:2], dtype=torch.long)  # noqa: E731

    def run(grad: bool):
        with torch.set_grad_enabled(grad):
            s0 = model.absorb(ctx, zeros(ctx))
            s1 = model.absorb(pieces[0], zeros(pieces[0]), None, s0)
            first = model(y, lv, None, s1)
            s2 = model.absorb(pieces[1], zeros(pieces[1]), None, s0)  # a branch off the older state
            s3 = model.absorb(pieces[2], zeros(pieces[2]), None, s1)  # s1 again, after the branch wrote
            preds = [first, model(y, lv, None, s1), model(y, lv, None, s2), model(y, lv, None, s3),
                     model(y, lv, None, s0)]
        return [p.detach() for p in preds], (s0, s1, s2, s3)

    (stored, states), (plain, _) = run(False), run(True)
    assert all(s.store is not None for s in states)
    for a, b in zip(stored, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(stored[0], stored[1], rtol=0, atol=0)
    assert (stored[2] - stored[3]).abs().max() > 1e-3  # the branches differ: the check could fail
    state, capacities = states[3], set()
    with torch.no_grad():
        for _ in range(40):
            state = model.absorb(pieces[0], zeros(pieces[0]), None, state)
            capacities.add(state.store.capacity)
    assert state.length == 5 and max(capacities) <= 5 + 1 + 8


def test_level_table_matches_computed_modulation_and_follows_weight_changes():
    """In inference the state memoizes the per-level modulation; it equals computing it per call (as with
    grad enabled), and it is rebuilt when a weight changes in place (an optimizer step, a load)."""
    model = _model("transformer")
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(3, 4, 3, generator=g), torch.randn(3, 5, 3, generator=g)
    levels = torch.randint(0, K + 1, (1, 4), generator=g).expand(3, -1)

    def both():
        with torch.no_grad():
            state = model.absorb(ctx, torch.zeros(3, 5, dtype=torch.long))
            table = model(x, levels, None, state)
        assert state.table is not None
        with torch.enable_grad():
            computed = model(x, levels, None, model.absorb(ctx, torch.zeros(3, 5, dtype=torch.long)))
        torch.testing.assert_close(table, computed.detach(), rtol=0, atol=1e-5)
        return state, table

    state, before = both()
    with torch.no_grad():
        model.blocks[0].ada[-1].bias.add_(0.5)
        after = model(x, levels, None, state)  # same state object: its table must be rebuilt
    with torch.enable_grad():
        computed = model(x, levels, None, state).detach()  # same (stale) cache, modulation computed per call
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, computed, rtol=0, atol=1e-5)
    both()


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("method,eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)])
def test_affine_row_step_equals_general_step(objective, method, eta):
    """Without guidance or clipping the sampler applies each row's reverse step as precomputed affine
    coefficients; a clip bound no token reaches (1e6) forces the general ``to_x0_eps`` + ``step`` path on
    the same noise stream. Same tokens up to rounding: fp32, relative and absolute tolerance 1e-5 (a random
    model's x̂0 from ε reaches hundreds at high noise, so the rounding is relative)."""
    model = _model("rnn")
    sched = NoiseSchedule(NoiseScheduleConfig(num_levels=K, objective=objective))
    base = dict(steps=3, schedule="pyramid", window=5, stabilization_level=2, method=method, eta=eta)
    draws = [sample(model, sched, SamplerConfig(**base, clip_x0=clip), length=9, batch=3, token_shape=(3,),
                    generator=torch.Generator().manual_seed(7)).x for clip in (None, 1e6)]
    torch.testing.assert_close(draws[0], draws[1], rtol=1e-5, atol=1e-5)
    assert draws[0].abs().max() > 0.1


def test_unguided_rollout_in_inference_mode_hands_back_ordinary_tensors():
    """Unguided sampling runs under ``torch.inference_mode``; what it returns and what it leaves in the model must
    still work with autograd: in-place edits of the tokens, a guided continuation from the state, training."""
    from dforce.guidance import goal_guidance
    from dforce.objective import ObjectiveConfig, diffusion_forcing_loss

    net = _model("transformer", max_context=8).train(False)  # its RoPE table is first built while sampling
    out = _draw(net, SamplerConfig(steps=4, schedule="autoregressive", window=4), length=6)
    tensors = [out.x, *out.state.keys, *out.state.values, out.state.table.ada]
    assert not any(t.is_inference() for t in tensors) and not net._rot_table.is_inference()
    plain = _draw(net, SamplerConfig(steps=4, schedule="autoregressive", window=4, inference_mode=False), length=6)
    assert torch.equal(plain.x, out.x)  # the same tokens under no_grad
    out.x[:, 0] = 0.0  # an inference tensor would refuse this outside inference mode
    goal = torch.zeros(3, 3)
    guided = sample(net, _schedule(), SamplerConfig(steps=4, window=4, guidance_scale=0.1), length=4, batch=3,
                    token_shape=(3,), state=out.state, guidance=goal_guidance(goal, [0, 1, 2]),
                    generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(guided.x).all()
    loss = diffusion_forcing_loss(net.train(), _schedule(), torch.randn(2, 6, 3), ObjectiveConfig()).loss
    loss.backward()  # saves the RoPE rotations for backward: fails if they were inference tensors
    assert all(p.grad is not None for p in net.blocks[0].parameters())


@pytest.mark.parametrize("study, labels", [("kv_store", {"kv_store", "concatenate"}),
                                           ("transposed_weights", {"transposed_weights", "linear"}),
                                           ("lean_pass", {"lean_pass", "training_blocks"})])
def test_sampling_benchmark_ab_studies_give_the_same_tokens(study, labels):
    """``benchmarks/sampling.py --kv-store-ab`` / ``--transposed-weights-ab``: the paired timing runs the transformer
    with and without the switch on the same noise; the tokens agree (the KV buffers change where keys/values live,
    the transposed weights the memory layout of a product, not the values) and the switch is back on afterwards."""
    from benchutil import load_benchmark

    from dforce.models import transformer

    bench = load_benchmark("sampling")
    study_result = bench.paired_study(bench.BenchConfig(batch=4), study, length=20, repeats=1)
    assert transformer.KV_STORE and transformer.TRANSPOSED_WEIGHTS and transformer.LEAN_PASS
    for r in study_result["by_schedule"].values():
        assert r["max_abs_token_diff"] < 1e-5 and set(r["median_cpu_s"]) == labels


def _inference_passes(net, cond_dim: int):
    """Every kind of inference pass on a transformer, in order: a first pass without cache (causal), one new token,
    a commit riding along with predicted tokens, several new tokens after a cache, an absorb and a forward.
    Returns (predictions, final state)."""
    B = 3
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(B, T, 3, generator=gen) for T in (4, 1, 3, 2)]
    lvs = [torch.randint(0, K, (B, x.shape[1]), generator=gen) for x in xs]
    conds = [torch.randn(B, x.shape[1], 2, generator=gen) if cond_dim else None for x in xs]
    outs, state = [], None
    with torch.inference_mode():
        for x, lv, c, n in zip(xs, lvs, conds, (0, 0, 2, 1)):
            out, state = net.forward_absorb(x, lv, c, state, n_commit=n)
            outs.append(out)
        state = net.absorb(xs[0], lvs[0], conds[0], state)
        outs.append(net(xs[1], lvs[1], conds[1], state))
    return outs, state


def _assert_same_passes(a, b, atol=1e-5):
    (outs_a, state_a), (outs_b, state_b) = a, b
    for x, y in zip(outs_a, outs_b):
        assert x.shape == y.shape and torch.allclose(x, y, atol=atol)
    assert state_a.offset == state_b.offset and state_a.length == state_b.length
    for x, y in zip(state_a.keys + state_a.values, state_b.keys + state_b.values):
        assert torch.allclose(x, y, atol=atol)


def _counting(cls, name: str, calls: list):
    """Patch ``cls.name`` to count its calls (returns the original, to restore)."""
    original = getattr(cls, name)
    setattr(cls, name, lambda self, *a: calls.append(1) or original(self, *a))
    return original


@pytest.mark.parametrize("cond_dim", [0, 2])  # 0: modulation from the per-level table; 2: computed per call
@pytest.mark.parametrize("max_context", [None, 4])  # 4: a commit pushes cached tokens out (the commit mask)
def test_lean_blocks_match_the_training_blocks(cond_dim, max_context):
    """``LEAN_PASS``: inference passes that write into the KV buffers run ``Block.forward_stored``; every kind of
    pass gives what ``Block.forward`` gives and the caches they leave agree. Under bf16 autocast and with grad
    enabled the training blocks run (the lean blocks are fp32 inference only)."""
    from dforce.models import transformer

    net = _model("transformer", max_context=max_context, cond_dim=cond_dim)
    calls = []
    original = _counting(transformer.Block, "forward_stored", calls)
    try:
        lean = _inference_passes(net, cond_dim)
        assert len(calls) == 6 * net.depth  # every pass ran the lean blocks
        transformer.LEAN_PASS = False
        try:
            plain = _inference_passes(net, cond_dim)
        finally:
            transformer.LEAN_PASS = True
        assert len(calls) == 6 * net.depth  # and none with the switch off
        _assert_same_passes(lean, plain)
        x, lv = torch.randn(3, 2, 3), torch.randint(0, K, (3, 2))
        c = torch.randn(3, 2, 2) if cond_dim else None
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x[:, 1:], lv[:, 1:], None if c is None else c[:, 1:], net.absorb(x[:, :1], lv[:, :1], c if c is None else c[:, :1]))
        net(x[:, 1:], lv[:, 1:], None if c is None else c[:, 1:], net.absorb(x[:, :1], lv[:, :1], c if c is None else c[:, :1])).sum().backward()
        assert len(calls) == 6 * net.depth and net.blocks[0].qkv.weight.grad is not None
    finally:
        transformer.Block.forward_stored = original


# what building the kernel needs from the machine (ninja comes with the [kernel] extra): a C++ compiler, Python's headers
CAN_BUILD_KERNEL = ((shutil.which("c++") is not None or shutil.which("g++") is not None)
                    and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists())
needs_compiler = pytest.mark.skipif(not CAN_BUILD_KERNEL, reason="no C++ compiler / Python headers on this machine: "
                                    "the fused kernel cannot be built")


class _TanhEncoder(torch.nn.Module):  # not the flat encoder / decoder: the kernel runs them around itself
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = torch.nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.tanh(self.lin(x))


@needs_compiler
@pytest.mark.parametrize("cond_dim, max_context, custom", [(0, None, False), (0, 4, False), (2, None, False),
                                                          (2, 4, False), (0, 4, True)])
def test_fused_kernel_matches_the_python_blocks(cond_dim, max_context, custom):
    """``use_fused_kernel``: the C++ kernel (built here on first use) runs every inference pass that the lean blocks
    run, the flat token encoder (without cond) and decoder inside it, other ones around it, and gives the Python
    blocks' predictions and caches (within 1e-5); switched off, the Python blocks run again."""
    from dforce.models import transformer

    net = _model("transformer", max_context=max_context, cond_dim=cond_dim)
    if custom:
        net = transformer.CausalTransformer((3,), K, width=32, depth=2, heads=2, max_context=max_context,
                                            encoder=_TanhEncoder(3, 32), decoder=_TanhEncoder(32, 3)).eval()
        for p in net.parameters():
            p.data.normal_(0, 0.15)
    calls = []
    original = _counting(transformer.CausalTransformer, "_kernel_pass", calls)
    try:
        assert net.use_fused_kernel(True) is False
        fused = _inference_passes(net, cond_dim)
        copy.deepcopy(net)  # (EMA copies models) the setting is a flag, not the compiled module
        assert len(calls) == 6  # every pass ran in the kernel
        assert net.use_fused_kernel(False) is True
        python = _inference_passes(net, cond_dim)
        assert len(calls) == 6
    finally:
        transformer.CausalTransformer._kernel_pass = original
    _assert_same_passes(fused, python)
    with torch.inference_mode():  # a pass that commits every token it gets predicts nothing, in both
        x, lv = torch.randn(3, 2, 3), torch.randint(0, K, (3, 2))
        c = torch.randn(3, 2, 2) if cond_dim else None
        net.use_fused_kernel(True)
        empty, _ = net.forward_absorb(x, lv, c, None, n_commit=2)
        net.use_fused_kernel(False)
        assert empty.shape == (3, 0, 3) == net.forward_absorb(x, lv, c, None, n_commit=2)[0].shape


@needs_compiler
def test_sampler_fused_kernel_option(tmp_path):
    """``sampler.fused_kernel=true``: the same tokens as the Python blocks (autoregressive and pyramid, with a
    context), the model's own setting restored afterwards; a model without the kernel is a ConfigError; a kernel
    that cannot be built is a ConfigError naming what it needs; a stale build lock is cleared."""
    from dforce.models import fused

    net = _model("transformer", max_context=6)
    ctx = torch.randn(2, 3, 3)
    for schedule in ("autoregressive", "pyramid"):
        cfg = SamplerConfig(steps=4, schedule=schedule, window=4)
        plain = _draw(net, cfg, length=9, ctx=ctx).x
        kernel = _draw(net, dataclasses.replace(cfg, fused_kernel=True), length=9, ctx=ctx).x
        assert torch.allclose(plain, kernel, atol=1e-5) and net._fused is False
    with pytest.raises(ConfigError, match="transformer backbone"):
        _draw(_model("rnn"), SamplerConfig(steps=2, window=4, fused_kernel=True), length=4)

    def fail(**kw):
        raise RuntimeError("Error building extension 'dforce_fused_pass'\nc++: not found")

    lock = tmp_path / "lock"  # a killed build's lock is cleared, a fresh one (a build in progress) is kept
    lock.touch()
    assert not fused.clear_stale_lock(tmp_path) and lock.exists()
    os.utime(lock, (time.time() - fused.STALE_LOCK_S - 1,) * 2)
    assert fused.clear_stale_lock(tmp_path) and not lock.exists()

    module, fused._module = fused._module, None
    try:
        import torch.utils.cpp_extension as cpp

        real, cpp.load = cpp.load, fail
        try:
            with pytest.raises(ConfigError, match="C\\+\\+ compiler and ninja"):
                fused.load()
        finally:
            cpp.load = real
    finally:
        fused._module = module


def test_transposed_weights_follow_weight_updates():
    """The inference path multiplies by memoized transposed weights: after an optimizer step or a
    ``load_state_dict`` it must predict what ``F.linear`` on the current weights predicts, and with grad enabled
    it is not used (gradients reach the weights)."""
    from dforce.models import transformer

    torch.manual_seed(0)
    net = _model("transformer")
    x, lv = torch.randn(3, 5, 3), torch.randint(0, K, (3, 5))

    def both():
        with torch.no_grad():
            fast = net(x, lv)
            transformer.TRANSPOSED_WEIGHTS = False
            try:
                plain = net(x, lv)
            finally:
                transformer.TRANSPOSED_WEIGHTS = True
        return fast, plain

    fast, plain = both()
    assert net._weights_t_memo is not None and torch.allclose(fast, plain, atol=1e-5)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x, lv).pow(2).mean().backward()  # grad enabled: F.linear, gradients reach the block weights
    assert net.blocks[0].mlp[2].weight.grad is not None
    opt.step()
    fast2, plain2 = both()
    assert torch.allclose(fast2, plain2, atol=1e-5) and not torch.allclose(fast2, fast, atol=1e-3)
    other = _model("transformer")
    net.load_state_dict(other.state_dict())
    fast3, plain3 = both()
    assert torch.allclose(fast3, plain3, atol=1e-5) and not torch.allclose(fast3, fast2, atol=1e-3)


def test_sampling_overhead_benchmark_splits_a_call(tmp_path):
    """``benchmarks/studies/sampling_overhead.py``: CPU ms per call and the floor at each batch (the floor grows with the
    batch, the fixed cost does not vanish), operators per call, and the table; bad values exit with one line."""
    from benchutil import load_benchmark

    bench = load_benchmark("sampling_overhead")
    out = tmp_path / "so"
    kernel = CAN_BUILD_KERNEL  # the C++ kernel's rows too
    assert bench.main(["--batches", "1", "4", "--repeats", "1", "--length", "32", "--out", str(out)]
                      + ([] if kernel else ["--no-fused-kernel"])) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    one, four = r["rows"]["1"], r["rows"]["4"]
    if kernel:
        assert one["fused_cpu_ms_per_call"] > 0 and four["fused_time_over_floor"] > 0 and r["fused_kernel_load_s"] >= 0
    assert four["floor_ms_per_call"] == pytest.approx(4 * one["floor_ms_per_call"], rel=0.05)
    assert one["cpu_ms_per_call"] > one["floor_ms_per_call"] > 0 and one["calls"] == four["calls"] > 0
    assert r["ops_per_call_batch16"] > 20 and r["addcmul_us"] > 0 and "compiled_batch16" not in r
    assert "| 4 |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--batches", "0"])
