"""Decision-making benchmark: imitation with memory, corrupted observations, compositional generation.

    PYTHONPATH=src python benchmarks/decision.py            # presets imitation_small, compositional_small
    PYTHONPATH=src python benchmarks/decision.py --quick    # a few minutes: short training, 20 episodes

Trains (or reuses, when ``<runs>/<name>/ema.safetensors`` exists and its config equals the requested one)
the three imitation policies (df, markov_diffusion, next_frame) and one compositional model, then:
    imitation     success rate over ``--episodes`` fresh fruit-swap episodes per method;
                  (``df_replan_token``: the DF policy executing each token's plan open-loop, an ablation
                  run when the preset re-plans every step);
    corrupted     success with ``--fraction`` of the steps corrupted (``--corruption``, default distractor):
                  DF treats flagged observations as unknown (its prior fills them: ``policy.impute``) and
                  commits such tokens at the stabilization level (all-flagged tokens at level K),
                  next-frame diffusion can only commit them as clean; ``df_level0`` is the ablation
                  "DF trusting them";
    compositional ``--samples`` paths per mode (memory / mpc) classified cross / stitched / other, plotted.
Writes ``benchmarks/results/decision.json`` (``summary`` + details), ``decision.md`` and the plots
(``--quick``: ``decision_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from dforce.recipes.imitation.corruption import CorruptionHook
from dforce.recipes.imitation.fruit_swap import evaluate
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict, load_config
from dforce.recipes.compositional import recipe as comp
from dforce.recipes.imitation import recipe as imi

ROOT = Path(__file__).resolve().parent.parent
# The Markovian baseline sees the current observation only: one env step per token (a stacked token
# would hand it the last frame_stack observations, a short memory).
METHOD_OVERRIDES = {"markov_diffusion": ["frame_stack=1"]}


EVAL_ONLY = ("policy",)  # config sections that do not change the trained weights


def _reuse(run: Path, cfg) -> bool:
    if not (run / ckpt.EMA_FILE).exists() or not (run / ckpt.CONFIG_FILE).exists():
        return False
    if not (run / ckpt.STATE_FILE).exists():
        return False
    done = ckpt.load_trainer_state(run / ckpt.STATE_FILE)["step"] >= cfg.train.steps
    saved, want = ckpt.load_yaml(run / ckpt.CONFIG_FILE), json.loads(json.dumps(config_to_dict(cfg)))
    return done and all(saved.get(k) == v for k, v in want.items() if k not in EVAL_ONLY)


def imitation_runs(args) -> dict:
    """Train or reuse the three policies; returns ``{method: (cfg, model, schedule, train_seconds)}``."""
    out = {}
    for method in imi.METHODS:
        over = [f"method={method}", *METHOD_OVERRIDES.get(method, [])]
        over += [f"train.steps={args.quick_steps}"] if args.quick else []
        cfg = load_config(imi.ImitationConfig, "imitation_small", over)
        run = Path(args.runs) / f"imitation_{method}"
        secs = None
        if args.retrain or not _reuse(run, cfg):
            secs = imi.train_policy(cfg, run, device=args.device, progress=not args.quiet).seconds
        _, model, schedule = imi.load_run(run, args.device)
        out[method] = (cfg, model, schedule, secs)  # the preset's policy settings (eval-only) apply
    return out


def run_eval(cfg, model, schedule, args, corruption: str | None, level0: bool = False, **policy) -> dict:
    """Success over ``args.episodes``; ``policy``: policy settings changed for this evaluation (ablations)."""
    if policy:
        cfg = replace(cfg, policy=replace(cfg.policy, **policy))
    hook = CorruptionHook(corruption, args.fraction, seed=args.seed) if corruption else None
    policy = imi.make_policy(model, schedule, cfg, corruption_mask=None if hook is None else (lambda: hook.mask),
                             seed=args.seed, device=args.device)
    if level0:
        policy.use_corruption_levels = False
    t0 = time.time()
    res = evaluate(policy, n_episodes=args.episodes, seed=args.seed, obs_hook=hook)
    return {"success_rate": res.success_rate, "episodes": args.episodes,
            "success_by_layout": {str(k): float(res.success[res.layouts == k].mean()) for k in (0, 1)},
            "mean_length": float(res.lengths.mean()), "eval_seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short training, fewer episodes/samples (partial run)")
    p.add_argument("--quick-steps", type=int, default=200, help="training steps per model under --quick")
    p.add_argument("--episodes", type=int, default=None, help="episodes per method (default 100; quick 20)")
    p.add_argument("--samples", type=int, default=None, help="compositional paths per mode (default 200; quick 50)")
    p.add_argument("--corruption", default="distractor", help="corruption kind (default: distractor, as the paper)")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of corrupted steps (default 0.25)")
    p.add_argument("--runs", default=None, help="run directories (default runs/decision[_quick])")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--retrain", action="store_true", help="train even when a finished matching run exists")
    p.add_argument("--skip", default="", help="comma list of parts to skip: imitation,corrupted,compositional")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.episodes = args.episodes or (20 if args.quick else 100)
    args.samples = args.samples or (50 if args.quick else 200)
    args.runs = args.runs or str(ROOT / ("runs/decision_quick" if args.quick else "runs/decision"))
    skip = set(filter(None, args.skip.split(",")))
    name = "decision_quick" if args.quick else "decision"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    details: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")}}
    summary: dict = {}

    if not {"imitation", "corrupted"} <= skip:
        runs = imitation_runs(args)
        details["train"] = {m: {"steps": c.train.steps, "seconds": s, "config": config_to_dict(c)}
                            for m, (c, _, _, s) in runs.items()}
        if "imitation" not in skip:
            details["imitation"] = {m: run_eval(c, mo, sc, args, None) for m, (c, mo, sc, _) in runs.items()}
            if runs["df"][0].policy.replan != "token":  # ablation: plan once per token, execute it open-loop
                details["imitation"]["df_replan_token"] = run_eval(*runs["df"][:3], args, None, replan="token")
            summary["imitation"] = {m: details["imitation"][m]["success_rate"] for m in imi.METHODS}
            summary["imitation"]["episodes"] = args.episodes
            print(json.dumps({"imitation": summary["imitation"]}), flush=True)
        if "corrupted" not in skip:
            d = {m: run_eval(*runs[m][:3], args, args.corruption) for m in ("df", "next_frame")}
            d["df_level0"] = run_eval(*runs["df"][:3], args, args.corruption, level0=True)
            details["corrupted"] = {"kind": args.corruption, "fraction": args.fraction, **d}
            summary["corrupted"] = {"df": d["df"]["success_rate"], "next_frame": d["next_frame"]["success_rate"],
                                    "episodes": args.episodes}
            print(json.dumps({"corrupted": summary["corrupted"]}), flush=True)

    if "compositional" not in skip:
        over = [f"train.steps={args.quick_steps}"] if args.quick else []
        cfg = load_config(comp.CompositionalConfig, "compositional_small", over)
        run = Path(args.runs) / "compositional"
        secs = None
        if args.retrain or not _reuse(run, cfg):
            secs = comp.train_model(cfg, run, device=args.device, progress=not args.quiet).seconds
        rep = comp.sample_run(run, n=args.samples, out=out / f"{name}_compositional", seed=args.seed,
                              device=args.device)
        details["compositional"] = {"train_steps": cfg.train.steps, "train_seconds": secs, **rep}
        summary["compositional"] = {m: {"cross": rep[m]["cross"], "stitched": rep[m]["stitched"],
                                        "samples": args.samples} for m in comp.MODES}
        print(json.dumps({"compositional": summary["compositional"]}), flush=True)

    result = {"summary": summary, "partial": bool(args.quick or skip), **details,
              "seconds": round(time.time() - t_start, 1), "command": "python benchmarks/decision.py " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(markdown(result))
    print(f"wrote {out / name}.json and .md")
    return 0


def _rel(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else str(p)


def markdown(r: dict) -> str:
    s = r["summary"]
    lines = [f"# Decision-making benchmark{' (PARTIAL / quick)' if r['partial'] else ''}", "",
             f"`{r['command']}` — {r['seconds']:.0f} s. Observations: 13-D state + 10 gripper-relative offsets "
             "(no images). Settings per model (backbone, frame stack, demo perturbations, action loss weight, "
             "policy) in the JSON.", ""]
    if "train" in r:
        lines += ["| model | backbone | frame_stack | train steps | train seconds |", "|---|---|---|---|---|"]
        for m, t in r["train"].items():
            c = t["config"]
            secs = "reused" if t["seconds"] is None else f"{t['seconds']:.0f}"
            lines.append(f"| {m} | {c['model']['backbone']} w{c['model']['width']} d{c['model']['depth']} | "
                         f"{c['frame_stack']} | {t['steps']} | {secs} |")
        lines.append("")
    if "imitation" in s:
        lines += ["## Fruit swap imitation (success rate)", "", "| method | success | episodes | paper |",
                  "|---|---|---|---|"]
        paper = {"df": "80%", "markov_diffusion": "fails (no memory)", "next_frame": "-"}
        for m in imi.METHODS:
            lines.append(f"| {m} | {s['imitation'][m]:.0%} | {s['imitation']['episodes']} | {paper[m]} |")
        if "df_replan_token" in r.get("imitation", {}):
            lines.append(f"| df, one plan per token executed open-loop (ablation) | "
                         f"{r['imitation']['df_replan_token']['success_rate']:.0%} | {s['imitation']['episodes']} | - |")
        lines.append("")
    if "corrupted" in s:
        c = r["corrupted"]
        lines += [f"## With corrupted observations ({c['kind']}, {c['fraction']:.0%} of steps)", "",
                  "| method | success | episodes | paper |", "|---|---|---|---|",
                  f"| df (corrupted steps imputed ({r['train']['df']['config']['policy']['impute']}), token at the "
                  "stabilization level; all-corrupted tokens at level K) | "
                  f"{c['df']['success_rate']:.0%} | {s['corrupted']['episodes']} | 76% |",
                  f"| df, corrupted steps fed as clean (ablation) | {c['df_level0']['success_rate']:.0%} | "
                  f"{s['corrupted']['episodes']} | - |",
                  f"| next_frame | {c['next_frame']['success_rate']:.0%} | {s['corrupted']['episodes']} | 48% |", ""]
    if "compositional" in s:
        c = r["compositional"]
        lines += ["## Compositional generation (fraction of sampled paths)", "",
                  "| mode | cross | stitched | other | samples | plot |", "|---|---|---|---|---|---|"]
        for m in comp.MODES:
            lines.append(f"| {m} | {c[m]['cross']:.0%} | {c[m]['stitched']:.0%} | {c[m]['other']:.0%} | "
                         f"{c[m]['samples']} | `{_rel(c[m]['plot'])}` |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main, "benchmarks/decision.py"))  # user errors: one line, exit code 2
