"""The generic sequence recipe behind ``dforce train / sample / eval / info``.

    dforce train sequence_small --data my.npz --out runs/mine
    dforce sample runs/mine --length 500 --schedule pyramid
    dforce eval runs/mine

Data (``data.path`` or the built-in oscillations) → train/held-out split → per-channel normalization
(``data_stats.json``) → windows of ``data.window`` tokens → Diffusion Forcing training; sampling rolls
out any length window by window and de-normalizes with the saved statistics.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dforce._resources import check_training_memory
from dforce.data.sequences import WindowDataset
from dforce.diffusion import NoiseSchedule
from dforce.engine import checkpoint as ckpt
from dforce.engine import distributed as dist_utils
from dforce.engine import rundir
from dforce.engine.config import first_difference, config_to_dict, from_dict, load_config
from dforce.recipes.sequence.config import RunConfig
from dforce.engine.trainer import TrainResult, train
from dforce.recipes.sequence.userdata import Normalizer, SequenceData, load_sequences, split
from dforce.errors import CheckpointError, ConfigError, DataError
from dforce.models import build_model
from dforce.objective import diffusion_forcing_loss
from dforce.sampler import sample
from dforce.plotting import save_figure

STATS_FILE = "data_stats.json"
# sections that fix the model and its data: they cannot change when a run is resumed
FROZEN_ON_RESUME = ("data", "diffusion", "model", "objective")


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


def load_data(cfg: RunConfig) -> tuple[SequenceData, SequenceData]:
    """The configured sequences split into (train, held-out), unnormalized."""
    d = cfg.data
    if d.path is None:
        from dforce.data.synthetic import noisy_sines

        x = noisy_sines(d.synthetic_sequences, d.synthetic_length, seed=d.seed).numpy()
        data = SequenceData(list(x), None, ["sin", "cos"], "built-in oscillations")
    else:
        data = load_sequences(d.path, d.time_column)
    return split(data, d.val_fraction, d.window)


def window_dataset(data: SequenceData, norm: Normalizer, window: int, stride: int = 1) -> WindowDataset:
    seqs = [torch.from_numpy(norm.encode(s)) for s in data.seqs]
    cond = None if data.cond is None else [torch.from_numpy(norm.encode_cond(c)) for c in data.cond]
    return WindowDataset(seqs, window, cond=cond, stride=stride)


def build(cfg: RunConfig, dim: int, cond_dim: int) -> tuple[torch.nn.Module, NoiseSchedule]:
    """Model for ``(D,)`` tokens with ``cond_dim`` conditioning, and the noise schedule."""
    schedule = NoiseSchedule(cfg.diffusion)
    return build_model(cfg.model, (dim,), cfg.diffusion.num_levels, cond_dim), schedule


def resume_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The saved config of ``run_dir`` with ``overrides``; model/data sections may not change."""
    path = run_dir / ckpt.CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {ckpt.CONFIG_FILE})")
    cfg = load_config(RunConfig, path, overrides)
    saved = from_dict(RunConfig, ckpt.load_yaml(path))
    for sec in FROZEN_ON_RESUME:
        key = first_difference(config_to_dict(getattr(saved, sec)), config_to_dict(getattr(cfg, sec)), sec + ".")
        if key:
            raise ConfigError(f"{key} cannot change when resuming {run_dir} (it fixes the model or its data)")
    return cfg


# ---------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------

def run_train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
              allow_changed_data: bool = False) -> TrainResult:
    """Train the generic sequence model into ``run_dir`` (DDP when launched by torchrun).

    The CLI claims ``run_dir`` first (:func:`dforce.engine.rundir.claim`). The data file's fingerprint is
    recorded in the run's marker; a resume refuses a file that changed since (unless ``allow_changed_data``).
    """
    run_dir = Path(run_dir)
    info, device = dist_utils.init_distributed(resolve_device(cfg.device))
    ok = False
    try:
        torch.manual_seed(cfg.train.seed)  # model init: identical on every rank
        if resume and cfg.data.path is not None:
            rundir.check_data(run_dir, cfg.data.path, allow_changed_data)
        train_data, _ = load_data(cfg)
        stats_path = run_dir / STATS_FILE
        if resume and stats_path.exists():
            norm = Normalizer.from_json(stats_path.read_text(), str(stats_path))
        else:
            norm = Normalizer.fit(train_data, cfg.data.normalize)
        model, schedule = build(cfg, train_data.dim, train_data.cond_dim)
        check_training_memory(model, cfg.train.batch_size, cfg.data.window, device)  # refused before any write
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:  # a stale checkpoint must not be resumable into the new run (only files dforce wrote)
                for f in (ckpt.STATE_FILE, ckpt.MODEL_FILE, ckpt.EMA_FILE, "eval.json"):
                    if (run_dir / f).is_file() and rundir.written_by_dforce(run_dir / f):
                        (run_dir / f).unlink()
                if cfg.data.path is not None:
                    rundir.record_data(run_dir, cfg.data.path)
            if not (resume and stats_path.exists()):  # a resume keeps the run's statistics file as it is
                stats = json.loads(norm.to_json()) | {"cond_dim": train_data.cond_dim, "source": train_data.source}
                ckpt.atomic_write_bytes(stats_path, json.dumps(stats, indent=1).encode())
        dataset = window_dataset(train_data, norm, cfg.data.window, cfg.data.stride)
        log_fn = TensorBoardLogger(run_dir) if (cfg.logging.tensorboard and info.is_main) else None
        result = train(model, schedule, dataset, cfg.train, cfg.objective, run_dir=run_dir,
                       config_dict=config_to_dict(cfg), resume=resume, device=device,
                       progress=progress, log_fn=log_fn)
        if log_fn is not None:
            log_fn.close()
        if not cfg.logging.plot and info.is_main and rundir.written_by_dforce(run_dir / "loss.png"):
            (run_dir / "loss.png").unlink()
        ok = True
        return result
    finally:
        dist_utils.shutdown(barrier=ok)


class TensorBoardLogger:
    """``log_fn`` writing every numeric metric to RUN_DIR/tb (TensorBoard event files, no network)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("logging.tensorboard=true needs the tensorboard package "
                              "(pip install tensorboard, or dforce[logging]); set it to false") from None
        self.writer = SummaryWriter(str(run_dir / "tb"))

    def __call__(self, rec: dict) -> None:
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"train/{k}", v, rec["step"])

    def close(self):
        self.writer.close()


# ---------------------------------------------------------------------------------------------------------
# load a run, sample, evaluate
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Run:
    cfg: RunConfig
    model: torch.nn.Module  # EMA weights when saved, in eval mode
    schedule: NoiseSchedule
    norm: Normalizer
    cond_dim: int
    device: torch.device
    run_dir: Path | None = None
    allow_changed_data: bool = False  # use a data file that changed since training (else refused)


def load_run(run_dir: str | Path, overrides: list[str] = (), device: str | None = None,
             allow_changed_data: bool = False) -> Run:
    """Rebuild a trained run from its directory (config.yaml, data_stats.json, ema/model.safetensors)."""
    run_dir = rundir.expect_kind(run_dir, "sequence")
    cfg_path = run_dir / ckpt.CONFIG_FILE
    if not cfg_path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {ckpt.CONFIG_FILE})")
    cfg = load_config(RunConfig, cfg_path, list(overrides))
    stats_path = run_dir / STATS_FILE
    if not stats_path.exists():
        raise CheckpointError(f"{run_dir}: missing {STATS_FILE} (was it trained by `dforce train`?)")
    text = stats_path.read_text()
    norm = Normalizer.from_json(text, str(stats_path))
    try:
        cond_dim = int(json.loads(text).get("cond_dim", 0))
        if cond_dim < 0:
            raise ValueError
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{stats_path}: corrupt cond_dim ({type(e).__name__})") from None
    model, schedule = build(cfg, len(norm.mean), cond_dim)
    weights = run_dir / ckpt.EMA_FILE if (run_dir / ckpt.EMA_FILE).exists() else run_dir / ckpt.MODEL_FILE
    ckpt.load_weights(model, weights)
    dev = resolve_device(device or cfg.device)
    return Run(cfg, model.to(dev).eval(), schedule.to(dev), norm, cond_dim, dev, run_dir, allow_changed_data)


def _run_data(run: Run) -> tuple[SequenceData, SequenceData]:
    """The run's (train, held-out) data, after checking the file is the one it was trained on."""
    if run.cfg.data.path is not None and run.run_dir is not None:
        rundir.check_data(run.run_dir, run.cfg.data.path, run.allow_changed_data)
    return load_data(run.cfg)


def _heldout(run: Run, val: SequenceData | None = None) -> SequenceData:
    val = val if val is not None else _run_data(run)[1]
    if val.dim != len(run.norm.mean) or val.cond_dim != run.cond_dim:
        raise DataError(f"{val.source}: the data no longer matches the run ({val.dim} channels, "
                        f"cond {val.cond_dim}; the run has {len(run.norm.mean)}, cond {run.cond_dim})")
    return val


def sample_paths(run_dir: str | Path, out: str | Path | None, overwrite: bool = False) -> tuple[Path, Path]:
    """Where ``dforce sample`` writes ``(samples .npy, plot .png)``, checked before anything is computed.

    ``out``: None → ``RUN_DIR/samples.npy`` + ``samples.png``; a directory (existing, ending in ``/`` or without
    a suffix) → ``DIR/samples.npy`` + ``DIR/samples.png``; ``NAME.npy`` → that file + ``NAME.png``. A file there
    that dforce did not write is refused unless ``overwrite``.
    """
    run_dir = Path(run_dir)
    if out is None:
        rundir.adopt(run_dir, "sequence")
        folder = run_dir
    else:
        text, out = str(out), Path(out)
        if out.is_dir() or text.endswith("/") or (not out.exists() and out.suffix == ""):
            folder = out
        elif out.suffix.lower() == ".npy":
            npy, png = out, out.with_suffix(".png")
            for p in (npy, png):
                rundir.check_output_file(p, overwrite, owner=run_dir)
            return npy, png
        else:
            raise ConfigError(f"--out {out}: give a .npy file (the plot is written beside it as .png) or a directory")
    if folder == run_dir:
        names = [folder / "samples.npy", folder / "samples.png"]
        for p in names:
            rundir.check_output_file(p, overwrite, owner=run_dir)
        return names[0], names[1]
    npy, png = rundir.prepare_outputs(folder, ["samples.npy", "samples.png"], overwrite)
    return npy, png


def check_sample_args(length: int, context: int, num: int, seed: int) -> None:
    for name, v, lo in (("--length", length, 1), ("--context", context, 0), ("--num", num, 1), ("--seed", seed, 0)):
        if v < lo:
            raise ConfigError(f"{name} must be >= {lo}, got {v}")


def run_sample(run_dir: str | Path, length: int, context: int = 4, num: int = 8, seed: int = 0,
               overrides: list[str] = (), out: str | Path | None = None, device: str | None = None,
               progress: bool = True, overwrite: bool = False, allow_changed_data: bool = False) -> dict:
    """Roll out ``length`` tokens after ``context`` held-out tokens (0 = unconditional); write .npy + .png
    (where :func:`sample_paths` says, reported exactly)."""
    check_sample_args(length, context, num, seed)
    run = load_run(run_dir, [o if o.startswith("sampler.") else f"sampler.{o}" for o in overrides], device,
                   allow_changed_data)
    npy, png = sample_paths(run_dir, out, overwrite)
    scfg = run.cfg.sampler
    ctx = cond = None
    if context > 0 or run.cond_dim:
        val = _heldout(run)
        need = context + (length if run.cond_dim else 0)
        pool = [i for i, s in enumerate(val.seqs) if len(s) >= need]
        if not pool:
            what = "context + length" if run.cond_dim else "context"
            raise DataError(f"{val.source}: no held-out sequence has the {need} steps needed for {what} "
                            "(this model needs the held-out cond for every generated step)" if run.cond_dim
                            else f"{val.source}: no held-out sequence has {need} steps for --context {context}")
        pick = [pool[i % len(pool)] for i in range(num)]
        if context > 0:
            ctx = torch.from_numpy(np.stack([run.norm.encode(val.seqs[i][:context]) for i in pick])).to(run.device)
        if run.cond_dim:
            cond = torch.from_numpy(np.stack([run.norm.encode_cond(val.cond[i][: context + length])
                                             for i in pick])).to(run.device)
    g = torch.Generator(device=run.device).manual_seed(seed)
    res = sample(run.model, run.schedule, scfg, length=length, batch=num, token_shape=(len(run.norm.mean),),
                 context=ctx, cond=cond, generator=g, device=run.device, progress=progress)
    x = run.norm.decode(res.x.float().cpu().numpy())
    if not np.isfinite(x).all():  # never hand back NaNs as a result
        raise DataError(f"{run_dir}: the samples hold NaN/inf values (the model or its statistics are broken)")
    buf = io.BytesIO()
    np.save(buf, x)
    ckpt.atomic_write_bytes(npy, buf.getvalue())
    rundir.note_output(npy, run_dir)
    plot_rollouts(x, context, run.cfg.data.window, run.norm.channels, png,
                  f"{scfg.schedule} schedule, {scfg.steps} steps, stabilization level {scfg.stabilization_level}")
    rundir.note_output(png, run_dir)
    return {"samples": str(npy), "plot": str(png), "shape": list(x.shape), "context": context,
            "schedule": scfg.schedule, "model_calls": res.model_calls}


@torch.no_grad()
def run_eval(run_dir: str | Path, num: int = 256, seed: int = 0, overrides: list[str] = (),
             device: str | None = None, progress: bool = True, allow_changed_data: bool = False) -> dict:
    """Held-out loss and energy distance of sampled windows vs held-out windows (normalized space).

    Saved as ``RUN_DIR/eval.json``; when that cannot be written (a read-only run, a user's file of that name)
    the report is still returned, with a warning on stderr."""
    from dforce.data.synthetic import energy_distance

    if num < 1 or seed < 0:
        raise ConfigError(f"--num must be >= 1 and --seed >= 0, got {num} and {seed}")
    run = load_run(run_dir, [o if o.startswith("sampler.") else f"sampler.{o}" for o in overrides], device,
                   allow_changed_data)
    cfg, T = run.cfg, run.cfg.data.window
    train_data, val_data = _run_data(run)
    val = window_dataset(_heldout(run, val_data), run.norm, T)
    g = torch.Generator().manual_seed(seed)
    n = min(num, len(val))
    idx = torch.randperm(len(val), generator=g)[:n]
    held = val.get_batch(idx)
    # held-out loss: the training objective on held-out windows, fixed noise, in batches of 64
    noise_gen = torch.Generator(device=run.device).manual_seed(seed + 1)
    losses = []
    for i in tqdm(range(0, n, 64), desc="held-out loss", disable=not progress, leave=False):
        b = {k: v[i : i + 64].to(run.device) for k, v in held.items()}
        out = diffusion_forcing_loss(run.model, run.schedule, b["x"], cfg.objective, b.get("cond"), b.get("mask"),
                                     noise_gen)
        losses.append(float(out.loss) * len(b["x"]))
    heldout_loss = sum(losses) / n
    # sample quality: n windows of T tokens from scratch (with the held-out cond when the model has one)
    scfg = replace(cfg.sampler, window=min(cfg.sampler.window, T))
    gs = torch.Generator(device=run.device).manual_seed(seed + 2)
    cond = held["cond"].to(run.device) if "cond" in held else None
    x = sample(run.model, run.schedule, scfg, length=T, batch=n, token_shape=(len(run.norm.mean),), cond=cond,
               generator=gs, device=run.device, progress=progress).x.float().cpu()
    mask = held["mask"].all(1)  # padded (short) windows are left out of the distance
    ref = held["x"][mask]
    ed = energy_distance(x[mask], ref)
    # reference points: training windows (≈ the floor for this sample size) and i.i.d. N(0, 1) tokens
    tr = window_dataset(train_data, run.norm, T)
    tr_x = tr.get_batch(torch.randint(0, len(tr), (n,), generator=g))["x"][mask]
    report = {
        "heldout_loss": round(heldout_loss, 5),
        "energy_distance": round(ed, 4),
        "energy_distance_train_windows": round(energy_distance(tr_x, ref), 4),
        "energy_distance_gaussian_noise": round(energy_distance(torch.randn(ref.shape, generator=g), ref), 4),
        "windows": int(mask.sum()),
        "window": T,
        "schedule": scfg.schedule,
        "sampling_steps": scfg.steps,
    }
    path = Path(run_dir) / "eval.json"
    rundir.adopt(run_dir, "sequence")
    try:
        if path.exists() and not rundir.written_by_dforce(path):
            raise PermissionError(0, "a file dforce did not write is there", str(path))
        ckpt.atomic_write_bytes(path, json.dumps(report, indent=1).encode())
    except OSError as e:
        print(f"warning: could not save {path} ({e.strerror}); the results are only printed", file=sys.stderr)
    return report


def run_info(run_dir: str | Path) -> dict:
    """A run's kind, config, step, parameter count and last metrics (reads no pickles, builds no model);
    any recipe's run. Damaged optional files (metrics.jsonl lines, eval.json) are reported, not fatal."""
    from safetensors import safe_open

    run_dir = Path(run_dir)
    kind = rundir.infer_kind(run_dir) if run_dir.is_dir() else None
    cfg_path = run_dir / ckpt.CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found" if not run_dir.exists()
                              else f"{run_dir}: is a file, not a run directory")
    if not cfg_path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {ckpt.CONFIG_FILE})")
    info: dict = {"run_dir": str(run_dir), "kind": kind, "config": ckpt.load_yaml(cfg_path)}
    weights = run_dir / ckpt.MODEL_FILE
    if weights.exists():
        try:
            with safe_open(str(weights), "pt") as f:
                info["step"] = int((f.metadata() or {}).get("step", -1))
                info["parameters"] = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
        except Exception as e:  # safetensors raises several types on garbage
            raise CheckpointError(f"{weights}: not a readable safetensors file ({type(e).__name__})") from None
    else:
        info["step"], info["parameters"] = 0, None
    metrics = ckpt.read_jsonl(run_dir / ckpt.METRICS_FILE)
    info["last_metrics"] = metrics[-1] if metrics else None
    if (run_dir / "eval.json").exists():
        try:
            info["eval"] = json.loads((run_dir / "eval.json").read_text())
        except (ValueError, OSError, RecursionError) as e:
            info["eval"] = None
            info["warnings"] = [f"{run_dir / 'eval.json'} is unreadable ({type(e).__name__}); run dforce eval again"]
    return info


def plot_rollouts(x: np.ndarray, context: int, window: int, channels: list[str], path: Path, title: str) -> None:
    """``x: (B, C + L, D)``: up to 4 rollouts, every channel, context in black, training horizon dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    B, L, D = x.shape
    rows = min(B, 4)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows), squeeze=False)
    for r in range(rows):
        ax = axes[r][0]
        for d in range(min(D, 8)):
            ax.plot(np.arange(L), x[r, :, d], lw=1.0, label=channels[d] if d < len(channels) else f"x{d}")
            if context:
                ax.plot(np.arange(context), x[r, :context, d], lw=2.2, color="k")
        if context + window < L:
            ax.axvline(context + window, color="gray", ls="--", lw=0.8)
        ax.set_ylabel(f"sample {r}")
    axes[0][0].legend(fontsize=7, loc="upper right", ncol=min(D, 8))
    axes[-1][0].set_xlabel("step (black: real context; dashed: one training horizon after it)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
