"""The whole sampler against a plain, independently written Algorithm-2 loop (and the pieces the loop pins).

The reference loop below re-reads the whole sequence at every row (no state, no cache, no skipped tokens), writes
the DDIM step and the v-parameterization out from the textbook formulas, and knows nothing of the sampler's row
plans, commits or affine coefficients. It shares only the RNG draw order: per chunk the initial noise, then the
stabilization noise (eta = 0 draws nothing per row). Models run in float64; the schedule's derived buffers
(√ᾱ, √(1-ᾱ)) are stored in float32 (rounded to ~6e-8 relative) while the loop takes square roots of ᾱ itself, so
the two agree to 1e-6 (the transformer's rotary tables are float32 as well: 1e-5).
"""

import math

import pytest
import torch

from dforce.diffusion import NoiseSchedule
from dforce.guidance import goal_guidance
from dforce.history_guidance import HistoryGuidanceConfig
from dforce.models import ModelConfig, build_model
from dforce.sampler import SamplerConfig, sample

K = 20


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_model(backbone: str, causal: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(backbone=backbone, width=16, depth=1, causal=causal), (2,), K).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    for p in m.parameters():  # the zero-initialized output layers: make every token depend on the others
        if p.abs().max() == 0:
            p.data.normal_(0, 0.5, generator=g)
    return m


def custom_matrix(h: int, S: int, seed: int) -> torch.Tensor:
    """A valid random matrix (rows from all S to all 0, never increasing) in which token 1 finishes before token 0
    (clean but not committed)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.full((h,), S)]
    while rows[-1].max() > 0:
        cur = rows[-1].clone()
        step = torch.randint(0, 3, (h,), generator=g)
        if len(rows) < 3 and h > 1:
            step[0], step[1] = 0, S  # token 1 is clean at once, token 0 still noisy
        rows.append((cur - step).clamp(min=0))
    return torch.stack(rows)


def raw_levels(S: int) -> list[int]:
    return [int(round(s * K / S)) for s in range(S + 1)]  # DDIM-style evenly spaced subsequence


def reference_sample(model, sch, S, mat_fn, window, k_stab, ctx, length, gen, known=None, hg=None):
    """Algorithm 2 written plainly: every row shows the model the whole history + chunk.

    ``known``: (values (B, L, D), mask (L,)) given tokens at level 0; ``hg``: (copies [(kind, param)], weights) of
    history guidance, each copy's prediction from its own model call (no batching)."""
    ab = sch.alphas_cumprod.double()
    raw = raw_levels(S)
    B, D = ctx.shape[0], ctx.shape[2]
    # history: clean values, noise, level shown in the conditional copy (ground truth 0, generated k_stab)
    h_clean, h_noise = [ctx[:, i] for i in range(ctx.shape[1])], [torch.zeros(B, D)] * ctx.shape[1]
    h_lvl = [0] * ctx.shape[1]
    out = []
    for t0 in range(0, length, window):
        h = min(window, length - t0)
        x = torch.randn((B, h, D), generator=gen)
        stab = torch.randn((B, h, D), generator=gen)
        fixed = [bool(known[1][t0 + j]) if known is not None else False for j in range(h)]
        for j in range(h):
            if fixed[j]:
                x[:, j] = known[0][:, t0 + j]
        mat = mat_fn(h)
        for m in range(mat.shape[0] - 1):
            kf = [0 if fixed[j] else raw[int(mat[m, j])] for j in range(h)]
            kt = [0 if fixed[j] else raw[int(mat[m + 1, j])] for j in range(h)]
            if kf == kt:
                continue
            show_k = [k_stab if (kf[j] == 0 and not fixed[j]) else kf[j] for j in range(h)]
            show_x = torch.stack([ab[k_stab].sqrt() * x[:, j] + (1 - ab[k_stab]).sqrt() * stab[:, j]
                                  if (kf[j] == 0 and not fixed[j]) else x[:, j] for j in range(h)], 1)

            def predict(levels_of_history):
                n = len(h_clean)
                hx = [ab[k].sqrt() * c + (1 - ab[k]).sqrt() * z for c, z, k in zip(h_clean, h_noise, levels_of_history)]
                xs = torch.cat([torch.stack(hx, 1), show_x], 1) if n else show_x
                ks = torch.tensor([levels_of_history + show_k] * B)
                return model(xs, ks)[:, -h:]

            if hg is None:
                v = predict(list(h_lvl))
            else:
                copies, weights = hg
                v = 0
                for (kind, p), w in zip(copies, weights):
                    n = len(h_clean)
                    lv = {"cond": list(h_lvl), "empty": [K] * n, "level": [max(p, k) for k in h_lvl]}.get(kind)
                    v = v + w * predict(lv)
            for j in range(h):
                if kf[j] == kt[j]:
                    continue
                a_t, a_s = ab[kf[j]], ab[kt[j]]
                x0 = a_t.sqrt() * show_x[:, j] - (1 - a_t).sqrt() * v[:, j]  # x0 from v (Salimans & Ho 2022)
                eps = (1 - a_t).sqrt() * show_x[:, j] + a_t.sqrt() * v[:, j]
                x[:, j] = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps  # DDIM, eta = 0
        for j in range(h):
            h_clean.append(x[:, j].clone())
            h_noise.append(torch.zeros(B, D) if fixed[j] else stab[:, j])
            h_lvl.append(0 if fixed[j] else k_stab)
        out.append(x)
    return torch.cat([ctx] + out, 1)


@pytest.mark.parametrize("backbone,causal", [("rnn", True), ("transformer", True), ("transformer", False)])
@pytest.mark.parametrize("k_stab", [0, 3])
@pytest.mark.parametrize("schedule", ["pyramid", "custom"])
def test_sampler_equals_plain_algorithm2_loop(float64, backbone, causal, k_stab, schedule):
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = tiny_model(backbone, causal)
    S, W, L = 5, 3, 7
    ctx = torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(3))
    big = custom_matrix(W, S, seed=4)
    mat_fn = (lambda h: big[:, :h]) if schedule == "custom" else None
    cfg = SamplerConfig(steps=S, schedule="pyramid", window=W, stabilization_level=k_stab)
    out = sample(model, sch, cfg, context=ctx, length=L, matrix=big if schedule == "custom" else None,
                 generator=torch.Generator().manual_seed(5))
    from dforce.scheduling import pyramid

    ref = reference_sample(lambda x, k: model(x, k), sch, S, mat_fn or (lambda h: pyramid(h, S)), W, k_stab, ctx, L,
                           torch.Generator().manual_seed(5))
    assert out.x.dtype == torch.float64
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-5 if backbone == "transformer" else 1e-6)


@pytest.mark.parametrize("backbone,causal", [("rnn", True), ("transformer", False)])
def test_known_tokens_equal_the_plain_loop(float64, backbone, causal):
    """Given tokens in the middle of the rollout (not a prefix): fixed at level 0, shown as given, committed as
    ground truth, returned exactly."""
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = tiny_model(backbone, causal)
    S, W, L = 4, 4, 8
    ctx = torch.randn(2, 1, 2, generator=torch.Generator().manual_seed(3))
    values = torch.randn(2, L, 2, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(L, dtype=torch.bool)
    mask[[2, 5]] = True
    cfg = SamplerConfig(steps=S, schedule="pyramid", window=W, stabilization_level=2)
    out = sample(model, sch, cfg, context=ctx, length=L, known=(values, mask), generator=torch.Generator().manual_seed(5))
    from dforce.scheduling import pyramid

    ref = reference_sample(lambda x, k: model(x, k), sch, S, lambda h: pyramid(h, S), W, 2, ctx, L,
                           torch.Generator().manual_seed(5), known=(values, mask))
    assert torch.equal(out.x[:, 1:][:, mask], values[:, mask])  # exactly the given tokens
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-5 if backbone == "transformer" else 1e-6)


@pytest.mark.parametrize("mode", ["vanilla", "stabilized_vanilla", "fractional", "stabilized_fractional"])
@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_history_guidance_equals_unbatched_reference(float64, mode, backbone):
    """ω > 0: the one batched forward per row (copies stacked, states holding each copy's history) equals calling
    the model once per copy on the whole re-read sequence and combining with the textbook weights (1e-5)."""
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = tiny_model(backbone)
    S, W, L, ω = 4, 3, 7, 1.5
    ctx = torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(3))
    hgc = HistoryGuidanceConfig(mode=mode, scale=ω, fractional_level=0.4)
    cfg = SamplerConfig(steps=S, window=W, stabilization_level=3, history_guidance=hgc)
    out = sample(model, sch, cfg, context=ctx, length=L, generator=torch.Generator().manual_seed(5))
    other = ("empty", K) if "vanilla" in mode else ("level", 8)  # 0.4 · K
    from dforce.scheduling import pyramid

    ref = reference_sample(lambda x, k: model(x, k), sch, S, lambda h: pyramid(h, S), W,
                           3 if mode.startswith("stabilized") else 0, ctx, L, torch.Generator().manual_seed(5),
                           hg=([("cond", 0), other], [1 + ω, -ω]))
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-5)
    plain = sample(model, sch, SamplerConfig(steps=S, window=W, stabilization_level=3), context=ctx, length=L,
                   generator=torch.Generator().manual_seed(5))
    assert (out.x - plain.x).abs().max() > 1e-3  # guidance changed the rollout


def test_ddim_step_at_eta_half_matches_the_textbook_formula(float64):
    """Per-token DDIM with 0 < eta < 1 (Song et al. 2021, eq. 12-16), every token at its own pair of levels."""
    sch = NoiseSchedule(num_levels=K, beta_schedule="cosine", objective="eps")
    g = torch.Generator().manual_seed(0)
    kf = torch.tensor([[20, 13, 7, 1, 5]])
    kt = torch.tensor([[15, 0, 6, 0, 5]])  # the last token does not move
    x, x0, eps, z = (torch.randn(1, 5, 3, generator=g) for _ in range(4))
    got = sch.step(x, kf, kt, x0, eps, eta=0.5, noise=z)
    ab = sch.alphas_cumprod.double().tolist()
    for j in range(5):
        t, s = int(kf[0, j]), int(kt[0, j])
        if t == s:
            assert torch.equal(got[0, j], x[0, j])
            continue
        sigma = 0.5 * math.sqrt((1 - ab[s]) / (1 - ab[t])) * math.sqrt(1 - ab[t] / ab[s])
        want = math.sqrt(ab[s]) * x0[0, j] + math.sqrt(1 - ab[s] - sigma**2) * eps[0, j] + sigma * z[0, j]
        torch.testing.assert_close(got[0, j], want, rtol=0, atol=1e-7)  # buffers are float32: 1e-7
        assert (sigma > 0) == (s > 0)  # the step to level 0 is deterministic


def test_stabilized_context_values_are_renoised_clean_tokens():
    """Generated tokens shown as context carry √ᾱ_k x + √(1-ᾱ_k) z with the chunk's stabilization noise z."""
    sch = NoiseSchedule(num_levels=K, objective="v")
    seen = []

    def spy(x, levels, cond=None):
        seen.append((x.clone(), levels.clone()))
        return 0.1 * x

    cfg = SamplerConfig(steps=3, schedule="pyramid", window=2, stabilization_level=4)
    out = sample(spy, sch, cfg, length=4, batch=2, token_shape=(3,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.randn((2, 2, 3), generator=g)
    stab0 = torch.randn((2, 2, 3), generator=g)  # the first chunk's stabilization noise
    x_last, k_last = seen[-1]
    assert (k_last[:, :2] == 4).all()
    want = sch.sqrt_alphas_cumprod[4] * out.x[:, :2] + sch.sqrt_one_minus_alphas_cumprod[4] * stab0
    torch.testing.assert_close(x_last[:, :2], want, rtol=0, atol=1e-6)
    assert (x_last[:, :2] - out.x[:, :2]).abs().max() > 1e-3  # shown noisier than the value returned


def test_guidance_sees_the_chunk_from_its_first_token():
    """After a pyramid commits tokens, guidance still gets the chunk from its start (committed tokens at their
    values) and t0 = the chunk's first token, so position-dependent costs score the right positions."""
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = tiny_model("rnn").float()
    seen = []
    goal = goal_guidance(torch.ones(2, 2), [0, 1], token=None)

    def log_c(x0, t0):
        seen.append((x0.detach().clone(), t0))
        return goal(x0, t0)

    cfg = SamplerConfig(steps=4, schedule="pyramid", window=4, guidance_scale=0.1)
    out = sample(model, sch, cfg, length=8, batch=2, token_shape=(2,), guidance=log_c,
                 generator=torch.Generator().manual_seed(0))
    assert {t0 for _, t0 in seen} == {0, 4}
    assert all(x0.shape[1] == 4 for x0, _ in seen)  # the whole chunk, also after commits
    late = [x0 for x0, t0 in seen if t0 == 4][-1]  # the last row: tokens 4..6 committed
    torch.testing.assert_close(late[:, :3], out.x[:, 4:7])
