"""Fixtures of the CLI tests: a tiny model file and the small synthetic chest (tests/inference/helpers.py)."""

from __future__ import annotations

import pytest
import torch

from tests.inference.helpers import chest, save_tiny_model


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("cli_model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def cli_chest():
    return chest()
