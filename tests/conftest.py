"""Shared test setup.

Every test model is tiny, so torch runs single-threaded here: on a 2-core machine two OpenMP threads per
process only fight each other (measured 5x slower under load), and one thread keeps timings stable.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
