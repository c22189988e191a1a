"""Video world model benchmark: Diffusion Forcing vs teacher forcing vs causal full-sequence diffusion.

Same backbone, codec and training budget for the three methods (only the training noise levels and the
sampling schedule differ, :func:`dforce.recipes.video.recipe.method_config`). Each model is rolled out from
``context`` real frames under the real action sequence of held-out videos for ``multiple`` × the training
length T, and scored per horizon (frames [(m-1)T, mT) for m in 1, 5, 10, 30) against the true frames
(PSNR, SSIM; the environments are deterministic given the actions) and with the Fréchet distance of a
feature network trained here on the real training videos, always against the same reference set (all
held-out real clips), so the horizons share one scale.

    python benchmarks/video.py --config video_digits_tiny              # reduced scale
    python benchmarks/video.py --config video_vizdoom32_small --name video_vizdoom32

Writes ``benchmarks/results/<name>.json`` / ``.md``, ``<name>_rollouts.gif`` (truth | DF | teacher
forcing | full-sequence), ``<name>_strip{0,1}.png`` (two held-out rollouts at chosen frames, rows = truth and
methods) and ``<name>_horizons.png``.

The Fréchet feature network is saved with the results (``results/<name>_feature_net/``: ``model.safetensors``,
``config.json``, ``provenance.json``) and reused when present, so later evaluations share its scale;
``--retrain-feature-net`` replaces it. ``--eval-only`` scores the runs already in ``--runs`` without training:

    python benchmarks/video.py --config video_digits16_spatial --name video_evalonly \
        --runs runs/bench_video_spatial --feature-net benchmarks/results/studies/video_feature_net --eval-only --no-media

On two cores, train the methods in two processes (``--methods``, each with its own ``--name``) and then score
them together; ``--train-report`` carries each run's training time over into the combined results:

    python benchmarks/video.py --config C --name video_tf --methods teacher_forcing --runs R --no-media &
    python benchmarks/video.py --config C --name video_dffs --methods df,full_sequence --runs R --no-media
    python benchmarks/video.py --config C --name video --runs R --eval-only \
        --train-report benchmarks/results/video_tf.json --train-report benchmarks/results/video_dffs.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {"df": "DF", "teacher_forcing": "teacher forcing", "full_sequence": "full-sequence"}


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="video_digits_tiny")
    ap.add_argument("--name", default="video", help="results file stem")
    ap.add_argument("--methods", default="df,teacher_forcing,full_sequence")
    ap.add_argument("--multiple", type=int, default=30, help="rollout length in training lengths")
    ap.add_argument("--episodes", type=int, default=8, help="held-out videos rolled out")
    ap.add_argument("--feature-steps", type=int, default=400, help="Fréchet feature-net training steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default; 1 is fastest on a loaded 2-core host)")
    ap.add_argument("--runs", default="runs/bench_video", help="where the three training runs go")
    ap.add_argument("--feature-net", default=None,
                    help="feature-net directory (default results/<name>_feature_net): loaded if present, else trained and saved")
    ap.add_argument("--retrain-feature-net", action="store_true", help="train the feature net even if one is saved")
    ap.add_argument("--eval-only", action="store_true", help="score the runs in --runs/<method> (no training)")
    ap.add_argument("--train-report", action="append", default=[], metavar="JSON",
                    help="with --eval-only (repeatable): a results file of the runs' own training (e.g. methods trained "
                         "in parallel processes); its train seconds/steps/loss are carried over, its scores kept beside")
    ap.add_argument("--no-media", action="store_true", help="write only the .json/.md (no GIF/PNG)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides for all methods, e.g. train.steps=300")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_report and not args.eval_only:
        ap.error("--train-report goes with --eval-only (it supplies the training figures of saved runs)")
    trained = training_figures(args.train_report, args.config, args.overrides)

    from dforce.recipes.video.viz import plot_horizon_curves, write_rollout_strip, write_rollout_video
    from dforce.engine.config import load_config
    from dforce.recipes.video.metrics import frechet_distance, horizon_metrics, per_frame_metrics, video_features
    from dforce.recipes.video.recipe import VideoRunConfig, load_video_data, method_config, rollout, train_video

    base = load_config(VideoRunConfig, args.config, args.overrides)
    T, C = base.data.window, base.context
    dcfg = dataclasses.replace(base.data, eval_episodes=args.episodes,
                               eval_multiple=max(base.data.eval_multiple, args.multiple + 1))
    base = dataclasses.replace(base, data=dcfg)
    progress = not args.quiet
    t0 = time.time()
    train_data = load_video_data(base.data, "train", progress)
    frames, actions = load_video_data(base.data, "eval", progress)
    length = args.multiple * T
    truth = frames[:, C:C + length]
    data_seconds = time.time() - t0

    # Fréchet features: trained on the real training videos, reference = every held-out real clip
    fnet_dir = Path(args.feature_net) if args.feature_net else RESULTS / f"{args.name}_feature_net"
    fnet, fnet_info = feature_net(fnet_dir, base.data, train_data, args.feature_steps, args.retrain_feature_net,
                                  progress)
    ref = video_features(fnet, truth)
    half = truth.shape[1] // 2
    real_vs_real = frechet_distance(video_features(fnet, truth[:, :half]), video_features(fnet, truth[:, half:]))

    report = {"config": args.config, "overrides": args.overrides, "train_length": T, "context": C,
              "rollout_frames": length, "episodes": args.episodes, "resolution": base.data.resolution,
              "source": base.data.source, "device": args.device, "torch_threads": torch.get_num_threads(),
              "host": platform.node(), "data_seconds": round(data_seconds, 1),
              "feature_net_seconds": fnet_info["train_seconds"], "feature_net": {"dir": str(fnet_dir), "loaded": fnet_info["loaded"]},
              "eval_only": args.eval_only,
              "frechet_real_first_vs_second_half": round(real_vs_real, 4), "methods": {}}
    videos, curves = {"truth": frames[:, :C + length]}, {}
    for method in args.methods.split(","):
        cfg = method_config(base, method)
        run_dir = Path(args.runs) / method
        if args.eval_only:
            res = saved_run(run_dir, cfg, args.device)
        else:
            res = train_video(cfg, run_dir, device=args.device, progress=progress, data=train_data)
        model = res.model.eval()
        video, seconds = rollout(model, res_schedule(cfg, args.device), cfg, frames, actions, length,
                                 seed=1, device=args.device, progress=progress)
        pred = video[:, C:C + length]
        rows = horizon_metrics(pred, truth, T, fnet, ref)
        pf = per_frame_metrics(pred, truth)
        n_params = sum(p.numel() for p in model.parameters())
        report["methods"][method] = {
            "train_seconds": round(res.seconds, 1) if res.seconds is not None else None, "train_steps": res.step,
            "final_loss": res.history[-1]["loss"] if res.history else None, "parameters": n_params,
            **trained.get(method, {}),
            "rollout_seconds": round(seconds, 2), "frames_per_second": round(pred.numel() / pred[0, 0].numel() / seconds, 2),
            "peak_rss_mb_so_far": round(peak_rss_mb(), 1), "sampler": dataclasses.asdict(cfg.sampler),
            "objective": dataclasses.asdict(cfg.objective),
            "horizons": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        }
        videos[LABELS[method]] = video
        hx = np.array([r["end"] for r in rows])
        curves[LABELS[method]] = {"psnr": pf["psnr"].numpy(), "ssim": pf["ssim"].numpy(),
                                  "frechet (per horizon)": (hx, np.array([r["frechet"] for r in rows]))}

    report["summary"] = {
        m: {"frechet": {f"{r['multiple']}x": r["frechet"] for r in v["horizons"]},
            "psnr": {f"{r['multiple']}x": r["psnr"] for r in v["horizons"]},
            "ssim": {f"{r['multiple']}x": r["ssim"] for r in v["horizons"]},
            "frames_per_second": v["frames_per_second"], "train_seconds": v["train_seconds"]}
        for m, v in report["methods"].items()
    }
    report["targets"] = targets(report["summary"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(json.dumps(report["summary"], indent=2))
    print(json.dumps(report["targets"], indent=2))
    if args.no_media:
        return report
    # keep the GIF small (a few MB at most): the first 10x of the rollout (5x from 32 px on), 2 videos
    small = base.data.resolution <= 16
    gif_len = min(C + length, C + (10 if small else 5) * T)
    write_rollout_video(RESULTS / f"{args.name}_rollouts.gif", {k: v[:2, :gif_len] for k, v in videos.items()},
                        context=C, fps=8, scale=3 if small else 2)
    times = [C - 1, C, C + 1, C + 3, C + T - 1] + [C + m * T - 1 for m in (5, 10, 30) if m <= args.multiple]
    for ep in range(min(2, args.episodes)):
        write_rollout_strip(RESULTS / f"{args.name}_strip{ep}.png", videos, times, episode=ep, scale=3)
    plot_horizon_curves(RESULTS / f"{args.name}_horizons.png", curves, T,
                        title=f"{base.data.source} {base.data.resolution}px, T={T}, {args.episodes} rollouts")
    return report


def training_figures(paths: list[str], config: str, overrides: list[str]) -> dict:
    """Per method, the training figures (train seconds, steps, final loss, source file, the training run's own
    horizon scores) from results files written when the runs were trained. Each file must come from the same
    config and overrides as this evaluation; a method may appear in one file only."""
    from dforce.errors import ConfigError

    out = {}
    for p in paths:
        try:
            rep = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--train-report {p}: cannot read a results file ({e})") from None
        if rep.get("eval_only") or (rep.get("config"), rep.get("overrides")) != (config, overrides):
            raise ConfigError(f"--train-report {p}: not a training run of --config {config} with overrides "
                              f"{overrides} (it has {rep.get('config')} {rep.get('overrides')}, eval_only="
                              f"{rep.get('eval_only')})")
        for m, v in rep.get("methods", {}).items():
            if m in out:
                raise ConfigError(f"--train-report: method {m} appears in {out[m]['train_report']} and {p}")
            out[m] = {"train_seconds": v["train_seconds"], "train_steps": v["train_steps"],
                      "final_loss": v["final_loss"], "train_report": str(p),
                      "train_report_horizons": v["horizons"], "train_report_episodes": rep.get("episodes")}
    return out


def feature_net(directory: Path, dcfg, train_data, steps: int, retrain: bool, progress: bool):
    """The Fréchet feature net: loaded from ``directory`` if saved there (and trained on the same data, with
    the same steps), else trained on ``train_data = (frames, actions)`` and saved with its provenance.
    Returns ``(net, info)``; a saved net trained on other data raises ``ConfigError``."""
    from dforce.errors import ConfigError
    from dforce.recipes.video.metrics import feature_net_provenance, load_feature_net, save_feature_net, train_feature_net
    from dforce.recipes.video.recipe import feature_provenance

    want = feature_provenance(dcfg, steps)
    if (directory / "model.safetensors").exists() and not retrain:
        try:
            net = load_feature_net(directory, expect=want)
        except ConfigError as e:
            raise ConfigError(f"{e}; pass --retrain-feature-net or another --feature-net directory") from None
        return net, {"loaded": True, "train_seconds": feature_net_provenance(directory).get("train_seconds")}
    net = train_feature_net(train_data[0], train_data[1], steps=steps, progress=progress)
    info = {**want, "train_seconds": round(net.train_seconds, 1),
            "parameters": sum(p.numel() for p in net.parameters()),
            "note": "Fréchet feature net of benchmarks/video.py, trained on the real training videos (seed 0)"}
    save_feature_net(net, directory, provenance=info)
    return net, {"loaded": False, "train_seconds": info["train_seconds"]}


def saved_run(run_dir: Path, cfg, device: str):
    """A finished run of ``cfg`` (its EMA model, steps from ``metrics.jsonl``) for ``--eval-only``."""
    import types

    from dforce.engine import checkpoint as ckpt
    from dforce.errors import ConfigError
    from dforce.recipes.video.recipe import load_run

    model, _, run_cfg = load_run(run_dir, device)
    # everything but the training loop and the held-out split must be the benchmark's
    run_cfg = dataclasses.replace(run_cfg, train=cfg.train, data=dataclasses.replace(
        run_cfg.data, eval_episodes=cfg.data.eval_episodes, eval_multiple=cfg.data.eval_multiple))
    diff = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(run_cfg, f.name)]
    if diff:
        raise ConfigError(f"{run_dir}: run config differs from the benchmark config in {', '.join(diff)}")
    hist = ckpt.read_jsonl(run_dir / ckpt.METRICS_FILE) if (run_dir / ckpt.METRICS_FILE).exists() else []
    return types.SimpleNamespace(model=model, seconds=None, step=hist[-1]["step"] if hist else None, history=hist)


def res_schedule(cfg, device):
    from dforce.diffusion import NoiseSchedule

    return NoiseSchedule(cfg.diffusion).to(device)


def targets(summary: dict) -> dict:
    """The issue's stability target: DF Fréchet at 30x within 1.5x of 1x; a baseline degrades > 3x."""
    def ratio(m):
        f = summary.get(m, {}).get("frechet", {})
        last = f.get("30x") or (f[max(f, key=lambda k: int(k[:-1]))] if f else None)
        return None if not f or last is None else last / max(f["1x"], 1e-12)

    r = {m: ratio(m) for m in summary}
    base = [v for m, v in r.items() if m != "df" and v is not None]
    return {"frechet_ratio_last_over_1x": {m: (round(v, 3) if v is not None else None) for m, v in r.items()},
            "df_within_1.5x": r.get("df") is not None and r["df"] <= 1.5,
            "a_baseline_degrades_over_3x": any(v > 3 for v in base),
            "df_frames_per_second_ge_5": summary.get("df", {}).get("frames_per_second", 0) >= 5}


def markdown(rep: dict) -> str:
    T = rep["train_length"]
    lines = [f"# Video world model benchmark ({rep['source']} {rep['resolution']} px)", "",
             f"Config `{rep['config']}` overrides `{' '.join(rep['overrides']) or '-'}`; training length T={T} frames, "
             f"{rep['context']} real context frames, rollouts of {rep['rollout_frames']} frames under the real actions "
             f"on {rep['episodes']} held-out videos; {rep['torch_threads']} torch threads on a shared CPU host. "
             f"Fréchet: feature net trained here ({rep['feature_net_seconds']} s; "
             f"{'loaded from' if rep.get('feature_net', {}).get('loaded') else 'saved to'} "
             f"`{rep.get('feature_net', {}).get('dir', '-')}`) vs all held-out real clips; "
             f"real-vs-real (first vs second half of the true futures): {rep['frechet_real_first_vs_second_half']}.", "",
             "| method | train s | steps | rollout frames/s | peak RSS MB | " +
             " | ".join(f"PSNR {m}x" for m in (1, 5, 10, 30)) + " | " +
             " | ".join(f"SSIM {m}x" for m in (1, 5, 10, 30)) + " | " +
             " | ".join(f"Fréchet {m}x" for m in (1, 5, 10, 30)) + " |",
             "|" + "---|" * 17]
    if rep.get("eval_only"):
        src = sorted({v["train_report"] for v in rep["methods"].values() if v.get("train_report")})
        lines.insert(4, "Eval only: the saved runs were scored here, not trained. " + (
            f"Train s / steps come from the runs' training reports ({', '.join(f'`{s}`' for s in src)})."
            if src else "Train s not measured here.") + "\n")
    for m, v in rep["methods"].items():
        h = {r["multiple"]: r for r in v["horizons"]}
        cell = lambda k, mm, f: (f.format(h[mm][k]) if mm in h else "-")  # noqa: E731
        lines.append(f"| {LABELS[m]} | {v['train_seconds']} | {v['train_steps']} | {v['frames_per_second']} | "
                     f"{v['peak_rss_mb_so_far']} | " + " | ".join(cell("psnr", mm, "{:.2f}") for mm in (1, 5, 10, 30)) +
                     " | " + " | ".join(cell("ssim", mm, "{:.3f}") for mm in (1, 5, 10, 30)) + " | " +
                     " | ".join(cell("frechet", mm, "{:.3g}") for mm in (1, 5, 10, 30)) + " |")
    t = rep["targets"]
    lines += ["", f"Fréchet(last horizon)/Fréchet(1x): {t['frechet_ratio_last_over_1x']}; DF within 1.5x: "
              f"{t['df_within_1.5x']}; a baseline > 3x: {t['a_baseline_degrades_over_3x']}; "
              f"DF >= 5 frames/s: {t['df_frames_per_second_ge_5']}.", "",
              "Peak RSS is the process maximum so far (methods run in sequence), not a per-method figure.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    exit_on_user_error(main, "benchmarks/video.py")  # user errors: one line, exit code 2
