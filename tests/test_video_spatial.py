"""Spatial-latent (ConvGRU) video backbone: causality with actions, carried state, two-stream teacher forcing."""

from __future__ import annotations

import pytest
import torch

from dforce.engine.config import load_config
from dforce.errors import ConfigError
from dforce.recipes.video.conv_rnn import ConvGRUDenoiser
from dforce.recipes.video.recipe import CleanPastTeacherForcing, VideoRunConfig, VideoTokenDataset, build_video_model

SPATIAL = ["latent=spatial", "data.resolution=16", "data.window=8", "context=2", "model.width=8", "model.depth=2",
           "codec.channels=8", "codec.max_channels=16", "codec.bottom=4", "diffusion.num_levels=100"]


def _model(frame_stack: int = 1) -> ConvGRUDenoiser:
    cfg = load_config(VideoRunConfig, None, SPATIAL + [f"frame_stack={frame_stack}"])
    torch.manual_seed(0)
    model = build_video_model(cfg, n_actions=5).eval()
    with torch.no_grad():  # zero-initialized output / FiLM layers would hide any dependence
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("frame_stack", [1, 2])
def test_spatial_causal_in_frames_levels_and_actions(frame_stack):
    model = _model(frame_stack)
    assert isinstance(model, ConvGRUDenoiser)
    T, D = 6, 3 * frame_stack
    x, lv, cond = torch.randn(2, T, D, 16, 16), torch.randint(0, 101, (2, T)), torch.randn(2, T, 5 * frame_stack)
    with torch.no_grad():
        y = model(x, lv, cond)
        x2, lv2, c2 = x.clone(), lv.clone(), cond.clone()
        x2[:, 3:], lv2[:, 3:] = torch.randn_like(x2[:, 3:]), torch.randint(0, 101, (2, 3))
        c2[:, 3:] = torch.randn(2, 3, 5 * frame_stack)
        y2 = model(x2, lv2, c2)
        c3 = cond.clone()
        c3[:, 3] += 1.0  # the action into token 3 must change token 3 (and only from 3 on)
        y3 = model(x, lv, c3)
        x4 = x.clone()
        x4[:, 1] += 1.0  # a past frame must change later predictions through the latent
        y4 = model(x4, lv, cond)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, :3], y2[:, :3])
    assert not torch.allclose(y[:, 3:], y2[:, 3:])
    torch.testing.assert_close(y[:, :3], y3[:, :3])
    assert (y3[:, 3] - y[:, 3]).abs().max() > 1e-6
    assert (y4[:, 4] - y[:, 4]).abs().max() > 1e-6


def test_spatial_state_carried_across_calls_equals_recompute():
    model = _model()
    x, lv, cond = torch.randn(3, 7, 3, 16, 16), torch.randint(0, 101, (3, 7)), torch.randn(3, 7, 5)
    with torch.no_grad():
        full = model(x, lv, cond)
        s = model.absorb(x[:, :2], lv[:, :2], cond[:, :2], model.init_state(3))
        s = model.absorb(x[:, 2:4], lv[:, 2:4], cond[:, 2:4], s)  # state carried over two calls
        assert s.shape == (2, 3, 8, 4, 4)
        torch.testing.assert_close(model(x[:, 4:], lv[:, 4:], cond[:, 4:], s), full[:, 4:])
        torch.testing.assert_close(model.absorb(x[:, 4:], lv[:, 4:], cond[:, 4:], s), model.absorb(x, lv, cond))
        rep = model.repeat_state(s, 2)
        assert rep.shape == (2, 6, 8, 4, 4)
        torch.testing.assert_close(rep[:, 1], s[:, 0])


def test_clean_past_teacher_forcing_matches_sequential():
    """forward_clean_past at t equals a forward of noisy x_t after absorbing the clean tokens < t."""
    model = _model()
    clean, x = torch.randn(2, 5, 3, 16, 16), torch.randn(2, 5, 3, 16, 16)
    lv, cond = torch.randint(1, 101, (2, 5)), torch.randn(2, 5, 5)
    with torch.no_grad():
        both = model.forward_clean_past(x, lv, clean, cond)
        for t in range(5):
            st = model.absorb(clean[:, :t], torch.zeros(2, t, dtype=torch.long), cond[:, :t]) if t else None
            one = model(x[:, t:t + 1], lv[:, t:t + 1], cond[:, t:t + 1], st)
            torch.testing.assert_close(both[:, t:t + 1], one, atol=1e-5, rtol=1e-4)
        # the wrapper the trainer sees splits (actions, clean frames) out of cond
        ds = VideoTokenDataset(torch.randint(0, 255, (1, 9, 3, 16, 16), dtype=torch.uint8),
                               torch.eye(5)[torch.randint(0, 5, (1, 9))], window=5, clean_in_cond=True)
        b = ds.get_batch(torch.tensor([1]))
        assert b["cond"].shape == (1, 5, 5 + 3 * 16 * 16)
        wrap = CleanPastTeacherForcing(model, 5)
        torch.testing.assert_close(wrap(x[:1], lv[:1], b["cond"]),
                                   model.forward_clean_past(x[:1], lv[:1], b["x"], b["cond"][..., :5]))


def test_spatial_config_errors():
    with pytest.raises(ConfigError):
        load_config(VideoRunConfig, None, ["latent=grid"])
    with pytest.raises(ConfigError):
        load_config(VideoRunConfig, None, ["latent=spatial", "model.backbone=transformer"])
    with pytest.raises(ConfigError):  # 16 px cannot halve to a 3x3 latent
        build_video_model(load_config(VideoRunConfig, None, SPATIAL + ["codec.bottom=2", "data.resolution=12"]), 5)


def test_spatial_teacher_forcing_run_saves_and_reloads(tmp_path):
    """A two-stream teacher-forcing run trains, reloads as the plain model and rolls out."""
    from dforce.recipes.video.recipe import load_run, load_video_data, rollout, train_video

    over = SPATIAL + ["method=teacher_forcing", "data.episodes=4", "data.episode_length=10", "data.eval_episodes=2",
                      "data.eval_multiple=2", "train.steps=3", "train.batch_size=4", "train.checkpoint_every=3",
                      "train.log_every=1", "sampler.steps=2"]
    cfg = load_config(VideoRunConfig, None, over)
    res = train_video(cfg, tmp_path / "tf", progress=False)
    assert isinstance(res.model, ConvGRUDenoiser) and res.step == 3
    model, schedule, cfg2 = load_run(tmp_path / "tf")
    # 3 steps are too few for the EMA to forget its init (steps · (1 − decay) < 3): the run samples with its raw weights
    for a, b in zip(model.state_dict().values(), res.raw_model.state_dict().values()):
        torch.testing.assert_close(a, b)
    frames, actions = load_video_data(cfg2.data, "eval")
    video, _ = rollout(model, schedule, cfg2, frames, actions, 5)
    assert video.shape[1] == 7 and torch.isfinite(video).all()
