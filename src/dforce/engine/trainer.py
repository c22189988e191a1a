"""The training loop: Algorithm 1 over a dataset, with EMA, checkpoints, exact resume and JSONL logs.

Plain functions in nanoGPT's spirit: ``train`` reads top to bottom. Batches are drawn i.i.d. with a
``torch.Generator`` whose state is checkpointed (with the model, EMA, optimizer and noise RNGs, all in
``trainer_state.pt``), so a resumed run continues the *same* batch stream and, on CPU fp32, ends with
bit-identical weights. Works unchanged under ``torchrun`` (DDP; see :mod:`dforce.engine.distributed`).

Datasets: anything with ``__len__`` and either ``get_batch(idx (B,) long) -> dict`` or
``__getitem__(i) -> dict`` with keys ``x (T, *D)`` and optionally ``cond (T, C)``, ``mask (T,) bool``.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import time
from contextlib import nullcontext
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml
from tqdm.auto import tqdm

from dforce._malloc import keep_freed_memory
from dforce._resources import check_training_memory
from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule
from dforce.engine import checkpoint as ckpt
from dforce.engine import distributed as dist_utils
from dforce.engine.config import first_difference
from dforce.models import ModelConfig
from dforce.errors import CheckpointError, ConfigError, TrainingError
from dforce.objective import ObjectiveConfig, diffusion_forcing_loss
from dforce.distill import load_teacher, teacher_fn
from dforce.plotting import save_figure
from dforce.self_rollout import RolloutSpec, self_rollout_loss
from dforce.shortcut import shortcut_loss, step_embedding, student_prefixes


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # optimizer steps
    batch_size: int = 64  # sequences per step (per process under DDP)
    lr: float = 1e-3  # AdamW peak learning rate (reference: 2e-4 video/planning, 3e-4 time series)
    weight_decay: float = 0.0  # AdamW weight decay (reference time series: 1e-3)
    warmup_steps: int = 100  # linear LR warm-up
    lr_schedule: str = "cosine"  # cosine (decay to 10% of lr) | constant
    grad_clip: float = 1.0  # max global grad norm (reference time series: 10); 0 = off
    ema_decay: float = 0.999  # EMA of weights used for sampling; 0 = off
    precision: str = "fp32"  # fp32 | bf16 (autocast; faster on recent CPUs and GPUs)
    checkpoint_every: int = 500  # steps between checkpoints (a killed run loses at most this many)
    log_every: int = 50  # steps between metrics.jsonl records
    seed: int = 0
    # a run directory whose weights start this run (fine-tuning, e.g. a full-sequence model into DF; DFoT §4.3);
    # its model must have the same architecture. Read once at the start, not on --resume.
    init_from: str | None = None
    # few-step students (model.shortcut_steps > 0): a trained run (or .safetensors file) to distill from
    # (dforce.distill: class-0 targets are its predictions, class-1 targets two of its DDIM steps); None: the data
    distill_from: str | None = None
    # share of each batch trained on a past the model generated itself with the recipe's sampler (dforce.self_rollout,
    # Self Forcing's idea); recipes that pass their sampler to train() (video). 0: off
    self_rollout: float = 0.0

    def __post_init__(self):
        check_choice("train.lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_choice("train.precision", self.precision, ("fp32", "bf16"))
        for k in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, k) < 1:
                raise ConfigError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"train.lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        for k in ("weight_decay", "grad_clip"):
            if not (getattr(self, k) >= 0 and math.isfinite(getattr(self, k))):
                raise ConfigError(f"train.{k} must be a number >= 0, got {getattr(self, k)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.self_rollout <= 1.0:
            raise ConfigError(f"train.self_rollout must be in [0, 1], got {self.self_rollout}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def get_batch(dataset, idx: torch.Tensor, device) -> dict[str, torch.Tensor]:
    if hasattr(dataset, "get_batch"):
        batch = dataset.get_batch(idx)
    else:
        items = [dataset[int(i)] for i in idx]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class EMA:
    """Exponential moving average of a model's parameters (and buffers copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - self.decay)


@dataclass
class TrainResult:
    model: torch.nn.Module  # the weights to sample with (EMA when on)
    raw_model: torch.nn.Module
    step: int
    seconds: float
    history: list[dict]


# top-level config sections that fix what the weights mean; a resume may change the rest (train.steps, lr, ...)
OFF_VALUES = (None, 0, 0.0, False, [], "")  # what a key added to dforce after a run was made holds when off
FROZEN_ON_RESUME = ("method", "latent", "frame_stack", "model", "codec", "diffusion", "objective")


def check_resume_config(saved: dict, new: dict, run_dir) -> None:
    """Refuse to resume ``run_dir`` when a :data:`FROZEN_ON_RESUME` section differs from its config.yaml
    (e.g. resuming a full-sequence run with the DF objective would silently train another method)."""
    new = yaml.safe_load(yaml.safe_dump(new, sort_keys=False))  # compare what would be saved

    defaults = {"model": dataclasses.asdict(ModelConfig()), "objective": dataclasses.asdict(ObjectiveConfig())}

    def recorded(n, s, d):
        """``n`` less the keys ``s`` lacks that hold their default or an off value: a run saved before a key existed
        (e.g. model.causal, model.shortcut_steps) ran as that default; setting such a key on resume is refused."""
        if not (isinstance(n, dict) and isinstance(s, dict)):
            return n
        d = d if isinstance(d, dict) else {}
        return {k: recorded(v, s[k], d.get(k)) if k in s else v for k, v in n.items()
                if k in s or not (v in OFF_VALUES or (k in d and v == d[k]))}

    def removed(s, n):  # keys removed from dforce since the run was saved, at their off value (RENAMED_KEYS): skip
        if not (isinstance(s, dict) and isinstance(n, dict)):
            return s
        return {k: removed(v, n[k]) if k in n else v for k, v in s.items() if k in n or v not in OFF_VALUES}

    for sec in FROZEN_ON_RESUME:
        if sec in saved and sec in new:
            now = recorded(new[sec], saved[sec], defaults.get(sec))
            key = first_difference(removed(saved[sec], new[sec]), now, sec + ".")
            if key:
                raise ConfigError(f"--resume {run_dir}: {key} differs from the run's config.yaml; it cannot change "
                                  "when resuming (pass the run's own settings, e.g. the same --method / preset)")


def train(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    dataset,
    cfg: TrainConfig,
    objective: ObjectiveConfig = ObjectiveConfig(),
    run_dir: str | Path | None = None,
    config_dict: dict | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    eval_fn: Callable[[torch.nn.Module, int], dict] | None = None,
    eval_every: int = 0,
    log_fn: Callable[[dict], None] | None = None,
    entry_weights: torch.Tensor | None = None,
    rollout: RolloutSpec | None = None,
) -> TrainResult:
    """Train ``model`` with the Diffusion Forcing objective (single process or DDP under torchrun).

    Args:
        model: a causal backbone ``model(x, levels, cond)``.
        dataset: see module docstring; ``x`` batches are ``(B, T, *D)``.
        run_dir: where checkpoints/logs go (None: nothing is written). Only rank 0 writes.
        config_dict: the resolved config, saved as ``config.yaml`` (rebuilds the model later).
        resume: continue from ``run_dir``'s last checkpoint (same batch stream, optimizer, RNG).
        eval_fn: ``eval_fn(sampling_model, step) -> dict`` of metrics, run every ``eval_every`` steps.
        log_fn: called with every metrics record on rank 0 (e.g. a TensorBoard writer).
        entry_weights: optional per-entry loss weights of a token (``diffusion_forcing_loss``); a batch's own
            ``entry_weights`` ``(B, T, prod(D))`` (from the dataset) take their place.
        rollout: the recipe's sampler and context for ``cfg.self_rollout`` (:mod:`dforce.self_rollout`).
    A few-step student (``model.shortcut_steps``) trains with :func:`dforce.shortcut.shortcut_loss` (from the data,
    or from ``cfg.distill_from``'s predictions); see :func:`training_loss`.
    Under DDP (a process group initialised by :func:`dforce.engine.distributed.init_distributed`),
    ``cfg.batch_size`` is per process; see :mod:`dforce.engine.distributed` for the batch semantics.
    """
    keep_freed_memory()  # glibc: reuse the step's freed activations (see dforce._malloc); for library callers too
    device = torch.device(device)
    info = dist_utils.current()
    if cfg.init_from is not None and not resume:  # before the EMA copy and the optimizer see the weights
        # parameters a model adds to the other run's architecture keep their initialization: a bidirectional video
        # model's backward stack (init_allow_missing), a few-step student's step-size embedding (student_prefixes)
        allow = tuple(getattr(model, "init_allow_missing", ())) + student_prefixes(model)
        ckpt.load_init_weights(model, cfg.init_from, allow)
    if len(dataset) < 1:
        raise ConfigError("the training data holds no windows (is data.window longer than every sequence?)")
    probe = get_batch(dataset, torch.zeros(1, dtype=torch.long), "cpu")["x"]  # (1, T, *D)
    check_training_memory(model, cfg.batch_size, probe.shape[1], device)  # before the optimizer and EMA copies
    loss_of = training_loss(model, schedule, objective, cfg, rollout, entry_weights)
    model.to(device)
    schedule.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed)  # batch indices: one stream shared by all ranks
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + info.rank)  # levels + noise, per rank
    step, history = 0, []
    run_dir = Path(run_dir) if run_dir is not None else None
    writer = info.is_main and run_dir is not None

    if resume:
        if run_dir is None or not (run_dir / ckpt.STATE_FILE).exists():
            raise CheckpointError(f"--resume: no checkpoint in {run_dir} (missing {ckpt.STATE_FILE})")
        # a changed method/model is named before its weights are compared (a clearer message than a key mismatch)
        if config_dict is not None and (run_dir / ckpt.CONFIG_FILE).exists():
            check_resume_config(ckpt.load_yaml(run_dir / ckpt.CONFIG_FILE), config_dict, run_dir)
        st = ckpt.load_trainer_state(run_dir / ckpt.STATE_FILE)
        where = str(run_dir / ckpt.STATE_FILE)
        for k in ("step", "model", "optimizer", "batch_rng", "noise_rng", "torch_rng"):
            if k not in st:
                raise CheckpointError(f"{where}: not a dforce trainer state (no {k!r} entry)")
        ckpt.check_state_dict(model, st["model"], where)
        model.load_state_dict(st["model"])
        if ema is not None:
            ema_sd = st.get("ema") or st["model"]
            ckpt.check_state_dict(ema.model, ema_sd, where)
            ema.model.load_state_dict(ema_sd)
        try:
            opt.load_state_dict(st["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{where}: optimizer state does not match the model ({e})") from None
        gen.set_state(st["batch_rng"])
        noise_states, torch_states = st["noise_rng"], st["torch_rng"]
        if len(noise_states) == info.world_size:
            noise_gen.set_state(noise_states[info.rank])
            torch.set_rng_state(torch_states[info.rank])
        else:  # resumed with another number of processes: the noise stream cannot continue exactly
            noise_gen.manual_seed(cfg.seed + 1 + info.rank + 7919 * int(st["step"]))
        step = int(st["step"])
        if writer and ckpt.weights_step(run_dir) != step:
            # killed between writing trainer_state.pt and the weight files of that checkpoint: write them now
            # (a run killed in its last checkpoint would otherwise keep the previous checkpoint's weights forever)
            meta = {"step": str(step)}
            ckpt.save_weights(model, run_dir / ckpt.MODEL_FILE, meta)
            if ema is not None:
                ckpt.save_weights(ema.model, run_dir / ckpt.EMA_FILE, meta)
        history = [h for h in ckpt.read_jsonl(run_dir / ckpt.METRICS_FILE) if h.get("step", 0) <= step]
        if writer:  # records logged after the checkpoint will be logged again: drop them from the file too
            text = "".join(json.dumps(h) + "\n" for h in history)
            ckpt.atomic_write_bytes(run_dir / ckpt.METRICS_FILE, text.encode())
    elif writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ckpt.METRICS_FILE).unlink(missing_ok=True)
    if writer and config_dict is not None:
        ckpt.save_yaml(config_dict, run_dir / ckpt.CONFIG_FILE)

    def save_checkpoint():
        # every rank takes part in the gather; rank 0 writes. trainer_state.pt first: it is what resume reads
        noise_states = dist_utils.gather_objects(noise_gen.get_state())
        torch_states = dist_utils.gather_objects(torch.get_rng_state())
        if not writer:
            return
        state = {"step": step, "model": model.state_dict(), "ema": ema.model.state_dict() if ema else None,
                 "optimizer": opt.state_dict(), "batch_rng": gen.get_state(),
                 "noise_rng": [s.cpu() for s in noise_states], "torch_rng": torch_states,
                 "world_size": info.world_size}
        ckpt.save_trainer_state(state, run_dir / ckpt.STATE_FILE)
        meta = {"step": str(step)}
        ckpt.save_weights(model, run_dir / ckpt.MODEL_FILE, meta)
        if ema is not None:
            ckpt.save_weights(ema.model, run_dir / ckpt.EMA_FILE, meta)

    net = dist_utils.wrap_ddp(model, device)  # forward/backward through DDP; state lives in ``model``
    n = len(dataset)
    B, W = cfg.batch_size, info.world_size
    t_start, tokens = time.time(), 0
    bar = tqdm(total=cfg.steps, initial=step, desc="training", disable=not (progress and info.is_main),
               dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        idx = torch.randint(0, n, (W * B,), generator=gen)[info.rank * B : (info.rank + 1) * B]
        try:
            batch = get_batch(dataset, idx, device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            with autocast(cfg.precision, device):
                out = loss_of(net, batch, noise_gen)
            if not torch.isfinite(out.loss):
                raise TrainingError(f"the loss became {out.loss.item()} at step {step + 1} (train.lr={cfg.lr:g}); "
                                    "lower train.lr or check the data" + _kept(run_dir, writer))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else 1e12)
            opt.step()
        except (MemoryError, torch.OutOfMemoryError) as e:
            raise TrainingError(f"out of memory at step {step + 1} ({type(e).__name__}); lower train.batch_size "
                                "or the model size" + _kept(run_dir, writer)) from None
        except RuntimeError as e:
            if "overflow" in str(e):  # AdamW's step size lr / (1 - beta1^t) no longer fits a float32
                raise TrainingError(f"train.lr={cfg.lr:g} overflows the optimizer's float32 step at step {step + 1}; "
                                    "lower train.lr" + _kept(run_dir, writer)) from None
            if "alloc" not in str(e).lower():
                raise
            raise TrainingError(f"out of memory at step {step + 1}; lower train.batch_size or the model size"
                                + _kept(run_dir, writer)) from None
        if ema is not None:
            ema.update(model)
        step += 1
        tokens += W * batch["x"].shape[0] * batch["x"].shape[1]
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rec = {"step": step, "loss": round(dist_utils.mean_over_ranks(out.loss.item(), device), 6),
                   "grad_norm": round(float(gnorm), 4), "lr": lr_at(step - 1, cfg),
                   "tokens_per_s": round(tokens / max(1e-9, time.time() - t_start), 1)}
            if info.enabled:
                rec["ddp_in_sync"] = dist_utils.ranks_in_sync(model)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if eval_fn is not None and eval_every and step % eval_every == 0:
                rec.update(eval_fn(ema.model if ema else model, step))
                model.train()
            history.append(rec)
            if writer:
                ckpt.append_jsonl(run_dir / ckpt.METRICS_FILE, rec)
            if log_fn is not None and info.is_main:
                log_fn(rec)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint()
    bar.close()
    if net is not model:  # DDP: free the wrapper's reducer (and the gloo work it holds) now, while the process
        del net  # group is alive; left to a reference cycle, it was destroyed at interpreter exit, where gloo's
        gc.collect()  # threads could abort the rank ("terminate called without an active exception")
    final = ema.model if ema is not None else model
    final.eval()
    if writer and history:
        plot_curves(history, run_dir / "loss.png")
    return TrainResult(final, model, step, time.time() - t_start, history)


def _kept(run_dir: Path | None, writer: bool) -> str:
    if not writer or not (run_dir / ckpt.STATE_FILE).exists():
        return ""
    try:
        step = int(ckpt.load_trainer_state(run_dir / ckpt.STATE_FILE)["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return ""
    return f" (the checkpoint of step {step} in {run_dir} is kept)"


def training_loss(model: torch.nn.Module, schedule: NoiseSchedule, objective: ObjectiveConfig, cfg: TrainConfig,
                  rollout: RolloutSpec | None = None, entry_weights: torch.Tensor | None = None):
    """The loss the loop minimizes, ``loss_of(net, batch, generator) -> LossOutput``: Algorithm 1
    (:func:`dforce.objective.diffusion_forcing_loss`) for a DF model; the shortcut loss for a few-step student
    (:func:`dforce.shortcut.shortcut_loss`; with ``cfg.distill_from``, from that teacher); either one continued from
    the model's own rollouts on a share ``cfg.self_rollout`` of the batch
    (:func:`dforce.self_rollout.self_rollout_loss`).
    """
    emb = step_embedding(model)
    if cfg.distill_from is not None and emb is None:
        raise ConfigError("train.distill_from needs a few-step student to train (set model.shortcut_steps, e.g. 32)")
    if cfg.self_rollout > 0 and rollout is None:
        raise ConfigError("train.self_rollout needs a recipe that samples during training (the video recipe)")
    if cfg.self_rollout > 0 and cfg.distill_from is not None:
        raise ConfigError("train.self_rollout and train.distill_from cannot be combined (the teacher has no state "
                          "of the student's rollout); fine-tune a distilled run with self_rollout instead")
    teacher = None
    if cfg.distill_from is not None:
        teacher = teacher_fn(load_teacher(model, cfg.distill_from).to(next(model.parameters()).device))

    def loss_fn(net, x0, cond, mask, generator, target_model=None, classes=None, weights=entry_weights):
        if emb is None:
            return diffusion_forcing_loss(net, schedule, x0, objective, cond, mask, generator, entry_weights=weights)
        return shortcut_loss(net, schedule, x0, objective, cond, mask, generator, max_steps=emb.max_steps,
                             teacher=teacher, target_model=target_model or model, classes=classes,
                             entry_weights=weights)

    def classes_fn(n: int) -> torch.Tensor | None:  # self-rollout rows of a student: one kind for the sub-batch
        dev = next(model.parameters()).device
        if torch.rand(()) >= objective.shortcut_fraction or emb.num_classes < 2:
            return torch.zeros(n, dtype=torch.long, device=dev)
        return torch.randint(1, emb.num_classes, (n,), device=dev)

    def loss_of(net, batch, generator):
        if cfg.self_rollout > 0:
            if "entry_weights" in batch:
                raise ConfigError("train.self_rollout cannot be combined with a dataset's per-token entry weights "
                                  "(e.g. video motion_weight); set one of them to 0")
            return self_rollout_loss(loss_fn, net, model, schedule, batch, rollout, cfg.self_rollout, generator,
                                     None if emb is None else classes_fn)
        # a dataset may weigh entries per token: (B, T, prod(D)) in the batch
        return loss_fn(net, batch["x"], batch.get("cond"), batch.get("mask"), generator,
                       weights=batch.get("entry_weights", entry_weights))

    return loss_of


def plot_curves(history: list[dict], path: Path, keys: tuple[str, ...] = ("loss",)) -> None:
    """Training curves to a PNG (log-scale loss vs step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for k in keys:
        vals = [h.get(k) for h in history]
        if any(v is not None for v in vals):
            ax.plot(steps, vals, label=k)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
