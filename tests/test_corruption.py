"""Corruption kinds, masks, determinism, levels and the evaluate hook."""

import numpy as np
import pytest

from dforce.recipes.imitation.corruption import (
    KINDS, CorruptionHook, corrupt, corrupt_sequence, corruption_mask, observation_levels,
)
from dforce.recipes.imitation.fruit_swap import BatchedExpert, FruitSwapEnv, evaluate
from dforce.errors import DforceError


def _obs(seed=0):
    obs, _ = FruitSwapEnv().reset(seed=seed)
    return obs


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_obs_and_is_deterministic(kind):
    obs = _obs()
    before = {k: v.copy() for k, v in obs.items()}
    a = corrupt(obs, kind, np.random.default_rng(3))
    b = corrupt(obs, kind, np.random.default_rng(3))
    for k in ("image", "state"):
        np.testing.assert_array_equal(obs[k], before[k])  # input untouched
        np.testing.assert_array_equal(a[k], b[k])  # same rng -> same corruption
        assert a[k].shape == obs[k].shape and a[k].dtype == obs[k].dtype
        assert not np.array_equal(a[k], obs[k]), (kind, k)


def test_kind_specifics():
    obs, rng = _obs(), np.random.default_rng(0)
    miss = corrupt(obs, "missing", rng)
    assert not miss["image"].any() and not miss["state"].any()
    occ = corrupt(obs, "occlusion", rng)
    side = round(0.35 * 32)  # default patch side at severity 1
    assert (occ["image"] == 128).all(axis=-1).sum() >= side * side
    noisy = corrupt({"state": np.zeros(10000)}, "noise", rng)["state"]
    assert abs(noisy.std() - 0.05) < 0.003  # std 0.05 at severity 1; 1e4 draws -> ~0.0004 standard error
    dis = corrupt(obs, "distractor", rng)
    assert 0 < (dis["image"] != obs["image"]).any(-1).sum() < 32 * 32 / 2  # a few small discs
    assert (dis["state"] != obs["state"]).sum() == round(0.3 * 13)


def test_severity_zero_is_identity_and_scales():
    obs = _obs()
    for kind in ("distractor", "occlusion", "noise"):
        z = corrupt(obs, kind, np.random.default_rng(0), severity=0.0)
        np.testing.assert_array_equal(z["image"], obs["image"])
        np.testing.assert_array_equal(z["state"], obs["state"])
    diff = [np.abs(corrupt(obs, "noise", np.random.default_rng(0), severity=s)["image"].astype(int)
                   - obs["image"]).mean() for s in (0.5, 2.0)]
    assert diff[1] > 2 * diff[0]


def test_batched_obs_items_corrupted_independently():
    img = np.zeros((4, 2, 32, 32, 3), np.uint8)
    out = corrupt({"image": img}, "occlusion", np.random.default_rng(1))["image"]
    assert out.shape == img.shape
    where = (out == 128).all(-1)  # (4, 2, 32, 32)
    assert where.reshape(8, -1).any(1).all()
    assert len({w.tobytes() for w in where.reshape(8, 32, 32)}) > 1  # different places


def test_mask_and_sequence():
    m = corruption_mask(50, 0.2, np.random.default_rng(0))
    assert m.shape == (50,) and m.sum() == 10
    np.testing.assert_array_equal(m, corruption_mask(50, 0.2, np.random.default_rng(0)))
    mb = corruption_mask((3, 20), 0.5, np.random.default_rng(0))
    assert (mb.sum(1) == 10).all() and not (mb[0] == mb[1]).all()
    T = 12
    seq = {"image": np.full((T, 32, 32, 3), 50, np.uint8), "state": np.ones((T, 5), np.float32)}
    out, mask = corrupt_sequence(seq, "missing", 0.25, np.random.default_rng(2))
    assert mask.sum() == 3
    assert not out["image"][mask].any() and (out["image"][~mask] == 50).all()
    assert not out["state"][mask].any() and (out["state"][~mask] == 1).all()
    lv = observation_levels(mask, K=1000)
    assert lv.dtype == np.int64 and (lv[mask] == 1000).all() and (lv[~mask] == 0).all()
    assert (observation_levels(mask, K=1000, level=20)[mask] == 20).all()


def test_bad_inputs_raise():
    obs, rng = _obs(), np.random.default_rng(0)
    with pytest.raises(DforceError, match="kind"):
        corrupt(obs, "blur", rng)
    with pytest.raises(DforceError, match="severity"):
        corrupt(obs, "noise", rng, severity=-1)
    with pytest.raises(DforceError, match="image"):
        corrupt({"image": obs["image"].astype(np.float32)}, "noise", rng)
    with pytest.raises(DforceError, match="fraction"):
        corruption_mask(10, 1.5, rng)
    with pytest.raises(DforceError, match="level"):
        observation_levels(np.ones(3, bool), K=10, level=11)


def test_hook_in_evaluate():
    hook = CorruptionHook("distractor", fraction=0.5, seed=0)
    im, st = np.zeros((6, 32, 32, 3), np.uint8), np.zeros((6, 13), np.float32)
    a, b = hook(im, st, 4), CorruptionHook("distractor", 0.5, seed=0)(im, st, 4)
    np.testing.assert_array_equal(a[0], b[0])
    assert hook.mask.shape == (6,) and not im.any()
    changed = a[1].any(1)
    np.testing.assert_array_equal(changed, hook.mask)
    # the scripted expert reads the true state at reset; with state noise it should still mostly succeed
    r = evaluate(BatchedExpert(), n_episodes=4, seed=1, obs_hook=CorruptionHook("noise", 0.3, severity=0.2))
    assert r.success.shape == (4,)
