"""Video metrics: PSNR, SSIM, a Fréchet distance on a feature network trained here, horizon buckets.

Frames are float ``(..., C, H, W)`` in ``[-1, 1]`` (``data_range = 2``), the model convention of
:mod:`dforce.recipes.video.common`.

- :func:`psnr`, :func:`ssim`: per frame. SSIM follows Wang et al. 2004 (IEEE TIP): 11x11 Gaussian window,
  sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances, valid (unpadded) windows, mean
  over pixels and channels.
- :class:`FeatureNet`: no pretrained weights are downloaded, so the Fréchet distance uses a small conv
  encoder trained on the real data by :func:`train_feature_net`. Its input is a *clip* of
  ``clip`` consecutive frames (default 2), so features see motion as well as appearance: a frozen
  rollout (every frame repeated) has the marginal frames of real video but no motion, and a per-frame
  feature cannot tell. It is trained as an autoencoder of the clip plus (when actions exist) an
  inverse-dynamics head predicting the action between the frames; the bottleneck (``feature_dim``, the
  penultimate layer of both heads) defines the distance. Saved as ``model.safetensors`` + ``config.json``
  + ``provenance.json`` (the data it was trained on; :func:`load_feature_net` checks it when asked).
- :func:`frechet_distance`: ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Heusel et al. 2017).
- :func:`horizon_metrics`: metrics on windows of the training length ``T`` ending at 1x, 5x, 10x, 30x ``T``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from dforce.errors import CheckpointError, ConfigError

# ---------------------------------------------------------------- constants
SSIM_WINDOW = 11  # Wang et al. 2004
SSIM_SIGMA = 1.5  # Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004
HORIZON_MULTIPLES = (1, 5, 10, 30)  # the recipe reports rollouts at 1x..30x the training length


# ---------------------------------------------------------------- PSNR / SSIM
def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame.

    Args:
        pred, target: ``(..., C, H, W)``.
    Returns:
        ``(...)`` in dB (``inf`` for identical frames).
    """
    mse = (pred.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0,
         window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Structural similarity per frame (mean SSIM over valid window positions and channels).

    Frames smaller than ``window`` use the largest odd window that fits (same ``sigma``).

    Args:
        pred, target: ``(..., C, H, W)``.
    Returns:
        ``(...)``, 1 for identical frames.
    """
    *lead, C, H, W = pred.shape
    win = min(window, H - (1 - H % 2), W - (1 - W % 2))
    g = _gaussian_window(win, sigma).to(pred.device)
    x = pred.float().reshape(-1, 1, H, W)
    y = target.float().reshape(-1, 1, H, W)

    def blur(z):  # separable valid Gaussian filter: (M, 1, H, W) -> (M, 1, H-win+1, W-win+1)
        z = F.conv2d(z, g.view(1, 1, win, 1))
        return F.conv2d(z, g.view(1, 1, 1, win))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(-2, -1)).reshape(*lead, C).mean(-1)


def per_frame_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR and SSIM at every time step, averaged over videos.

    Args:
        pred, target: ``(N, L, C, H, W)`` in ``[-1, 1]``.
    Returns:
        ``{'psnr': (L,), 'ssim': (L,)}`` (PSNR averaged in dB; identical frames are capped at 100 dB).
    """
    return {"psnr": psnr(pred, target).clamp(max=100.0).mean(0), "ssim": ssim(pred, target).mean(0)}


# ---------------------------------------------------------------- feature network
@dataclass(frozen=True)
class FeatureNetConfig:
    size: int = 32  # frame side (a power of two >= 8)
    channels: int = 3
    clip: int = 2  # consecutive frames per feature (2: appearance + motion; 1: per-frame)
    width: int = 32  # channels of the first conv; doubled per downsampling, capped at 4x
    feature_dim: int = 64  # Fréchet features (bottleneck); ~64-128 keeps the covariance well estimated
    n_actions: int = 0  # > 0 adds the inverse-dynamics head (needs clip >= 2)

    def __post_init__(self):
        if self.size < 8 or self.size & (self.size - 1):
            raise ConfigError(f"FeatureNetConfig.size={self.size} must be a power of two >= 8")
        if self.n_actions > 0 and self.clip < 2:
            raise ConfigError("FeatureNetConfig.n_actions > 0 needs clip >= 2 (actions are read from motion)")


class FeatureNet(nn.Module):
    """Conv encoder ``(B, clip, C, S, S) -> (B, feature_dim)`` with a clip decoder and an action head."""

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = c = config
        n_down = int(math.log2(c.size)) - 2  # down to 4x4
        chans = [(2 * c.clip - 1) * c.channels] + [c.width * min(2**i, 4) for i in range(n_down)]
        enc = []
        for a, b in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(a, b, 4, 2, 1), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(chans[-1] * 16, c.feature_dim))
        dec = []
        rev = chans[::-1]
        for a, b in zip(rev[:-2], rev[1:-1]):
            dec += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.SiLU()]
        dec += [nn.ConvTranspose2d(rev[-2], c.clip * c.channels, 4, 2, 1)]
        self.decoder_in = nn.Linear(c.feature_dim, chans[-1] * 16)
        self.decoder = nn.Sequential(*dec)
        self.action_head = nn.Linear(c.feature_dim, c.n_actions) if c.n_actions > 0 else None
        self._top = chans[-1]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``clips: (B, clip, C, S, S)`` in ``[-1, 1]`` -> features ``(B, feature_dim)``.

        The input also carries the frame differences so motion (or its absence) is explicit.
        """
        diffs = clips[:, 1:] - clips[:, :-1]  # (B, clip-1, C, S, S)
        return self.encoder(torch.cat([clips, diffs], 1).flatten(1, 2))

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` -> reconstructed clips ``(B, clip, C, S, S)``."""
        c = self.config
        h = self.decoder_in(feats).view(-1, self._top, 4, 4)
        return self.decoder(h).view(-1, c.clip, c.channels, c.size, c.size)


def make_clips(video: torch.Tensor, clip: int) -> torch.Tensor:
    """All windows of ``clip`` consecutive frames: ``(N, L, C, H, W) -> (N * (L - clip + 1), clip, C, H, W)``."""
    win = video.unfold(1, clip, 1)  # (N, L-clip+1, C, H, W, clip)
    return win.movedim(-1, 2).flatten(0, 1)


@torch.no_grad()
def video_features(net: FeatureNet, video: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Fréchet features of every clip of a set of videos.

    Args:
        video: ``(N, L, C, S, S)`` in ``[-1, 1]``, ``L >= net.config.clip``.
    Returns:
        ``(N * (L - clip + 1), feature_dim)`` float64.
    """
    net.eval()
    clips = make_clips(video.float(), net.config.clip)
    out = [net(clips[i:i + batch_size]).double() for i in range(0, len(clips), batch_size)]
    return torch.cat(out)


FEATURE_MIN_STEPS = 4  # OneCycleLR needs a warm-up and a decay phase of >= 1 step each


def train_feature_net(frames: torch.Tensor, actions: torch.Tensor | None = None,
                      config: FeatureNetConfig | None = None, steps: int = 1000, batch_size: int = 64,
                      lr: float = 2e-3, seed: int = 0, progress: bool = True) -> FeatureNet:
    """Train the Fréchet feature network on real videos.

    Args:
        frames: ``(N, L, C, S, S)`` in ``[-1, 1]``.
        actions: ``(N, L, A)`` one-hot, ``actions[:, t]`` between frames ``t`` and ``t + 1``; or None.
    Returns:
        the trained :class:`FeatureNet` (eval mode); training time is stored in ``net.train_seconds``.
    """
    N, L, C, S, _ = frames.shape
    A = 0 if actions is None else actions.shape[-1]
    config = config or FeatureNetConfig(size=S, channels=C, n_actions=A)
    if (config.size, config.channels) != (S, C):
        raise ConfigError(f"FeatureNetConfig(size={config.size}, channels={config.channels}) does not match frames {tuple(frames.shape)}")
    if config.n_actions not in (0, A):
        raise ConfigError(f"FeatureNetConfig.n_actions={config.n_actions} does not match the {A} actions given")
    if steps < FEATURE_MIN_STEPS:
        raise ConfigError(f"feature-net training steps must be >= {FEATURE_MIN_STEPS}, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FeatureNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # one-cycle: 10% warm-up, but at least 2 steps (OneCycleLR divides by the warm-up length minus one)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
    k = config.clip
    t0 = time.perf_counter()
    net.train()
    for _ in tqdm(range(steps), desc="feature net", disable=not progress):
        n = torch.randint(N, (batch_size,), generator=gen)
        s = torch.randint(L - k + 1, (batch_size,), generator=gen)
        idx = s[:, None] + torch.arange(k)  # (B, clip)
        clips = frames[n[:, None], idx].float()  # (B, clip, C, S, S)
        feats = net(clips)
        loss = F.mse_loss(net.decode(feats), clips)
        if net.action_head is not None:
            target = actions[n, s + k - 2].argmax(-1)  # the action between the last two frames
            loss = loss + F.cross_entropy(net.action_head(feats), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    net.train_seconds = time.perf_counter() - t0
    return net


FEATURE_NET_PROVENANCE = "provenance.json"  # what the saved net was trained on (written last)


def save_feature_net(net: FeatureNet, directory: str | Path, provenance: dict | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``, then ``provenance.json`` (what the
    net was trained on, e.g. :func:`dforce.recipes.video.recipe.feature_provenance`) when given. The provenance file
    is written last, so its presence means the net is complete."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(asdict(net.config), indent=2))
    if provenance is not None:
        (d / FEATURE_NET_PROVENANCE).write_text(json.dumps(provenance, indent=2))


def feature_net_provenance(directory: str | Path) -> dict:
    """The saved ``provenance.json`` of a feature net (``{}`` when it has none)."""
    f = Path(directory) / FEATURE_NET_PROVENANCE
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from e


def load_feature_net(directory: str | Path, expect: dict | None = None) -> FeatureNet:
    """Rebuild a :class:`FeatureNet` from :func:`save_feature_net` output.

    ``expect``: provenance entries the saved net must have been trained with (e.g. ``{"data": ...}``). A net
    without ``provenance.json``, or trained on other data, raises ``ConfigError``: Fréchet distances from a
    feature net of other data are not comparable, and nothing else would notice.
    """
    from safetensors.torch import load_file

    d = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).exists():
            raise CheckpointError(f"{d / name}: feature-network file does not exist")
    if expect is not None:
        saved = feature_net_provenance(d)
        have = {k: saved.get(k) for k in expect}
        if have != expect:
            diff = sorted(k for k in expect if have[k] != expect[k])
            detail = "; ".join(f"{k}: saved {have[k]}, needed {expect[k]}" for k in diff)
            raise ConfigError(f"{d}: feature net was trained on other data or settings ({detail})"
                              if saved else f"{d}: feature net has no {FEATURE_NET_PROVENANCE}; cannot check "
                              f"that it was trained on this data")
    try:
        config = FeatureNetConfig(**json.loads((d / "config.json").read_text()))
        net = FeatureNet(config)
        net.load_state_dict(load_file(d / "model.safetensors"))
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{d}: feature network does not match its config.json ({e})") from e
    return net.eval()


# ---------------------------------------------------------------- Fréchet distance
def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(Na, D)`` and ``(Nb, D)``.

    ``sqrtm`` is computed in float64 with scipy; when the product is near singular (few samples,
    collapsed sets) ``eps * I`` is added to both covariances, as in pytorch-fid.
    """
    from scipy import linalg

    a, b = (np.asarray(f.cpu() if torch.is_tensor(f) else f, dtype=np.float64) for f in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ConfigError(f"frechet_distance needs two (N>=2, D) feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product is expected for collapsed sets; handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():
            off = eps * np.eye(len(s_a))
            covmean = linalg.sqrtm((s_a + off) @ (s_b + off))
    covmean = covmean.real
    fd = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)
    return float(max(fd, 0.0))


# ---------------------------------------------------------------- horizons
def horizon_windows(length: int, train_length: int,
                    multiples: tuple[int, ...] = HORIZON_MULTIPLES) -> list[tuple[int, int, int]]:
    """``(multiple, start, end)`` for each multiple ``m`` with ``m * T <= length``: frames ``[(m-1)T, mT)``."""
    T = train_length
    return [(m, (m - 1) * T, m * T) for m in multiples if m * T <= length]


def horizon_metrics(pred: torch.Tensor, target: torch.Tensor, train_length: int,
                    feature_net: FeatureNet | None = None, reference_features: torch.Tensor | None = None,
                    multiples: tuple[int, ...] = HORIZON_MULTIPLES) -> list[dict[str, float]]:
    """Metrics of rollouts on the window of ``T`` frames ending at each horizon multiple.

    Args:
        pred, target: ``(N, L, C, H, W)`` in ``[-1, 1]``; ``target`` is the true future under the same actions.
        train_length: ``T``, the model's training sequence length.
        feature_net: when given, adds ``frechet``: pred-window clips vs ``reference_features`` (default:
            the target window's clips; pass a fixed large real set to compare horizons on one scale).
    Returns:
        one dict per horizon: ``multiple, start, end, psnr, ssim`` (+ ``frechet``).
    """
    out = []
    for m, s, e in horizon_windows(pred.shape[1], train_length, multiples):
        row = {"multiple": m, "start": s, "end": e}
        pf = per_frame_metrics(pred[:, s:e], target[:, s:e])
        row["psnr"], row["ssim"] = pf["psnr"].mean().item(), pf["ssim"].mean().item()
        if feature_net is not None:
            ref = reference_features if reference_features is not None else video_features(feature_net, target[:, s:e])
            row["frechet"] = frechet_distance(video_features(feature_net, pred[:, s:e]), ref)
        out.append(row)
    return out
