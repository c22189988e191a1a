"""Few-step sampling benchmark: a Diffusion Forcing teacher at its preset S vs few-step students at S = 1-2 per token.

Teacher = the recipe's current model sampled at its steps S; student = the same architecture as a step-size-conditioned
shortcut model (``dforce.shortcut``), fine-tuned from the teacher (``train.init_from``) for at most half the teacher's
training steps, so teacher + student together stay within the issue's teacher + 50 % compute (measured seconds are
reported too). Every cell is cached as JSON under ``--runs`` and reused, so a killed run resumes cell by cell:

    demo      ``sequence_small`` on the built-in noisy sines: energy distance of sampled vs held-out windows
    forecast  exchange_rate_nips, seeds 0-4 (``forecast_small`` via the recipe's ``fit``/``forecast``): CRPS-sum
    video     ViZDoom 32 px, the DF teachers ``/work/runs/shared/vizdoom32_df_s{seed}`` (``video_vizdoom32_spatial``):
              Fréchet (the video benchmark's feature net) at 1x and 30x of 480-frame rollouts, frames/s; a second
              student adds self-rollout fine-tuning (``train.self_rollout``)
    planning  Maze2D Medium and Large, the maze benchmark's per-maze settings (``benchmarks/maze2d.py``), single task,
              100 episodes paired by episode: score and planning seconds per episode

    PYTHONPATH=src python benchmarks/few_step.py --tasks demo forecast
    PYTHONPATH=src python benchmarks/few_step.py --tasks video --seeds 0 1
    PYTHONPATH=src python benchmarks/few_step.py --tasks planning --mazes medium large
    PYTHONPATH=src python benchmarks/few_step.py --render          # only rewrite few_step.{json,md} + PNGs

Writes ``benchmarks/results/few_step.json`` (top-level ``summary`` as the issue asks), ``few_step.md`` and
``few_step_<task>.png`` (quality vs steps, teacher and student).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT))  # benchmarks/maze2d.py: the maze benchmark's per-maze settings

# ---------------------------------------------------------------------------------------------------
# settings (each with why)
# ---------------------------------------------------------------------------------------------------
DEMO = {
    "config": "sequence_small",  # the demo's setting (K = 100, GRU 2x96, 2000 steps)
    "student": ["model.shortcut_steps=8",  # grids 8, 4, 2, 1: class 0 at 8 DDIM steps is within 5 % of S = 10
                                           # (benchmarks/results/studies/steps_study.md)
                "objective.shortcut_fraction=0.75",  # fine-tuning: class 0 is trained already, the big steps are not
                "sampler.steps=1", "sampler.schedule=full_sequence"],  # one window at a time (docs/few_step.md)
    "student_steps_fraction": 0.5,  # fine-tuning steps / the teacher's (teacher + student <= 1.5 teacher)
    "samples": 1024,  # sampled windows per S (energy distance vs as many held-out windows)
    "teacher_steps": [1, 2, 4, 10, 25], "student_steps": [1, 2, 4, 8], "reference_steps": 10,
}
FORECAST = {
    "config": "forecast_small",
    # fraction 0.5 and lr 3e-4 (the preset: 1e-3): the exchange-rate tokens are heavy-tailed (training losses spike
    # into the hundreds), and at 0.75 / 1e-3 one spike fed back through the self-consistency targets ruined the
    # student (validation CRPS-sum 0.42 after one epoch; docs/few_step.md)
    "student": ["model.shortcut_steps=8", "objective.shortcut_fraction=0.5", "train.lr=3e-4", "sampler.steps=1",
                "sampler.schedule=full_sequence"],
    "teacher_steps": [1, 2, 4, 10, 20], "student_steps": [1, 2, 4, 8],
}
VIDEO = {
    "config": "video_vizdoom32_spatial",
    "teachers": "/work/runs/shared/vizdoom32_df_s{seed}",  # the lead's shared DF runs (3000 steps, read-only)
    "feature_net": str(RESULTS / "video_vizdoom32_feature_net"),  # the video benchmark's Fréchet features
    # fraction 0.5 and lr 3e-4 (the preset: 1e-3): with 0.75 / 1e-3 the fine-tuned student's DF loss rose from the
    # teacher's 0.046 to 0.063 and its S = 16 rollouts lost (Fréchet 1x 43 vs the teacher's 11; docs/few_step.md)
    "student": ["model.shortcut_steps=16", "objective.shortcut_fraction=0.5", "train.lr=3e-4", "sampler.steps=2",
                # 1200 of the teacher's 3000 steps (each + two no-grad calls on the self-consistency rows)
                "sampler.schedule=full_sequence", "train.steps=1200", "train.warmup_steps=50"],
    "self_rollout": ["train.self_rollout=0.25"],  # a quarter of each batch continues the student's own rollout
    "self_rollout_seeds": [0],  # the self-rollout student is trained for these seeds (CPU time)
    # 16 held-out videos (video.json: 32; halved for the shared CPU's time), rollouts of 30 x T = 480 frames
    "episodes": 16, "multiple": 30,
    "teacher_steps": [2, 20], "student_steps": [1, 2, 4], "reference_steps": 20,  # S = 5-100: steps_study.md
}
PLANNING = {
    "config": "planning_umaze_small",  # the maze benchmark's preset, with its per-maze overrides (maze2d.py)
    # fraction 0.5 and lr 3e-4 for fine-tuning (the video lesson: 0.75 / the preset's 1e-3 degraded the teacher's
    # many-step model)
    "student": ["model.shortcut_steps=16", "objective.shortcut_fraction=0.5", "train.lr=3e-4",
                "sampler.schedule=full_sequence"],
    "student_steps_fraction": 0.5,
    "teacher_steps": 20,  # the preset's DDIM steps (PlanSamplerConfig)
    "student_steps": [1, 2, 4],
    # guidance adds one nudge per row: at S rows the student is also tried with the teacher's scale x 20 / S (the same
    # total pull per plan); the toy test (tests/test_few_step_learning.py) needed about that much
    "guidance_factors": ["1", "steps"],
    "episodes": 100,
}


# ---------------------------------------------------------------------------------------------------
# cache: one JSON per finished cell
# ---------------------------------------------------------------------------------------------------
class Cells:
    """Finished cells ``{key: result}`` in ``<runs>/cells.json``, written atomically after each one."""

    def __init__(self, runs: Path):
        from dforce.engine.checkpoint import atomic_write_bytes

        self.path, self.write = runs / "cells.json", atomic_write_bytes
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str, fn):
        if key not in self.data:
            t0 = time.time()
            out = fn()
            out.setdefault("wall_seconds", round(time.time() - t0, 1))
            self.data[key] = out
            self.write(self.path, json.dumps(self.data, indent=1).encode())
            print(f"{key}: {json.dumps({k: v for k, v in out.items() if not isinstance(v, (list, dict))})}", flush=True)
        return self.data[key]


def timed_train(run_dir: Path, fn) -> float:
    """Train with ``fn()`` unless ``run_dir/train_seconds.json`` says it finished; returns the training seconds."""
    marker = run_dir / "train_seconds.json"
    if marker.exists():
        return json.loads(marker.read_text())["seconds"]
    t0 = time.time()
    fn()
    seconds = round(time.time() - t0, 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds": seconds}))
    return seconds


# ---------------------------------------------------------------------------------------------------
# demo: noisy sines, energy distance
# ---------------------------------------------------------------------------------------------------
def demo(runs: Path, cells: Cells) -> dict:
    from dforce.engine.config import load_config
    from dforce.recipes.sequence.config import RunConfig
    from dforce.recipes.sequence.recipe import run_eval, run_train

    base = ["device=cpu", "logging.plot=false"]
    tdir, sdir = runs / "demo_teacher", runs / "demo_student"
    tcfg = load_config(RunConfig, DEMO["config"], base)
    t_sec = timed_train(tdir, lambda: run_train(tcfg, tdir, progress=False))
    steps = int(tcfg.train.steps * DEMO["student_steps_fraction"])
    scfg = load_config(RunConfig, DEMO["config"], base + DEMO["student"] + [f"train.steps={steps}",
                                                                            f"train.init_from={tdir}"])
    s_sec = timed_train(sdir, lambda: run_train(scfg, sdir, progress=False))
    ddir = runs / "demo_distilled"  # the same student distilled from the teacher (targets: the teacher, not the data)
    dcfg = load_config(RunConfig, DEMO["config"], base + DEMO["student"] + [
        f"train.steps={steps}", f"train.init_from={tdir}", f"train.distill_from={tdir}"])
    d_sec = timed_train(ddir, lambda: run_train(dcfg, ddir, progress=False))

    def score(run, S):
        t0 = time.time()
        rep = run_eval(run, num=DEMO["samples"], seed=0, overrides=[f"sampler.steps={S}"], progress=False)
        return {"energy_distance": rep["energy_distance"], "floor": rep["energy_distance_train_windows"],
                "seconds": round(time.time() - t0, 2)}

    curves = {"teacher": {S: cells.get(f"demo/teacher/S{S}", lambda S=S: score(tdir, S)) for S in DEMO["teacher_steps"]},
              "student": {S: cells.get(f"demo/student/S{S}", lambda S=S: score(sdir, S)) for S in DEMO["student_steps"]},
              "distilled": {S: cells.get(f"demo/distilled/S{S}", lambda S=S: score(ddir, S))
                            for S in DEMO["student_steps"]}}
    return {"train_seconds": {"teacher": t_sec, "student": s_sec, "distilled": d_sec},
            "train_steps": {"teacher": tcfg.train.steps, "student": steps, "distilled": steps}, "curves": curves,
            "metric": "energy_distance"}


# ---------------------------------------------------------------------------------------------------
# forecast: exchange_rate_nips CRPS-sum (the recipe's public fit / forecast / load_run)
# ---------------------------------------------------------------------------------------------------
def forecast_task(runs: Path, cells: Cells, seeds: list[int]) -> dict:
    from dforce.engine.config import load_config
    from dforce.recipes.forecast.exchange_rate import load_exchange_rate_nips
    from dforce.recipes.forecast.metrics import gluonts_forecast_metrics
    from dforce.recipes.forecast.recipe import ForecastConfig, fit, forecast, forecast_targets, load_run

    ds = load_exchange_rate_nips()
    y = forecast_targets(ds.test, ds.prediction_length)
    out = {}
    for seed in seeds:
        tdir, sdir = runs / f"forecast_s{seed}_teacher", runs / f"forecast_s{seed}_student"
        tcfg = dataclasses.replace(load_config(ForecastConfig, FORECAST["config"], []), seed=seed)
        t_sec = timed_train(tdir, lambda: fit(tcfg, ds.train, run_dir=tdir, progress=False))
        t_meta = load_run(tdir)[3]
        # half the teacher's epochs (early stopping included), at least two
        epochs = max(2, math.ceil(0.5 * len(t_meta["history"])))
        scfg = dataclasses.replace(load_config(ForecastConfig, FORECAST["config"], FORECAST["student"] + [
            f"train.init_from={tdir / 'best.safetensors'}", f"early_stop.max_epochs={epochs}"]), seed=seed)
        s_sec = timed_train(sdir, lambda: fit(scfg, ds.train, run_dir=sdir, progress=False))

        def score(run, S, seed=seed):
            model, schedule, cfg, meta = load_run(run)
            cfg = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, steps=S))
            t0 = time.time()
            smp = forecast(model, schedule, cfg, ds.test, np.asarray(meta["move_scale"]), seed=seed,
                           spread=meta.get("spread", 1.0))
            return {"crps_sum": gluonts_forecast_metrics(smp, y)["crps_sum"], "seconds": round(time.time() - t0, 2)}

        out[seed] = {
            "train_seconds": {"teacher": t_sec, "student": s_sec},
            "epochs": {"teacher": len(t_meta["history"]), "student": len(load_run(sdir)[3]["history"])},
            "teacher": {S: cells.get(f"forecast/s{seed}/teacher/S{S}", lambda S=S: score(tdir, S))
                        for S in FORECAST["teacher_steps"]},
            "student": {S: cells.get(f"forecast/s{seed}/student/S{S}", lambda S=S: score(sdir, S))
                        for S in FORECAST["student_steps"]}}
    return {"seeds": out, "preset_steps": load_config(ForecastConfig, FORECAST["config"], []).sampler.steps}


# ---------------------------------------------------------------------------------------------------
# video: ViZDoom 32 px, Fréchet at 1x / 30x and frames/s
# ---------------------------------------------------------------------------------------------------
def video_task(runs: Path, cells: Cells, seeds: list[int], wait: bool) -> dict:
    from dforce.engine.config import load_config
    from dforce.recipes.video.metrics import horizon_metrics, load_feature_net, video_features
    from dforce.recipes.video.recipe import (VideoRunConfig, feature_provenance, load_run, load_video_data, rollout,
                                             train_video)

    base = load_config(VideoRunConfig, VIDEO["config"], [])
    dcfg = dataclasses.replace(base.data, eval_episodes=VIDEO["episodes"],
                               eval_multiple=max(base.data.eval_multiple, VIDEO["multiple"] + 1))
    frames, actions = load_video_data(dcfg, "eval", progress=False)
    T, C, L = base.data.window, base.context, VIDEO["multiple"] * base.data.window
    truth = frames[:, C:C + L]
    fnet = load_feature_net(Path(VIDEO["feature_net"]), expect=feature_provenance(base.data, 400))
    ref = video_features(fnet, truth)
    train_data = None
    out = {}
    for seed in seeds:
        tdir = Path(VIDEO["teachers"].format(seed=seed))
        while wait and not (tdir / "DONE").exists():
            time.sleep(60)
        if not (tdir / "DONE").exists():
            print(f"video seed {seed}: teacher {tdir} not finished; skipped", flush=True)
            continue
        students = {"student": VIDEO["student"]}
        if seed in VIDEO["self_rollout_seeds"]:
            students["student_self_rollout"] = VIDEO["student"] + VIDEO["self_rollout"]
        train_s = {}
        for name, ov in students.items():
            sdir = runs / f"video_s{seed}_{name}"
            cfg = load_config(VideoRunConfig, VIDEO["config"], ov + [f"train.seed={seed}", f"train.init_from={tdir}"])
            if train_data is None and not (sdir / "train_seconds.json").exists():
                train_data = load_video_data(base.data, "train", progress=False)
            resume = (sdir / "trainer_state.pt").exists()  # a killed cell continues from its checkpoint
            train_s[name] = timed_train(sdir, lambda cfg=cfg, sdir=sdir, r=resume: train_video(
                cfg, sdir, progress=False, data=train_data, resume=r))

        def score(run, S):
            model, schedule, cfg = load_run(run)
            video, seconds = rollout(model, schedule, cfg, frames, actions, L,
                                     sampler=dataclasses.replace(cfg.sampler, steps=S), seed=1)
            rows = horizon_metrics(video[:, C:C + L], truth, T, fnet, ref)
            return {"frechet": {f"{r['multiple']}x": round(r["frechet"], 4) for r in rows},
                    "psnr": {f"{r['multiple']}x": round(r["psnr"], 3) for r in rows},
                    "frames_per_second": round(truth.shape[0] * L / seconds, 2), "rollout_seconds": round(seconds, 1)}

        res = {"teacher": {S: cells.get(f"video/s{seed}/teacher/S{S}", lambda S=S: score(tdir, S))
                           for S in VIDEO["teacher_steps"]}}
        for name in students:
            res[name] = {S: cells.get(f"video/s{seed}/{name}/S{S}", lambda S=S, n=name: score(runs / f"video_s{seed}_{n}", S))
                         for S in VIDEO["student_steps"]}
        teacher_hist = json.loads((tdir / "metrics.jsonl").read_text().splitlines()[-1])
        res["train_seconds"] = train_s
        res["teacher_tokens_per_s"] = teacher_hist.get("tokens_per_s")
        out[seed] = res
    return {"seeds": out, "episodes": VIDEO["episodes"], "rollout_frames": L}


# ---------------------------------------------------------------------------------------------------
# planning: Maze2D Medium / Large, the maze benchmark's per-maze settings
# ---------------------------------------------------------------------------------------------------
def planning_task(runs: Path, cells: Cells, mazes: list[str]) -> dict:
    import maze2d as bench
    from dforce.engine.config import load_config
    from dforce.recipes.planning.recipe import PlanningConfig, run_planner, train_planner

    args = argparse.Namespace(runs=str(runs / "maze2d"), config=PLANNING["config"], device="cpu", quiet=True,
                              quick=False, retrain=False, overrides=[], eval_overrides=[])
    out = {}
    for maze in mazes:
        tdir, t_sec = bench.get_run(maze, "df", args)  # the benchmark's DF planner of this maze (trained once)
        teacher_steps = bench.TRAIN_STEPS[maze] or load_config(PlanningConfig, PLANNING["config"], []).train.steps
        steps = int(teacher_steps * PLANNING["student_steps_fraction"])
        sdir = runs / "maze2d" / f"{maze}_df_student"
        ov = [f"data.maze={maze}", f"data.horizon={bench.HORIZON[maze]}", f"sampler.window={bench.HORIZON[maze]}",
              *bench.GUIDANCE[maze], f"train.steps={steps}", f"train.init_from={tdir}", *PLANNING["student"]]
        scfg = load_config(PlanningConfig, PLANNING["config"], ov)
        s_sec = timed_train(sdir, lambda: train_planner(scfg, sdir, progress=False))
        scale = load_config(PlanningConfig, PLANNING["config"], []).sampler.guidance_scale

        def score(run, S, factor=1.0):
            # the teacher: the benchmark's sampler (pyramid, u = 0.25); the student: its own (full_sequence)
            args.eval_overrides = [f"sampler.steps={S}", f"sampler.guidance_scale={scale * factor}"] + (
                [] if run == tdir else ["sampler.schedule=full_sequence"])
            roll = run_planner(bench.planner_for(run, args, 1, maze), maze, PLANNING["episodes"], False, 0, "actions")
            e = bench.entry(roll.result, roll.plan_seconds)
            e["plan_seconds_per_episode"] = round(float(np.sum(roll.plan_seconds)) / PLANNING["episodes"], 3)
            return e

        out[maze] = {"train_seconds": {"teacher": round(t_sec, 1), "student": s_sec},
                     "train_steps": {"teacher": teacher_steps, "student": steps},
                     "teacher": cells.get(f"planning/{maze}/teacher/S{PLANNING['teacher_steps']}",
                                          lambda: score(tdir, PLANNING["teacher_steps"])),
                     "student": {}}
        for S in PLANNING["student_steps"]:
            for f in PLANNING["guidance_factors"]:
                factor = PLANNING["teacher_steps"] / S if f == "steps" else float(f)
                if f == "steps" and factor == 1.0:
                    continue
                key = f"S{S}_g{factor:g}"
                out[maze]["student"][key] = cells.get(f"planning/{maze}/student/{key}",
                                                      lambda S=S, factor=factor: score(sdir, S, factor))
                out[maze]["student"][key].update(steps=S, guidance_factor=factor)
    return out


# ---------------------------------------------------------------------------------------------------
# summary, table, plots
# ---------------------------------------------------------------------------------------------------
def mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def summarize(res: dict) -> dict:
    s = {}
    if "demo" in res:
        c = res["demo"]["curves"]
        s["demo"] = {"s1": c["student"]["1"]["energy_distance"],
                     "s10": c["teacher"][str(DEMO["reference_steps"])]["energy_distance"]}
    if "forecast" in res and res["forecast"]["seeds"]:
        seeds = res["forecast"]["seeds"].values()
        pre = str(res["forecast"]["preset_steps"])
        s["forecast"] = {"student_steps": 1, "student_crps_sum": mean(v["student"]["1"]["crps_sum"] for v in seeds),
                         "teacher_crps_sum": mean(v["teacher"][pre]["crps_sum"] for v in seeds),
                         "teacher_steps": int(pre), "seeds": len(res["forecast"]["seeds"])}
    if "video" in res and res["video"]["seeds"]:
        seeds = list(res["video"]["seeds"].values())
        R, best = str(VIDEO["reference_steps"]), None
        for S in ("1", "2"):  # the best student at S <= 2 by mean Fréchet over 1x and 30x (every seed has it)
            for name in ("student", "student_self_rollout"):
                if not all(name in v for v in seeds):
                    continue
                f = mean(mean([v[name][S]["frechet"]["1x"], v[name][S]["frechet"]["30x"]]) for v in seeds)
                if best is None or f < best[0]:
                    best = (f, S, name)
        _, S, name = best
        s["video"] = {"teacher_steps": int(R),
                      "teacher_frechet_1x": mean(v["teacher"][R]["frechet"]["1x"] for v in seeds),
                      "teacher_frechet_30x": mean(v["teacher"][R]["frechet"]["30x"] for v in seeds),
                      "student_steps": int(S), "student": name,
                      "student_frechet_1x": mean(v[name][S]["frechet"]["1x"] for v in seeds),
                      "student_frechet_30x": mean(v[name][S]["frechet"]["30x"] for v in seeds),
                      "fps_ratio": mean(v[name][S]["frames_per_second"] / v["teacher"][R]["frames_per_second"]
                                        for v in seeds), "seeds": len(seeds)}
    if "planning" in res:
        s["planning"] = {}
        for maze, v in res["planning"].items():
            t = v["teacher"]
            ratio = lambda e: t["plan_seconds_per_episode"] / e["plan_seconds_per_episode"]  # noqa: E731
            fast = {k: e for k, e in v["student"].items() if ratio(e) >= 5} or v["student"]  # the target's speed first
            key = max(fast, key=lambda k: fast[k]["score_mean"])
            st = fast[key]
            d = np.asarray(st["episode_scores"]) - np.asarray(t["episode_scores"])
            s["planning"][maze] = {"teacher": t["score_mean"], "student": st["score_mean"], "se": t["score_se"],
                                   "student_steps": st["steps"], "student_guidance_factor": st["guidance_factor"],
                                   "paired_difference": round(float(d.mean()), 2),
                                   "paired_se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 2),
                                   "time_ratio": round(t["plan_seconds_per_episode"] / st["plan_seconds_per_episode"], 2)}
    return s


def targets(s: dict) -> dict:
    t = {}
    if "demo" in s:
        t["demo_s1_within_10pct_of_s10"] = s["demo"]["s1"] <= 1.1 * s["demo"]["s10"]
    if "forecast" in s:
        t["forecast_s1_within_5pct"] = s["forecast"]["student_crps_sum"] <= 1.05 * s["forecast"]["teacher_crps_sum"]
    if "video" in s:
        v = s["video"]
        t["video_frechet_within_10pct"] = (v["student_frechet_1x"] <= 1.1 * v["teacher_frechet_1x"]
                                           and v["student_frechet_30x"] <= 1.1 * v["teacher_frechet_30x"])
        t["video_fps_ratio_ge_8"] = v["fps_ratio"] >= 8
    for maze, p in s.get("planning", {}).items():
        t[f"planning_{maze}_within_one_se"] = p["student"] >= p["teacher"] - p["se"]
        t[f"planning_{maze}_time_ratio_ge_5"] = p["time_ratio"] >= 5
    return t


def plot(res: dict) -> None:
    from dforce.plotting import pyplot, save_figure

    plt = pyplot()

    def panel(ax, curves: dict, key, title, ylabel):
        for label, pts in curves.items():
            xs = sorted(pts, key=int)
            ax.plot([int(x) for x in xs], [key(pts[x]) for x in xs], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps S per token")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    if "demo" in res:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        panel(ax, res["demo"]["curves"], lambda e: e["energy_distance"], "noisy sines (sequence_small)", "energy distance")
        fig.tight_layout()
        save_figure(fig, RESULTS / "few_step_demo.png", dpi=110)
    if res.get("forecast", {}).get("seeds"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        seeds = res["forecast"]["seeds"].values()
        curves = {m: {S: {"v": mean(v[m][S]["crps_sum"] for v in seeds)} for S in next(iter(seeds))[m]}
                  for m in ("teacher", "student")}
        panel(ax, curves, lambda e: e["v"], f"exchange_rate_nips, mean of {len(seeds)} seeds", "CRPS-sum")
        fig.tight_layout()
        save_figure(fig, RESULTS / "few_step_forecast.png", dpi=110)
    if res.get("video", {}).get("seeds"):
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        seeds = list(res["video"]["seeds"].values())
        models = [m for m in ("teacher", "student", "student_self_rollout") if m in seeds[0]]
        for ax, (key, name) in zip(axes, (("1x", "Fréchet 1x"), ("30x", "Fréchet 30x"), ("fps", "frames/s"))):
            get = (lambda e: e["frames_per_second"]) if key == "fps" else (lambda e, k=key: e["frechet"][k])
            curves = {m: {S: {"v": mean(get(v[m][S]) for v in seeds if m in v)} for S in seeds[0][m]} for m in models}
            panel(ax, curves, lambda e: e["v"], f"ViZDoom 32 px, {name}, mean of {len(seeds)} seeds", name)
        fig.tight_layout()
        save_figure(fig, RESULTS / "few_step_video.png", dpi=110)
    if res.get("planning"):
        mazes = list(res["planning"])
        fig, axes = plt.subplots(1, len(mazes), figsize=(5 * len(mazes), 3.5), squeeze=False)
        for ax, maze in zip(axes[0], mazes):
            v = res["planning"][maze]
            curves = {f"student, guidance x{f}": {str(e["steps"]): e for e in v["student"].values()
                                                    if (e["guidance_factor"] == 1.0) == (f == "1")}
                      for f in ("1", "20/S")}
            curves["teacher"] = {str(PLANNING["teacher_steps"]): v["teacher"]}
            panel(ax, curves, lambda e: e["score_mean"], f"Maze2D {maze} single task, 100 episodes", "normalized score")
        fig.tight_layout()
        save_figure(fig, RESULTS / "few_step_planning.png", dpi=110)


def markdown(rep: dict) -> str:
    s, r = rep["summary"], rep["results"]
    lines = ["# Few-step sampling (students at S = 1-2 per token vs the DF teacher)", "",
             f"Command: `{rep['command']}` (cells cached in `{rep['runs']}`). Targets: {json.dumps(rep['targets'])}", ""]
    if "demo" in s:
        d = r["demo"]
        lines += ["## Demo: noisy sines (`sequence_small`)", "",
                  f"Energy distance of {DEMO['samples']} sampled windows vs held-out ones (floor: train vs held-out "
                  f"windows {d['curves']['teacher'][str(DEMO['reference_steps'])]['floor']}). Train seconds teacher "
                  f"{d['train_seconds']['teacher']} ({d['train_steps']['teacher']} steps), student "
                  f"{d['train_seconds']['student']} ({d['train_steps']['student']} steps, from the teacher), distilled "
                  f"{d['train_seconds'].get('distilled')}. Teacher: its preset pyramid schedule; students: "
                  "full_sequence.", "",
                  "| model | " + " | ".join(f"S={S}" for S in sorted({int(x) for c in d['curves'].values() for x in c})) + " |"]
        allS = sorted({int(x) for c in d["curves"].values() for x in c})
        lines.append("|---" * (len(allS) + 1) + "|")
        for m, c in d["curves"].items():
            lines.append(f"| {m} | " + " | ".join(f"{c[str(S)]['energy_distance']:.4f}" if str(S) in c else "-"
                                                 for S in allS) + " |")
        lines.append("")
    if "forecast" in s:
        f = r["forecast"]["seeds"]
        lines += ["## Forecasting: exchange_rate_nips CRPS-sum", "",
                  f"Mean over {len(f)} seeds; teacher = `forecast_small` (preset S = {r['forecast']['preset_steps']}).", "",
                  "| seed | teacher S=1 | teacher S=preset | student S=1 | student S=2 | train s teacher / student |",
                  "|---|---|---|---|---|---|"]
        pre = str(r["forecast"]["preset_steps"])
        for seed, v in f.items():
            lines.append(f"| {seed} | {v['teacher']['1']['crps_sum']:.5f} | {v['teacher'][pre]['crps_sum']:.5f} | "
                         f"{v['student']['1']['crps_sum']:.5f} | {v['student']['2']['crps_sum']:.5f} | "
                         f"{v['train_seconds']['teacher']} / {v['train_seconds']['student']} |")
        m = lambda who, S, k="crps_sum": mean(v[who][S][k] for v in f.values())  # noqa: E731
        lines += [f"| mean | {m('teacher', '1'):.5f} | {m('teacher', pre):.5f} | {m('student', '1'):.5f} | "
                  f"{m('student', '2'):.5f} | {mean(v['train_seconds']['teacher'] for v in f.values()):.0f} / "
                  f"{mean(v['train_seconds']['student'] for v in f.values()):.0f} |", "",
                  "Every forecast is de-scaled with the spread factor its run calibrated on validation windows at "
                  "its own sampler settings (the recipe's `early_stop.spread_grid`).", ""]
    if "video" in s:
        lines += ["## Video: ViZDoom 32 px", "",
                  f"{r['video']['episodes']} held-out videos, {r['video']['rollout_frames']}-frame rollouts; Fréchet "
                  "(the video benchmark's feature net) at the 1x and 30x horizons, rollout frames/s (1 thread).", "",
                  "| seed | model | S | Fréchet 1x | Fréchet 30x | frames/s |", "|---|---|---|---|---|---|"]
        for seed, v in r["video"]["seeds"].items():
            for m in ("teacher", "student", "student_self_rollout"):
                for S, e in v.get(m, {}).items():
                    lines.append(f"| {seed} | {m} | {S} | {e['frechet']['1x']:.3f} | {e['frechet']['30x']:.3f} | "
                                 f"{e['frames_per_second']} |")
        lines.append("")
    if "planning" in s:
        lines += ["## Planning: Maze2D single task, 100 episodes (paired by episode)", "",
                  "| maze | model | S | guidance scale x | score ± se | planning s / episode |", "|---|---|---|---|---|---|"]
        for maze, v in r["planning"].items():
            t = v["teacher"]
            lines.append(f"| {maze} | teacher | {PLANNING['teacher_steps']} | 1 | {t['score_mean']} ± {t['score_se']} | "
                         f"{t['plan_seconds_per_episode']} |")
            for e in v["student"].values():
                lines.append(f"| {maze} | student | {e['steps']} | {e['guidance_factor']:g} | {e['score_mean']} ± "
                             f"{e['score_se']} | {e['plan_seconds_per_episode']} |")
        lines.append("")
    lines += ["## Summary", "", "```json", json.dumps(s, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["demo", "forecast", "video", "planning"],
                   choices=("demo", "forecast", "video", "planning"))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="forecast: 0-4; video: 0 1 (default)")
    p.add_argument("--mazes", nargs="+", default=["medium", "large"])
    p.add_argument("--runs", default="runs/few_step", help="run directories and the cell cache")
    p.add_argument("--wait", action="store_true", help="video: wait for the shared teachers' DONE files")
    p.add_argument("--render", action="store_true", help="only rewrite the results from the cached ones")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "few_step.json"
    report = json.loads(path.read_text()) if path.exists() else {"results": {}}
    report["results"] = json.loads(json.dumps(report.get("results", {})))
    if not args.render:
        cells = Cells(runs)
        for task in args.tasks:
            if task == "demo":
                res = demo(runs, cells)
            elif task == "forecast":
                res = forecast_task(runs, cells, args.seeds or [0, 1, 2, 3, 4])
            elif task == "video":
                res = video_task(runs, cells, args.seeds or [0, 1], args.wait)
            else:
                res = planning_task(runs, cells, args.mazes)
            # merge into the file as it is now (another process may have written its tasks meanwhile)
            latest = json.loads(path.read_text()) if path.exists() else {"results": {}}
            new = json.loads(json.dumps(res))  # int keys -> str
            old = latest.get("results", {}).get(task, {})
            if task == "video" and old.get("seeds"):  # a run of some seeds keeps the other seeds' rows
                new["seeds"] = {**old["seeds"], **new["seeds"]}
            if task == "planning":  # ... and a run of some mazes the other mazes'
                new = {**old, **new}
            report["results"] = {**latest.get("results", {}), task: new}
            report["command"] = "python benchmarks/few_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
            report["runs"] = str(runs)
            finish(report, path)
    else:
        finish(report, path)
    print(json.dumps(report["summary"], indent=1))
    return 0


def finish(report: dict, path: Path) -> None:
    report["summary"] = summarize(report["results"])
    report["targets"] = targets(report["summary"])
    report["settings"] = {"demo": DEMO, "forecast": FORECAST, "video": VIDEO, "planning": PLANNING}
    report.setdefault("command", "")
    report.setdefault("runs", "")
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    plot(report["results"])


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main, "benchmarks/few_step.py"))
