"""Fixtures of the inference tests: tiny model files, a small chest CT written as NIfTI and as DICOM."""

from __future__ import annotations

import pytest
import torch

from tests.inference.helpers import chest, save_tiny_model


@pytest.fixture(autouse=True)
def _single_thread():
    # ~10^5-voxel tensors: torch's thread pool costs more than it saves on a loaded 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def chest_case():
    return chest()
