"""dforce's C++ kernel for the transformer's inference passes: built once with the local compiler, then cached.

:class:`~dforce.models.transformer.CausalTransformer` runs an inference pass (fp32, CPU, writing into its KV
buffers) through ``fused_pass.cpp`` once :meth:`~dforce.models.transformer.CausalTransformer.use_fused_kernel` is
on (``sampler.fused_kernel=true`` does that for a rollout). The kernel computes what the Python blocks compute, with
the per-token elementwise work, RoPE, the cache writes and attention as loops in one call instead of ~25 operators
per block from Python: at a rollout's batch sizes those operators cost more than the arithmetic
(``benchmarks/studies/sampling_overhead.py``).

Building needs a C++ compiler and ninja (``torch.utils.cpp_extension``); the first build takes about a minute on
two cores, later processes load the cached library from ``$DFORCE_CACHE/torch_extensions`` (default
``~/.cache/dforce``) in about a second. Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from dforce._utils import cache_dir
from dforce.errors import ConfigError

SOURCE = Path(__file__).with_name("fused_pass.cpp")
NAME = "dforce_fused_pass"
CFLAGS = ["-O3"]  # the loops are written for the compiler to vectorize; no -march: the cache may move machines
STALE_LOCK_S = 600  # a build lock older than this is left by a killed build (a build takes about a minute)

_module = None


def build_directory() -> Path:
    """Where the built library is cached: one folder per torch version (an extension is tied to its ABI)."""
    return cache_dir("torch_extensions", f"{NAME}-torch{torch.__version__.replace('+', '_')}")


def clear_stale_lock(folder: Path) -> bool:
    """Remove torch's build lock in ``folder`` when it is older than ``STALE_LOCK_S`` (left by a killed build, it
    would make every later load wait forever). Returns whether one was removed."""
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
        return True
    return False


def load(verbose: bool = False):
    """The compiled kernel module (built on first use in this environment, cached on disk and in the process).

    Raises ConfigError, with the compiler's last lines, where it cannot be built (no compiler / ninja)."""
    global _module
    if _module is not None:
        return _module
    from torch.utils.cpp_extension import load as load_extension

    # ninja from this environment's bin (pip's ninja package) is found even when the environment is not activated
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    out = build_directory()
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(out)
    if not verbose and not (out / f"{NAME}.so").exists():
        print(f"dforce: building the fused transformer kernel into {out} (once, about a minute)", file=sys.stderr,
              flush=True)
    try:
        _module = load_extension(name=NAME, sources=[str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(out),
                                 verbose=verbose)
    except (RuntimeError, OSError, ImportError) as e:  # compiler / ninja missing or failing
        tail = "\n".join(str(e).strip().splitlines()[-6:])
        raise ConfigError(f"sampler.fused_kernel: could not build dforce's C++ kernel ({SOURCE.name}; needs a C++ "
                          f"compiler and ninja): {tail}") from None
    return _module
