"""The default number of cohort workers (rrcunet.inference.batch.default_workers)."""

from __future__ import annotations

import os

import pytest

from rrcunet.errors import InputError
from rrcunet.inference import batch


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 1), (64, 1)])
def test_one_worker_on_any_multi_core_machine(cores, expected, monkeypatch):
    monkeypatch.delenv(batch.WORKERS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert batch.default_workers() == expected


def test_the_environment_sets_the_count(monkeypatch):
    monkeypatch.setenv(batch.WORKERS_ENV, "3")
    assert batch.default_workers() == 3
    monkeypatch.setenv(batch.WORKERS_ENV, "two")
    with pytest.raises(InputError, match="RRCUNET_WORKERS='two' is not a whole number"):
        batch.default_workers()
