"""Action-conditioned video world model (paper §4.2 video prediction), one recipe top to bottom.

    cfg = load_config(VideoRunConfig, "video_digits_tiny", ["train.steps=500"])
    result = train_video(cfg, "runs/video")                        # Algorithm 1 on frame tokens
    model, schedule, cfg = load_run("runs/video")
    frames, actions = load_video_data(cfg.data, "eval")            # (N, L, C, H, W), (N, L, A)
    video = rollout(model, schedule, cfg, frames, actions, length=10 * cfg.data.window)

Tokens are frames (or ``frame_stack`` frames stacked on channels). Two model families (``latent``):
``spatial`` (the paper's video design): a ConvGRU whose recurrent state is a feature map, inside a conv
encoder/decoder with U-Net skips (:class:`dforce.recipes.video.conv_rnn.ConvGRUDenoiser`); ``vector``: a conv
encoder/decoder (:mod:`dforce.recipes.video.codec`) around a backbone that sees one vector per frame
(the GRU of :mod:`dforce.models.rnn`, or the causal transformer). Each token's conditioning is the
action that *led into* its frame (:func:`dforce.recipes.video.common.actions_into_frames`), so the model predicts frame t+1 from frames
≤ t and actions ≤ t. Rollouts of any length start from a few real frames and follow the real actions;
generated frames are fed back at the stabilization level (paper §3.4).

The two baselines share backbone and budget and differ only in training levels and sampling
(:func:`method_config`): teacher forcing (clean past, next token noisy; autoregressive sampling without
stabilization; with the spatial latent *every* token is trained as the noisy next token of its clean
past, :class:`CleanPastTeacherForcing`) and causal full-sequence diffusion (one level for the whole
window; full-sequence schedule over a sliding window).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dforce.recipes.video.common import VideoData, actions_into_frames, to_model_frames
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict
from dforce.engine.trainer import TrainConfig, TrainResult, train
from dforce.errors import CheckpointError, ConfigError, DataError
from dforce.models import ModelConfig, build_model
from dforce.recipes.video.conv_rnn import ConvGRUDenoiser
from dforce.recipes.video.codec import CodecConfig, frame_codec
from dforce.recipes.video.heldout import EVAL_SEED_OFFSET, episode_split, save_split, split_record
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample
from dforce.self_rollout import RolloutSpec
from dforce.shortcut import make_student

METHODS = ("df", "teacher_forcing", "full_sequence")
LATENTS = ("vector", "spatial")
BUILTIN_SOURCES = ("digits", "vizdoom")


@dataclass(frozen=True)
class VideoDataConfig:
    source: str = "digits"  # digits | vizdoom | path to a .npy/.npz video file
    resolution: int = 32  # frame side (digits: 16/32, vizdoom: 16/32/64; files: must match the file)
    episodes: int = 256  # training videos generated (digits/vizdoom)
    episode_length: int = 64  # frames per training video
    window: int = 16  # training length T in frames (reference DMLab: 36 frames)
    eval_episodes: int = 8  # held-out videos (generated with another seed; files: a seeded split by episode)
    eval_multiple: int = 30  # held-out videos are long enough for rollouts of this many × T
    seed: int = 0
    # files: the held-out episodes (0-based indices into the file); None: eval_episodes of them drawn by a permutation
    # seeded with split_seed. Recorded in <run>/split.json; training never sees them (dforce.recipes.video.heldout)
    heldout: list[int] | None = None
    split_seed: int = 0

    def __post_init__(self):
        if self.window < 2 or self.episode_length < self.window:
            raise ConfigError(f"data.window must be in [2, data.episode_length], got {self.window}")
        if self.episodes < 1 or self.eval_episodes < 1 or self.eval_multiple < 1:
            raise ConfigError("data.episodes, data.eval_episodes and data.eval_multiple must be >= 1")

    @property
    def is_file(self) -> bool:
        """Whether the videos come from a user's file (split by episode) rather than a generator."""
        return self.source not in BUILTIN_SOURCES


@dataclass(frozen=True)
class VideoRunConfig:
    method: str = "df"  # df | teacher_forcing | full_sequence (sets objective/sampler, see method_config)
    latent: str = "vector"  # vector: one backbone vector per frame | spatial: ConvGRU map (paper's video RNN)
    frame_stack: int = 1  # frames per token, stacked on channels (reference DMLab: 4)
    context: int = 4  # real frames given before a rollout (reference DMLab: 4)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    diffusion: NoiseScheduleConfig = field(default_factory=lambda: NoiseScheduleConfig(
        num_levels=1000, beta_schedule="cosine", objective="v"))  # reference video: cosine, v-pred
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="rnn", width=256, depth=2))
    codec: CodecConfig = field(default_factory=CodecConfig)
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(
        weighting="fused_snr", fused_snr_decay=0.8))  # reference video: fused SNR, γ-decay 0.8
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, batch_size=16, steps=1000))
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(
        steps=10, schedule="pyramid", uncertainty_scale=1.0, window=4, stabilization_level=20))
    # small moving objects (docs/your_data.md, "What we learned"). prev_frame: the spatial latent's stem also sees the
    # previous token at full resolution and its level (ConvGRUDenoiser prev_frame). motion_weight w: in the loss, the
    # pixels that change from the previous frame (dilated by one pixel) weigh 1 + w against 1 for the others,
    # renormalized per token (0: uniform, the paper's loss)
    prev_frame: bool = False
    motion_weight: float = 0.0

    def __post_init__(self):
        if self.prev_frame and self.latent != "spatial":
            raise ConfigError("prev_frame=true is an option of the spatial latent (latent=spatial)")
        if self.motion_weight < 0:
            raise ConfigError(f"motion_weight must be >= 0, got {self.motion_weight}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.latent not in LATENTS:
            raise ConfigError(f"latent must be one of {', '.join(LATENTS)}, got {self.latent!r}")
        if self.latent == "spatial" and self.model.backbone != "rnn":
            raise ConfigError("latent=spatial is a recurrent (ConvGRU) model; it needs model.backbone=rnn")
        if self.frame_stack < 1 or self.data.window % self.frame_stack:
            raise ConfigError(f"frame_stack={self.frame_stack} must be >= 1 and divide data.window={self.data.window}")
        if self.context < self.frame_stack or self.context % self.frame_stack or self.context >= self.data.window:
            raise ConfigError(f"context={self.context} must be a multiple of frame_stack={self.frame_stack} "
                              f"and smaller than data.window={self.data.window}")


def method_config(cfg: VideoRunConfig, method: str | None = None) -> VideoRunConfig:
    """The run config with ``objective.level_strategy`` and sampling set for ``method``.

    df: independent levels; the configured sampler (pyramid + stabilization).
    teacher_forcing: clean past / noisy next token; autoregressive schedule, no stabilization. With the
        spatial latent every token is a noisy target on its clean past (levels drawn independently and
        routed through :class:`CleanPastTeacherForcing`; fused SNR falls back to min-SNR since the
        past is clean); with the vector latent one token per sequence is.
    full_sequence: one level per window; full-sequence schedule over a window of T − context frames,
        no stabilization (generated frames are committed as clean, as in causal full-sequence diffusion).
    """
    method = method or cfg.method
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    rep = dataclasses.replace
    if method == "df":
        obj, smp = rep(cfg.objective, level_strategy="independent"), cfg.sampler
    elif method == "teacher_forcing" and cfg.latent == "spatial":
        weighting = "min_snr" if cfg.objective.weighting == "fused_snr" else cfg.objective.weighting
        obj = rep(cfg.objective, level_strategy="independent", weighting=weighting)
        smp = rep(cfg.sampler, schedule="autoregressive", stabilization_level=0)
    elif method == "teacher_forcing":
        obj = rep(cfg.objective, level_strategy="teacher_forcing")
        smp = rep(cfg.sampler, schedule="autoregressive", stabilization_level=0)
    else:
        obj = rep(cfg.objective, level_strategy="full_sequence")
        win = (cfg.data.window - cfg.context) // cfg.frame_stack
        smp = rep(cfg.sampler, schedule="full_sequence", stabilization_level=0, window=max(1, win))
    return rep(cfg, method=method, objective=obj, sampler=smp)


# ------------------------------------------------------------------------------------------- data
def _video_data(dcfg: VideoDataConfig, split: str, progress: bool = True) -> VideoData:
    long = dcfg.window * dcfg.eval_multiple + 1
    n, length, seed = ((dcfg.episodes, dcfg.episode_length, dcfg.seed) if split == "train"
                       else (dcfg.eval_episodes, long, dcfg.seed + EVAL_SEED_OFFSET))
    if dcfg.source == "digits":
        from dforce.recipes.video.synthetic import MovingDigitsConfig, generate_moving_digits

        return generate_moving_digits(n, length, seed, MovingDigitsConfig(size=dcfg.resolution))
    if dcfg.source == "vizdoom":
        from dforce.recipes.video.vizdoom import generate_vizdoom

        return generate_vizdoom(n, length, dcfg.resolution, seed, progress=progress)
    from dforce.recipes.video.files import load_video_file

    data = load_video_file(dcfg.source, min_length=dcfg.window)
    N, H = data.frames.shape[0], data.frames.shape[2]
    if H != dcfg.resolution or data.frames.shape[3] != dcfg.resolution:
        raise DataError(f"{dcfg.source}: frames are {H}x{data.frames.shape[3]}, config data.resolution is "
                        f"{dcfg.resolution} (set data.resolution={H} for square frames)")
    train, held = file_split(dcfg, N)
    idx = train if split == "train" else held
    return VideoData(data.frames[idx], data.actions[idx], data.action_names)


def file_split(dcfg: VideoDataConfig, num_episodes: int) -> tuple:
    """``(train, heldout)`` episode indices of a file source (:func:`dforce.recipes.video.heldout.episode_split`)."""
    return episode_split(num_episodes, dcfg.eval_episodes, dcfg.split_seed, dcfg.heldout, where=dcfg.source)


def data_split_record(dcfg: VideoDataConfig) -> dict:
    """The split ``<run>/split.json`` records for ``dcfg`` (episode indices for a file, seeds for a generator)."""
    if not dcfg.is_file:
        return split_record(dcfg.source, None, None, None, seed=dcfg.seed)
    from dforce.recipes.video.files import load_video_file

    N = load_video_file(dcfg.source, min_length=dcfg.window).frames.shape[0]
    return split_record(dcfg.source, N, *file_split(dcfg, N))


def load_video_data(dcfg: VideoDataConfig, split: str = "train",
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(N, L, C, H, W)`` float in [-1, 1] and actions ``(N, L, A)`` of the train / eval split."""
    if split not in ("train", "eval"):
        raise ConfigError(f"split must be train or eval, got {split!r}")
    d = _video_data(dcfg, split, progress)
    return to_model_frames(d.frames), torch.as_tensor(d.actions, dtype=torch.float32)


def feature_provenance(dcfg: VideoDataConfig, steps: int | None = None) -> dict:
    """What a Fréchet feature net trained on the training videos of ``dcfg`` records (and is checked
    against by :func:`dforce.recipes.video.metrics.load_feature_net`): the data config without the fields that do not
    change the training videos (window, held-out split of a generated source), plus its training ``steps`` when
    given. A file's split decides its training episodes, so it stays in."""
    d = dataclasses.asdict(dcfg)
    for k in ("window", "eval_multiple") + (() if dcfg.is_file else ("eval_episodes", "heldout", "split_seed")):
        d.pop(k)
    return {"data": d} if steps is None else {"data": d, "feature_steps": steps}


def stack_frames(frames: torch.Tensor, into: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames (B, T, C, H, W)``, ``into (B, T, A)`` → tokens ``(B, T/k, kC, H, W)``, cond ``(B, T/k, kA)``."""
    B, T, C, H, W = frames.shape
    return frames.reshape(B, T // k, k * C, H, W), into.reshape(B, T // k, k * into.shape[-1])


def unstack_frames(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Tokens ``(B, T', kC, H, W)`` → frames ``(B, T'k, C, H, W)``."""
    B, T, KC, H, W = tokens.shape
    return tokens.reshape(B, T * k, KC // k, H, W)


class VideoTokenDataset:
    """Random training windows as tokens: ``get_batch(idx) -> {'x': (B, T', kC, H, W), 'cond': (B, T', kA)}``.

    Frames are kept as uint8 and converted per batch. ``cond`` of a frame is the action that led into
    it, taken from the whole episode (so a window's first frame knows its incoming action too).
    """

    def __init__(self, frames_u8: torch.Tensor, actions: torch.Tensor, window: int, frame_stack: int = 1,
                 clean_in_cond: bool = False, motion_weight: float = 0.0):
        N, L = frames_u8.shape[:2]
        self.frames, self.window, self.k, self.clean_in_cond = frames_u8, window, frame_stack, clean_in_cond
        self.motion_weight = motion_weight
        self.into = actions_into_frames(actions)  # (N, L, A)
        starts = torch.arange(0, L - window + 1)
        self.index = torch.cartesian_prod(torch.arange(N), starts)  # (N · starts, 2)

    def __len__(self) -> int:
        return len(self.index)

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        n, s = self.index[idx].unbind(-1)
        t = s[:, None] + torch.arange(self.window)  # (B, T)
        frames = self.frames[n[:, None], t].float() / 127.5 - 1.0  # (B, T, C, H, W)
        x, cond = stack_frames(frames, self.into[n[:, None], t], self.k)
        if self.clean_in_cond:  # the clean tokens ride along for CleanPastTeacherForcing
            cond = torch.cat([cond, x.flatten(2)], -1)
        batch = {"x": x, "cond": cond}
        if self.motion_weight > 0:
            prev = self.frames[n[:, None], (t - 1).clamp(min=0)].float() / 127.5 - 1.0  # (B, T, C, H, W); t=0: itself
            batch["entry_weights"] = motion_weights(frames, prev, self.motion_weight, self.k)
        return batch


def motion_weights(frames: torch.Tensor, prev: torch.Tensor, weight: float, frame_stack: int = 1,
                   threshold: float = 0.05) -> torch.Tensor:
    """Per-entry loss weights of frame tokens: ``1 + weight`` on the pixels that change from the previous frame by more
    than ``threshold`` in some channel (dilated by one pixel: the edges of a moving object), 1 elsewhere, scaled so
    every token's weights average 1 (the loss keeps its scale). ``frames, prev: (B, T, C, H, W)`` in [-1, 1] →
    ``(B, T / frame_stack, frame_stack · C · H · W)``."""
    B, T, C, H, W = frames.shape
    moved = ((frames - prev).abs().amax(2) > threshold).float()  # (B, T, H, W)
    moved = F.max_pool2d(moved.view(B * T, 1, H, W), 3, stride=1, padding=1).view(B, T, 1, H, W)
    w = (1.0 + weight * moved).expand(B, T, C, H, W).reshape(B, T // frame_stack, -1)  # (B, T', k·C·H·W)
    return w / w.mean(-1, keepdim=True)


class CleanPastTeacherForcing(torch.nn.Module):
    """Training view of a spatial model for two-stream teacher forcing (every token noisy on a clean past).

    The trainer calls ``model(x_noisy, levels, cond)``; here ``cond = cat(actions (kA), clean tokens
    flattened)`` (:class:`VideoTokenDataset` with ``clean_in_cond``), split and passed to
    ``net.forward_clean_past``. Its only parameters are ``net``'s, under the prefix ``net.``.
    """

    def __init__(self, net: torch.nn.Module, cond_dim: int):
        super().__init__()
        self.net, self.cond_dim = net, cond_dim

    def forward(self, x: torch.Tensor, levels: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        act, clean = cond.split([self.cond_dim, cond.shape[-1] - self.cond_dim], -1)
        return self.net.forward_clean_past(x, levels, clean.view_as(x), act if self.cond_dim else None)


# ------------------------------------------------------------------------------------------ model
def token_shape(cfg: VideoRunConfig, channels: int = 3) -> tuple[int, int, int]:
    r = cfg.data.resolution
    return (cfg.frame_stack * channels, r, r)


def build_video_model(cfg: VideoRunConfig, n_actions: int, channels: int = 3) -> torch.nn.Module:
    """Conv codec + causal backbone for tokens ``(B, T', kC, H, W)`` with cond ``(B, T', kA)``.

    ``latent=spatial``: :class:`ConvGRUDenoiser` with a ``model.width x codec.bottom²`` recurrent map,
    ``model.depth`` ConvGRU layers and ``codec.channels``/``codec.max_channels`` conv stages.

    A transformer without ``model.max_context`` gets a sliding KV cache of T' − sampler.window tokens so
    long rollouts never attend further back than training did.
    """
    shape = token_shape(cfg, channels)
    if cfg.latent == "spatial":  # codec sizes the conv stages, model.width/depth the ConvGRU map
        model = ConvGRUDenoiser(shape, cfg.diffusion.num_levels, cfg.frame_stack * n_actions, cfg.codec.channels,
                                cfg.codec.max_channels, cfg.codec.bottom, cfg.model.width, cfg.model.depth,
                                causal=cfg.model.causal, prev_frame=cfg.prev_frame)
        return make_student(model, cfg.model.shortcut_steps) if cfg.model.shortcut_steps else model
    enc, dec = frame_codec(shape, cfg.model.width, cfg.codec)
    mcfg = cfg.model
    if mcfg.backbone == "transformer" and mcfg.max_context is None:
        # keep a rollout's attention span at the training length: cache T' − window committed tokens
        tokens = cfg.data.window // cfg.frame_stack
        mcfg = dataclasses.replace(mcfg, max_context=max(1, tokens - min(cfg.sampler.window, tokens - 1)))
    return build_model(mcfg, shape, cfg.diffusion.num_levels, cond_dim=cfg.frame_stack * n_actions,
                       encoder=enc, decoder=dec)


def train_video(cfg: VideoRunConfig, run_dir: str | Path | None, device: str = "cpu", progress: bool = True,
                resume: bool = False, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainResult:
    """Train the configured method on ``cfg.data`` (or on ``data = (frames, actions)`` already loaded)."""
    cfg = method_config(cfg)
    frames, actions = data if data is not None else load_video_data(cfg.data, "train", progress)
    if frames.shape[1] < cfg.data.window:
        raise DataError(f"training videos have {frames.shape[1]} frames, fewer than data.window={cfg.data.window}")
    torch.manual_seed(cfg.train.seed)
    u8 = ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    two_stream = uses_clean_past(cfg)
    dataset = VideoTokenDataset(u8, actions, cfg.data.window, cfg.frame_stack, clean_in_cond=two_stream,
                                motion_weight=cfg.motion_weight)
    model = build_video_model(cfg, actions.shape[-1], frames.shape[2])
    if two_stream:
        model = CleanPastTeacherForcing(model, cfg.frame_stack * actions.shape[-1])
    schedule = NoiseSchedule(cfg.diffusion)
    conf = config_to_dict(cfg)
    conf["n_actions"], conf["channels"] = int(actions.shape[-1]), int(frames.shape[2])
    if run_dir is not None:  # which episodes are held out, recorded before the first step
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_split(run_dir, data_split_record(cfg.data))
    # train.self_rollout: a share of each batch continues the model's own rollout, sampled as at test time
    spec = RolloutSpec(cfg.sampler, cfg.context // cfg.frame_stack) if cfg.train.self_rollout > 0 else None
    cpu0 = _cpu_seconds()
    res = train(model, schedule, dataset, cfg.train, cfg.objective, run_dir=run_dir, config_dict=conf,
                resume=resume, device=device, progress=progress, rollout=spec)
    if run_dir is not None:  # what the training cost: wall time, and this process's CPU time (a shared machine)
        cost = {"steps": res.step, "seconds": round(res.seconds, 1), "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
                "threads": torch.get_num_threads(), "resumed": resume}
        ckpt.atomic_write_bytes(Path(run_dir) / TRAIN_TIME_FILE, json.dumps(cost).encode())
    if two_stream:  # hand back the sampling model itself
        res = dataclasses.replace(res, model=res.model.net, raw_model=res.raw_model.net)
    return res


TRAIN_TIME_FILE = "train_time.json"  # {"steps", "seconds" (wall), "cpu_seconds" (this process), "threads", "resumed"}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def uses_clean_past(cfg: VideoRunConfig) -> bool:
    """Whether ``cfg`` trains two-stream teacher forcing (:class:`CleanPastTeacherForcing`)."""
    return cfg.method == "teacher_forcing" and cfg.latent == "spatial"


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, NoiseSchedule, VideoRunConfig]:
    """Rebuild the sampling model of a training run directory (``config.yaml`` + the EMA weights, or the raw ones for
    a run too short for its EMA: :func:`sampling_weights`)."""
    run_dir = Path(run_dir)
    if not (run_dir / ckpt.CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir}: not a video run directory (no {ckpt.CONFIG_FILE})")
    conf = ckpt.load_yaml(run_dir / ckpt.CONFIG_FILE)
    n_actions, channels = int(conf.pop("n_actions", 0)), int(conf.pop("channels", 3))
    cfg = ckpt.read_run_config(run_dir, VideoRunConfig, "video", config=conf)
    model = build_video_model(cfg, n_actions, channels)
    saved = CleanPastTeacherForcing(model, cfg.frame_stack * n_actions) if uses_clean_past(cfg) else model
    ckpt.load_weights(saved, sampling_weights(run_dir, cfg))
    return model.to(device).eval(), NoiseSchedule(cfg.diffusion).to(device), cfg


EMA_MIN_FORGOTTEN = 3.0  # use the EMA once steps · (1 − decay) ≥ 3: < 5 % of the random init left (the planner's rule)


def sampling_weights(run_dir: Path, cfg: VideoRunConfig) -> Path:
    """The EMA weights, unless the run is too short for the EMA to have forgotten its random initialization
    (``steps · (1 − ema_decay) < 3``: 200 steps at decay 0.995 keep 37 % of the init, whose zero output head samples
    pure noise); then the raw weights (as :func:`dforce.recipes.planning.recipe.load_planner`)."""
    steps = cfg.train.steps
    if (run_dir / TRAIN_TIME_FILE).exists():
        steps = json.loads((run_dir / TRAIN_TIME_FILE).read_text()).get("steps", steps)
    raw = run_dir / ckpt.MODEL_FILE
    if steps * (1 - cfg.train.ema_decay) < EMA_MIN_FORGOTTEN and raw.exists():
        return raw
    return ckpt.sampling_weights(run_dir)


# ---------------------------------------------------------------------------------------- rollout
@torch.no_grad()
def rollout(model, schedule: NoiseSchedule, cfg: VideoRunConfig, frames: torch.Tensor, actions: torch.Tensor,
            length: int, sampler: SamplerConfig | None = None, seed: int = 0, device: str = "cpu",
            progress: bool = False) -> tuple[torch.Tensor, float]:
    """Generate ``length`` frames after ``cfg.context`` real ones, following the real actions.

    Args:
        frames: ``(N, ≥ context, C, H, W)`` real frames (only the first ``context`` are shown).
        actions: ``(N, ≥ context + length, A)``; ``actions[:, t]`` leads from frame t to t+1.
        sampler: defaults to the method's sampler (:func:`method_config`).
    Returns:
        ``(video (N, context + length, C, H, W), seconds)``; the first ``context`` frames are the real ones.
    """
    C, k = cfg.context, cfg.frame_stack
    total = C + length
    if actions.shape[1] < total or frames.shape[1] < C:
        raise DataError(f"a rollout of {length} frames after {C} context frames needs {total} actions, "
                        f"got {actions.shape[1]}")
    length = -(-length // k) * k  # whole tokens
    into = actions_into_frames(actions.float())
    if into.shape[1] < C + length:
        into = torch.nn.functional.pad(into, (0, 0, 0, C + length - into.shape[1]))
    ctx = stack_frames(frames[:, :C].float(), into[:, :C], k)[0]  # (N, C/k, kC, H, W)
    cond = into[:, :C + length].reshape(into.shape[0], (C + length) // k, -1)  # (N, (C+L)/k, kA)
    smp = sampler or method_config(cfg).sampler
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    out = sample(model, schedule, smp, context=ctx.to(device), cond=cond.to(device), length=length // k,
                 generator=gen, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    video = unstack_frames(out.x.clamp(-1, 1).cpu(), k)[:, :total]
    return video, seconds


def parse_keyframes(text: str) -> list[int]:
    """``"0,8,16"`` → ``[0, 8, 16]`` (sorted, distinct, >= 0, at least two)."""
    try:
        ks = sorted({int(t) for t in str(text).split(",") if t.strip()})
    except ValueError:
        raise ConfigError(f"--keyframes must be frame indices like 0,16, got {text!r}") from None
    if len(ks) < 2 or ks[0] < 0:
        raise ConfigError(f"--keyframes needs at least two frame indices >= 0, got {text!r}")
    return ks


@torch.no_grad()
def interpolate(model, schedule: NoiseSchedule, cfg: VideoRunConfig, frames: torch.Tensor, actions: torch.Tensor,
                keyframes: list[int], sampler: SamplerConfig | None = None, seed: int = 0, device: str = "cpu",
                progress: bool = False) -> tuple[torch.Tensor, float]:
    """Generate every frame between the given ``keyframes`` (frame indices, e.g. ``[0, 16]``) under the real
    actions: frames ``0 .. max(keyframes)``, the keyframes returned as given (``sample(..., known=...)``).

    A bidirectional model (``model.causal=false``) sees every keyframe; a causal one only carries each keyframe to
    the frames after it. The whole span is one chunk (the sampler window is widened to it).

    Args:
        frames: ``(N, ≥ max(keyframes) + 1, C, H, W)`` real frames (only the keyframes are shown).
        actions: ``(N, ≥ max(keyframes) + 1, A)``.
    Returns:
        ``(video (N, max(keyframes) + 1, C, H, W), seconds)``.
    """
    k = cfg.frame_stack
    total = max(keyframes) + 1
    if k != 1:
        raise ConfigError(f"interpolation works on single-frame tokens (frame_stack=1), this run has {k}")
    if frames.shape[1] < total or actions.shape[1] < total:
        raise DataError(f"keyframes up to frame {total - 1} need {total} frames and actions, got "
                        f"{frames.shape[1]} and {actions.shape[1]}")
    into = actions_into_frames(actions[:, :total].float())
    mask = torch.zeros(total, dtype=torch.bool)
    mask[list(keyframes)] = True
    smp = sampler or method_config(cfg).sampler
    smp = dataclasses.replace(smp, window=max(smp.window, total))
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    out = sample(model, schedule, smp, length=total, known=(frames[:, :total].float().to(device), mask.to(device)),
                 cond=into.to(device), generator=gen, device=device, progress=progress)
    return out.x.clamp(-1, 1).cpu(), time.perf_counter() - t0


def parse_length(text: str, window: int) -> int:
    """``"10x"`` → 10 · window frames; ``"200"`` → 200 frames."""
    t = str(text).strip().lower()
    try:
        n = int(round(float(t[:-1]) * window)) if t.endswith("x") else int(t)
    except (ValueError, OverflowError):
        raise ConfigError(f"--length must be a frame count or a multiple of the training length like 10x, got {text!r}")
    if n < 1:
        raise ConfigError(f"--length must be >= 1 frame, got {text!r}")
    return n


def one_step_psnr(model, schedule: NoiseSchedule, cfg: VideoRunConfig, frames: torch.Tensor, actions: torch.Tensor,
                  seed: int = 0) -> float:
    """Mean PSNR of the first generated frame after ``cfg.context`` real frames (1-step prediction)."""
    from dforce.recipes.video.metrics import psnr

    C, k = cfg.context, cfg.frame_stack
    video, _ = rollout(model, schedule, cfg, frames, actions, k, seed=seed)
    return float(psnr(video[:, C:C + k], frames[:, C:C + k]).mean())


def copy_last_psnr(frames: torch.Tensor, context: int, k: int = 1) -> float:
    """PSNR of repeating the last context frame as the prediction of the next ``k`` frames."""
    from dforce.recipes.video.metrics import psnr

    last = frames[:, context - 1:context].expand(-1, k, -1, -1, -1)
    return float(psnr(last, frames[:, context:context + k]).mean())


__all__ = ["VideoDataConfig", "VideoRunConfig", "METHODS", "LATENTS", "CleanPastTeacherForcing", "uses_clean_past",
           "method_config", "load_video_data", "stack_frames", "unstack_frames", "VideoTokenDataset", "build_video_model", "train_video", "load_run", "rollout",
           "parse_length", "parse_keyframes", "interpolate", "one_step_psnr", "copy_last_psnr"]
