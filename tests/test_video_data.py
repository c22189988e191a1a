"""Video data: synthetic digits, ViZDoom recorder, file loading, alignment convention."""

import numpy as np
import pytest
import torch

from dforce.recipes.video.synthetic import ACTION_DELTAS, MovingDigitsConfig, generate_moving_digits
from dforce.recipes.video.common import VideoData, actions_into_frames, area_downsample, to_model_frames, to_uint8_frames
from dforce.recipes.video.files import VideoWindowDataset, load_video_file
from dforce.errors import DataError

SMALL = MovingDigitsConfig(size=16)


# ---------------------------------------------------------------- conventions
def test_area_downsample_is_exact_block_mean():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 256, (2, 3, 24, 32, 3)).astype(np.uint8)
    out = area_downsample(f, 8)
    ref = np.rint(f.reshape(2, 3, 8, 3, 8, 4, 3).astype(np.float64).mean((3, 5)))
    assert out.shape == (2, 3, 8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref.astype(np.uint8))


def test_model_frame_roundtrip_and_action_shift():
    f = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 6, 3)).astype(np.uint8)
    x = to_model_frames(f)
    assert x.shape == (2, 4, 3, 5, 6) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8_frames(x), f)
    a = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    into = actions_into_frames(a)
    assert torch.equal(into[:, 0], torch.zeros(2, 3)) and torch.equal(into[:, 1:], a[:, :-1])


# ---------------------------------------------------------------- synthetic digits
def test_moving_digits_shapes_and_determinism():
    a = generate_moving_digits(3, 10, seed=5, config=SMALL)
    b = generate_moving_digits(3, 10, seed=5, config=SMALL)
    c = generate_moving_digits(3, 10, seed=6, config=SMALL)
    assert a.frames.shape == (3, 10, 16, 16, 3) and a.frames.dtype == np.uint8
    assert a.actions.shape == (3, 10, 5) and a.actions.dtype == np.float32
    assert np.all(a.actions.sum(-1) == 1)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.frames, c.frames)


def _centroids(frames):
    w = frames.astype(np.float64).sum(-1)  # (N, T, S, S)
    yy, xx = np.mgrid[: w.shape[-2], : w.shape[-1]]
    m = w.sum((-2, -1))
    return np.stack([(w * yy).sum((-2, -1)) / m, (w * xx).sum((-2, -1)) / m], -1)  # (N, T, 2)


def test_action_t_moves_digit_from_frame_t_to_t_plus_1():
    """The convention: actions[:, t] is applied after frames[:, t] and produces frames[:, t+1].

    Actions are re-drawn every step (hold 1), no balls, so the digit's centroid shift must equal
    speed * delta(a_t) except when clipped at a border (then it is shorter, never opposite). The
    off-by-one alternative (a_{t-1} or a_{t+1}) matches only by chance (~1/5 + border cases).
    """
    cfg = MovingDigitsConfig(size=24, n_balls=0, min_hold=1, max_hold=1)
    d = generate_moving_digits(8, 30, seed=0, config=cfg)
    shift = np.diff(_centroids(d.frames), axis=1)  # (N, T-1, 2): frame t -> t+1
    idx = d.actions.argmax(-1)
    expect = cfg.speed * ACTION_DELTAS[idx[:, :-1]]  # a_t
    match = np.all(np.abs(shift - expect) < 1e-6, -1).mean()
    assert match > 0.8
    assert np.all(shift * expect >= -1e-6)  # never against the action
    for wrong in (cfg.speed * ACTION_DELTAS[idx[:, 1:]], np.concatenate([expect[:, :1], expect[:, :-1]], 1)):
        assert np.all(np.abs(shift - wrong) < 1e-6, -1).mean() < 0.5


# ---------------------------------------------------------------- ViZDoom
def test_vizdoom_tiny_episode_shapes_determinism_and_replay():
    pytest.importorskip("vizdoom")
    from dforce.recipes.video.vizdoom import generate_vizdoom, replay_episode

    a = generate_vizdoom(2, 12, resolution=32, seed=3, use_cache=False, progress=False)
    b = generate_vizdoom(2, 12, resolution=32, seed=3, use_cache=False, progress=False)
    c = generate_vizdoom(2, 12, resolution=32, seed=4, use_cache=False, progress=False)
    assert a.frames.shape == (2, 12, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.actions.shape == (2, 12, 4) and a.actions.dtype == np.float32
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.frames, c.frames)
    # Replaying the recorded actions from the episode seed re-renders the same frames.
    replay = replay_episode(int(a.episode_seeds[0]), a.actions[0], resolution=32)
    np.testing.assert_array_equal(replay, a.frames[0])
    # Changing action t (to a turn) leaves frames <= t unchanged and changes frame t+1.
    idx = a.actions[0].argmax(-1).copy()
    t = 5
    idx[t] = 1 if idx[t] != 1 else 2
    alt = replay_episode(int(a.episode_seeds[0]), idx, resolution=32)
    np.testing.assert_array_equal(alt[: t + 1], a.frames[0, : t + 1])
    assert not np.array_equal(alt[t + 1], a.frames[0, t + 1])


# ---------------------------------------------------------------- files
@pytest.fixture
def video_npz(tmp_path):
    d = generate_moving_digits(2, 12, seed=0, config=SMALL)
    p = tmp_path / "v.npz"
    np.savez(p, frames=d.frames, actions=d.actions)
    return p, d


def test_load_file_and_window_dataset(video_npz, tmp_path):
    p, d = video_npz
    loaded = load_video_file(p)
    assert np.array_equal(loaded.frames, d.frames) and np.array_equal(loaded.actions, d.actions)
    ds = VideoWindowDataset.from_file(p, window=8, stride=2)
    assert len(ds) == 2 * 3  # starts 0, 2, 4 in each of 2 videos
    item = ds[4]  # video 1, start 2
    assert item["frames"].shape == (8, 3, 16, 16) and item["actions"].shape == (8, 5)
    assert item["frames"].min() >= -1 and item["frames"].max() <= 1
    assert torch.equal(item["frames"], to_model_frames(d.frames[1, 2:10]))
    assert torch.equal(item["actions"], torch.from_numpy(d.actions[1, 2:10]))
    np.save(tmp_path / "v.npy", d.frames)  # no actions -> (T, 0)
    assert VideoWindowDataset.from_file(tmp_path / "v.npy", window=4)[0]["actions"].shape == (4, 0)


def test_video_data_save_load_roundtrip(tmp_path):
    d = generate_moving_digits(2, 5, seed=1, config=SMALL)
    d = VideoData(d.frames, d.actions, d.action_names, np.array([7, 9]))
    d.save(tmp_path / "d.npz")
    e = VideoData.load(tmp_path / "d.npz")
    assert np.array_equal(e.frames, d.frames) and e.action_names == d.action_names
    assert np.array_equal(e.episode_seeds, [7, 9])


@pytest.mark.parametrize("case, pattern", [
    ("missing", "does not exist"),
    ("ndim", "5 dims"),
    ("float01", "uint8 in \\[0, 255\\]"),
    ("nan", "NaN"),
    ("actions_n", "do not match"),
    ("nokey", "missing key 'frames'"),
    ("short", "need at least 8"),
    ("ext", "unsupported extension"),
])
def test_bad_files_fail_clearly(tmp_path, case, pattern):
    f = np.zeros((2, 10, 8, 8, 3), np.uint8)
    a = np.zeros((2, 10, 4), np.float32)
    p = tmp_path / f"{case}.npz"
    if case == "ndim":
        np.savez(p, frames=f[0])
    elif case == "float01":
        np.savez(p, frames=f.astype(np.float32) + 0.5)
    elif case == "nan":
        g = f.astype(np.float32)
        g[0, 0, 0, 0, 0] = np.nan
        np.savez(p, frames=g)
    elif case == "actions_n":
        np.savez(p, frames=f, actions=a[:, :9])
    elif case == "nokey":
        np.savez(p, video=f)
    elif case == "short":
        np.savez(p, frames=f[:, :5])
    elif case == "ext":
        p = tmp_path / "v.mp4"
        p.write_bytes(b"x")
    with pytest.raises(DataError, match=pattern) as e:
        VideoWindowDataset.from_file(p, window=8)
    assert str(p) in str(e.value)
