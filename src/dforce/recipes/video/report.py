"""``dforce video sample`` end to end: held-out videos of the run, the rollout, the copy-last-frame baseline, the
metrics of :mod:`dforce.recipes.video.evaluate` over the whole rollout, and the outputs (GIF, MP4, PNG strips, JSON).

    report = evaluate_run("runs/my_video", length=64, episodes=16)   # what the CLI prints and writes
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from dforce.errors import DataError
from dforce.recipes.video.evaluate import DEFAULT_MULTIPLES, copy_last_rollout, round_scores, rollout_scores, scores_table
from dforce.recipes.video.heldout import load_split

FEATURE_NET_DIR = "feature_net"  # <run>/feature_net: the Fréchet feature net of the run's training videos
FEATURE_STEPS = 600  # its training steps (a 2-frame clip autoencoder + action head; ~1-2 min at 64 px on one core)


def heldout_videos(run_dir: str | Path, cfg, episodes: int, length: int, progress: bool = False):
    """``(frames (n, L, C, H, W), actions (n, L, A), ids)``: the first ``episodes`` held-out videos of the run,
    long enough for ``cfg.context + length`` frames. A file source uses the episodes ``<run>/split.json`` holds out
    (never a training episode); generated sources draw held-out videos with the held-out seed."""
    from dforce.recipes.video.recipe import load_video_data

    T = cfg.data.window
    need = (length + cfg.context) // T + 1
    if not cfg.data.is_file:
        dcfg = dataclasses.replace(cfg.data, eval_episodes=episodes, eval_multiple=max(cfg.data.eval_multiple, need))
        frames, actions = load_video_data(dcfg, "eval", progress)
        ids = list(range(episodes))
    else:
        from dforce.recipes.video.common import to_model_frames
        from dforce.recipes.video.files import load_video_file
        from dforce.recipes.video.recipe import data_split_record

        rec = load_split(run_dir) or data_split_record(cfg.data)  # runs made before split.json: the config's split
        data = load_video_file(cfg.data.source, min_length=cfg.data.window)
        if rec.get("episodes") != data.frames.shape[0]:
            raise DataError(f"{cfg.data.source}: has {data.frames.shape[0]} episodes, the run was trained on a file of "
                            f"{rec.get('episodes')} ({Path(run_dir) / 'split.json'}); its held-out episodes are unknown")
        held = rec["heldout"]
        if episodes > len(held):
            raise DataError(f"--episodes {episodes}: the run holds out {len(held)} episodes of {cfg.data.source} "
                            f"({held}); the others were trained on (set data.eval_episodes or data.heldout when training)")
        ids = held[:episodes]
        frames, actions = to_model_frames(data.frames[ids]), torch.as_tensor(data.actions[ids], dtype=torch.float32)
    frames, actions = frames[:episodes], actions[:episodes]
    if actions.shape[1] < cfg.context + length:
        raise DataError(f"the held-out videos have {actions.shape[1]} frames; a rollout of {length} frames after "
                        f"{cfg.context} context frames needs {cfg.context + length}")
    return frames, actions, ids


def run_feature_net(run_dir: str | Path, cfg, steps: int = FEATURE_STEPS, progress: bool = False):
    """The Fréchet feature net of the run (trained once on the run's *training* videos, saved in
    ``<run>/feature_net`` and reused; a net of other data or steps is refused, so scores of one run share a scale)."""
    from dforce.recipes.video.metrics import load_feature_net, save_feature_net, train_feature_net
    from dforce.recipes.video.recipe import feature_provenance, load_video_data

    d = Path(run_dir) / FEATURE_NET_DIR
    prov = feature_provenance(cfg.data, steps)
    if (d / "provenance.json").exists():
        return load_feature_net(d, expect=prov)
    frames, actions = load_video_data(cfg.data, "train", progress)
    net = train_feature_net(frames, actions if actions.shape[-1] else None, steps=steps, progress=progress)
    save_feature_net(net, d, prov)
    return net


def evaluate_run(run_dir: str | Path, length: int, episodes: int = 4, sampler=None, seed: int = 0,
                 multiples: tuple[int, ...] = DEFAULT_MULTIPLES, frechet: bool = True, out: str | Path | None = None,
                 fps: int = 10, device: str = "cpu", progress: bool = False, feature_steps: int = FEATURE_STEPS,
                 model=None, schedule=None, cfg=None, feature_net=None) -> dict:
    """Roll out ``episodes`` held-out videos ``length`` frames past the context, score them and copy-last-frame on
    every horizon window and on all generated frames, and write ``<out>.gif``, ``<out>.mp4``, ``<out>_strip<i>.png``
    and ``<out>.json`` (``out`` default: ``<run>/rollout_<length>``). Returns the report (what the JSON holds).
    ``feature_net``: score Fréchet with this net (e.g. one net shared by the runs of a study) instead of the run's."""
    from dforce.recipes.video.recipe import load_run, method_config, rollout
    from dforce.recipes.video.viz import write_rollout_outputs

    if model is None:
        model, schedule, cfg = load_run(run_dir, device)
    smp = sampler or method_config(cfg).sampler
    T, C = cfg.data.window, cfg.context
    frames, actions, ids = heldout_videos(run_dir, cfg, episodes, length, progress)
    video, seconds = rollout(model, schedule, cfg, frames, actions, length, smp, seed, device, progress=progress)
    truth = frames[:, :video.shape[1]]
    copy = copy_last_rollout(truth, C, video.shape[1] - C)
    net = (feature_net or run_feature_net(run_dir, cfg, feature_steps, progress)) if frechet else None
    t0 = time.perf_counter()
    scores = rollout_scores({cfg.method: video, "copy_last": copy}, truth, C, T, multiples, net)
    stem = Path(out) if out is not None else Path(run_dir) / f"rollout_{length}"
    stem = stem.with_suffix("") if stem.suffix in (".gif", ".mp4", ".json", ".png") else stem
    files = write_rollout_outputs(stem, {"truth": truth, cfg.method: video, "copy last": copy}, context=C, fps=fps,
                                  strip_times=strip_times(C, video.shape[1] - C, T))
    gen = video.shape[0] * (video.shape[1] - C)
    report = {"run_dir": str(run_dir), "heldout_episodes": ids, "frames": int(video.shape[1]), "context": C,
              "train_window": T, "seconds": round(seconds, 2), "frames_per_second": round(gen / seconds, 2),
              "score_seconds": round(time.perf_counter() - t0, 2), "sampler": dataclasses.asdict(smp),
              "scores": round_scores(scores), "files": {k: str(v) for k, v in files.items()}}
    path = stem.parent / f"{stem.name}.json"
    from dforce.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    path.with_suffix(".md").write_text("\n".join(scores_table(scores)) + "\n")
    report["files"]["json"] = str(path)
    return report


def strip_times(context: int, length: int, train_length: int) -> list[int]:
    """Frame indices a strip shows: the last context frame, the first three generated ones, then each horizon end."""
    t = [context - 1, context, context + 1, context + 2]
    m = 1
    while m * train_length <= length:
        t.append(context + m * train_length - 1)
        m *= 2
    return sorted(set(i for i in t if i < context + length))
