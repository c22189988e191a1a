"""Known tokens (any subset), bidirectional backbones, history guidance (DFoT) and conditioning dropout."""

import pytest
import torch

from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError, DataError
from dforce.guidance import MCGConfig
from dforce.history_guidance import HistoryGuidanceConfig as H
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig, condition_dropout, diffusion_forcing_loss
from dforce.sampler import SamplerConfig, sample

K = 20


def tiny(backbone="rnn", causal=True, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(backbone=backbone, width=16, depth=1, causal=causal), (2,), K).to(dtype).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for p in m.parameters():  # zero-initialized output layers would hide every dependence
        if p.abs().max() == 0:
            p.data.normal_(0, 0.5, generator=g)
    return m


SCH = NoiseSchedule(num_levels=K, objective="v")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- known tokens
@pytest.mark.parametrize("backbone,causal", [("rnn", True), ("transformer", True), ("transformer", False)])
def test_known_prefix_equals_context_and_known_tokens_are_returned_exactly(backbone, causal):
    model = tiny(backbone, causal)
    cfg = SamplerConfig(steps=4, window=4, stabilization_level=2)
    values = torch.randn(3, 10, 2, generator=gen(7))
    mask = torch.zeros(10, dtype=torch.bool)
    mask[:3] = True
    a = sample(model, SCH, cfg, context=values[:, :3], length=7, generator=gen())
    b = sample(model, SCH, cfg, known=(values, mask), length=10, generator=gen())
    assert torch.equal(a.x, b.x)  # bit for bit
    mask[[5, 8]] = True
    c = sample(model, SCH, cfg, known=(values, mask.expand(3, -1)), length=10, generator=gen())
    assert torch.equal(c.x[:, mask], values[:, mask])
    assert c.x.shape == (3, 10, 2) and torch.isfinite(c.x).all()


def test_known_tokens_at_a_noise_level_are_shown_at_that_level():
    """A noisy observation (level k > 0) is shown to the model at k in every call and returned as given."""
    seen = []

    def spy(x, levels, cond=None):
        seen.append(levels.clone())
        return 0.1 * x

    values = torch.randn(2, 6, 2, generator=gen(1))
    mask = torch.tensor([True, False, False, True, False, False])
    out = sample(spy, SCH, SamplerConfig(steps=3, window=6, stabilization_level=1), known=(values, mask, 7),
                 length=6, generator=gen())
    assert torch.equal(out.x[:, mask], values[:, mask])
    assert all((lv[:, 0] == 7).all() for lv in seen)  # token 0 is not context: a level-7 observation
    assert any(lv.shape[1] == 6 and (lv[:, 3] == 7).all() for lv in seen)


def test_causal_model_provably_ignores_future_keyframes_and_bidirectional_sees_them():
    values = torch.randn(2, 8, 2, generator=gen(3), dtype=torch.float64)
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[0, 7]] = True
    other = values.clone()
    other[:, 7] += 3.0  # another last keyframe
    cfg = SamplerConfig(steps=4, window=8, schedule="full_sequence")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for backbone, causal in (("rnn", True), ("transformer", True), ("transformer", False)):
            m = tiny(backbone, causal, dtype=torch.float64)
            a = sample(m, SCH, cfg, known=(values, mask), length=8, generator=gen())
            b = sample(m, SCH, cfg, known=(other, mask), length=8, generator=gen())
            diff = (a.x[:, 1:7] - b.x[:, 1:7]).abs().max()
            if causal:
                assert diff < 1e-12, (backbone, diff)  # frames before the keyframe never see it (float64 rounding)
            else:
                assert diff > 1e-3, diff  # the bidirectional model generates toward it
    finally:
        torch.set_default_dtype(old)


def test_bidirectional_models_refuse_a_cache():
    m = tiny("transformer", causal=False)
    x, lv = torch.randn(1, 3, 2), torch.randint(0, K, (1, 3))
    with pytest.raises(ValueError, match="no KV cache"):
        m.absorb(x, lv)
    from dforce.recipes.video.conv_rnn import ConvGRUDenoiser

    conv = ConvGRUDenoiser((3, 8, 8), K, 0, channels=4, max_channels=8, latent_side=4, latent_channels=4,
                           causal=False).eval()
    with pytest.raises(ValueError, match="no state"):
        conv.absorb(torch.randn(1, 2, 3, 8, 8), torch.zeros(1, 2, dtype=torch.long))
    with torch.no_grad():  # and it looks ahead: the first frame's prediction depends on the last one
        for p in conv.parameters():
            p.add_(0.1 * torch.randn_like(p))
        xs = torch.randn(1, 4, 3, 8, 8)
        y = conv(xs, torch.full((1, 4), 10))
        xs2 = xs.clone()
        xs2[:, 3] += 1
        assert (conv(xs2, torch.full((1, 4), 10))[:, 0] - y[:, 0]).abs().max() > 1e-5
    with pytest.raises(ConfigError, match="causal=false needs model.backbone=transformer"):
        build_model(ModelConfig(backbone="rnn", causal=False), (2,), K)


def test_bad_known_tokens_fail_with_one_line():
    v = torch.randn(2, 5, 2)
    with pytest.raises(DataError, match="known values must have shape"):
        sample(tiny(), SCH, SamplerConfig(steps=2), known=(v, torch.ones(5, dtype=torch.bool)), length=4)
    with pytest.raises(DataError, match="same for every batch row"):
        m = torch.zeros(2, 5, dtype=torch.bool)
        m[0, 1] = True
        sample(tiny(), SCH, SamplerConfig(steps=2), known=(v, m), length=5)
    with pytest.raises(ConfigError, match="known level"):
        sample(tiny(), SCH, SamplerConfig(steps=2), known=(v, torch.ones(5, dtype=torch.bool), K), length=5)
    bad = v.clone()
    bad[0, 2, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sample(tiny(), SCH, SamplerConfig(steps=2), known=(bad, torch.arange(5) == 2), length=5)


# ----------------------------------------------------------------------------------------- history guidance
ALL = ["vanilla", "fractional", "temporal", "stabilized_vanilla", "stabilized_fractional", "stabilized_temporal"]


@pytest.mark.parametrize("mode", ALL)
def test_each_mode_at_zero_scale_is_no_guidance_bit_for_bit(mode):
    """ω = 0 is no guidance: the stabilized modes equal the default sampler, the plain ones the sampler with the
    generated history shown clean (stabilization_level 0: DFoT's unstabilized sampling)."""
    model = tiny()
    ctx = torch.randn(2, 2, 2, generator=gen(2))
    stab = 3 if mode.startswith("stabilized") else 0
    plain = sample(model, SCH, SamplerConfig(steps=4, window=3, stabilization_level=stab), context=ctx, length=7,
                   generator=gen())
    off = sample(model, SCH, SamplerConfig(steps=4, window=3, stabilization_level=3, history_guidance=H(mode=mode)),
                 context=ctx, length=7, generator=gen())
    assert torch.equal(plain.x, off.x)
    on = sample(model, SCH, SamplerConfig(steps=4, window=3, stabilization_level=3,
                                          history_guidance=H(mode=mode, scale=1.0)), context=ctx, length=7,
                generator=gen())
    assert (on.x - plain.x).abs().max() > 1e-4


def test_temporal_guidance_equals_an_unbatched_reference():
    """HG-t with a recurrent model: the whole-history copy, a copy that sees only the last w tokens (from the
    initial state) and the empty copy, combined as ε(h) + ω Σ λ_i (ε(h_wi) − ε(∅)), against one model call per copy
    on the re-read sequence (one chunk after the context: the history is the context)."""
    model = tiny()
    ctx = torch.randn(2, 5, 2, generator=gen(2))
    ω, w = 2.0, 2
    cfg = SamplerConfig(steps=3, window=4, schedule="full_sequence", stabilization_level=0,
                        history_guidance=H(mode="temporal", scale=ω, windows=(0, w), weights=(1.0, 3.0)))
    out = sample(model, SCH, cfg, context=ctx, length=4, generator=gen())
    g = gen()
    x = torch.randn(2, 4, 2, generator=g)
    torch.randn(2, 4, 2, generator=g)
    ab = SCH.alphas_cumprod
    lam = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        for t, s in zip([20, 13, 7], [13, 7, 0]):  # full_sequence, 3 steps of K = 20
            def call(hx, hk):
                xs, ks = torch.cat([hx, x], 1), torch.cat([hk, torch.full((2, 4), t)], 1)
                return model(xs, ks)[:, -4:]
            full = call(ctx, torch.zeros(2, 5, dtype=torch.long))
            short = call(ctx[:, -w:], torch.zeros(2, w, dtype=torch.long))
            empty = call(ab[K].sqrt() * ctx, torch.full((2, 5), K))  # level K with the zero noise of context
            v = full + ω * (lam[0] * (full - empty) + lam[1] * (short - empty))
            x0 = ab[t].sqrt() * x - (1 - ab[t]).sqrt() * v
            eps = (1 - ab[t]).sqrt() * x + ab[t].sqrt() * v
            x = ab[s].sqrt() * x0 + (1 - ab[s]).sqrt() * eps
    torch.testing.assert_close(out.x[:, 5:], x, rtol=0, atol=1e-5)


def test_one_batched_forward_per_row_with_the_copies_stacked():
    """The row cost: history guidance makes as many model calls as no guidance, each on G·B rows (the copies
    stacked in the batch), plus one re-commit per chunk for the copies that drop the chunk from their history."""
    model = tiny()
    calls = {"forward": [], "absorb": []}

    class Counting(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, levels, cond=None, state=None):
            calls["forward"].append(x.shape[0])
            return self.m.forward(x, levels, cond, state)

        def absorb(self, x, levels, cond=None, state=None):
            calls["absorb"].append(x.shape[0])
            return self.m.absorb(x, levels, cond, state)

        def init_state(self, b, device=None):
            return self.m.init_state(b, device)

        repeat_state = staticmethod(lambda s, n: s.repeat_interleave(n, dim=1))

    ctx = torch.randn(3, 2, 2, generator=gen(2))
    for mode, G in (("none", 1), ("stabilized_vanilla", 2), ("stabilized_fractional", 2), ("stabilized_temporal", 3)):
        calls["forward"].clear()
        calls["absorb"].clear()
        hg = H(mode=mode, scale=1.0 if mode != "none" else 0.0)
        out = sample(Counting(model), SCH, SamplerConfig(steps=4, window=4, history_guidance=hg), context=ctx,
                     length=8, generator=gen())
        if mode == "none":
            base = len(calls["forward"])
        assert len(calls["forward"]) == base and set(calls["forward"]) == {3 * G}, (mode, calls["forward"])
        assert out.x.shape == (3, 10, 2)


def test_history_guidance_composes_with_goal_guidance_and_mcg_and_bf16():
    from dforce.guidance import goal_guidance

    model = tiny()
    ctx = torch.randn(2, 2, 2, generator=gen(2))
    goal = torch.full((2, 2), 2.0)
    kw = dict(context=ctx, length=6, guidance=goal_guidance(goal, [0, 1]))
    plain = sample(model, SCH, SamplerConfig(steps=6, window=6), context=ctx, length=6, generator=gen())
    for extra in ({}, {"mcg": MCGConfig(samples=3)}, {"precision": "bf16"}):
        cfg = SamplerConfig(steps=6, window=6, guidance_scale=0.3, history_guidance=H(mode="stabilized_vanilla",
                                                                                      scale=1.0), **extra)
        out = sample(model, SCH, cfg, generator=gen(), **kw)
        d = lambda o: (o.x[:, -1] - goal).norm(dim=-1).mean()  # noqa: E731
        assert torch.isfinite(out.x).all() and d(out) < d(plain), extra


def test_bad_history_guidance_settings_fail_with_one_line():
    for kw, match in (({"mode": "classifier"}, "history_guidance.mode"), ({"scale": -1.0}, "scale"),
                      ({"scale": float("nan")}, "scale"), ({"fractional_level": 1.0}, "fractional_level"),
                      ({"windows": (0, -2)}, "windows"), ({"windows": (4, 4), "weights": (1, 1)}, "differ"),
                      ({"windows": (0, 4), "weights": (1.0,)}, "weights")):
        with pytest.raises(ConfigError, match=match):
            H(**kw)
    from dforce.engine.config import load_config
    from dforce.recipes.sequence.config import RunConfig as SequenceRunConfig

    with pytest.raises(ConfigError, match="sampler.history_guidance.mode"):
        load_config(SequenceRunConfig, None, ["sampler.history_guidance.mode=vanila"])
    tf = tiny("transformer")
    with pytest.raises(ConfigError, match="temporal needs a recurrent"):
        sample(tf, SCH, SamplerConfig(steps=2, history_guidance=H(mode="temporal", scale=1.0)),
               context=torch.randn(1, 2, 2), length=2)
    with pytest.raises(ConfigError, match="not a model state"):
        sample(tiny(), SCH, SamplerConfig(steps=2, history_guidance=H(mode="vanilla", scale=1.0)),
               context=torch.randn(1, 2, 2), length=2, state=torch.zeros(1, 1, 16))


# ----------------------------------------------------------------------------------------- conditioning dropout
def test_condition_dropout_levels_and_loss_mask():
    cfg = ObjectiveConfig(clean_token_prob=0.3, masked_token_prob=0.2, masked_prefix_prob=0.5)
    lv = torch.randint(1, K, (4000, 12), generator=gen())
    new, mask = condition_dropout(lv, lv > 0, cfg, K, gen(1))
    clean, masked = new == 0, new == K
    assert not (mask & clean).any() and mask[masked].all()  # clean tokens carry no loss, masked ones do
    assert abs(clean.float().mean() - 0.3) < 0.02  # 48k draws: 3 sigma ≈ 0.007
    # the first token is masked when not clean (0.7) and in a masked prefix (0.5: every prefix holds it) or masked
    # on its own (0.2 of the 0.7 not clean): 0.7 · (1 − 0.5 · (1 − 0.2 / 0.7)) = 0.45; 4000 rows: 3 sigma ≈ 0.024
    assert abs(masked[:, 0].float().mean() - 0.7 * (1 - 0.5 * (1 - 0.2 / 0.7))) < 0.024
    same, _ = condition_dropout(lv, lv > 0, ObjectiveConfig(), K, gen(1))
    assert torch.equal(same, lv)  # off by default
    with pytest.raises(ConfigError, match="clean_token_prob"):
        ObjectiveConfig(clean_token_prob=1.5)
    model = tiny()
    out = diffusion_forcing_loss(model, SCH, torch.randn(8, 6, 2), cfg, generator=gen())
    assert torch.isfinite(out.loss) and ((out.levels == 0) <= (out.weights == 0)).all()


def test_convgru_forward_copies_equals_the_repeated_forward():
    """The video ConvGRU encodes a row's tokens once for all history-guidance copies: equal to forward() on the
    tokens repeated per copy."""
    from dforce.recipes.video.conv_rnn import ConvGRUDenoiser

    torch.manual_seed(0)
    m = ConvGRUDenoiser((3, 8, 8), K, 2, channels=4, max_channels=8, latent_side=4, latent_channels=4).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x, lv, c = torch.randn(2, 3, 3, 8, 8), torch.randint(0, K, (2, 3)), torch.randn(2, 3, 2)
        state = torch.randn(1, 6, 4, 4, 4)  # 3 copies × 2 rows, copy-major
        got = m.forward_copies(x, lv, c, state, 3)
        want = m(x.repeat(3, 1, 1, 1, 1), lv.repeat(3, 1), c.repeat(3, 1, 1), state)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_causal_video_run_starts_a_bidirectional_one(tmp_path):
    """train.init_from: a causal ConvGRU's weights load into the bidirectional model (its backward stack is new);
    zero-initialized, the backward read-out leaves the model's predictions equal to the causal model's."""
    from dforce.engine.checkpoint import load_init_weights
    from dforce.recipes.video.conv_rnn import ConvGRUDenoiser
    from safetensors.torch import save_file

    torch.manual_seed(0)
    kw = dict(channels=4, max_channels=8, latent_side=4, latent_channels=4)
    causal = ConvGRUDenoiser((3, 8, 8), K, 2, **kw).eval()
    with torch.no_grad():
        for p in causal.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_file(causal.state_dict(), str(tmp_path / "ema.safetensors"))
    bidir = ConvGRUDenoiser((3, 8, 8), K, 2, causal=False, **kw).eval()
    load_init_weights(bidir, tmp_path, bidir.init_allow_missing)
    x, lv, c = torch.randn(2, 3, 3, 8, 8), torch.randint(0, K, (2, 3)), torch.randn(2, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(bidir(x, lv, c), causal(x, lv, c))
    from dforce.errors import CheckpointError

    with pytest.raises(CheckpointError, match="architecture"):
        load_init_weights(bidir, tmp_path)  # without naming the new parameters: refused


def test_known_tokens_opening_a_later_chunk_with_the_fused_transformer_commit():
    """A chunk that opens with known tokens commits them before its first row; with the transformer (whose commits
    ride along with the next call) the previous chunk's last tokens are committed first: the same tokens as the
    plain loop of re-reading every token (StatelessDenoiser, no cache)."""
    from dforce.sampler import StatelessDenoiser

    m = tiny("transformer")
    values = torch.randn(2, 8, 2, generator=gen(4))
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[4, 5]] = True  # the second chunk (window 4) opens with two known tokens
    cfg = SamplerConfig(steps=3, window=4, stabilization_level=2)
    cached = sample(m, SCH, cfg, known=(values, mask), length=8, generator=gen())
    plain = sample(StatelessDenoiser(lambda x, k, c: m(x, k, c)), SCH, cfg, known=(values, mask), length=8,
                   generator=gen())
    torch.testing.assert_close(cached.x, plain.x, rtol=0, atol=1e-5)
