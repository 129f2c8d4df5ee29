"""A process-wide on/off switch for an optional fast path (:mod:`rrcunet.models.fusion`,
:mod:`rrcunet.models.kernels`): the path's module exposes the switch's ``enabled``,
``set_enabled`` and ``disabled`` as its own functions, so benchmarks and tests can compare the
fast path with the network as written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Switch:
    """On/off state of one fast path for the whole process.

    Args:
        on: the initial state.
    """

    def __init__(self, on: bool = True) -> None:
        self._on = bool(on)

    def enabled(self) -> bool:
        """Whether the fast path is taken where it applies."""
        return self._on

    def set_enabled(self, flag: bool) -> None:
        """Switch the fast path on or off for the whole process (:meth:`disabled` is scoped)."""
        self._on = bool(flag)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run as written inside the block; the previous state comes back after it."""
        previous = self._on
        self._on = False
        try:
            yield
        finally:
            self._on = previous
