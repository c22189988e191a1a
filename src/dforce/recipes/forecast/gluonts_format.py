"""Read GluonTS-format dataset directories and group them into multivariate series.

A GluonTS dataset directory holds ``metadata.json`` plus ``train/`` and ``test/`` folders of JSON-lines
files (``*.json``, ``*.jsonl``, optionally ``.gz``). Each line is one *univariate* series::

    {"start": "1990-01-01 00:00:00", "target": [0.78, 0.77, ...],
     "feat_static_cat": [3], "feat_dynamic_real": [[...], ...], "item_id": "AUD"}

Multivariate models (TimeGrad, Diffusion Forcing) group these the way GluonTS's
``gluonts.dataset.multivariate_grouper.MultivariateGrouper`` does:

- train: every series is aligned on one calendar from the earliest start to the latest end, giving one
  ``(T, D)`` array;
- test: the entries are cut, in file order, into ``num_test_dates`` consecutive chunks (one per rolling
  evaluation date); each chunk is left-aligned to the earliest start of the whole test set and stacked
  into one ``(T_k, D)`` array.

Unlike GluonTS, which fills alignment padding with the series mean (train) or 0 (test), we keep NaN and
return an ``observed`` mask (``pad="gluonts"`` reproduces GluonTS's fill values, still masked). Missing
values (``NaN``/``null`` in the JSON) are never imputed.
"""

from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dforce._utils import check_choice, exists
from dforce.errors import DataError

PAD_CHOICES = ("nan", "gluonts")  # how alignment padding is filled; it is always masked
JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


# ----------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class MultivariateSeries:
    """One multivariate series on a regular calendar.

    Attributes:
        target: ``(T, D)`` float64; NaN where a value is missing or padded.
        observed: ``(T, D)`` bool; True where ``target`` holds a real observation.
        start: timestamp of row 0.
        freq: pandas frequency string (e.g. ``"B"``).
        feat_dynamic_real: ``(T, F)`` float64 dynamic covariates or None (GluonTS stacks each series'
            ``(F_i, T)`` block, series-major, so ``F = D * F_i``).
    """

    target: np.ndarray
    observed: np.ndarray
    start: pd.Timestamp
    freq: str
    feat_dynamic_real: np.ndarray | None = None

    @classmethod
    def from_array(cls, target: np.ndarray, start: str | pd.Timestamp, freq: str) -> "MultivariateSeries":
        """Wrap a ``(T, D)`` array (NaN = missing) as a series starting at ``start``."""
        target = np.asarray(target, dtype=np.float64)
        if target.ndim != 2:
            raise DataError(f"a multivariate series must be (T, D), got shape {target.shape}")
        return cls(target, np.isfinite(target), pd.Timestamp(start), freq)

    @property
    def length(self) -> int:
        return self.target.shape[0]

    @property
    def dim(self) -> int:
        return self.target.shape[1]

    def index(self) -> pd.DatetimeIndex:
        """The ``(T,)`` timestamps of the rows."""
        return pd.date_range(self.start, periods=self.length, freq=self.freq)

    def head(self, length: int) -> "MultivariateSeries":
        """The first ``length`` rows (same start)."""
        fdr = self.feat_dynamic_real[:length] if exists(self.feat_dynamic_real) else None
        return replace(self, target=self.target[:length], observed=self.observed[:length], feat_dynamic_real=fdr)


@dataclass(frozen=True)
class GluonTSDataset:
    """A grouped GluonTS dataset.

    Attributes:
        train: the aligned training series, ``target: (T, D)``.
        test: ``num_test_dates`` rolling test series, each ``(T_k, D)``; the last
            ``prediction_length`` rows of each are the values to forecast.
        freq: pandas frequency string.
        prediction_length: forecast horizon H.
        item_ids: ``D`` names (from ``item_id`` in train, else ``"0".."D-1"``).
        feat_static_cat: ``(D, C)`` int64 static categories of the train entries, or None.
        metadata: the raw ``metadata.json`` content.
    """

    train: MultivariateSeries
    test: list[MultivariateSeries]
    freq: str
    prediction_length: int
    item_ids: list[str]
    feat_static_cat: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def _period(ts: Any, freq: str) -> pd.Period:
    # pandas >= 2.2 deprecates Period with business-day freq (FutureWarning), but GluonTS itself relies on
    # it; ordinals are exact, so we use Periods only for integer offsets and silence that warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.Period(ts, freq=freq)


def _timestamp(p: pd.Period) -> pd.Timestamp:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return p.to_timestamp()


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_json_lines(path: str | Path) -> list[dict]:
    """Read one JSON-lines file (optionally gzipped) into a list of dicts.

    Raises:
        DataError: the file is missing, unreadable, or a line is not a JSON object with ``start``/``target``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"GluonTS data file {path} does not exist")
    entries = []
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {lineno} is not valid JSON ({e.msg})") from None
                if not isinstance(entry, dict) or "start" not in entry or "target" not in entry:
                    raise DataError(f"{path} line {lineno} must be a JSON object with 'start' and 'target'")
                entries.append(entry)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read GluonTS data file {path} ({e})") from None
    return entries


def read_split(directory: str | Path) -> list[dict]:
    """Read every ``*.json(l)(.gz)`` file of one split folder, in sorted file order (as GluonTS does)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"GluonTS split folder {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(JSON_SUFFIXES))
    if not files:
        raise DataError(f"GluonTS split folder {directory} holds no .json/.jsonl(.gz) files")
    entries = [e for p in files for e in read_json_lines(p)]
    if not entries:
        raise DataError(f"GluonTS split folder {directory} holds no series")
    return entries


def _target_array(entry: dict, where: str) -> np.ndarray:
    try:
        # None/null and "NaN" both become NaN; anything non-numeric raises
        target = np.array(entry["target"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'target' must be a list of numbers (null/NaN allowed)") from None
    if target.ndim != 1 or target.size == 0:
        raise DataError(f"{where}: 'target' must be a non-empty flat list, got shape {target.shape}")
    return target


def _dynamic_real(entry: dict, length: int, where: str) -> np.ndarray | None:
    if "feat_dynamic_real" not in entry:
        return None
    try:
        fdr = np.atleast_2d(np.array(entry["feat_dynamic_real"], dtype=np.float64))  # (F_i, T)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'feat_dynamic_real' must be a list of numeric lists") from None
    if fdr.ndim != 2 or fdr.shape[1] != length:
        raise DataError(f"{where}: 'feat_dynamic_real' has length {fdr.shape[-1]} but 'target' has {length}")
    return fdr


# ----------------------------------------------------------------------------- grouping


def _align(entries: list[dict], freq: str, first: pd.Period | None, right_pad: bool, pad: str,
           pad_value_fn, where: str):
    """Place each entry on a common calendar; returns target (T, D), observed (T, D), fdr, start."""
    starts = [_period(e["start"], freq) for e in entries]
    targets = [_target_array(e, f"{where} series {i}") for i, e in enumerate(entries)]
    first = min(starts) if first is None else first
    offsets = [(s - first).n for s in starts]
    ends = [o + len(t) for o, t in zip(offsets, targets)]
    if not right_pad and len(set(ends)) > 1:
        raise DataError(f"{where}: series end at different steps {sorted(set(ends))}; "
                        "a rolling test date must group series of equal end")
    T, D = max(ends), len(entries)
    target = np.full((T, D), np.nan)
    observed = np.zeros((T, D), dtype=bool)
    fdrs = []
    for d, (o, t) in enumerate(zip(offsets, targets)):
        if pad == "gluonts":
            target[:, d] = pad_value_fn(t)
        target[o:o + len(t), d] = t
        observed[o:o + len(t), d] = ~np.isnan(t)
        fdr = _dynamic_real(entries[d], len(t), f"{where} series {d}")
        if exists(fdr):
            full = np.full((T, fdr.shape[0]), np.nan)
            full[o:o + len(t)] = fdr.T
            fdrs.append(full)
    if fdrs and len(fdrs) != D:
        raise DataError(f"{where}: 'feat_dynamic_real' is present in some series but not all")
    fdr = np.concatenate(fdrs, axis=1) if fdrs else None  # (T, D * F_i), series-major like np.vstack
    return target, observed, fdr, first


def _nanmean(x: np.ndarray) -> float:
    # GluonTS fills with np.mean(pd.Series), i.e. pandas' mean, which skips NaN
    return float(np.nanmean(x)) if np.isfinite(x).any() else np.nan


def group_train(entries: list[dict], freq: str, pad: str = "nan",
                max_target_dim: int | None = None) -> MultivariateSeries:
    """Align univariate train entries into one multivariate series (GluonTS ``MultivariateGrouper`` train mode).

    Args:
        entries: D parsed JSON entries with ``start`` and ``target``.
        freq: pandas frequency string.
        pad: ``"nan"`` (default) or ``"gluonts"`` (fill padding with each series' NaN-skipping mean, as
            GluonTS's ``np.mean`` of a pandas Series does).
            Padding is masked either way.
        max_target_dim: keep only the last this-many series (GluonTS semantics).

    Returns:
        ``MultivariateSeries`` with ``target: (T, D)`` from the earliest start to the latest end.
    """
    check_choice("pad", pad, PAD_CHOICES)
    target, observed, fdr, first = _align(entries, freq, None, True, pad, _nanmean, "train")
    series = MultivariateSeries(target, observed, _timestamp(first), freq, fdr)
    return _restrict(series, max_target_dim)


def group_test(entries: list[dict], freq: str, num_test_dates: int, pad: str = "nan",
               max_target_dim: int | None = None) -> list[MultivariateSeries]:
    """Group rolling test entries into ``num_test_dates`` multivariate series (``MultivariateGrouper`` test mode).

    Entries are split in file order into ``num_test_dates`` consecutive chunks of equal size; every chunk is
    left-aligned to the earliest start of the *whole* test set (GluonTS pads with 0; ``pad="gluonts"``
    does the same, ``"nan"`` keeps NaN; padding is masked either way).

    Returns:
        ``num_test_dates`` series, the k-th with ``target: (T_k, D)``.
    """
    check_choice("pad", pad, PAD_CHOICES)
    if num_test_dates <= 0 or len(entries) % num_test_dates:
        raise DataError(f"test set has {len(entries)} series, which is not a multiple of "
                        f"num_test_dates={num_test_dates}")
    first = min(_period(e["start"], freq) for e in entries)
    size = len(entries) // num_test_dates
    out = []
    for k in range(num_test_dates):
        chunk = entries[k * size:(k + 1) * size]
        target, observed, fdr, _ = _align(chunk, freq, first, False, pad, lambda t: 0.0, f"test date {k}")
        out.append(_restrict(MultivariateSeries(target, observed, _timestamp(first), freq, fdr), max_target_dim))
    return out


def _restrict(series: MultivariateSeries, max_target_dim: int | None) -> MultivariateSeries:
    if not exists(max_target_dim):
        return series
    # GluonTS keeps the *last* max_target_dim series (and, buggily, the last rows of feat_dynamic_real)
    fdr = series.feat_dynamic_real
    if exists(fdr):
        per = fdr.shape[1] // series.dim
        fdr = fdr[:, -max_target_dim * per:]
    return replace(series, target=series.target[:, -max_target_dim:], observed=series.observed[:, -max_target_dim:],
                   feat_dynamic_real=fdr)


# ----------------------------------------------------------------------------- dataset


def _metadata(path: Path) -> dict:
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise DataError(f"GluonTS dataset {path} has no metadata.json")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path} is not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} must hold a JSON object")
    return meta


def load_gluonts_dataset(path: str | Path, freq: str | None = None, prediction_length: int | None = None,
                         num_test_dates: int | None = None, pad: str = "nan",
                         max_target_dim: int | None = None) -> GluonTSDataset:
    """Load and group a GluonTS-format dataset directory.

    Args:
        path: folder with ``metadata.json``, ``train/`` and ``test/``.
        freq: overrides ``metadata["freq"]`` (or the older ``metadata["time_granularity"]``).
        prediction_length: overrides ``metadata["prediction_length"]``; if neither exists it is inferred
            from the test windows (the step between consecutive rolling windows, else test minus train length).
        num_test_dates: rolling evaluation dates; default ``len(test) / len(train)`` (TimeGrad's rule).
        pad: alignment padding fill, see :func:`group_train`.
        max_target_dim: keep only the last this-many series.

    Returns:
        :class:`GluonTSDataset` with ``train.target: (T, D)`` and ``num_test_dates`` test series ``(T_k, D)``.

    Raises:
        DataError: missing folder/files, malformed JSON, inconsistent lengths or frequencies.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"GluonTS dataset folder {path} does not exist")
    meta = _metadata(path)
    freq = freq or meta.get("freq") or meta.get("time_granularity")
    if not freq:
        raise DataError(f"{path / 'metadata.json'} has no 'freq' (or 'time_granularity'); pass freq=")
    train_entries, test_entries = read_split(path / "train"), read_split(path / "test")
    if num_test_dates is None:
        if len(test_entries) % len(train_entries):
            raise DataError(f"{path}: {len(test_entries)} test series is not a multiple of "
                            f"{len(train_entries)} train series; pass num_test_dates=")
        num_test_dates = len(test_entries) // len(train_entries)
    train = group_train(train_entries, freq, pad, max_target_dim)
    test = group_test(test_entries, freq, num_test_dates, pad, max_target_dim)
    if any(t.dim != train.dim for t in test):
        raise DataError(f"{path}: test dates group {test[0].dim} series but train has {train.dim}")

    prediction_length = prediction_length or meta.get("prediction_length")
    if not prediction_length:
        steps = np.diff([t.length for t in test]) if len(test) > 1 else np.array([test[0].length - train.length])
        if len(set(steps.tolist())) != 1 or steps[0] <= 0:
            raise DataError(f"{path}: cannot infer prediction_length from test lengths "
                            f"{[t.length for t in test]}; pass prediction_length=")
        prediction_length = int(steps[0])
    prediction_length = int(prediction_length)
    if min(t.length for t in test) <= prediction_length:
        raise DataError(f"{path}: a test series is not longer than prediction_length={prediction_length}")

    ids = [str(e.get("item_id", i)) for i, e in enumerate(train_entries)]
    cats = [e.get("feat_static_cat") for e in train_entries]
    cat = np.array(cats, dtype=np.int64) if all(exists(c) for c in cats) else None
    if exists(max_target_dim):
        ids = ids[-max_target_dim:]
        cat = cat[-max_target_dim:] if exists(cat) else None
    return GluonTSDataset(train, test, freq, prediction_length, ids, cat, meta)


def split_validation(train: MultivariateSeries, prediction_length: int,
                     num_windows: int = 1) -> tuple[MultivariateSeries, list[MultivariateSeries]]:
    """Hold out the last ``prediction_length * num_windows`` steps of ``train`` as rolling validation windows.

    Mirrors the test layout: validation window k (k = 1..n) is the shortened train series extended by
    ``prediction_length * k`` steps, so its last ``prediction_length`` rows are the values to forecast.

    Args:
        train: ``(T, D)`` series.
        prediction_length: H.
        num_windows: n rolling windows.

    Returns:
        ``(train_part, windows)`` with ``train_part: (T - H*n, D)`` and ``n`` series ``(T - H*n + H*k, D)``.
    """
    cut = train.length - prediction_length * num_windows
    if prediction_length <= 0 or num_windows <= 0 or cut <= prediction_length:
        raise DataError(f"cannot hold out {num_windows} x {prediction_length} validation steps from a "
                        f"train series of length {train.length}")
    return train.head(cut), [train.head(cut + prediction_length * k) for k in range(1, num_windows + 1)]
