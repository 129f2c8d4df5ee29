"""Fixtures for the model tests.

The networks here are tiny, and on a shared 2-core CI box OpenMP threads that spin-wait for a
descheduled peer made these tests 5-10× slower (see docs/architecture.md, "Speed"); one thread
is both faster and deterministic for them. The previous setting is restored after each test.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
