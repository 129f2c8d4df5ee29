"""Fixtures of the reliability tests.

nibabel attaches a ``logging.StreamHandler()`` to its ``nibabel.global`` logger when it is first
imported, bound to whatever ``sys.stderr`` was at that moment. Under pytest that may be a capture
buffer of an earlier test, already closed, so a later nibabel warning would print
"--- Logging error --- Traceback ..." — an artefact of running many CLI calls in one process that
a real ``rrcunet`` process never shows. The handler is pointed at the *current* ``sys.stderr``
instead, so what a test captures is what a user would see.
"""

from __future__ import annotations

import logging
import sys

import pytest


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True, scope="session")
def _nibabel_logs_to_current_stderr():
    import nibabel  # noqa: F401 - installs the handler

    for handler in logging.getLogger("nibabel.global").handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(_CurrentStderr())
    yield
