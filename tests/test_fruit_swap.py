"""Fruit-swap env: expert success, the memory-requiring ambiguity, determinism, input checks, demos."""

import numpy as np
import pytest

from dforce.recipes.imitation.fruit_swap import (
    ACTION_DIM, STATE_DIM, BatchedExpert, DemoNoise, FruitSwapConfig, FruitSwapEnv, evaluate, expert_episode,
    make_demos,
)
from dforce.errors import DforceError


def test_expert_solves_it():
    # 20 fixed seeds, both layouts drawn; the expert has succeeded on every seed tried (>= 95% leaves slack
    # for an unlucky noise draw without hiding a broken expert).
    ok = [expert_episode(s)[3] for s in range(20)]
    assert np.mean(ok) >= 0.95


def test_batched_evaluate_with_expert():
    r = evaluate(BatchedExpert(seed=1), n_episodes=8, seed=3)
    assert r.success.shape == (8,) and r.success_rate >= 0.875
    assert set(r.layouts.tolist()) <= {0, 1} and (r.lengths < FruitSwapConfig().max_episode_steps).all()


def test_do_nothing_policy_fails():
    r = evaluate(lambda im, st, act: np.zeros((len(st), ACTION_DIM)), n_episodes=4, seed=0)
    assert not r.success.any() and (r.lengths == FruitSwapConfig().max_episode_steps).all()


def _reach_starts(states, actions):
    """Steps where the gripper is open and at rest at home (previous command exactly 0) and sets off."""
    home = np.array([0.5, 0.8])
    near = np.linalg.norm(states[:, :2] - home, axis=1) < 0.04
    speed = np.linalg.norm(actions[:, :2], axis=1)
    return [t for t in range(1, len(actions)) if near[t] and states[t, 2] < 0.5 and speed[t - 1] == 0 and speed[t] > 0.5]


def _next_grasp(states, actions, t):
    """Where the gripper next closes after step t (the fruit the expert is heading for)."""
    closing = np.flatnonzero(actions[t:, 2] > 0)
    return states[t + closing[0], :2] if len(closing) else states[-1, :2]


def _ambiguous_pairs(ep0, ep1):
    """(t0, t1) with near-identical observations where the expert heads for different fruits: the next
    grasp is more than half a slot spacing (0.15) away and the velocity commands differ by > 0.3."""
    (im0, st0, ac0), (im1, st1, ac1) = ep0[:3], ep1[:3]
    pairs = []
    for t0 in _reach_starts(st0, ac0):
        for t1 in _reach_starts(st1, ac1):
            same_obs = np.abs(st0[t0] - st1[t1]).max() < 0.05  # jitter-level differences only
            img_diff = np.abs(im0[t0].astype(int) - im1[t1].astype(int)).mean()  # of 255, per channel
            goes_elsewhere = np.linalg.norm(_next_grasp(st0, ac0, t0) - _next_grasp(st1, ac1, t1)) > 0.15
            if same_obs and img_diff < 10 and goes_elsewhere and np.linalg.norm(ac0[t0] - ac1[t1]) > 0.3:
                pairs.append((t0, t1))
    return pairs


def test_identical_observations_need_different_actions():
    """Same seed (same slot jitter), two start layouts: after the 1st move of one layout and the 2nd move of
    the other the scene is the same (gripper home, open; A in slot 3; B in slot 2 or slot 1), but the
    expert's next reach goes to a different fruit -> the policy needs to remember the start."""
    cfg = FruitSwapConfig()
    ep0, ep1 = expert_episode(7, layout=0), expert_episode(7, layout=1)
    assert ep0[3] and ep1[3]
    pairs = _ambiguous_pairs(ep0, ep1)
    st0 = ep0[1]
    assert len(pairs) >= 2  # both intermediate configurations (A3,B2) and (A3,B1) are ambiguous
    # and it is the intermediate configurations, not the start: A rests in slot 3 at every ambiguous pair
    slot3 = st0[0, 11:13]
    assert all(np.linalg.norm(st0[t0, 3:5] - slot3) < cfg.slot_radius for t0, _ in pairs)
    # negative control: within one layout the expert never acts differently from the same scene
    assert _ambiguous_pairs(ep0, ep0) == [] and _ambiguous_pairs(ep1, ep1) == []


def test_determinism_and_seed_dependence():
    actions = np.random.default_rng(0).uniform(-1, 1, (30, ACTION_DIM))

    def roll(seed):
        env = FruitSwapEnv()
        obs, _ = env.reset(seed=seed)
        out = [obs["state"]]
        for a in actions:
            out.append(env.step(a)[0]["state"])
        return np.stack(out), obs["image"]

    (a, ia), (b, ib), (c, _) = roll(5), roll(5), roll(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(a, c)


def test_spaces_and_obs():
    env = FruitSwapEnv()
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (STATE_DIM,) and env.observation_space.contains(obs)
    assert info["layout"] in (0, 1) and not info["success"]


@pytest.mark.parametrize("bad", [np.zeros(2), np.zeros((1, 3)), np.array([0.0, np.nan, 0.0]), [np.inf, 0, 0]])
def test_bad_actions_raise(bad):
    env = FruitSwapEnv()
    env.reset(seed=0)
    with pytest.raises(DforceError, match="action"):
        env.step(bad)


def test_bad_config_raises():
    with pytest.raises(DforceError, match="layouts"):
        FruitSwapConfig(layouts=(2,))


def test_make_demos_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DFORCE_CACHE", str(tmp_path))
    d = make_demos(n=3, seed=1)
    assert len(d) == 3 and len(list(tmp_path.rglob("*.npz"))) == 1
    for im, st, ac in zip(d.images, d.states, d.actions):
        T = len(ac)
        assert im.shape == (T, 32, 32, 3) and im.dtype == np.uint8
        assert st.shape == (T, STATE_DIM) and ac.shape == (T, ACTION_DIM)
    d2 = make_demos(n=3, seed=1)  # loaded from the cache
    for x, y in zip(d.states + d.actions + d.images, d2.states + d2.actions + d2.images):
        np.testing.assert_array_equal(x, y)
    assert d.layouts == d2.layouts and d.seeds == d2.seeds


def _failed_grasps(states):
    """Steps where the gripper turns closed with no fruit in it (a failed grasp)."""
    g = states[:, 0:2]
    empty = (np.linalg.norm(states[:, 3:5] - g, axis=1) > 1e-6) & (np.linalg.norm(states[:, 5:7] - g, axis=1) > 1e-6)
    bad = (states[:, 2] > 0.5) & empty
    return np.flatnonzero(bad[1:] & ~bad[:-1]) + 1


def test_demo_noise_default_is_the_plain_expert():
    a, b = expert_episode(3), expert_episode(3, noise=DemoNoise())
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert len(_failed_grasps(a[1])) == 0


def test_noisy_demos_are_deterministic_and_succeed():
    noise = DemoNoise(action_noise=0.3, early_close=0.5)
    eps = [expert_episode(s, noise=noise) for s in range(8)]
    assert all(e[3] for e in eps)  # perturbed, the expert still finishes (it corrects and retries)
    again = expert_episode(5, noise=noise)
    for x, y in zip(eps[5][:3], again[:3]):
        np.testing.assert_array_equal(x, y)
    plain = expert_episode(5)
    assert not np.array_equal(plain[1], eps[5][1])  # the perturbations changed the visited states


def test_early_close_demos_contain_a_failed_grasp_and_a_reopen():
    noise = DemoNoise(early_close=1.0)
    n_fail = 0
    for s in range(4):
        im, st, ac, ok, lay, fin = expert_episode(s, noise=noise)
        assert ok
        for t in _failed_grasps(st):
            n_fail += 1
            # the gripper closed 0.05-0.11 from the nearest fruit ...
            d = min(np.linalg.norm(st[t, 3:5] - st[t, 0:2]), np.linalg.norm(st[t, 5:7] - st[t, 0:2]))
            assert FruitSwapConfig().grasp_radius < d < 0.12
            # ... the recorded (clean) action keeps it open, it re-opens, then grasps for real
            assert ac[t - 1, 2] < 0
            later = st[t:, 2]
            reopen = t + int(np.argmax(later < 0.5))
            assert later.min() < 0.5 and (st[reopen:, 2] > 0.5).any()
    assert n_fail >= 4  # p = 1: most of the 12 grasps fail (some skip past the window)
    # the env's final state is returned (the recorded actions do not replay it)
    assert fin.shape == (STATE_DIM,)


def test_demo_noise_changes_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("DFORCE_CACHE", str(tmp_path))
    d0 = make_demos(n=2, seed=1)
    d1 = make_demos(n=2, seed=1, noise=DemoNoise(early_close=1.0))
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    assert not np.array_equal(d0.states[0], d1.states[0])
    d1b = make_demos(n=2, seed=1, noise=DemoNoise(early_close=1.0))
    np.testing.assert_array_equal(d1.states[0], d1b.states[0])
    np.testing.assert_array_equal(d1.finals[0], d1b.finals[0])
    with pytest.raises(DforceError, match="early_close"):
        DemoNoise(early_close=1.5)
