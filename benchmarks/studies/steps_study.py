"""Quality vs number of DDIM sampling steps S: how few steps keep the sample quality?

Writes ``benchmarks/results/studies/steps_study.json`` and ``benchmarks/results/studies/steps_study.md``.

:func:`steps_study` is generic: it takes ``sample_and_score(S) -> metric`` for any recipe and reports the
metric for every S and the smallest S whose metric is within ``tolerance`` (5%) of the metric at the
reference S (K/10 by default). This script runs it for the synthetic noisy-sines data (energy distance,
lower is better) with a small RNN trained here (cached in ``--run-dir``, reused when present):

    nice -n 10 python benchmarks/studies/steps_study.py                 # ~5-10 min on the loaded 2-core box

and for the recipes the issue names (each trains its small preset once, cached in ``runs/steps_study_<task>``):

    nice -n 10 python benchmarks/studies/steps_study.py --task forecast   # exchange_rate_nips CRPS-sum (~3-5 min)
    nice -n 10 python benchmarks/studies/steps_study.py --task video      # moving digits rollout Fréchet (~10 min)

or for a trained run, e.g. the video benchmark's DF run and feature net (ViZDoom 32 px):

    python benchmarks/studies/steps_study.py --task video --video-config video_vizdoom32_spatial \
        --run-dir runs/bench_video_vizdoom32/df --feature-net benchmarks/results/video_vizdoom32_feature_net \
        --episodes 16 --steps 5,10,20,50

For another recipe, build the callable from its trained model and metric and call :func:`steps_study`
(``task`` names the entry of ``min_steps`` that ``benchmarks/sampling.py`` reports), e.g.::

    from steps_study import steps_study, write_results
    res = steps_study(lambda S: crps_sum_of_forecasts(model, S), steps=[5, 10, 25, 50, 100], ref_steps=100,
                      higher_is_better=False)
    write_results({"forecast": res})          # merges into benchmarks/results/studies/steps_study.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dforce.data.sequences import WindowDataset
from dforce.data.synthetic import energy_distance, noisy_sines
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine.checkpoint import load_weights
from dforce.engine.trainer import TrainConfig, train
from dforce.errors import ConfigError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

RESULTS = Path(__file__).resolve().parents[1] / "results" / "studies"


def steps_study(
    sample_and_score: Callable[[int], float],
    steps: Sequence[int],
    ref_steps: int,
    tolerance: float = 0.05,
    higher_is_better: bool = False,
) -> dict:
    """Score every S in ``steps`` (and ``ref_steps``) and find the smallest S within ``tolerance`` of the reference.

    Args:
        sample_and_score: ``S -> metric`` (sample with S DDIM steps, score the samples; deterministic seeds).
        steps: the S values to try; ref_steps: the reference S (the issue: K/10).
        tolerance: relative slack (0.05 = within 5% of the reference metric).
        higher_is_better: False for distances/errors (energy distance, CRPS), True for PSNR/success rates.
    Returns:
        ``{"scores": {S: metric}, "seconds": {S: s}, "ref_steps", "ref_score", "tolerance", "min_steps"}``;
        ``min_steps`` is None if no S qualifies.
    """
    scores, seconds = {}, {}
    for S in sorted(set(steps) | {ref_steps}):
        t = time.perf_counter()
        scores[S] = float(sample_and_score(S))
        seconds[S] = time.perf_counter() - t
    ref = scores[ref_steps]
    ok = (lambda v: v >= ref - tolerance * abs(ref)) if higher_is_better else (lambda v: v <= ref + tolerance * abs(ref))
    good = [S for S in sorted(scores) if ok(scores[S])]
    return {"scores": scores, "seconds": seconds, "ref_steps": ref_steps, "ref_score": ref,
            "tolerance": tolerance, "higher_is_better": higher_is_better, "min_steps": good[0] if good else None}


def write_results(studies: dict[str, dict], path: Path = RESULTS / "steps_study.json") -> dict:
    """Merge ``{task: steps_study(...)}`` into the results json (and its markdown table)."""
    data = json.loads(path.read_text()) if path.exists() else {"studies": {}}
    data["studies"].update(studies)
    data["min_steps"] = {t: s["min_steps"] for t, s in data["studies"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    lines = ["# Quality vs DDIM steps S (`python benchmarks/studies/steps_study.py`)", ""]
    for task, s in data["studies"].items():
        lines += [f"## {task}", "", s.get("description", ""), "",
                  f"reference S = {s['ref_steps']} (metric {s['ref_score']:.5g}); smallest S within "
                  f"{100 * s['tolerance']:.0f}%: **{s['min_steps']}**"
                  + (f"; real data vs real data: {s['data_vs_data']:.4f}" if "data_vs_data" in s else "")
                  + (f"; reference S with another sampling seed: {s['ref_other_seed']:.5g} (the metric's own "
                     f"sampling noise)" if "ref_other_seed" in s else ""), ""]
        extra = s.get("extra", {})
        lines += ["| S | metric | seconds |" + "".join(f" {n} |" for n in extra), "|---|---|---|" + "---|" * len(extra)]
        lines += [f"| {S} | {v:.5g} | {s['seconds'][S]:.1f} |" + "".join(f" {e[S]:.4g} |" for e in extra.values())
                  for S, v in s["scores"].items()]
        lines.append("")
    path.with_suffix(".md").write_text("\n".join(lines))
    return data


# ---------------------------------------------------------------------------------------------------
# the synthetic noisy-sines study
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinesStudyConfig:
    num_levels: int = 100  # K (the demo's value); the reference S is K/10 = 10
    seq_len: int = 32  # training horizon = sampled length (the demo's value)
    width: int = 64  # RNN width (smaller than the demo's 96 to train fast on the shared machine)
    train_steps: int = 800  # optimizer steps (the demo: 1500)
    batch_size: int = 32
    lr: float = 2e-3  # the demo's value
    eval_samples: int = 512  # sequences sampled per S (energy distance against as many held-out ones)
    schedule: str = "pyramid"
    steps: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 20, 50)  # S values tried
    seed: int = 0


def sines_study(cfg: SinesStudyConfig, run_dir: Path, progress: bool = False) -> dict:
    torch.manual_seed(cfg.seed)
    dcfg = NoiseScheduleConfig(num_levels=cfg.num_levels, beta_schedule="cosine", objective="v")
    schedule = NoiseSchedule(dcfg)
    model = build_model(ModelConfig(backbone="rnn", width=cfg.width, depth=2), (2,), cfg.num_levels)
    weights = run_dir / "ema.safetensors"
    if weights.exists():
        load_weights(model, weights)
    else:
        data = noisy_sines(2048, cfg.seq_len, seed=cfg.seed)
        tcfg = TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=100,
                           ema_decay=0.995, checkpoint_every=cfg.train_steps, log_every=100, seed=cfg.seed)
        model = train(model, schedule, WindowDataset(data, cfg.seq_len), tcfg, ObjectiveConfig(), run_dir=run_dir,
                      config_dict={"study": asdict(cfg)}, progress=progress).model
    model.eval()
    held_out = noisy_sines(cfg.eval_samples, cfg.seq_len, seed=cfg.seed + 1)

    def sample_and_score(S: int) -> float:
        scfg = SamplerConfig(steps=S, schedule=cfg.schedule, window=cfg.seq_len)
        x = sample(model, schedule, scfg, length=cfg.seq_len, batch=cfg.eval_samples, token_shape=(2,),
                   generator=torch.Generator().manual_seed(cfg.seed + 2)).x
        return energy_distance(x, held_out)

    res = steps_study(sample_and_score, cfg.steps, ref_steps=max(1, cfg.num_levels // 10))
    res["description"] = (f"noisy sines, RNN width {cfg.width} trained {cfg.train_steps} steps, K={cfg.num_levels}, "
                          f"{cfg.schedule} schedule, energy distance of {cfg.eval_samples} samples vs held-out data "
                          f"(lower is better)")
    res["config"] = asdict(cfg)
    # the metric's own noise floor: a second held-out set of real data against the first
    res["data_vs_data"] = energy_distance(noisy_sines(cfg.eval_samples, cfg.seq_len, seed=cfg.seed + 3), held_out)
    return res


# ---------------------------------------------------------------------------------------------------
# the forecasting recipe: exchange_rate_nips, CRPS-sum
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastStudyConfig:
    config: str = "forecast_small"  # the recipe's 2-CPU preset (K = 1000, so reference S = 100)
    num_samples: int = 200  # forecast paths per test window (the recipe: 100; doubled to halve the noise)
    steps: tuple[int, ...] = (2, 3, 5, 10, 20, 50)  # S values tried (besides the reference K/10)
    seed: int = 0


def forecast_study(cfg: ForecastStudyConfig, run_dir: Path, progress: bool = False) -> dict:
    """CRPS-sum (GluonTS evaluator) on the 5 exchange_rate_nips test windows vs S, one trained DF model."""
    from dforce.recipes.forecast.exchange_rate import load_exchange_rate_nips
    from dforce.engine.config import load_config
    from dforce.recipes.forecast.metrics import gluonts_forecast_metrics
    from dforce.recipes.forecast.recipe import ForecastConfig, fit, forecast, forecast_targets, load_run

    ds = load_exchange_rate_nips()
    if (run_dir / "forecast_meta.json").exists():
        model, schedule, fcfg, meta = load_run(run_dir)
        move, train_s = meta["move_scale"], meta.get("train_seconds")
    else:
        fcfg = replace(load_config(ForecastConfig, cfg.config, []), seed=cfg.seed)
        t0 = time.time()
        res = fit(fcfg, ds.train, run_dir=run_dir, progress=progress)
        model, schedule, move, train_s = res.model, res.schedule, res.move_scale, time.time() - t0
    y = forecast_targets(ds.test, ds.prediction_length)

    def crps_sum(S: int, seed: int = cfg.seed) -> float:
        fc = replace(fcfg, sampler=replace(fcfg.sampler, steps=S))
        smp = forecast(model, schedule, fc, ds.test, np.asarray(move), num_samples=cfg.num_samples, seed=seed)
        return gluonts_forecast_metrics(smp, y)["crps_sum"]

    K = fcfg.diffusion.num_levels
    res = steps_study(crps_sum, cfg.steps, ref_steps=max(1, K // 10))
    # the metric's own sampling noise: the reference S with another sampling seed
    res["ref_other_seed"] = crps_sum(res["ref_steps"], seed=cfg.seed + 1)
    res["description"] = (f"exchange_rate_nips, `{cfg.config}` ({fcfg.model.backbone} {fcfg.model.depth}x"
                          f"{fcfg.model.width}, K={K}, {fcfg.sampler.schedule} schedule, window "
                          f"{fcfg.sampler.window}), trained once with early stopping (seed {cfg.seed}"
                          + (f", {train_s:.0f} s" if train_s else "") + f"); CRPS-sum (GluonTS "
                          f"m_sum_mean_wQuantileLoss) of {cfg.num_samples} paths on the 5 test windows, same "
                          f"sampling seed for every S (lower is better)")
    res["config"] = asdict(cfg)
    return res


# ---------------------------------------------------------------------------------------------------
# the video recipe: moving digits 16 px, PSNR of rollouts
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoStudyConfig:
    config: str = "video_digits_tiny"  # the recipe's minutes-scale CPU preset (K = 1000)
    horizon: int = 4  # rollout length in training lengths T (4 x 8 frames after the 2 context frames)
    feature_steps: int = 400  # Fréchet feature-net training steps (benchmarks/video.py's default)
    feature_net: str | None = None  # a saved feature net (e.g. the video benchmark's) instead of training one
    episodes: int | None = None  # held-out videos rolled out (None: the preset's data.eval_episodes)
    steps: tuple[int, ...] = (2, 3, 5, 10, 20, 50)  # S values tried (besides the reference K/10)
    seed: int = 0


def video_study(cfg: VideoStudyConfig, run_dir: Path, progress: bool = False) -> dict:
    """Fréchet distance (and PSNR/SSIM) of DF rollouts vs the true held-out digits videos, vs S.

    Fréchet is the metric: PSNR/SSIM against the one true future reward blurry (mean-like) frames, which
    few-step DDIM produces, so they *improve* as S shrinks and cannot tell whether quality is kept.
    """
    from dforce.engine.config import load_config
    from dforce.recipes.video.metrics import frechet_distance, load_feature_net, psnr, ssim, train_feature_net, video_features
    from dforce.recipes.video.recipe import VideoRunConfig, feature_provenance, load_run, load_video_data, rollout, train_video

    vcfg = load_config(VideoRunConfig, cfg.config, [])
    fnet = None
    if cfg.feature_net:  # checked before any training: a net of other data fails at once
        fnet = load_feature_net(Path(cfg.feature_net), expect=feature_provenance(vcfg.data))
    train_s = None
    if not (run_dir / "ema.safetensors").exists():
        t0 = time.time()
        train_video(vcfg, run_dir, progress=progress)
        train_s = time.time() - t0
    preset_data = vcfg.data
    model, schedule, vcfg = load_run(run_dir)
    if fnet is not None and feature_provenance(vcfg.data) != feature_provenance(preset_data):
        raise ConfigError(f"{run_dir}: the run was trained on other videos than {cfg.config} ({vcfg.data}), "
                          f"which the feature net {cfg.feature_net} was checked against")
    if cfg.episodes:
        vcfg = replace(vcfg, data=replace(vcfg.data, eval_episodes=cfg.episodes))
    if fnet is None:
        train_frames, train_actions = load_video_data(vcfg.data, "train", progress=False)
        fnet = train_feature_net(train_frames, train_actions, steps=cfg.feature_steps, seed=cfg.seed,
                                 progress=progress)
    frames, actions = load_video_data(vcfg.data, "eval", progress=False)
    C, L = vcfg.context, cfg.horizon * vcfg.data.window
    truth = frames[:, C:C + L]
    ref_feats = video_features(fnet, truth)
    extra = {"psnr": {}, "ssim": {}}

    def score(S: int, seed: int = cfg.seed) -> float:
        smp = replace(vcfg.sampler, steps=S)
        video, _ = rollout(model, schedule, vcfg, frames, actions, L, sampler=smp, seed=seed)
        gen = video[:, C:C + L]
        extra["psnr"][S] = float(psnr(gen, truth).mean())
        extra["ssim"][S] = float(ssim(gen, truth).mean())
        return frechet_distance(video_features(fnet, gen), ref_feats)

    K = vcfg.diffusion.num_levels
    res = steps_study(score, cfg.steps, ref_steps=max(1, K // 10))
    res["extra"] = {k: dict(v) for k, v in extra.items()}
    res["ref_other_seed"] = score(res["ref_steps"], seed=cfg.seed + 1)
    half = truth.shape[1] // 2
    res["data_vs_data"] = frechet_distance(video_features(fnet, truth[:, :half]), video_features(fnet, truth[:, half:]))
    fnet_text = f"saved feature net `{cfg.feature_net}`" if cfg.feature_net else f"feature net trained here, {cfg.feature_steps} steps"
    res["description"] = (f"{vcfg.data.source} {vcfg.data.resolution} px, `{cfg.config}` ({vcfg.latent} latent, "
                          f"{vcfg.model.backbone} {vcfg.model.depth}x{vcfg.model.width} + conv codec, "
                          f"{vcfg.train.steps} training steps, run `{run_dir}`"
                          + (f", {train_s:.0f} s" if train_s else "") + f", K={K}, "
                          f"{vcfg.sampler.schedule} schedule, window {vcfg.sampler.window}); Fréchet distance "
                          f"({fnet_text}) of {L}-frame rollouts after {C} "
                          f"real frames under the real actions ({frames.shape[0]} held-out videos) vs the true "
                          f"frames, same sampling seed for every S (lower is better). PSNR/SSIM vs the true frames "
                          f"are listed too but reward blur, so they rise as S falls")
    res["config"] = asdict(cfg)
    return res


def step_list(text: str) -> tuple[int, ...]:
    """``"5,10,20"`` -> ``(5, 10, 20)``; anything but positive integers is an argparse error."""
    try:
        steps = tuple(int(x) for x in text.split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("synthetic", "forecast", "video"), default="synthetic")
    p.add_argument("--run-dir", default=None, help="trained model cache (reused when present; "
                   "default runs/steps_study[_<task>])")
    p.add_argument("--train-steps", type=int, default=SinesStudyConfig.train_steps, help="synthetic only")
    p.add_argument("--video-config", default=VideoStudyConfig.config,
                   help="video only: the preset (a run in --run-dir is trained with it if missing)")
    p.add_argument("--feature-net", default=None, help="video only: a saved feature net (default: train one)")
    p.add_argument("--horizon", type=int, default=VideoStudyConfig.horizon, help="video only: rollout length in T")
    p.add_argument("--episodes", type=int, default=None, help="video only: held-out videos (default: the preset's)")
    p.add_argument("--steps", default=None, type=step_list,
                   help="video only: comma-separated S values (default 2,3,5,10,20,50)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "steps_study.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir or ("runs/steps_study" if args.task == "synthetic" else f"runs/steps_study_{args.task}"))
    if args.task == "forecast":
        res = forecast_study(ForecastStudyConfig(), run_dir, progress=True)
    elif args.task == "video":
        res = video_study(VideoStudyConfig(config=args.video_config, feature_net=args.feature_net, horizon=args.horizon,
                                           episodes=args.episodes, steps=args.steps or VideoStudyConfig.steps),
                          run_dir, progress=True)
    else:
        res = sines_study(SinesStudyConfig(train_steps=args.train_steps), run_dir, progress=True)
    data = write_results({args.task: res}, Path(args.out))
    print(json.dumps(data["min_steps"]))


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/studies/steps_study.py")  # user errors: one line, exit code 2
