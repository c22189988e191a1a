"""Honest rollout evaluation: the whole rollout, against "nothing moves", on the pixels that move.

Every video evaluation scores the model's rollout and the **copy-last-frame** baseline (the last real context
frame repeated: "nothing moves") on the same held-out videos, with

* PSNR and SSIM per frame (:mod:`dforce.recipes.video.metrics`), averaged over the frames of a window;
* the **moving-pixel error**: the root-mean-square error, in 0-255 grey levels, over the pixels that change in the
  true video at that step (``|x_t − x_{t−1}| > MOTION_THRESHOLD`` in some channel, ``x_{t−1}`` being the last context
  frame for the first generated one). Copying is wrong exactly there, and whole-frame PSNR barely sees them when the
  moving objects are small (a ball of 2 pixels in 64 × 64);
* the Fréchet distance of 2-frame clips (a feature net trained on the run's training videos).

Windows: at each horizon multiple m the T frames ``[(m−1)T, mT)`` of the rollout (T = the training window), for
m = 1, 2, 4, ... up to the rollout's length, plus one row over **all** generated frames.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dforce.errors import ConfigError

MOTION_THRESHOLD = 0.05  # a pixel "moves" when some channel changes by > 0.05 in [-1, 1] (≈ 6 of 255 levels)
DEFAULT_MULTIPLES = (1, 2, 4)  # horizons reported by default (× the training window); more on request
GREY_LEVELS = 127.5  # [-1, 1] model units -> 0-255 grey levels


def copy_last_rollout(frames: torch.Tensor, context: int, length: int) -> torch.Tensor:
    """The copy-last-frame baseline: ``frames (N, ≥ context, C, H, W)`` → ``(N, context + length, C, H, W)`` whose
    generated part repeats the last context frame."""
    last = frames[:, context - 1:context].expand(-1, length, -1, -1, -1)
    return torch.cat([frames[:, :context], last], 1)


def moving_mask(truth: torch.Tensor, context: int, threshold: float = MOTION_THRESHOLD) -> torch.Tensor:
    """Pixels that change in the true video, for each generated frame: ``truth (N, context + L, C, H, W)`` →
    ``(N, L, H, W)`` bool, True where ``|x_t − x_{t−1}| > threshold`` in some channel (t ≥ context)."""
    if context < 1:
        raise ConfigError("moving_mask needs at least one context frame (the frame before the first generated one)")
    diff = (truth[:, context:].float() - truth[:, context - 1:-1].float()).abs().amax(2)  # (N, L, H, W)
    return diff > threshold


def moving_pixel_error(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """RMSE in 0-255 grey levels over the masked pixels (all channels), pooled over frames and videos.

    ``pred, truth: (N, L, C, H, W)`` in [-1, 1]; ``mask: (N, L, H, W)`` bool. NaN when no pixel is masked."""
    n = int(mask.sum()) * pred.shape[2]
    if n == 0:
        return float("nan")
    sq = (pred.float() - truth.float()).pow(2).sum(2)  # (N, L, H, W): summed over channels
    return math.sqrt(float(sq[mask].sum()) / n) * GREY_LEVELS


def horizon_multiples(length: int, train_length: int, asked: tuple[int, ...] = DEFAULT_MULTIPLES) -> tuple[int, ...]:
    """The asked multiples whose window ``[(m−1)T, mT)`` fits in ``length`` generated frames."""
    return tuple(m for m in sorted(set(asked)) if m >= 1 and m * train_length <= length)


def window_scores(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, feature_net=None) -> dict:
    """PSNR / SSIM / moving-pixel error (+ Fréchet) of one window: ``pred, truth (N, L, C, H, W)``, ``mask (N, L, H, W)``."""
    from dforce.recipes.video.metrics import frechet_distance, per_frame_metrics, video_features

    pf = per_frame_metrics(pred, truth)
    row = {"psnr": pf["psnr"].mean().item(), "ssim": pf["ssim"].mean().item(),
           "moving_err": moving_pixel_error(pred, truth, mask), "moving_frac": float(mask.float().mean())}
    if feature_net is not None and pred.shape[1] >= feature_net.config.clip:
        row["frechet"] = frechet_distance(video_features(feature_net, pred), video_features(feature_net, truth))
    return row


def rollout_scores(videos: dict[str, torch.Tensor], truth: torch.Tensor, context: int, train_length: int,
                   multiples: tuple[int, ...] = DEFAULT_MULTIPLES, feature_net=None) -> dict[str, list[dict]]:
    """Score every rollout in ``videos`` (``{name: (N, context + L, C, H, W)}``, the first ``context`` frames real)
    against ``truth`` (same shape) on each horizon window and on all generated frames.

    Returns ``{name: [{"horizon": "1x", "start", "end", "psnr", "ssim", "moving_err", "moving_frac"[, "frechet"]},
    ..., {"horizon": "all", ...}]}`` (start/end index the generated frames)."""
    L = truth.shape[1] - context
    mask = moving_mask(truth, context)
    true_gen = truth[:, context:]
    windows = [(f"{m}x", (m - 1) * train_length, m * train_length)
               for m in horizon_multiples(L, train_length, multiples)] + [("all", 0, L)]
    out = {}
    for name, video in videos.items():
        if video.shape != truth.shape:
            raise ConfigError(f"rollout {name!r} has shape {tuple(video.shape)}, the truth {tuple(truth.shape)}")
        gen = video[:, context:]
        out[name] = [{"horizon": h, "start": s, "end": e,
                      **window_scores(gen[:, s:e], true_gen[:, s:e], mask[:, s:e], feature_net)} for h, s, e in windows]
    return out


def summary_row(scores: dict[str, list[dict]], name: str, horizon: str) -> dict:
    """One method's row at one horizon (``"1x"``, ``"all"``) from :func:`rollout_scores` output."""
    for row in scores[name]:
        if row["horizon"] == horizon:
            return row
    raise ConfigError(f"no {horizon} window for {name!r} (rollout too short?)")


def scores_table(scores: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: one per method and horizon window."""
    lines = ["| method | horizon | frames | PSNR | SSIM | moving-pixel RMSE (0-255) | Fréchet |", "|---|---|---|---|---|---|---|"]
    for name, rows in scores.items():
        for r in rows:
            fd = f"{r['frechet']:.2f}" if "frechet" in r else "—"
            lines.append(f"| {name} | {r['horizon']} | {r['start']}-{r['end']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                         f"{r['moving_err']:.1f} | {fd} |")
    return lines


def round_scores(scores: dict[str, list[dict]], digits: int = 4) -> dict[str, list[dict]]:
    """JSON-friendly copy (floats rounded, NaN as None)."""
    def r(v):
        if isinstance(v, float):
            return None if not np.isfinite(v) else round(v, digits)
        return v

    return {k: [{kk: r(vv) for kk, vv in row.items()} for row in rows] for k, rows in scores.items()}
