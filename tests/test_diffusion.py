"""Per-token forward/reverse process: exact identities and statistics (see dforce/diffusion.py)."""

import pytest
import torch

from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig, sampling_levels
from dforce.errors import ConfigError, ScheduleError


@pytest.fixture(params=["linear", "cosine", "sigmoid"])
def kind(request):
    return request.param


def test_alphas_cumprod_monotone_and_level0_clean(kind):
    s = NoiseSchedule(num_levels=50, beta_schedule=kind, objective="v")
    a = s.alphas_cumprod
    assert a.shape == (51,)
    assert a[0] == 1.0
    assert (a[1:] < a[:-1]).all()
    assert 0 <= a[-1] < 0.05  # the noisiest level is (nearly) pure noise


def test_zero_terminal_snr_is_exact():
    s = NoiseSchedule(num_levels=100, beta_schedule="linear", zero_terminal_snr=True, objective="v")
    assert s.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError, match="zero_terminal_snr"):
        NoiseScheduleConfig(zero_terminal_snr=True, objective="eps")


def test_add_noise_statistics_per_token_level():
    # each token of one tensor carries a different level; empirical mean/var must follow ᾱ of *its* level
    torch.manual_seed(0)
    s = NoiseSchedule(num_levels=20, beta_schedule="cosine", objective="eps")
    levels = torch.tensor([[0, 5, 10, 20]])  # (1, 4)
    x0 = torch.full((1, 4, 200_000), 0.7)
    xk = s.add_noise(x0, levels)
    a = s.alphas_cumprod[levels[0]]
    # 200k draws: std error of the mean ~ 0.0022, of the variance ~ 0.0032 -> 0.01 is > 3 sigma
    torch.testing.assert_close(xk.mean(-1)[0], a.sqrt() * 0.7, atol=0.01, rtol=0)
    torch.testing.assert_close(xk.var(-1)[0], 1 - a, atol=0.01, rtol=0)
    assert torch.equal(xk[0, 0], x0[0, 0])  # level 0 is returned unchanged


def test_parameterizations_round_trip(kind):
    torch.manual_seed(1)
    s = NoiseSchedule(num_levels=100, beta_schedule=kind, objective="v")
    x0, eps = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    k = torch.randint(1, 100, (3, 7))
    xk = s.add_noise(x0, k, eps)
    v = s.v_from(x0, k, eps)
    torch.testing.assert_close(s.x0_from_v(xk, k, v), x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(s.eps_from_v(xk, k, v), eps, atol=1e-4, rtol=0)
    torch.testing.assert_close(s.x0_from_eps(xk, k, eps), x0, atol=2e-3, rtol=0)  # 1/√ᾱ amplifies fp32 error
    torch.testing.assert_close(s.eps_from_x0(xk, k, x0), eps, atol=1e-3, rtol=0)
    for obj, pred in (("eps", eps), ("x0", x0), ("v", v)):
        s2 = NoiseSchedule(num_levels=100, beta_schedule=kind, objective=obj)
        x0h, epsh = s2.to_x0_eps(xk, k, pred)
        torch.testing.assert_close(x0h, x0, atol=2e-3, rtol=0)
        torch.testing.assert_close(epsh, eps, atol=2e-3, rtol=0)


def test_ddim_eta0_deterministic_and_untouched_tokens():
    torch.manual_seed(2)
    s = NoiseSchedule(num_levels=10, objective="eps")
    x = torch.randn(2, 6, 3)
    k_from = torch.tensor([[0, 3, 5, 10, 7, 2]] * 2)
    k_to = torch.tensor([[0, 1, 5, 8, 0, 0]] * 2)
    x0h, epsh = torch.randn_like(x), torch.randn_like(x)
    a = s.step(x, k_from, k_to, x0h, epsh, eta=0.0, noise=torch.randn_like(x))
    b = s.step(x, k_from, k_to, x0h, epsh, eta=0.0, noise=torch.randn_like(x))
    assert torch.equal(a, b)  # eta=0 ignores the noise
    assert torch.equal(a[:, 0], x[:, 0])  # clean token stays clean (bitwise)
    assert torch.equal(a[:, 2], x[:, 2])  # k_from == k_to untouched
    torch.testing.assert_close(a[:, 4], x0h[:, 4])  # reaching level 0 returns x̂0
    c = s.step(x, k_from, k_to, x0h, epsh, eta=1.0, noise=torch.randn_like(x))
    assert not torch.equal(a[:, 1], c[:, 1])  # eta=1 is stochastic
    assert torch.equal(c[:, 0], x[:, 0]) and torch.equal(c[:, 2], x[:, 2])


def test_ddpm_posterior_equals_ddim_eta1_for_consistent_eps():
    # DDIM with eta=1 is the exact posterior q(x_s | x_t, x0) when eps is the one implied by (x_t, x0)
    torch.manual_seed(3)
    s = NoiseSchedule(num_levels=50, beta_schedule="linear", objective="eps")
    x0 = torch.randn(4, 9, 2)
    k_from = torch.randint(1, 51, (4, 9))
    k_to = (k_from - torch.randint(1, 5, (4, 9))).clamp(min=0)
    xt = s.add_noise(x0, k_from)
    eps = s.eps_from_x0(xt, k_from, x0)
    z = torch.randn_like(x0)
    a = s.step(xt, k_from, k_to, x0, eps, eta=1.0, noise=z, method="ddim")
    b = s.step(xt, k_from, k_to, x0, eps, eta=1.0, noise=z, method="ddpm")
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_per_token_step_equals_scalar_ddim_loop():
    # a whole sequence at one level stepped per token == the textbook one-level DDIM update
    torch.manual_seed(4)
    s = NoiseSchedule(num_levels=100, beta_schedule="cosine", objective="eps")
    x = torch.randn(2, 5, 3)
    eps = torch.randn_like(x)
    t, prev = 60, 40
    a_t, a_p = s.alphas_cumprod[t], s.alphas_cumprod[prev]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    ref = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
    kf, kt = torch.full((2, 5), t), torch.full((2, 5), prev)
    x0h, epsh = s.to_x0_eps(x, kf, eps)
    torch.testing.assert_close(s.step(x, kf, kt, x0h, epsh), ref, atol=1e-5, rtol=0)


def test_sampling_levels_subsequence():
    lv = sampling_levels(10, 1000)
    assert lv[0] == 0 and lv[-1] == 1000 and len(lv) == 11
    assert (lv[1:] > lv[:-1]).all()
    assert torch.equal(sampling_levels(7, 7), torch.arange(8))
    with pytest.raises(ConfigError):
        sampling_levels(0, 10)
    with pytest.raises(ConfigError):
        sampling_levels(11, 10)


def test_bad_levels_and_configs_raise():
    s = NoiseSchedule(num_levels=10, objective="x0")
    with pytest.raises(ScheduleError, match=r"\[0, 10\]"):
        s.check_levels(torch.tensor([[0, 11]]))
    with pytest.raises(ScheduleError, match="integer"):
        s.check_levels(torch.tensor([[0.5]]))
    with pytest.raises(ConfigError, match="beta_schedule"):
        NoiseScheduleConfig(beta_schedule="quadratic")
    with pytest.raises(ConfigError, match="objective"):
        NoiseScheduleConfig(objective="score")
