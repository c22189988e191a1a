"""Rebuild GluonTS's ``exchange_rate_nips`` dataset from the vendored LSTNet file (no download).

GluonTS (``gluonts.dataset.repository._lstnet``) derives ``exchange_rate_nips`` from the LSTNet
``exchange_rate.txt.gz`` (7588 business days x 8 currencies, no header): freq ``B``, start
``1990-01-01 00:00:00``, train = the first 6071 rows, and 5 rolling test windows where window k
(k = 1..5) is the first ``6071 + 30 k`` rows (prediction length 30). The JSON we write is byte-identical
to GluonTS's (``json.dumps`` of Python floats, one series per line, train then test window-major).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from dforce._utils import cache_dir
from dforce.recipes.forecast.gluonts_format import GluonTSDataset, load_gluonts_dataset
from dforce.errors import DataError


@dataclass(frozen=True)
class ExchangeRateConfig:
    """Constants of GluonTS's ``exchange_rate_nips`` (``gluonts/dataset/repository/_lstnet.py``)."""

    start: str = "1990-01-01 00:00:00"  # LSTNet exchange data starts on Monday 1990-01-01
    freq: str = "B"  # business days
    training_length: int = 6071  # rows in train
    prediction_length: int = 30  # horizon
    rolling_evaluations: int = 5  # rolling test windows


def raw_exchange_rate() -> np.ndarray:
    """The vendored LSTNet exchange-rate matrix, ``(7588, 8)`` float64 (rows = business days)."""
    with (resources.files("dforce.recipes.forecast") / "assets" / "exchange_rate.txt.gz").open("rb") as fb:
        with gzip.open(fb, "rt") as f:
            return np.loadtxt(f, delimiter=",", dtype=np.float64)


def _lines(values: np.ndarray, start: str) -> list[str]:
    # values: (T, D) -> one JSON line per column, formatted exactly as GluonTS's json.dumps
    return [json.dumps({"start": start, "target": values[:, d].tolist()}) for d in range(values.shape[1])]


def build_exchange_rate_nips(out_dir: str | Path | None = None, overwrite: bool = False,
                             cfg: ExchangeRateConfig = ExchangeRateConfig()) -> Path:
    """Write ``exchange_rate_nips`` in GluonTS format (``metadata.json``, ``train/train.json``, ``test/test.json``).

    Args:
        out_dir: target folder; default ``cache_dir("exchange_rate_nips")``.
        overwrite: rewrite even when the three files already exist.
        cfg: the dataset constants.

    Returns:
        The folder, loadable with :func:`dforce.recipes.forecast.gluonts_format.load_gluonts_dataset`.
    """
    out = Path(out_dir) if out_dir is not None else cache_dir("exchange_rate_nips")
    files = [out / "metadata.json", out / "train" / "train.json", out / "test" / "test.json"]
    if all(f.is_file() for f in files) and not overwrite:
        return out
    raw = raw_exchange_rate()
    need = cfg.training_length + cfg.prediction_length * cfg.rolling_evaluations
    if raw.shape[0] < need:
        raise DataError(f"vendored exchange_rate.txt.gz has {raw.shape[0]} rows, fewer than the {need} needed")
    train = _lines(raw[: cfg.training_length], cfg.start)
    test = [line for k in range(1, cfg.rolling_evaluations + 1)
            for line in _lines(raw[: cfg.training_length + cfg.prediction_length * k], cfg.start)]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
    # metadata as in the shared copy (older GluonTS key "time_granularity"), plus nothing else
    files[0].write_text(json.dumps({"time_granularity": cfg.freq, "target": {"name": "target"}}, indent=2) + "\n")
    files[1].write_text("\n".join(train) + "\n")
    files[2].write_text("\n".join(test) + "\n")
    return out


def load_exchange_rate_nips(out_dir: str | Path | None = None, **kwargs) -> GluonTSDataset:
    """Build (once, cached) and load ``exchange_rate_nips`` grouped: train ``(6071, 8)``, 5 test windows.

    Keyword arguments go to :func:`load_gluonts_dataset`; the prediction length is fixed to 30.
    """
    cfg = ExchangeRateConfig()
    kwargs.setdefault("prediction_length", cfg.prediction_length)
    return load_gluonts_dataset(build_exchange_rate_nips(out_dir, cfg=cfg), **kwargs)
