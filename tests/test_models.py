"""Backbones: causality (with conditioning), state carry, KV cache == full recompute."""

import pytest
import torch

from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model

K = 50


def make(backbone, cond_dim=3, token_shape=(4,), **kw):
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone=backbone, width=32, depth=2, heads=4, **kw), token_shape, K, cond_dim)
    # the decoders are zero-initialized (predict 0 at init); perturb so outputs depend on inputs
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_causality_with_conditioning(backbone):
    m = make(backbone)
    x, k, c = torch.randn(2, 9, 4), torch.randint(0, K + 1, (2, 9)), torch.randn(2, 9, 3)
    y = m(x, k, c)
    t = 4
    x2, k2, c2 = x.clone(), k.clone(), c.clone()
    x2[:, t + 1 :] += 5 * torch.randn_like(x2[:, t + 1 :])
    k2[:, t + 1 :] = torch.randint(0, K + 1, k2[:, t + 1 :].shape)
    c2[:, t + 1 :] += 3
    y2 = m(x2, k2, c2)
    torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], atol=1e-5, rtol=0)
    assert (y2[:, t + 1 :] - y[:, t + 1 :]).abs().max() > 1e-3  # the future does change


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_incremental_state_equals_full_recompute(backbone):
    m = make(backbone)
    x, k, c = torch.randn(3, 11, 4), torch.randint(0, K + 1, (3, 11)), torch.randn(3, 11, 3)
    full = m(x, k, c)
    state = m.init_state(3)
    outs = []
    for a, b in [(0, 4), (4, 5), (5, 11)]:  # commit in uneven pieces, predict each piece from the state
        outs.append(m(x[:, a:b], k[:, a:b], c[:, a:b], state=state))
        state = m.absorb(x[:, a:b], k[:, a:b], c[:, a:b], state)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


def test_transformer_cache_is_bounded():
    m = make("transformer", max_context=6)
    state = m.init_state(2)
    for _ in range(5):
        state = m.absorb(torch.randn(2, 4, 4), torch.zeros(2, 4, dtype=torch.long), torch.randn(2, 4, 3), state)
    assert state.length == 6 and state.offset == 20
    rep = m.repeat_state(state, 3)
    assert rep.keys[0].shape[0] == 6


def test_token_shapes_and_missing_cond():
    m = make("rnn", cond_dim=0, token_shape=(2, 3))
    y = m(torch.randn(2, 5, 2, 3), torch.zeros(2, 5, dtype=torch.long))
    assert y.shape == (2, 5, 2, 3)
    m2 = make("transformer", cond_dim=2)
    with pytest.raises(ValueError, match="cond_dim=2"):
        m2(torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.long))


def test_model_config_validation():
    with pytest.raises(ConfigError, match="backbone"):
        ModelConfig(backbone="lstm")
    with pytest.raises(ConfigError, match="heads"):
        ModelConfig(backbone="transformer", width=30, heads=4)


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_dropout_applies_in_training_only(backbone):
    """model.dropout is active in train mode (two calls differ) and off in eval mode (two calls agree)."""
    m = make(backbone, dropout=0.5)
    x, k, c = torch.randn(2, 6, 4), torch.randint(0, K + 1, (2, 6)), torch.randn(2, 6, 3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, k, c), m(x, k, c), atol=0, rtol=0)
        m.train()
        assert (m(x, k, c) - m(x, k, c)).abs().max() > 1e-3
