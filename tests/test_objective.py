"""Algorithm 1: level strategies, masks and loss weights (vectorized vs plain-loop references)."""

import pytest
import torch

from dforce.diffusion import NoiseSchedule
from dforce.errors import ConfigError
from dforce.objective import ObjectiveConfig, diffusion_forcing_loss, fused_snr, loss_weights, sample_levels


def test_level_strategies_patterns():
    g = torch.Generator().manual_seed(0)
    K = 20
    k, m = sample_levels("independent", 64, 12, K, generator=g)
    assert k.min() >= 0 and k.max() <= K and torch.equal(m, k > 0)
    assert (k != k[:, :1]).any()  # tokens of a sequence get different levels
    k, m = sample_levels("full_sequence", 64, 12, K, generator=g)
    assert (k == k[:, :1]).all() and k.min() >= 1 and m.all()
    k, m = sample_levels("teacher_forcing", 64, 12, K, generator=g)
    for row_k, row_m in zip(k, m):
        p = int(row_m.nonzero()[0])
        assert row_m.sum() == 1  # one target token
        assert (row_k[:p] == 0).all() and 1 <= row_k[p] <= K and (row_k[p + 1 :] == K).all()


def reference_fused_snr(snr, snr_clip, decay):
    """An independent transcription of ``compute_loss_weights`` (buoyancy99/diffusion-forcing, paper branch):
    a loop over time with ``cum_snr[0] = normalized_clipped_snr[0]``, then shifted right by one (pad 0)."""
    norm_clip = snr.clamp(max=snr_clip) / snr_clip
    norm = snr / snr_clip
    cum = torch.zeros_like(norm)
    for t in range(snr.shape[1]):
        cum[:, t] = norm_clip[:, t] if t == 0 else decay * cum[:, t - 1] + (1 - decay) * norm_clip[:, t]
    cum = torch.nn.functional.pad(cum[:, :-1], (1, 0), value=0.0)
    return ((1 - (1 - cum * decay) * (1 - norm_clip)) * snr_clip, (1 - (1 - cum * decay) * (1 - norm)) * snr_clip)


def test_fused_snr_matches_the_reference_formula():
    torch.manual_seed(0)
    snr = torch.rand(3, 9) * 10
    for gamma, d in ((5.0, 0.8), (2.0, 0.96)):
        got_clip, got = fused_snr(snr, gamma, d)
        want_clip, want = reference_fused_snr(snr, gamma, d)
        torch.testing.assert_close(got_clip, want_clip, atol=1e-5, rtol=0)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_fused_snr_clean_token_then_noise():
    """A clean first token then pure noise: the reference's weights are [5, 4, 3.2, 2.56, 2.048] (γ 5, d 0.8);
    dforce 0.1 started the running mean at (1-d)·s̃_0 and gave [5, 0.8, 0.64, 0.512, 0.41] (kept as 'discounted')."""
    snr = torch.tensor([[1e9, 0.0, 0.0, 0.0, 0.0]])
    clipped, _ = fused_snr(snr, 5.0, 0.8)
    torch.testing.assert_close(clipped, torch.tensor([[5.0, 4.0, 3.2, 2.56, 2.048]]), atol=1e-5, rtol=0)
    old, _ = fused_snr(snr, 5.0, 0.8, init="discounted")
    torch.testing.assert_close(old, torch.tensor([[5.0, 0.8, 0.64, 0.512, 0.4096]]), atol=1e-5, rtol=0)


def test_fused_snr_discounted_matches_its_loop():
    torch.manual_seed(0)
    snr = torch.rand(3, 9) * 10
    gamma, d = 5.0, 0.8
    got_clip, got = fused_snr(snr, gamma, d, init="discounted")
    s = snr.clamp(max=gamma) / gamma
    c_prev = torch.zeros(3)
    for t in range(9):  # dforce 0.1's recurrence, token by token (c_{-1} = 0, so c_0 = (1-d)·s̃_0)
        past = 1 - d * c_prev
        torch.testing.assert_close(got_clip[:, t], (1 - past * (1 - s[:, t])) * gamma, atol=1e-5, rtol=0)
        torch.testing.assert_close(got[:, t], (1 - past * (1 - snr[:, t] / gamma)) * gamma, atol=1e-5, rtol=0)
        c_prev = d * c_prev + (1 - d) * s[:, t]


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_min_snr_weights(objective):
    sch = NoiseSchedule(num_levels=100, objective=objective)
    k = torch.tensor([[1, 50, 100]])
    w = loss_weights(k, sch, ObjectiveConfig(weighting="min_snr", snr_clip=5.0))
    snr = sch.snr[k]
    expect = {"eps": snr.clamp(max=5) / snr, "x0": snr.clamp(max=5), "v": snr.clamp(max=5) / (snr + 1)}[objective]
    torch.testing.assert_close(w, expect)
    assert torch.equal(loss_weights(k, sch, ObjectiveConfig(weighting="uniform")), torch.ones(1, 3))


def test_loss_masks_clean_and_padding_tokens():
    sch = NoiseSchedule(num_levels=10, objective="v")
    seen = {}

    def model(x, k, cond):
        seen["k"] = k.clone()
        return torch.ones_like(x)

    x0 = torch.randn(2, 5, 3)
    levels = torch.tensor([[0, 3, 5, 0, 9], [2, 2, 2, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = diffusion_forcing_loss(model, sch, x0, ObjectiveConfig(weighting="uniform"), mask=mask, levels=levels)
    assert (out.token_loss[0, [0, 3]] == 0).all()  # clean tokens carry no loss
    assert (out.token_loss[1, 3:] == 0).all() and (out.weights[1, 3:] == 0).all()  # padding carries no loss
    assert (seen["k"][1, 3:] == 10).all()  # padding is shown as pure noise
    assert out.loss > 0


def test_loss_is_finite_and_backprops_for_all_strategies():
    from dforce.models import ModelConfig, build_model

    sch = NoiseSchedule(num_levels=50, objective="x0")
    model = build_model(ModelConfig(width=32, depth=1), (2,), 50, cond_dim=3)
    for strat in ("independent", "full_sequence", "teacher_forcing"):
        for weighting in ("uniform", "min_snr", "fused_snr"):
            out = diffusion_forcing_loss(model, sch, torch.randn(4, 6, 2), ObjectiveConfig(strat, weighting),
                                         cond=torch.randn(4, 6, 3))
            out.loss.backward()
            assert torch.isfinite(out.loss)


def test_objective_config_validation():
    with pytest.raises(ConfigError, match="level_strategy"):
        ObjectiveConfig(level_strategy="random")
    with pytest.raises(ConfigError, match="fused_snr_decay"):
        ObjectiveConfig(fused_snr_decay=1.5)
    with pytest.raises(ConfigError, match="fused_snr_init"):
        ObjectiveConfig(fused_snr_init="last_token")
