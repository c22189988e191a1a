"""Multi-process training helpers (``torchrun`` + DistributedDataParallel), no-ops in a single process.

    torchrun --standalone --nproc_per_node 2 -m dforce.cli train sequence_small
    dforce train sequence_small --nproc 2          (spawns the torchrun command above)

Backend: ``gloo`` on CPU, ``nccl`` on CUDA (each rank uses ``cuda:LOCAL_RANK``). Only rank 0 writes
checkpoints, logs and plots; every rank reads the checkpoint on resume.

Batch semantics under DDP: ``train.batch_size`` is the batch *per process*; one optimizer step sees
``batch_size × world_size`` sequences. All ranks share one batch-index generator (same seed, same state,
checkpointed once): each step draws ``world_size × batch_size`` indices and rank r takes the r-th slice,
so ranks see disjoint slices of one global stream, and a 2-process run with batch B draws the same
sequences as a 1-process run with batch 2B. Noise levels/noise come from a per-rank generator
(seed + 1 + rank) whose states are gathered into the checkpoint, so resume stays exact under DDP too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun (else single process). Returns (info, device).

    On CUDA each rank is pinned to ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def shutdown(barrier: bool = True) -> None:
    """Leave the process group. With ``barrier`` (the normal end) every rank first waits for the others:
    a rank that tore its gloo connections down while another was still in a collective or writing the last
    checkpoint could abort at exit ("terminate called without an active exception"). After an error there
    is no barrier (the other ranks may never arrive; torchrun stops them)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_over_ranks(x: float, device: torch.device) -> float:
    """Average a scalar over ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(x)
    t = torch.tensor([float(x)], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def param_fingerprint(model: torch.nn.Module) -> list[float]:
    """Per-tensor float64 checksums (sum and position-weighted sum): equal iff weights agree (a.s.)."""
    sums = []
    with torch.no_grad():
        for p in model.parameters():
            v = p.detach().double().flatten()
            w = torch.arange(1, v.numel() + 1, dtype=torch.float64, device=v.device)
            sums += [v.sum(), (v * w).sum()]
    return torch.stack(sums).cpu().tolist() if sums else []


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """True when every rank holds bit-identical parameters (checked through their fingerprints)."""
    prints = gather_objects(param_fingerprint(model))
    return all(p == prints[0] for p in prints)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when a process group is up, else ``model`` unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
