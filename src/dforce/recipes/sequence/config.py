"""The generic run config of ``dforce train``: one typed dataclass per section, saved as config.yaml.

    cfg = load_config(RunConfig, "sequence_small", ["train.lr=3e-4", "model.width=256"])

Sections: ``data`` (your sequences or the built-in oscillations), ``diffusion`` (noise schedule),
``model`` (backbone), ``objective`` (Algorithm 1), ``train`` (optimizer/loop), ``sampler`` (Algorithm 2
defaults for ``dforce sample``/``eval``), ``logging``, and ``device``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dforce.diffusion import NoiseScheduleConfig
from dforce.engine.trainer import TrainConfig
from dforce.errors import ConfigError
from dforce.models import ModelConfig
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None  # .npz / .npy / .csv of your sequences (None: built-in synthetic oscillations)
    window: int = 32  # training horizon T (tokens per training window)
    stride: int = 1  # step between training-window starts
    val_fraction: float = 0.1  # held out: the last sequences (N >= 2) or the end of a single sequence
    normalize: bool = True  # per-channel mean/std of the training split (saved as data_stats.json)
    time_column: str | None = "auto"  # CSV column to drop (auto: time|date|timestamp|datetime|step|t; null: none)
    synthetic_sequences: int = 2048  # built-in data only: number of noisy 2-D oscillations
    synthetic_length: int = 64  # built-in data only: steps per oscillation
    seed: int = 0  # built-in data only

    def __post_init__(self):
        for k in ("stride", "synthetic_sequences", "synthetic_length"):
            if getattr(self, k) < 1:
                raise ConfigError(f"data.{k} must be >= 1, got {getattr(self, k)}")
        if self.window < 2:
            raise ConfigError(f"data.window must be >= 2, got {self.window}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = False  # also write TensorBoard event files to RUN_DIR/tb (needs `tensorboard`)
    plot: bool = True  # loss.png at the end of training


@dataclass(frozen=True)
class RunConfig:
    """Everything a generic sequence run needs; saved as RUN_DIR/config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    # K=100 cosine v-prediction: the demo's setting (v for time series per REFERENCE.md §2)
    diffusion: NoiseScheduleConfig = field(default_factory=lambda: NoiseScheduleConfig(num_levels=100, objective="v"))
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # 25 DDIM steps and stabilization at 2% of K=100: the demo's rollout setting
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=25, window=16, stabilization_level=2))
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N

    def __post_init__(self):
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"device={self.device!r} is not one of {', '.join(map(repr, DEVICES))}")
        if self.sampler.stabilization_level > self.diffusion.num_levels:
            raise ConfigError(
                f"sampler.stabilization_level={self.sampler.stabilization_level} exceeds "
                f"diffusion.num_levels={self.diffusion.num_levels}"
            )
        if self.sampler.window > self.data.window:
            raise ConfigError(
                f"sampler.window={self.sampler.window} exceeds the training horizon data.window={self.data.window}"
            )
