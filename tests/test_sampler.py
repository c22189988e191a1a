"""Algorithm 2: context handling, stabilization, equivalence with plain DDIM, custom matrices, guidance."""

import pytest
import torch

from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError, DataError, ScheduleError
from dforce.guidance import MCGConfig, goal_guidance, guided_prediction
from dforce.models import ModelConfig, build_model
from dforce.sampler import SamplerConfig, StatelessDenoiser, sample
from dforce.scheduling import full_sequence

K = 20


class Spy:
    """A stateless toy denoiser (v-objective, predicts v = 0.1 x) recording what it is shown."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, levels, cond=None):
        self.calls.append((x.clone(), levels.clone(), None if cond is None else cond.clone()))
        return 0.1 * x


def test_context_level0_generated_at_stabilization_level_and_returned_unchanged():
    sch = NoiseSchedule(num_levels=K, objective="v")
    spy = Spy()
    ctx = torch.randn(2, 3, 4, dtype=torch.float32)
    cfg = SamplerConfig(steps=5, schedule="autoregressive", window=4, stabilization_level=3)
    out = sample(spy, sch, cfg, context=ctx, length=8, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (2, 11, 4) and out.context_len == 3
    assert torch.equal(out.x[:, :3], ctx)  # bitwise
    for x, levels, _ in spy.calls:
        assert (levels[:, :3] == 0).all()  # ground truth is always shown clean
        assert torch.equal(x[:, :3], ctx)
    # in the last call every generated token except the one being denoised is committed context at level 3
    _, last_levels, _ = spy.calls[-1]
    assert (last_levels[:, 3:-1] == 3).all()


def test_full_sequence_sampler_equals_plain_ddim_loop():
    torch.manual_seed(0)
    sch = NoiseSchedule(num_levels=K, objective="eps")
    net = torch.nn.Linear(3, 3)

    def model(x, levels, cond=None):
        return net(x) * (levels.unsqueeze(-1).float() / K)

    S, T = 5, 6
    g = torch.Generator().manual_seed(1)
    out = sample(model, sch, SamplerConfig(steps=S, schedule="full_sequence", window=T), length=T, batch=2,
                 token_shape=(3,), generator=g)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, T, 3), generator=g)
    torch.randn((2, T, 3), generator=g)  # the sampler also draws the stabilization noise
    lv = [0, 4, 8, 12, 16, 20]
    with torch.no_grad():
        for t, p in zip(lv[::-1][:-1], lv[::-1][1:]):
            a_t, a_p = sch.alphas_cumprod[t], sch.alphas_cumprod[p]
            eps = model(x, torch.full((2, T), t))
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
    torch.testing.assert_close(out.x, x, atol=1e-4, rtol=1e-5)  # x0 = x/√ᾱ_K is large at the top level


def test_custom_matrix_equals_named_and_invalid_rejected():
    sch = NoiseSchedule(num_levels=K, objective="v")
    cfg = SamplerConfig(steps=4, schedule="full_sequence", window=5)
    a = sample(Spy(), sch, cfg, length=5, batch=1, token_shape=(2,), generator=torch.Generator().manual_seed(0))
    b = sample(Spy(), sch, cfg, length=5, batch=1, token_shape=(2,), matrix=full_sequence(5, 4),
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x, b.x)
    bad = full_sequence(5, 4)
    bad[-1, 2] = 1
    with pytest.raises(ScheduleError, match="last row"):
        sample(Spy(), sch, cfg, length=5, batch=1, token_shape=(2,), matrix=bad)


def test_rollout_past_window_and_cost_counts():
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = build_model(ModelConfig(width=16, depth=1), (2,), K).eval()
    S, L = 4, 40
    cfg = SamplerConfig(steps=S, schedule="autoregressive", window=8)
    out = sample(model, sch, cfg, length=L, batch=3, token_shape=(2,), generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (3, L, 2) and torch.isfinite(out.x).all()
    assert out.model_calls == L * S
    assert out.tokens_evaluated == L * S  # cached: one token per row, never the whole window
    ref = sample(StatelessDenoiser(lambda x, k, c: model(x, k, c), max_context=None), sch,
                 SamplerConfig(steps=S, schedule="autoregressive", window=8, skip_inactive=False),
                 length=L, batch=3, token_shape=(2,), generator=torch.Generator().manual_seed(0))
    assert ref.tokens_evaluated > 3 * out.tokens_evaluated
    torch.testing.assert_close(ref.x, out.x, atol=1e-5, rtol=0)  # same tokens, cached or not


def test_guidance_moves_endpoint_toward_goal_and_mcg_batches():
    torch.manual_seed(0)
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = build_model(ModelConfig(width=16, depth=1), (2,), K).eval()
    goal = torch.full((4, 2), 2.0)
    kw = dict(length=6, batch=4, token_shape=(2,))
    plain = sample(model, sch, SamplerConfig(steps=8, window=6), generator=torch.Generator().manual_seed(0), **kw)
    guided = sample(model, sch, SamplerConfig(steps=8, window=6, guidance_scale=0.2),
                    guidance=goal_guidance(goal, [0, 1]), generator=torch.Generator().manual_seed(0), **kw)
    d = lambda o: (o.x[:, -1] - goal).norm(dim=-1).mean()  # noqa: E731
    assert d(guided) < 0.5 * d(plain)
    spy_batches = []

    def spy(x, k, c=None):
        spy_batches.append(x.shape[0])
        return model(x, k, c)

    mcg = sample(spy, sch, SamplerConfig(steps=8, window=6, guidance_scale=0.2, mcg=MCGConfig(samples=3, redraw_above=0.0)),
                 guidance=goal_guidance(goal, [0, 1]), generator=torch.Generator().manual_seed(0), **kw)
    assert set(spy_batches) == {12}  # one forward per row with the N futures batched
    assert d(mcg) < 0.5 * d(plain)


def test_mcg_redraws_only_tokens_above_the_threshold():
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = build_model(ModelConfig(width=16, depth=1), (2,), K).eval()
    x, x0_prev = torch.randn(2, 4, 2), torch.randn(2, 4, 2)
    levels = torch.tensor([[0, K // 4, 3 * K // 4, K]] * 2)  # clean, nearly clean, far, pure noise
    seen = []

    def fn(xr, kr, n):
        seen.append(xr.detach().view(2, n, 4, 2))
        return model(xr, kr)

    log_c = goal_guidance(torch.zeros(2, 2), [0, 1])
    for above in (0.0, 0.5):
        _, grad = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0,
                                    MCGConfig(samples=3, redraw_above=above, future_grad="replicas"),
                                    generator=torch.Generator().manual_seed(0))
        xr = seen[-1]
        same = (xr[:, 1:] == xr[:, :1]).all(-1).all(1).all(0)  # (T,): token equal to replica 0 in every replica
        assert same.tolist() == ([True, False, False, False] if above == 0.0 else [True, True, False, False])
        assert grad.shape == x.shape and torch.isfinite(grad).all() and grad[:, -1].abs().sum() > 0
    # the futures the replicas score differ per replica; the present keeps its values in every replica
    scores = []
    log_c2 = lambda x0, t0: scores.append(x0.detach()) or log_c(x0, t0)  # noqa: E731
    guided_prediction(fn, sch, x, levels, x0_prev, log_c2, 0, MCGConfig(samples=3, redraw_above=0.5),
                      generator=torch.Generator().manual_seed(0))
    assert (seen[-1][:, :, :2] == seen[-1][:, :1, :2]).all()  # clean and nearly clean: never redrawn
    x0 = scores[-1].view(2, 3, 4, 2)
    assert not torch.allclose(x0[:, 1:, 2:], x0[:, :1, 2:].expand(-1, 2, -1, -1))
    # "own": the redrawn tokens' gradient is replica 0's alone (= plain guidance's there); the kept ones' is averaged
    for p in model.parameters():  # the zero-initialized output layers: let the future depend on the present
        if p.abs().max() == 0:
            p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    _, plain = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0, MCGConfig(samples=1))
    _, avg = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0,
                               MCGConfig(samples=3, redraw_above=0.5, future_grad="replicas"),
                               generator=torch.Generator().manual_seed(0))
    _, own = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0, MCGConfig(samples=3, redraw_above=0.5),
                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(own[:, 2:], plain[:, 2:], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(own[:, :2], avg[:, :2])  # the same draws: the kept tokens' average is unchanged
    assert not torch.allclose(own[:, :2], plain[:, :2]) and not torch.allclose(avg[:, 2:], plain[:, 2:])
    with pytest.raises(ConfigError, match="mcg.future_grad"):
        MCGConfig(future_grad="mine")
    with pytest.raises(ConfigError, match="mcg.redraw_above"):
        MCGConfig(redraw_above=1.0)
    with pytest.raises(ConfigError, match="mcg.samples"):
        MCGConfig(samples=0)


def test_mcg_config_keys_of_old_runs_still_load():
    """dforce 0.1 saved sampler.mcg_samples / mcg_redraw_above / mcg_future_grad flat, and had mcg_future_steps /
    mcg_keep_first (removed in 0.2): old config files and overrides load into sampler.mcg; a removed option at its
    old no-op default is dropped, any other value is refused in one line."""
    from dforce.engine.config import apply_overrides, config_to_dict, from_dict

    old = {"steps": 8, "mcg_samples": 4, "mcg_redraw_above": 0.5, "mcg_future_grad": "replicas",
           "mcg_future_steps": 0, "mcg_keep_first": 0}
    cfg = from_dict(SamplerConfig, old)
    assert cfg.mcg == MCGConfig(samples=4, redraw_above=0.5, future_grad="replicas") and cfg.steps == 8
    merged = from_dict(SamplerConfig, {**config_to_dict(SamplerConfig()), "mcg_samples": 3})  # defaults merged first
    assert merged.mcg.samples == 3 and merged.mcg.redraw_above == 0.9
    over = apply_overrides(config_to_dict(SamplerConfig()), ["mcg_samples=2", "mcg_keep_first=0"], SamplerConfig)
    assert from_dict(SamplerConfig, over).mcg.samples == 2
    with pytest.raises(ConfigError, match="mcg_keep_first was removed"):
        from_dict(SamplerConfig, {"mcg_keep_first": 1})
    with pytest.raises(ConfigError, match="mcg_future_steps was removed"):
        apply_overrides({}, ["mcg_future_steps=2"], SamplerConfig)


def test_mcg_with_nothing_to_redraw_runs_one_forward():
    """A row with no token above the threshold: the replicas would all be the sequence itself, so MCG runs one
    forward of batch B (not B·N), gives plain guidance's gradient, and still draws the redraw noise (the generator's
    later draws do not depend on the shortcut)."""
    sch = NoiseSchedule(num_levels=K, objective="v")
    model = build_model(ModelConfig(width=16, depth=1), (2,), K).eval()
    x, x0_prev = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    levels = torch.tensor([[K // 5, K // 4, K // 2]] * 2)  # all below 0.9 K
    batches = []

    def fn(xr, kr, n):
        batches.append(xr.shape[0])
        return model(xr, kr)

    log_c = goal_guidance(torch.zeros(2, 2), [0, 1], token=None)
    g = torch.Generator().manual_seed(0)
    pred, grad = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0, MCGConfig(samples=4), generator=g)
    pred1, plain = guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0, MCGConfig(samples=1))
    assert batches == [2, 2]
    torch.testing.assert_close(grad, plain)
    torch.testing.assert_close(pred, pred1)
    ref = torch.Generator().manual_seed(0)
    torch.randn((2, 4, 3, 2), generator=ref)
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5, generator=ref))
    levels[:, -1] = K  # one token to redraw: the N replicas run as one batch
    guided_prediction(fn, sch, x, levels, x0_prev, log_c, 0, MCGConfig(samples=4), generator=g)
    assert batches[-1] == 8


def test_bad_inputs_raise_clear_errors():
    sch = NoiseSchedule(num_levels=K, objective="v")
    cfg = SamplerConfig(steps=4, window=4)
    ctx = torch.randn(2, 3, 2)
    ctx[0, 1, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sample(Spy(), sch, cfg, context=ctx, length=2)
    with pytest.raises(DataError, match="cond must have shape"):
        sample(Spy(), sch, cfg, context=torch.randn(2, 3, 2), length=4, cond=torch.randn(2, 5, 1))
    with pytest.raises(ConfigError, match="batch and token_shape"):
        sample(Spy(), sch, cfg, length=4)
    with pytest.raises(ConfigError, match="eta"):
        SamplerConfig(eta=2.0)
    with pytest.raises(ConfigError, match="stabilization_level"):
        sample(Spy(), sch, SamplerConfig(steps=4, stabilization_level=K + 1), length=2, batch=1, token_shape=(2,))
