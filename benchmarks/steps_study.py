"""Quality vs number of DDIM sampling steps S: how few steps keep the sample quality?

Writes ``benchmarks/results/steps_study.json`` and ``benchmarks/results/steps_study.md``.

:func:`steps_study` is generic: it takes ``sample_and_score(S) -> metric`` for any recipe and reports the
metric for every S and the smallest S whose metric is within ``tolerance`` (5%) of the metric at the
reference S (K/10 by default). This script runs it for the synthetic noisy-sines data (energy distance,
lower is better) with a small RNN trained here (cached in ``--run-dir``, reused when present):

    nice -n 10 python benchmarks/steps_study.py                 # ~5-10 min on the loaded 2-core box

For another recipe, build the callable from its trained model and metric and call :func:`steps_study`
(``task`` names the entry of ``min_steps`` that ``benchmarks/sampling.py`` reports), e.g.::

    from steps_study import steps_study, write_results
    res = steps_study(lambda S: crps_sum_of_forecasts(model, S), steps=[5, 10, 25, 50, 100], ref_steps=100,
                      higher_is_better=False)
    write_results({"forecast": res})          # merges into benchmarks/results/steps_study.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from dforce.data.sequences import WindowDataset
from dforce.data.synthetic import energy_distance, noisy_sines
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine.checkpoint import load_weights
from dforce.engine.trainer import TrainConfig, train
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample

RESULTS = Path(__file__).resolve().parent / "results"


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
    lines = ["# Quality vs DDIM steps S (`python benchmarks/steps_study.py`)", ""]
    for task, s in data["studies"].items():
        lines += [f"## {task}", "", s.get("description", ""), "",
                  f"reference S = {s['ref_steps']} (metric {s['ref_score']:.4f}); smallest S within "
                  f"{100 * s['tolerance']:.0f}%: **{s['min_steps']}**"
                  + (f"; real data vs real data: {s['data_vs_data']:.4f}" if "data_vs_data" in s else ""), "", "| S | metric | seconds |", "|---|---|---|"]
        lines += [f"| {S} | {v:.4f} | {s['seconds'][S]:.1f} |" for S, v in s["scores"].items()]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/steps_study", help="trained model cache (reused when present)")
    p.add_argument("--train-steps", type=int, default=SinesStudyConfig.train_steps)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "steps_study.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = sines_study(SinesStudyConfig(train_steps=args.train_steps), Path(args.run_dir), progress=True)
    data = write_results({"synthetic": res}, Path(args.out))
    print(json.dumps(data["min_steps"]))


if __name__ == "__main__":
    main()
