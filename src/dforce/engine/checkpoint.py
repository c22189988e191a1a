"""Run directory I/O: atomic writes, safetensors weights, weights-only trainer state.

A run directory holds:
    config.yaml          the resolved config (everything needed to rebuild the model)
    model.safetensors    model weights;  ema.safetensors  EMA weights (when EMA is on)
    trainer_state.pt     step, model + EMA + optimizer state, RNG states (loaded with weights_only=True);
                         the one file resume reads, so a kill between two file writes cannot mix steps
    metrics.jsonl        one JSON object per logged step
Every file is written to a temporary name in the same directory and renamed into place, so a run killed
at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from dforce.engine import rundir
from dforce.errors import CheckpointError

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes, record: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename (atomic on POSIX).

    The file gets the permissions of any file the user creates (0666 minus the umask; ``mkstemp`` alone
    would make it 0600). With ``record``, the name is added to the marker of the run directory it is in
    (:func:`dforce.engine.rundir.note_written`), so ``--overwrite`` knows dforce wrote it. A kill between
    the temp write and the rename leaves ``.NAME.XXXXXXXX.tmp``, removed by the next run of that directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if record:
        rundir.note_written(path)


def save_weights(module_or_state, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a module's (or a state dict's) tensors as safetensors, atomically."""
    sd = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    atomic_write_bytes(path, save(sd, metadata=metadata))


def check_state_dict(module: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Raise :class:`CheckpointError` naming ``where`` when ``sd`` does not fit ``module`` (keys, shapes)."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{where}: weights do not match the model (missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); was it trained with another config?"
        )
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{where}: tensor {k!r} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the "
                "model; the config does not match this checkpoint"
            )


def load_weights(module: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``module`` with clear errors for missing/corrupt/mismatched files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    check_state_dict(module, sd, str(path), strict)
    check_finite(sd, str(path))
    module.load_state_dict(sd, strict=strict)


def check_finite(sd: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN/inf (a tampered or diverged checkpoint would sample NaNs with exit 0)."""
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{where}: tensor {k!r} holds NaN/inf values; the checkpoint is damaged "
                                  "(or the run diverged): use an earlier run or retrain")


def weights_step(run_dir: str | Path) -> int | None:
    """The step both weight files of ``run_dir`` were saved at (their ``step`` metadata); None when they are
    missing, unreadable or from different steps."""
    from safetensors import safe_open

    steps = set()
    for name in (MODEL_FILE, EMA_FILE):
        path = Path(run_dir) / name
        if not path.exists():
            if name == EMA_FILE:
                continue
            return None
        try:
            with safe_open(str(path), "pt") as f:
                steps.add(int((f.metadata() or {}).get("step", -1)))
        except Exception:  # safetensors raises several types on torn or garbage files
            return None
    return steps.pop() if len(steps) == 1 else None


def save_trainer_state(state: dict[str, Any], path: str | Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Load trainer state with ``weights_only=True`` (never unpickles arbitrary code)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: trainer state not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbage files
        raise CheckpointError(f"{path}: corrupt or unreadable trainer state ({type(e).__name__})") from None


def save_yaml(obj: dict, path: str | Path) -> None:
    atomic_write_bytes(path, yaml.safe_dump(obj, sort_keys=False).encode())


def load_yaml(path: str | Path) -> dict:
    """A run's YAML file (config.yaml) as a dict; missing, non-regular, huge or invalid files and YAML
    aliases are one-line :class:`CheckpointError` s."""
    from dforce.engine.config import read_yaml_mapping

    return read_yaml_mapping(path, CheckpointError)


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line torn by a kill mid-write is skipped
            if isinstance(rec, dict) and isinstance(rec.get("step", 0), int):
                out.append(rec)  # anything else (a list, a string) was not written by dforce: skipped
    return out


def read_run_config(run_dir: str | Path, cls, kind: str, config: dict | None = None):
    """The typed config of a run directory (``config.yaml`` → dataclass ``cls``), or a clear error.

    ``kind`` names the run type in the message (e.g. "imitation"); ``config`` skips the read when the
    caller already popped extra keys from the YAML.
    """
    from dforce.engine.config import from_dict

    run_dir = Path(run_dir)
    if config is None:
        if not (run_dir / CONFIG_FILE).exists():
            raise CheckpointError(f"{run_dir} is not a {kind} run directory (no {CONFIG_FILE})")
        config = load_yaml(run_dir / CONFIG_FILE)
    return from_dict(cls, config)


def sampling_weights(run_dir: str | Path) -> Path:
    """The weights to sample with: ``ema.safetensors`` when the run kept an EMA, else ``model.safetensors``."""
    run_dir = Path(run_dir)
    for name in (EMA_FILE, MODEL_FILE):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir} has no model weights ({EMA_FILE} or {MODEL_FILE})")


def load_init_weights(module: torch.nn.Module, run_dir: str | Path, allow_missing: tuple[str, ...] = ()) -> Path:
    """Start ``module`` from another run's weights (fine-tuning, ``train.init_from``); returns the file used.

    ``run_dir`` is a run directory or a ``.safetensors`` file. The EMA weights are used when the run kept them (they are what it samples with), else ``model.safetensors``.
    The architecture must match: every tensor of the file must exist in ``module`` with the same shape, and every
    tensor of ``module`` must be in the file, except names starting with one of ``allow_missing`` (parameters the
    new model adds, which keep their initialization). Anything else is a :class:`CheckpointError` naming the tensor.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".safetensors":  # a weights file (e.g. a forecast run's best weights)
        path = run_dir
    elif not run_dir.is_dir():
        raise CheckpointError(f"train.init_from={run_dir}: run directory not found")
    else:
        path = sampling_weights(run_dir)
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"train.init_from: {path} is not a readable safetensors file ({e})") from None
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(tuple(allow_missing) or ("\0",))]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"train.init_from={run_dir}: its weights do not fit this model's architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); fine-tuning needs the same model section")
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"train.init_from={run_dir}: tensor {k!r} has shape {tuple(v.shape)} there but {tuple(own[k].shape)} "
                "here; fine-tuning needs the same model section")
    module.load_state_dict(sd, strict=False)
    return path
