"""Bring your own sequences: validated ``.npz`` / ``.npy`` / ``.csv`` loading, splits and normalization.

Accepted files (no pickle is ever needed or allowed):

* ``.npz`` with key ``x`` (or exactly one array): ``(N, T, D)`` = N sequences of T steps and D channels,
  or ``(T, D)`` = one sequence. Optional ``cond`` of shape ``(N, T, C)`` / ``(T, C)``: per-step
  conditioning (e.g. actions or covariates) the model sees for every token.
* ``.npz`` with keys ``seq_0, seq_1, ...`` (each ``(T_i, D)``; variable lengths) and optionally
  ``cond_0, cond_1, ...`` (each ``(T_i, C)``). Object arrays are refused (they need pickle).
* ``.npy``: one numeric array, ``(N, T, D)`` or ``(T, D)``.
* ``.csv``: a header line, one numeric column per channel, one row per step; a time column is dropped
  (``data.time_column``: ``auto`` drops a column named time/date/timestamp/datetime/step/t).

Every problem (missing file, wrong dims, NaN/inf, too short, missing keys, non-numeric column, complex
values, a device or pipe instead of a file, a text file named .npy, ``x`` next to ``seq_i``) raises a
:class:`DataError` whose message names the file and the problem.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dforce._utils import check_numpy_file, check_regular_file
from dforce.errors import DataError

TIME_COLUMNS = ("time", "date", "timestamp", "datetime", "step", "t")
SEQ_KEY = re.compile(r"^seq_(\d+)$")
COND_KEY = re.compile(r"^cond_(\d+)$")
# a channel is constant when its std is below this fraction of its magnitude: float32 data holds ~7
# significant digits, so a smaller spread is rounding, not signal. A fixed absolute threshold (the old
# std < 1e-8) left small-scale data (std 4.5e-10) unnormalized and its samples came back ~1e9x too large.
CONSTANT_REL_STD = 1e-6


@dataclass
class SequenceData:
    """``seqs[i]: (T_i, D)`` float32; ``cond[i]: (T_i, C)`` float32 or None; ``channels``: D names."""

    seqs: list[np.ndarray]
    cond: list[np.ndarray] | None
    channels: list[str]
    source: str

    @property
    def dim(self) -> int:
        return self.seqs[0].shape[1]

    @property
    def cond_dim(self) -> int:
        return 0 if self.cond is None else self.cond[0].shape[1]


def _as_sequences(arr: np.ndarray, name: str, where: str) -> list[np.ndarray]:
    if arr.dtype == object:
        raise DataError(f"{where}: array {name!r} is an object array (needs pickle); save variable-length "
                        "sequences as separate arrays seq_0, seq_1, ...")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{where}: array {name!r} holds complex numbers; store the real and imaginary parts as "
                        "separate channels (np.stack([x.real, x.imag], -1) per channel)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{where}: array {name!r} has non-numeric dtype {arr.dtype}")
    if arr.ndim == 2:
        return [arr.astype(np.float32)]
    if arr.ndim == 3:
        return [a for a in arr.astype(np.float32)]
    raise DataError(f"{where}: array {name!r} has shape {arr.shape}; expected (N, T, D) or (T, D)")


def _load_npz(path: Path) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    check_numpy_file(path)
    try:
        z = np.load(path, allow_pickle=False)
        keys = list(z.files)
        arrays = {}
        for k in keys:
            arrays[k] = z[k]
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: contains object arrays (need pickle); save variable-length sequences as "
                            "separate arrays seq_0, seq_1, ...") from None
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    except Exception as e:  # zipfile.BadZipFile and friends on truncated files
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    where = str(path)
    seq_keys = sorted((k for k in keys if SEQ_KEY.match(k)), key=lambda k: int(SEQ_KEY.match(k).group(1)))
    if seq_keys and ("x" in arrays or "cond" in arrays):
        raise DataError(f"{where}: holds both {'x' if 'x' in arrays else 'cond'!r} and seq_0, seq_1, ...; it is "
                        "ambiguous which are the sequences: keep one layout")
    if seq_keys:
        extra = [k for k in keys if not (SEQ_KEY.match(k) or COND_KEY.match(k))]
        if extra:
            raise DataError(f"{where}: unexpected array {extra[0]!r} next to seq_0, seq_1, ... (dforce reads "
                            "seq_i and cond_i only); remove it")
        seqs, conds = [], []
        for k in seq_keys:
            s = arrays[k]
            if s.ndim != 2:
                raise DataError(f"{where}: array {k!r} has shape {s.shape}; each seq_i must be (T_i, D)")
            seqs += _as_sequences(s, k, where)
        if any(f"cond_{i}" in arrays for i in range(len(seq_keys))):
            for k in seq_keys:
                ck = k.replace("seq_", "cond_")
                if ck not in arrays:
                    raise DataError(f"{where}: has some cond_i arrays but no {ck!r} for {k!r}")
                conds += _as_sequences(arrays[ck], ck, where)
        return seqs, conds or None
    if "x" in arrays:
        key = "x"
        extra = [k for k in keys if k not in ("x", "cond")]
        if extra:
            raise DataError(f"{where}: unexpected array {extra[0]!r} next to 'x' (dforce reads x and cond only); "
                            "remove it")
    else:
        candidates = [k for k in keys if k != "cond"]
        if len(candidates) != 1:
            raise DataError(f"{where}: no array named 'x' (found {', '.join(keys) or 'none'}); store the "
                            "sequences under 'x' or as seq_0, seq_1, ...")
        key = candidates[0]
    seqs = _as_sequences(arrays[key], key, where)
    cond = _as_sequences(arrays["cond"], "cond", where) if "cond" in arrays else None
    return seqs, cond


def _load_csv(path: Path, time_column: str | None) -> tuple[list[np.ndarray], list[str]]:
    try:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would rename the first column
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; save the CSV as UTF-8") from None
    except (OSError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV ({type(e).__name__}: {e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header line and at least one data row")
    header = [h.strip() for h in rows[0]]
    drop = None
    if time_column == "auto":
        drop = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    elif time_column is not None:
        if time_column not in header:
            raise DataError(f"{path}: time column {time_column!r} not in the header ({', '.join(header)})")
        drop = header.index(time_column)
    keep = [i for i in range(len(header)) if i != drop]
    if not keep:
        raise DataError(f"{path}: no data columns besides the time column")
    values = np.empty((len(rows) - 1, len(keep)), np.float64)
    for r, row in enumerate(rows[1:]):
        line = r + 2  # 1-based, header is line 1
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        for j, i in enumerate(keep):
            cell = row[i].strip()
            try:
                values[r, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: column {header[i]!r} is not numeric (line {line}: {cell!r})") from None
    return [values.astype(np.float32)], [header[i] for i in keep]


def load_sequences(path: str | Path, time_column: str | None = "auto") -> SequenceData:
    """Load and validate a user's sequence file (see module docstring for the formats)."""
    path = check_regular_file(path, "a .npz, .npy or .csv file")
    suffix = path.suffix.lower()
    cond, channels = None, None
    if suffix == ".npz":
        seqs, cond = _load_npz(path)
    elif suffix == ".npy":
        check_numpy_file(path)
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            msg = "contains an object array (needs pickle)" if "pickle" in str(e).lower() else f"unreadable ({e})"
            raise DataError(f"{path}: {msg}") from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy file ({type(e).__name__})") from None
        seqs = _as_sequences(arr, "array", str(path))
    elif suffix == ".csv":
        seqs, channels = _load_csv(path, time_column)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .npz, .npy or .csv")
    if not seqs:
        raise DataError(f"{path}: holds no sequences")
    D = seqs[0].shape[1]
    for i, s in enumerate(seqs):
        if s.shape[1] != D:
            raise DataError(f"{path}: sequence {i} has {s.shape[1]} channels, sequence 0 has {D}")
        if len(s) == 0 or D == 0:
            raise DataError(f"{path}: sequence {i} is empty (shape {s.shape})")
        bad = ~np.isfinite(s)
        if bad.any():
            t, d = np.argwhere(bad)[0]
            raise DataError(f"{path}: sequence {i} has NaN/inf values (first at step {t}, channel {d})")
    if cond is not None:
        if len(cond) != len(seqs):
            raise DataError(f"{path}: 'cond' holds {len(cond)} sequences but there are {len(seqs)}")
        for i, (s, c) in enumerate(zip(seqs, cond)):
            if len(c) != len(s):
                raise DataError(f"{path}: cond of sequence {i} has {len(c)} steps, the sequence has {len(s)}")
            if not np.isfinite(c).all():
                raise DataError(f"{path}: cond of sequence {i} has NaN/inf values")
        if len({c.shape[1] for c in cond}) != 1:
            raise DataError(f"{path}: cond arrays have different numbers of channels")
    return SequenceData(seqs, cond, channels or [f"x{d}" for d in range(D)], str(path))


def split(data: SequenceData, val_fraction: float, window: int) -> tuple[SequenceData, SequenceData]:
    """Hold out the last ``ceil(f·N)`` sequences (N ≥ 2) or the last ``f`` of a single sequence.

    Raises :class:`DataError` when either part is shorter than ``window`` steps.
    """
    seqs, cond = data.seqs, data.cond
    if len(seqs) >= 2:
        n_val = max(1, math.ceil(val_fraction * len(seqs)))
        n_val = min(n_val, len(seqs) - 1)
        parts = (slice(0, len(seqs) - n_val), slice(len(seqs) - n_val, len(seqs)))
        out = [SequenceData(seqs[p], None if cond is None else cond[p], data.channels, data.source) for p in parts]
    else:
        L = len(seqs[0])
        cut = L - max(1, math.ceil(val_fraction * L))
        if cut < window or L - cut < window:
            raise DataError(
                f"{data.source}: the sequence has {L} steps; a held-out split of {val_fraction:.0%} needs at "
                f"least {window} steps in both parts (data.window={window}); give more data or a smaller window"
            )
        out = [SequenceData([s[a:b] for s in seqs], None if cond is None else [c[a:b] for c in cond],
                            data.channels, data.source) for a, b in ((0, cut), (cut, L))]
    for name, part in zip(("training", "held-out"), out):
        longest = max(len(s) for s in part.seqs)
        if longest < window:
            raise DataError(
                f"{data.source}: every {name} sequence is shorter than data.window={window} steps "
                f"(longest: {longest}); give longer sequences or a smaller data.window"
            )
    return out[0], out[1]


@dataclass(frozen=True)
class Normalizer:
    """Per-channel ``(x - mean) / std`` for the tokens and, when present, the ``cond`` channels.

    Statistics come from the training split and are saved as JSON beside the run; ``cond_mean`` /
    ``cond_std`` are empty for data without ``cond`` (and for runs saved before they existed).
    """

    mean: list[float]
    std: list[float]
    channels: list[str]
    cond_mean: list[float] = field(default_factory=list)
    cond_std: list[float] = field(default_factory=list)

    @staticmethod
    def _stats(arrays: list[np.ndarray]) -> tuple[list[float], list[float]]:
        allx = np.concatenate(arrays, 0).astype(np.float64)
        mean, std = allx.mean(0), allx.std(0)
        constant = (std == 0) | (std <= CONSTANT_REL_STD * np.abs(mean))
        std = np.where(constant, 1.0, std)  # constant channels: leave the scale alone (only shift them)
        return mean.tolist(), std.tolist()

    @classmethod
    def fit(cls, data: SequenceData, enabled: bool = True) -> "Normalizer":
        D, C = data.dim, data.cond_dim
        if not enabled:
            return cls([0.0] * D, [1.0] * D, data.channels, [0.0] * C, [1.0] * C)
        mean, std = cls._stats(data.seqs)
        cmean, cstd = cls._stats(data.cond) if data.cond is not None else ([], [])
        return cls(mean, std, data.channels, cmean, cstd)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``x: (..., D)`` raw → normalized float32."""
        return ((x - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def decode(self, x: np.ndarray) -> np.ndarray:
        """``x: (..., D)`` normalized → raw float32."""
        return (x * np.asarray(self.std) + np.asarray(self.mean)).astype(np.float32)

    def encode_cond(self, c: np.ndarray) -> np.ndarray:
        """``c: (..., C)`` raw conditioning → normalized float32 (identity for runs without cond stats)."""
        if not self.cond_mean:
            return c.astype(np.float32)
        if c.shape[-1] != len(self.cond_mean):
            raise DataError(f"cond has {c.shape[-1]} channels, the run's statistics have {len(self.cond_mean)}")
        return ((c - np.asarray(self.cond_mean)) / np.asarray(self.cond_std)).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({"mean": self.mean, "std": self.std, "channels": self.channels,
                           "cond_mean": self.cond_mean, "cond_std": self.cond_std}, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Normalizer":
        try:
            d = json.loads(text)
            out = cls([float(v) for v in d["mean"]], [float(v) for v in d["std"]], list(d["channels"]),
                      [float(v) for v in d.get("cond_mean", [])], [float(v) for v in d.get("cond_std", [])])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise DataError(f"{where}: corrupt normalization statistics ({type(e).__name__})") from None
        values = np.asarray(out.mean + out.std + out.cond_mean + out.cond_std, np.float64)
        if (not np.isfinite(values).all() or min(out.std + out.cond_std, default=1.0) <= 0
                or len(out.mean) != len(out.std) or len(out.cond_mean) != len(out.cond_std) or not out.mean):
            raise DataError(f"{where}: corrupt normalization statistics (a std <= 0, a NaN/inf or mismatched lengths)")
        return out
