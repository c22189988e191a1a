"""Video metrics: PSNR/SSIM known values, Fréchet distance blow-up detection, feature-net round trip."""

import math

import numpy as np
import pytest
import torch
from benchutil import load_benchmark

from dforce.recipes.video.synthetic import MovingDigitsConfig, generate_moving_digits
from dforce.recipes.video.common import to_model_frames
from dforce.recipes.video.viz import plot_horizon_curves, write_rollout_strip, write_rollout_video
from dforce.errors import CheckpointError, ConfigError
from dforce.recipes.video.metrics import (
    FeatureNet, FeatureNetConfig, _gaussian_window, frechet_distance, horizon_metrics, horizon_windows, load_feature_net,
    per_frame_metrics, psnr, save_feature_net, ssim, train_feature_net, video_features,
)


# ---------------------------------------------------------------- PSNR / SSIM
def test_psnr_known_value():
    x = torch.rand(2, 3, 3, 8, 8) * 1.8 - 0.9
    # constant error 0.1 on a data range of 2: 10 log10(4 / 0.01) = 26.0206 dB
    torch.testing.assert_close(psnr(x + 0.1, x), torch.full((2, 3), 10 * math.log10(400.0)), atol=1e-4, rtol=0)
    assert torch.isinf(psnr(x, x)).all()
    assert (per_frame_metrics(x[None, 0], x[None, 0])["psnr"] == 100).all()  # capped for averaging


def _ssim_reference(x, y, data_range=2.0):
    """Plain loop over window positions, full 2-D window, population statistics (Wang et al. 2004)."""
    g = _gaussian_window(11, 1.5).double()
    w = torch.outer(g, g)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                a, b = x[c, i:i + 11, j:j + 11].double(), y[c, i:i + 11, j:j + 11].double()
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return torch.stack(vals).mean()


def test_ssim_matches_reference_loop_on_odd_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 13, 15, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 13, 15, generator=g)).clamp(-1, 1)
    torch.testing.assert_close(ssim(y, x).double(), _ssim_reference(y, x), atol=1e-5, rtol=0)  # float32 sums


def test_ssim_known_cases():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(4), atol=1e-5, rtol=0)
    # constant frames: variances vanish, SSIM = (2 mx my + c1) / (mx^2 + my^2 + c1)
    a, b, c1 = 0.5, -0.2, (0.01 * 2) ** 2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b))
    torch.testing.assert_close(got, torch.tensor([expect]), atol=1e-5, rtol=0)
    noisy = [ssim((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1), x).mean() for s in (0.05, 0.2, 0.8)]
    assert noisy[0] > noisy[1] > noisy[2]  # monotone in the noise level
    other = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    assert ssim(other, x).abs().max() < 0.1  # independent uniform noise: no shared structure
    torch.testing.assert_close(ssim(x, other), ssim(other, x))  # symmetric


def test_ssim_matches_skimage_if_installed():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 20, 20, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(3, 20, 20, generator=g)).clamp(-1, 1)
    ref = skm.structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), data_range=2.0,
                                    channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert abs(ssim(x, y).item() - ref) < 1e-4


# ---------------------------------------------------------------- Fréchet distance
def test_frechet_exact_cases():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) < 1e-6
    shift = torch.arange(8, dtype=torch.float64)
    # identical covariances: the trace term cancels and only |mu_a - mu_b|^2 = sum(k^2) remains
    assert abs(frechet_distance(a, a + shift) - (shift**2).sum().item()) < 1e-6
    # scaling by 2: Tr(S + 4S - 2*2S) = Tr(S)
    assert abs(frechet_distance(a, 2 * a) - (np.trace(np.cov(a.numpy(), rowvar=False)) + a.mean(0).pow(2).sum().item())) < 1e-5
    # a collapsed set (zero covariance) is handled by the stabilized sqrtm
    assert np.isfinite(frechet_distance(a, torch.zeros(50, 8, dtype=torch.float64)))


@pytest.fixture(scope="module")
def digits():
    """Train / held-out / held-out moving-digit videos at 16x16 and a feature net trained on the first."""
    cfg = MovingDigitsConfig(size=16)
    tr, te, te2 = (generate_moving_digits(256, 16, seed=s, config=cfg) for s in (0, 1, 2))
    X, Y, Z = (to_model_frames(d.frames) for d in (tr, te, te2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is as fast and does not fight other processes
    try:
        net = train_feature_net(X, torch.from_numpy(tr.actions), FeatureNetConfig(size=16, width=16, n_actions=5),
                                steps=300, progress=False)
    finally:
        torch.set_num_threads(threads)
    return net, Y, Z


def test_frechet_detects_blowups(digits):
    """Held-out real vs real is ~0.3 with this seed; every blow-up was measured >= 18 (>60x).

    A 10x margin leaves room for platform differences in the 300 training steps.
    """
    net, Y, Z = digits
    ref = video_features(net, Y)
    fd = lambda v: frechet_distance(video_features(net, v), ref)  # noqa: E731
    real = fd(Z)
    g = torch.Generator().manual_seed(0)
    cases = {
        "saturated": (3 * Z + 3).clamp(-1, 1),  # overexposed: background grey, objects white
        "noise": torch.rand(Z.shape, generator=g) * 2 - 1,
        "frozen": Z[:, :1].expand_as(Z).contiguous(),  # each rollout repeats its first (real) frame
    }
    for name, v in cases.items():
        assert fd(v) > 10 * real, (name, fd(v), real)


def test_feature_net_save_load_roundtrip(digits, tmp_path):
    net, Y, _ = digits
    save_feature_net(net, tmp_path / "fnet")
    net2 = load_feature_net(tmp_path / "fnet")
    assert net2.config == net.config
    assert torch.equal(video_features(net, Y[:4]), video_features(net2, Y[:4]))
    (tmp_path / "fnet" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_feature_net(tmp_path / "fnet")



def test_feature_net_provenance_is_checked_on_load(digits, tmp_path):
    """A saved feature net records the data it was trained on; loading it for other data is refused (the
    Fréchet distances would silently change scale), and so is a net without a record when one is asked for."""
    from dforce.recipes.video.recipe import VideoDataConfig, feature_provenance

    net, Y, _ = digits
    data = VideoDataConfig(source="digits", resolution=16, episode_length=32, window=8)
    save_feature_net(net, tmp_path / "fnet", provenance={**feature_provenance(data, 400), "train_seconds": 1.0})
    # the held-out split and the training window do not change the training videos: accepted
    same = VideoDataConfig(source="digits", resolution=16, episode_length=32, window=4, eval_episodes=32)
    load_feature_net(tmp_path / "fnet", expect=feature_provenance(same))
    load_feature_net(tmp_path / "fnet", expect=feature_provenance(same, 400))
    with pytest.raises(ConfigError, match="feature_steps: saved 400, needed 50"):
        load_feature_net(tmp_path / "fnet", expect=feature_provenance(same, 50))
    other = VideoDataConfig(source="vizdoom", resolution=16, episode_length=32, window=8)
    with pytest.raises(ConfigError, match="trained on other data.*'source': 'digits'.*'source': 'vizdoom'"):
        load_feature_net(tmp_path / "fnet", expect=feature_provenance(other))
    save_feature_net(net, tmp_path / "bare")  # no provenance recorded
    load_feature_net(tmp_path / "bare")  # fine when nothing is asked
    with pytest.raises(ConfigError, match="no provenance.json"):
        load_feature_net(tmp_path / "bare", expect=feature_provenance(data))
    (tmp_path / "fnet" / "provenance.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="provenance.json: not valid JSON"):
        load_feature_net(tmp_path / "fnet", expect=feature_provenance(data))

# ---------------------------------------------------------------- horizons + plots
def test_horizon_buckets_and_plots(digits, tmp_path):
    net, Y, Z = digits
    T = 4
    assert horizon_windows(160, 16) == [(1, 0, 16), (5, 64, 80), (10, 144, 160)]
    true = Y[:8, :16]
    pred = true.clone()
    pred[:, 8:] = (pred[:, 8:] + 0.5).clamp(-1, 1)  # degrades in the second half
    rows = horizon_metrics(pred, true, T, feature_net=net, multiples=(1, 2, 3, 4, 5))
    assert [r["multiple"] for r in rows] == [1, 2, 3, 4]  # 5 * 4 > 16 frames
    assert rows[0]["psnr"] == 100 and rows[0]["ssim"] > 0.999 and rows[0]["frechet"] < 1e-6
    assert rows[3]["psnr"] < 20 and rows[3]["frechet"] > 1
    gif = write_rollout_video(tmp_path / "r.gif", {"truth": true[:2], "model": pred[:2]}, context=2)
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == 16 and frames[0].shape[1] > 2 * 32
    pf = per_frame_metrics(pred, true)
    png = plot_horizon_curves(tmp_path / "h.png", {"model": {"psnr": pf["psnr"],
                                                             "frechet": ([r["end"] for r in rows], [r["frechet"] for r in rows])}}, T)
    assert png.stat().st_size > 1000


def test_mp4_without_ffmpeg_fails_clearly(tmp_path):
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="imageio-ffmpeg"):
            write_rollout_video(tmp_path / "r.mp4", {"truth": torch.zeros(1, 3, 3, 8, 8)})
    else:
        path = write_rollout_video(tmp_path / "r.mp4", {"truth": torch.zeros(1, 3, 3, 8, 8)})
        assert path.stat().st_size > 0


def test_rollout_strip_places_frames(tmp_path):
    from PIL import Image

    truth = torch.full((1, 6, 3, 4, 4), -1.0)
    truth[0, 5] = 1.0  # only the last frame is white
    path = write_rollout_strip(tmp_path / "s.png", {"truth": truth, "m": truth}, [0, 5, 99], scale=2)
    img = np.asarray(Image.open(path))
    assert img.shape[2] == 3 and (img == 255).all(-1).sum() >= 2 * 8 * 8  # two white 8x8 tiles (t=5 per row)
    with pytest.raises(ConfigError):
        write_rollout_strip(tmp_path / "s.png", {"truth": truth}, [50])


def test_feature_net_short_training_runs_and_too_short_fails_clearly():
    """A few training steps work (the one-cycle warm-up is at least 2 steps); fewer than the minimum is a
    ConfigError naming the steps, not a ZeroDivisionError from the LR scheduler."""
    from dforce.errors import ConfigError
    from dforce.recipes.video.metrics import FEATURE_MIN_STEPS

    d = generate_moving_digits(8, 8, seed=0, config=MovingDigitsConfig(size=16))
    X = to_model_frames(d.frames)
    cfg = FeatureNetConfig(size=16, width=8, n_actions=5)
    for steps in (FEATURE_MIN_STEPS, 10):
        net = train_feature_net(X, torch.from_numpy(d.actions), cfg, steps=steps, batch_size=4, progress=False)
        assert torch.isfinite(video_features(net, X)).all()
    with pytest.raises(ConfigError, match="feature-net training steps"):
        train_feature_net(X, torch.from_numpy(d.actions), cfg, steps=FEATURE_MIN_STEPS - 1, progress=False)


def test_video_benchmark_train_reports_are_checked(tmp_path):
    """``benchmarks/video.py --eval-only --train-report``: training figures are carried over per method, and a
    report of another config, an eval-only report or a method reported twice is refused with a ConfigError."""
    import json

    from dforce.errors import ConfigError

    bench = load_benchmark("video")
    horizons = [{"multiple": 1, "start": 0, "end": 8, "psnr": 12.0, "ssim": 0.2, "frechet": 1.0}]

    def report(name, methods, config="c.yaml", overrides=(), eval_only=False):
        rep = {"config": config, "overrides": list(overrides), "eval_only": eval_only, "episodes": 8,
               "methods": {m: {"train_seconds": 10.0 + i, "train_steps": 5, "final_loss": 0.1, "horizons": horizons}
                           for i, m in enumerate(methods)}}
        (tmp_path / name).write_text(json.dumps(rep))
        return str(tmp_path / name)

    a, b = report("a.json", ["teacher_forcing"]), report("b.json", ["df", "full_sequence"])
    got = bench.training_figures([a, b], "c.yaml", [])
    assert set(got) == {"teacher_forcing", "df", "full_sequence"}
    assert got["full_sequence"]["train_seconds"] == 11.0 and got["df"]["train_report"] == b
    assert got["df"]["train_report_horizons"] == horizons
    for bad, match in [([report("o.json", ["df"], overrides=["train.steps=3"])], "not a training run"),
                       ([report("e.json", ["df"], eval_only=True)], "not a training run"),
                       ([b, report("d.json", ["df"])], "appears in"),
                       ([str(tmp_path / "missing.json")], "cannot read")]:
        with pytest.raises(ConfigError, match=match):
            bench.training_figures(bad, "c.yaml", [])


def test_video_benchmark_commands_fail_clearly_on_bad_input(tmp_path):
    """The benchmark entry points: one-line messages and exit code 2, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dforce.recipes.video.recipe import VideoDataConfig, feature_provenance

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    other = VideoDataConfig(source="vizdoom", resolution=16)  # a saved feature net of other data
    save_feature_net(FeatureNet(FeatureNetConfig(size=16, width=8)), tmp_path / "fnet",
                     provenance=feature_provenance(other, 400))
    cases = [
        ([sys.executable, "benchmarks/video.py", "--config", "video_digits_tiny", "--eval-only",
          "--feature-net", str(tmp_path / "fnet"), "--runs", str(tmp_path / "runs"), "--name", str(tmp_path / "r"),
          "--no-media", "--quiet"], "feature net was trained on other data"),
        # the other entry points that load a saved feature net check it too (steps_study before any training)
        ([sys.executable, "benchmarks/studies/steps_study.py", "--task", "video", "--video-config", "video_digits_tiny",
          "--feature-net", str(tmp_path / "fnet"), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "s.json")],
         "feature net was trained on other data"),
        ([sys.executable, "benchmarks/studies/video_df_longer.py", "--config", "video_digits_tiny", "--run",
          f"df={tmp_path / 'run'}", "--feature-net", str(tmp_path / "fnet"), "--episodes", "2"],
         "feature net was trained on other data"),
        ([sys.executable, "benchmarks/video.py", "--eval-only", "--train-report", str(tmp_path / "missing.json")],
         "cannot read a results file"),
        ([sys.executable, "benchmarks/video.py", "--train-report", str(tmp_path / "a.json")], "goes with --eval-only"),
        ([sys.executable, "benchmarks/studies/steps_study.py", "--task", "video", "--steps", "5,x"], "positive integers"),
        (["bash", "benchmarks/video_benchmark.sh", str(tmp_path / "nope.yaml"), "tag"], "usage:"),
    ]
    for cmd, message in cases:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (cmd, r.returncode, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)


def test_video_seeds_aggregates_and_checks_reports(tmp_path):
    """``benchmarks/studies/video_seeds.py``: per-seed ratios and target counts from the combined results of several
    training seeds; reports of another benchmark (other overrides) or repeated seeds are refused."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dforce.errors import ConfigError

    root = Path(__file__).parents[1]
    vs = load_benchmark("video_seeds")

    def report(name, seed, frechet, overrides=()):
        hs = ("1x", "5x", "10x", "30x")
        summary = {m: {"frechet": dict(zip(hs, f)), "psnr": dict(zip(hs, (20.0, 18.0, 16.0, 15.0)))}
                   for m, f in frechet.items()}
        rep = {"config": "c.yaml", "overrides": [*overrides, *([f"train.seed={seed}"] if seed else [])],
               "eval_only": True, "episodes": 32, "rollout_frames": 480, "train_length": 16, "resolution": 32,
               "summary": summary}
        (tmp_path / name).write_text(json.dumps(rep))
        return tmp_path / name

    def _write(path, text):
        path.write_text(text)
        return path

    a = report("a.json", 0, {"df": (4, 4, 4, 5), "teacher_forcing": (4, 8, 12, 14), "full_sequence": (20, 30, 30, 30)})
    b = report("b.json", 1, {"df": (4, 8, 8, 9), "teacher_forcing": (4, 5, 5, 5), "full_sequence": (20, 30, 30, 30)})
    res = vs.main([str(a), str(b), "--name", "s", "--out-dir", str(tmp_path / "out")])
    assert res["seeds"] == [0, 1]
    assert res["per_seed"][0]["ratio_last_over_first"] == {"df": 1.25, "teacher_forcing": 3.5, "full_sequence": 1.5}
    assert res["counts"] == {"seeds": 2, "df_within_1.5x": 1, "a_baseline_over_3x": 1, "target_met": 1,
                             "df_below_teacher_forcing_at_last": 1, "df_lowest_at_last": 1}
    assert res["aggregate"]["df"]["frechet"]["30x"]["mean"] == 7.0
    assert (tmp_path / "out" / "s.png").stat().st_size > 0 and "| 1 | df |" in (tmp_path / "out" / "s.md").read_text()
    c = report("c.json", 2, {m: (1, 1, 1, 1) for m in vs.METHODS}, overrides=["train.steps=10"])
    d = report("d.json", 1, {m: (1, 1, 1, 1) for m in vs.METHODS})
    for bad, match in [([a, c], "only train.seed may differ"), ([a, b, d], "seeds repeat"), ([a], "at least two"),
                       ([a, tmp_path / "missing.json"], "does not exist"),
                       ([a, _write(tmp_path / "bad.json", "{")], "not valid JSON"),
                       ([a, _write(tmp_path / "train.json", json.dumps({"summary": {}, "eval_only": False}))],
                        "not the combined")]:
        with pytest.raises(ConfigError, match=match):
            vs.load_reports(bad)
    r = subprocess.run([sys.executable, "benchmarks/studies/video_seeds.py", str(a), str(c)], cwd=root, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=120)
    assert r.returncode == 2 and "only train.seed may differ" in r.stderr and "Traceback" not in r.stderr
