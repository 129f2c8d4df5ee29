"""Fixtures of the inference tests: tiny model files, a small chest CT written as NIfTI and as DICOM."""

from __future__ import annotations

import pytest

from tests.inference.helpers import chest, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def chest_case():
    return chest()
