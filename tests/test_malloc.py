"""dforce._malloc: freed big tensors are reused instead of being page-faulted in again."""

import resource
import sys

import pytest
import torch

from dforce._malloc import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_big_allocations_are_reused_without_page_faults():
    assert keep_freed_memory()  # glibc here
    nbytes = 48 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)
    torch.empty(nbytes // 4).fill_(1.0)  # first touch maps the block once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.empty(nbytes // 4).fill_(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    pages = nbytes // 4096  # mmap per allocation faults in every 4 KiB page each time: 8 * pages in all
    assert faults < 3 * pages  # kept in the heap: at most a heap growth or two


def test_opt_out(monkeypatch):
    monkeypatch.setenv("DFORCE_MALLOC", "default")
    assert not keep_freed_memory()
