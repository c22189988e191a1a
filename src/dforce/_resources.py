"""Memory estimates checked before a model or a training step is allocated.

A config typo such as ``model.width=1000000`` asks for ~4 TB of weights: on Linux the allocation can
succeed lazily and the kernel's OOM killer then ends this process (or a neighbour's) with no message.
These checks refuse such configs with one line instead. They are lower bounds (the real use is higher),
so they only catch configs that cannot fit; a step that still runs out of memory is reported by the trainer.
"""

from __future__ import annotations

import os

import torch

from dforce.errors import ConfigError

MEMORY_FRACTION = 0.8  # refuse when the estimate exceeds this share of the device's total memory
BYTES_PER_PARAM_TRAIN = 20  # fp32 weights + gradients + AdamW's two moments + the EMA copy, 4 bytes each
# activations kept for backward per token and layer, in units of the model width (a transformer block
# keeps about 2 norms + 3 qkv + 1 attention output + 2 × 4 MLP + 6 adaLN ≈ 20-24; a GRU layer fewer)
ACT_WIDTHS_PER_LAYER = 24
QUICK_CHECK_BYTES = 1 << 30  # models whose rough size bound is under 1 GiB are not counted exactly
MAX_DEPTH = 4096  # layers: far beyond any useful backbone (the paper's: 2-12); counting more would itself take long


def total_memory(device: str | torch.device = "cpu") -> int:
    """Total memory of ``device`` in bytes (physical RAM for the CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(need: int, what: str, fix: str, device: str | torch.device = "cpu") -> None:
    """Raise :class:`ConfigError` when ``need`` bytes exceed :data:`MEMORY_FRACTION` of the device memory."""
    have = total_memory(device)
    if need > MEMORY_FRACTION * have:
        raise ConfigError(f"{what} needs at least {need / 2**30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of this "
                          f"machine's {have / 2**30:.1f} GiB ({torch.device(device).type}); {fix}")


def check_model_size(build, width: int, depth: int) -> None:
    """Count the parameters ``build()`` would allocate (on the meta device, no memory) when a rough bound
    says they might not fit, and refuse configs whose weights alone do not fit."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"model.depth={depth} is beyond any sensible backbone (at most {MAX_DEPTH} layers)")
    # a GRU layer holds >= 6 width² weights, a transformer block ~12: a lower bound refuses without building
    check_fits(4 * 6 * depth * width * width, f"model.width={width}, model.depth={depth}",
               "lower model.width or model.depth")
    if 4 * (16 * depth + 8) * width * width < QUICK_CHECK_BYTES:
        return
    with torch.device("meta"):
        n = sum(p.numel() for p in build().parameters())
    check_fits(4 * n, f"model.width={width}, model.depth={depth}: {n:,} parameters",
               "lower model.width or model.depth")


def check_training_memory(model: torch.nn.Module, batch: int, tokens: int, device) -> None:
    """Refuse a training run whose weights, optimizer state and (estimated) activations cannot fit."""
    n = sum(p.numel() for p in model.parameters())
    width, depth = getattr(model, "width", 0), getattr(model, "depth", 0)
    act = 4 * batch * tokens * width * depth * ACT_WIDTHS_PER_LAYER
    check_fits(BYTES_PER_PARAM_TRAIN * n + act, f"training ({n:,} parameters, batch {batch} x {tokens} tokens)",
               "lower train.batch_size, the window length or the model size", device)
