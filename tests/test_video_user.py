"""Your own video, honestly evaluated: the held-out split by episode never overlaps training, copy-last-frame and
the moving-pixel error on hand-made frames, the loss weights of moving pixels, the previous-frame input, and the
outputs of `dforce video sample` (GIF, MP4, PNG strips, JSON) exist and decode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dforce.cli import main as cli_main
from dforce.errors import DataError
from dforce.recipes.video.evaluate import (copy_last_rollout, horizon_multiples, moving_mask, moving_pixel_error,
                                           rollout_scores)
from dforce.recipes.video.heldout import episode_split
from dforce.recipes.video.recipe import motion_weights


@pytest.mark.parametrize("n, k, seed", [(2, 1, 0), (5, 2, 3), (17, 8, 1), (40, 39, 2), (40, 100, 5)])
def test_heldout_split_never_overlaps(n, k, seed):
    train, held = episode_split(n, k, seed)
    assert len(set(train) & set(held)) == 0 and sorted([*train, *held]) == list(range(n))
    assert len(held) == min(k, n - 1) and len(train) >= 1
    again = episode_split(n, k, seed)
    assert (again[1] == held).all()  # seeded: the same split every time


def test_heldout_chosen_by_the_user_and_errors():
    train, held = episode_split(6, 2, heldout=[5, 0])
    assert held.tolist() == [0, 5] and train.tolist() == [1, 2, 3, 4]
    for bad, msg in (([6], "not in 0..5"), ([1, 1], "twice"), ([0, 1, 2, 3, 4, 5], "between 1 and 5")):
        with pytest.raises(DataError, match=msg):
            episode_split(6, 2, heldout=bad)
    with pytest.raises(DataError, match="at least 2 episodes"):
        episode_split(1, 1)


def _frames() -> torch.Tensor:
    """2 videos of 5 frames, 1 channel 4x4, [-1, 1]: background -1, a 1-pixel 'ball' (+1) moving right one pixel a
    frame in row 1, from column 0."""
    v = -torch.ones(2, 5, 1, 4, 4)
    for t in range(4):
        v[:, t, 0, 1, t] = 1.0
    v[:, 4] = v[:, 3]  # the ball stops: no pixel changes into frame 4
    return v


def test_copy_last_and_moving_pixels_on_hand_made_frames():
    truth = _frames()
    copy = copy_last_rollout(truth, context=2, length=3)
    assert copy.shape == truth.shape and torch.equal(copy[:, 2:], truth[:, 1:2].expand(-1, 3, -1, -1, -1))
    mask = moving_mask(truth, context=2)  # (2, 3, 4, 4): frames 2, 3, 4 against 1, 2, 3
    assert mask.shape == (2, 3, 4, 4)
    assert mask[0, 0].nonzero().tolist() == [[1, 1], [1, 2]]  # where the ball was and is
    assert mask[0, 1].nonzero().tolist() == [[1, 2], [1, 3]] and not mask[:, 2].any()
    # copying is wrong on exactly one of the two moving pixels of each moving frame, by 2 (255 grey levels)
    err = moving_pixel_error(copy[:, 2:], truth[:, 2:], mask)
    # frame 2: copy has the ball at col 1 (truth col 2): both moving pixels wrong by 2; frame 3: copy col 1, truth
    # col 3, moving pixels (1, 2), (1, 3): truth -1/+1, copy -1/-1 -> one wrong by 2. Pooled: (2·4 + 1·4) / 4 pixels
    assert err == pytest.approx(np.sqrt((2 * 4 + 1 * 4) / 4) * 127.5)
    assert moving_pixel_error(truth[:, 2:], truth[:, 2:], mask) == 0.0
    scores = rollout_scores({"copy": copy, "truth": truth}, truth, context=2, train_length=1, multiples=(1, 2, 4))
    assert [r["horizon"] for r in scores["copy"]] == ["1x", "2x", "all"]  # 4x needs 4 generated frames
    one = scores["copy"][0]
    assert one["moving_err"] == pytest.approx(2 * 127.5) and one["moving_frac"] == pytest.approx(2 / 16)
    assert scores["truth"][-1]["moving_err"] == 0.0 and scores["truth"][0]["psnr"] == 100.0
    assert horizon_multiples(64, 16) == (1, 2, 4) and horizon_multiples(40, 16, (1, 2, 4, 8)) == (1, 2)


def test_motion_weights_favour_moving_pixels():
    truth = _frames()
    w = motion_weights(truth[:, 1:3], truth[:, 0:2], weight=4.0)  # (2, 2, 16)
    assert w.shape == (2, 2, 16) and torch.allclose(w.mean(-1), torch.ones(2, 2))
    grid = w[0, 0].view(4, 4)
    assert grid[1, 1] > grid[3, 3] and torch.isclose(grid[1, 1] / grid[3, 3], torch.tensor(5.0))
    still = motion_weights(truth[:, :1], truth[:, :1], weight=4.0)
    assert torch.allclose(still, torch.ones_like(still))


def test_previous_frame_input_is_causal_and_carried():
    from dforce.recipes.video.conv_rnn import ConvGRUDenoiser

    torch.manual_seed(0)
    m = ConvGRUDenoiser((3, 16, 16), 100, 5, 8, 16, 4, 8, 1, prev_frame=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        x, lv, c = torch.randn(2, 6, 3, 16, 16), torch.randint(0, 101, (2, 6)), torch.randn(2, 6, 5)
        y = m(x, lv, c)
        x2 = x.clone()
        x2[:, 3:] = torch.randn_like(x2[:, 3:])
        assert torch.equal(m(x2, lv, c)[:, :3], y[:, :3])  # later tokens never reach earlier ones
        state = m.absorb(x[:, :3], lv[:, :3], c[:, :3])
        torch.testing.assert_close(m(x[:, 3:], lv[:, 3:], c[:, 3:], state), y[:, 3:], atol=1e-5, rtol=0)
        x3 = x.clone()
        x3[:, 2] += 1.0  # token 2 reaches token 3 through the previous-frame input too
        assert (m(x3, lv, c)[:, 3] - y[:, 3]).abs().max() > 1e-3
        lv3 = lv.clone()
        lv3[:, 2] = (lv3[:, 2] + 50) % 101  # ... and its level
        assert (m(x, lv3, c)[:, 3] - y[:, 3]).abs().max() > 1e-4


TINY = ["latent=spatial", "data.resolution=16", "data.window=8", "context=2", "model.width=8", "model.depth=1",
        "codec.channels=8", "codec.max_channels=16", "codec.bottom=4", "diffusion.num_levels=50", "train.steps=4",
        "train.warmup_steps=1", "sampler.steps=3", "data.eval_episodes=2", "prev_frame=true", "motion_weight=2"]


def test_sample_uses_heldout_episodes_and_writes_outputs_that_decode(tmp_path, capsys):
    import imageio.v2 as imageio
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = np.full((6, 20, 16, 16, 3), 30, np.uint8)
    for n in range(6):
        frames[n, :, n:n + 2, 2:4] = 40 * n + 20  # each episode recognisable by its square
        for t in range(20):
            frames[n, t, 10:12, t % 14:t % 14 + 2] = 250  # a moving 2-pixel ball
    actions = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (6, 20))]
    np.savez(tmp_path / "v.npz", frames=frames, actions=actions)
    run = tmp_path / "run"
    assert cli_main(["video", "train", "--data", str(tmp_path / "v.npz"), "--out", str(run), "--quiet",
                     "--threads", "1", *TINY]) == 0
    capsys.readouterr()
    from dforce.recipes.video.recipe import load_run, sampling_weights

    assert sampling_weights(run, load_run(run)[2]).name == "model.safetensors"  # 4 steps: the EMA is still the init
    split = json.loads((run / "split.json").read_text())
    assert split["kind"] == "file" and len(split["heldout"]) == 2
    assert not set(split["train"]) & set(split["heldout"]) and len(split["train"]) + 2 == 6
    assert cli_main(["video", "sample", str(run), "--length", "2x", "--episodes", "2", "--no-frechet", "--quiet",
                     "--threads", "1", "--out", str(tmp_path / "out" / "roll")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heldout_episodes"] == split["heldout"]
    assert [r["horizon"] for r in report["scores"]["df"]] == ["1x", "2x", "all"]
    for row in report["scores"]["df"] + report["scores"]["copy_last"]:
        assert {"psnr", "ssim", "moving_err"} <= set(row)
    files = report["files"]
    assert len(imageio.mimread(files["gif"])) == 2 + 16
    reader = imageio.get_reader(files["mp4"])
    assert sum(1 for _ in reader) == 2 + 16
    assert Image.open(files["strip0"]).size[0] > 50 and Image.open(files["strip1"]).size[1] > 50
    assert json.loads((tmp_path / "out" / "roll.json").read_text())["scores"] == report["scores"]
    # asking for more held-out videos than the run holds out is an error, not a silent reuse of training videos
    assert cli_main(["video", "sample", str(run), "--episodes", "3", "--no-frechet", "--quiet", "--length", "8"]) == 2
    assert "holds out 2 episodes" in capsys.readouterr().err
    # history guidance samples a prev_frame model too (its state declares where it keeps the batch)
    assert cli_main(["video", "sample", str(run), "--episodes", "1", "--no-frechet", "--quiet", "--length", "8",
                     "--history-guidance", "vanilla:1.5", "--out", str(tmp_path / "out" / "hg")]) == 0
    assert json.loads((tmp_path / "out" / "hg.json").read_text())["scores"]["df"]


@pytest.mark.parametrize("mode", ["vanilla", "stabilized_temporal"])
def test_history_guidance_on_a_prev_frame_model_keeps_each_video_apart(mode):
    """A prev_frame ConvGRU's state (latent with the batch on dim 1, last token on dim 0) is stacked and sliced by
    history guidance per part: a video's guided rollout does not depend on the other videos of its batch, and
    ω = 0 is no guidance."""
    from dforce.diffusion import NoiseSchedule
    from dforce.history_guidance import HistoryGuidanceConfig, state_cat, state_take
    from dforce.recipes.video.conv_rnn import ConvGRUDenoiser, PrevFrameState
    from dforce.sampler import SamplerConfig, sample

    torch.manual_seed(0)
    m = ConvGRUDenoiser((1, 8, 8), 20, 0, 4, 8, 4, 4, 1, prev_frame=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    a, b = m.init_state(2), m.init_state(3)
    a = PrevFrameState(torch.randn_like(a.z), torch.randn_like(a.x_prev), a.k_prev)
    both = state_cat([a, b])
    assert isinstance(both, PrevFrameState) and both.z.shape[1] == 5 and both.x_prev.shape[0] == 5
    assert all(torch.equal(u, v) for u, v in zip(state_take(both, 0, 2), a))
    sch = NoiseSchedule(num_levels=20, objective="v")
    ctx = torch.randn(2, 3, 1, 8, 8)

    def roll(c, scale):
        cfg = SamplerConfig(steps=3, window=2, stabilization_level=2,
                            history_guidance=HistoryGuidanceConfig(mode=mode, scale=scale))
        return sample(m, sch, cfg, context=c, length=4, generator=torch.Generator().manual_seed(1)).x

    together = roll(ctx, 1.5)
    assert torch.isfinite(together).all()
    stab = 2 if mode.startswith("stabilized") else 0  # plain modes show the generated history clean (DFoT)
    plain = sample(m, sch, SamplerConfig(steps=3, window=2, stabilization_level=stab), context=ctx, length=4,
                   generator=torch.Generator().manual_seed(1)).x
    assert torch.equal(roll(ctx, 0.0), plain) and (together - plain).abs().max() > 1e-4
    other = ctx.clone()
    other[1] = torch.randn_like(other[1])  # another second video (same noise draws): the first one's rollout stays
    moved = roll(other, 1.5)
    torch.testing.assert_close(moved[0], together[0], rtol=0, atol=1e-6)
    assert (moved[1, 3:] - together[1, 3:]).abs().max() > 1e-4
