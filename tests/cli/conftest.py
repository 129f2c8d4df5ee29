"""Fixtures of the CLI tests: a tiny model file and the small synthetic chest (tests/inference/helpers.py)."""

from __future__ import annotations

import pytest

from tests.inference.helpers import chest, save_tiny_model


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("cli_model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def cli_chest():
    return chest()
