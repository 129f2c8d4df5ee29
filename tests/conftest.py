"""Shared test fixtures.

Real scans are read in place from ``../shared/realdata`` (next to the repository root), or from
``$RRCUNET_REALDATA``; tests that need them skip, naming the folder, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before torch is imported: spinning OpenMP threads make small CPU kernels many times slower when
# the 2 CI cores are shared (docs/architecture.md, "Speed"). The CLI sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Predictions run their stages one after the other in the tests (a worker process costs seconds to start
# and the test cases are tiny); the tests of the overlapped run ask for workers themselves.
os.environ.setdefault("RRCUNET_WORKERS", "0")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


def realdata_path(*parts: str) -> Path:
    """Return a path inside the shared real-data folder, or skip the test with the reason."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (set RRCUNET_REALDATA or place ../shared/realdata)")
    return path


@pytest.fixture
def realdata():
    return realdata_path


#: Test folders whose tensors are small (~10^5 voxels, tiny networks): there torch's thread pool
#: costs far more than it saves on a loaded 2-core box (0.3 s against 0.01 s per call; OpenMP
#: threads spin-waiting for a descheduled peer, docs/architecture.md "Speed"), so each of their
#: tests runs single-threaded, and the previous setting is restored after it.
SINGLE_THREAD_DIRS = frozenset({"cli", "experiments", "inference", "lungmask", "models", "preprocessing"})


@pytest.fixture(autouse=True)
def _torch_threads(request):
    # Keep tests deterministic and polite on 2-core CI.
    import torch

    torch.manual_seed(0)
    rel = Path(str(request.node.path)).resolve().relative_to(REPO_ROOT / "tests")
    if rel.parts[0] not in SINGLE_THREAD_DIRS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
