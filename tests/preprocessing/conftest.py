"""Run these small-volume tests single-threaded: on a loaded 2-core machine, torch's thread pool
costs far more than it saves on ~10⁵-voxel tensors (0.3 s against 0.01 s per call)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
