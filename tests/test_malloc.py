"""dforce._malloc: freed big tensors are reused instead of being page-faulted in again."""

import subprocess
import sys

import pytest

from dforce._malloc import keep_freed_memory

# a fresh interpreter (the test process's heap is fragmented by earlier tests): minor page faults of
# re-allocating and filling a 48 MiB tensor 8 times, with or without keep_freed_memory()
PROBE = """
import resource, sys, torch
torch.set_num_threads(1)
from dforce._malloc import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
n = 48 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)
torch.empty(n // 4).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(n // 4).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_big_allocations_are_reused_without_page_faults():
    off, on = _faults("off"), _faults("on")
    pages = (48 << 20) // 4096
    assert off >= 6 * pages  # the default: each allocation is a fresh mmap, every page faults in again
    # kept in the heap: a few heap growths at most (one here, three on some CI machines), never one per allocation
    assert on <= off // 2
    assert on < 5 * pages


def test_opt_out(monkeypatch):
    monkeypatch.setenv("DFORCE_MALLOC", "default")
    assert not keep_freed_memory()
