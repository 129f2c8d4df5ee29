"""The CLI's glibc malloc settings (rrcunet.cli.main.MALLOPT): applied unless the user set them or opted out."""

from __future__ import annotations

import ctypes

import pytest

from rrcunet.cli import main as cli_main


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param, value) -> int:
        self.calls.append((param.value, value.value))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: fake)
    for name in (*cli_main.MALLOPT, "RRCUNET_MALLOPT"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_both_settings_are_applied_by_default(libc):
    cli_main._tune_malloc()
    assert sorted(libc.calls) == sorted(cli_main.MALLOPT.values())


def test_a_variable_the_user_set_is_left_to_glibc(libc, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    cli_main._tune_malloc()
    assert libc.calls == [cli_main.MALLOPT["MALLOC_MMAP_THRESHOLD_"]]


def test_rrcunet_mallopt_0_changes_nothing(libc, monkeypatch):
    monkeypatch.setenv("RRCUNET_MALLOPT", "0")
    cli_main._tune_malloc()
    assert libc.calls == []


def test_a_c_library_without_mallopt_is_a_no_op(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())
    monkeypatch.delenv("RRCUNET_MALLOPT", raising=False)
    cli_main._tune_malloc()  # no AttributeError
