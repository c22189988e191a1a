"""dforce — Diffusion Forcing (Chen et al., NeurIPS 2024): per-token-noise sequence diffusion.

Public API (see README for a 10-line example):
    NoiseSchedule / NoiseScheduleConfig     per-token forward/reverse diffusion (dforce.diffusion)
    make_schedule / validate_schedule       scheduling matrices (dforce.scheduling)
    ObjectiveConfig / diffusion_forcing_loss  Algorithm 1 (dforce.objective)
    SamplerConfig / sample                  Algorithm 2 with caching, stabilization, guidance, MCG
    ModelConfig / build_model               causal backbones (RNN, transformer with KV cache)
"""

from dforce import _moved

_moved.install()  # old (0.1) import paths keep working for one release, with a DeprecationWarning

from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig, sampling_levels
from dforce.errors import CheckpointError, ConfigError, DataError, DforceError, ScheduleError
from dforce.guidance import goal_guidance
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig, diffusion_forcing_loss
from dforce.sampler import SampleOutput, SamplerConfig, sample
from dforce.scheduling import make_schedule, validate_schedule

__version__ = "0.2.0"

__all__ = [
    "NoiseSchedule", "NoiseScheduleConfig", "sampling_levels", "make_schedule", "validate_schedule",
    "ObjectiveConfig", "diffusion_forcing_loss", "SamplerConfig", "sample", "SampleOutput",
    "ModelConfig", "build_model", "goal_guidance",
    "DforceError", "ConfigError", "DataError", "CheckpointError", "ScheduleError",
]
