"""Cross dataset, path-shape classifier, plot helper."""

import numpy as np
import pytest

from dforce.recipes.compositional.data import CrossConfig, classify_paths, make_cross_dataset, plot_paths
from dforce.errors import DforceError


def _v_shapes(n, T=32, seed=0, noise=0.01):
    """Corner -> centre -> an adjacent corner (switches diagonal at the centre), plus returns to the start."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9], [0.9, 0.1]])
    adjacent = {0: (2, 3), 1: (2, 3), 2: (0, 1), 3: (0, 1)}
    out = []
    for i in range(n):
        a = i % 4
        b = adjacent[a][i % 2] if i % 5 else a  # every 5th path goes back to where it started
        s = np.linspace(0, 1, T // 2)[:, None]
        first = corners[a] + s * (0.5 - corners[a])
        second = 0.5 + s[1:] * (corners[b] - 0.5)
        out.append(np.concatenate([first, second, second[-1:]])[:T])
    return np.stack(out) + noise * rng.standard_normal((n, T, 2))


def test_dataset_shapes_and_actions():
    paths, dirs, acts = make_cross_dataset(n=40, seed=0, with_actions=True)
    assert paths.shape == (40, 32, 2) and acts.shape == (40, 32, 2) and dirs.shape == (40,)
    assert paths.min() >= 0 and paths.max() <= 1 and np.bincount(dirs).tolist() == [10] * 4
    np.testing.assert_allclose(paths[:, :-1] + acts[:, :-1], paths[:, 1:], atol=1e-6)
    assert not acts[:, -1].any()
    p2, _ = make_cross_dataset(n=40, seed=0)
    np.testing.assert_array_equal(paths, p2)
    assert make_cross_dataset(n=5, config=CrossConfig(T=50))[0].shape == (5, 50, 2)


def test_dataset_is_all_cross():
    paths, _ = make_cross_dataset(n=1000, seed=1)
    labels = classify_paths(paths)
    assert (labels == "cross").mean() >= 0.99  # 99th pct deviation ~0.04 vs tube 0.08 (5000/5000 when checked)


def test_v_shapes_are_stitched():
    labels = classify_paths(_v_shapes(40))
    assert (labels == "stitched").all(), labels


def test_random_walks_and_off_x_paths_are_other():
    rng = np.random.default_rng(0)
    walks = np.clip(0.5 + np.cumsum(0.05 * rng.standard_normal((200, 32, 2)), 1), 0, 1)
    assert (classify_paths(walks) == "other").all()
    # corner to corner but along the square's edge (BL -> TL): leaves the X
    s = np.linspace(0, 1, 32)[:, None]
    edge = (np.array([0.1, 0.1]) + s * np.array([0.0, 0.8]))[None]
    # straight diagonal that stops at the centre: does not end at a corner
    half = (np.array([0.1, 0.1]) + s * 0.4)[None]
    # correct ends, but bulges 0.15 off the diagonal in the middle
    bulge = (np.array([0.1, 0.1]) + s * 0.8 + 0.15 * np.sin(np.pi * s) * np.array([-1, 1]) / np.sqrt(2))[None]
    assert (classify_paths(np.concatenate([edge, half, bulge])) == "other").all()


def test_classifier_input_checks():
    with pytest.raises(DforceError, match="paths"):
        classify_paths(np.zeros((3, 10)))
    with pytest.raises(DforceError, match="NaN"):
        classify_paths(np.full((1, 4, 2), np.nan))


def test_plot_paths(tmp_path):
    paths = np.concatenate([make_cross_dataset(n=20)[0], _v_shapes(8)])
    out = plot_paths(paths, tmp_path / "sub" / "x.png", title="test")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
