"""Exception types shared by the whole package.

Every error a user can cause (a bad file, a bad option) is an :class:`RRcUNetError` subclass whose
message names the file or option, the value found and the value expected. The CLI prints these
without a traceback and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RRcUNetError(Exception):
    """Base class for user-facing errors (bad input, bad configuration)."""


class InputError(RRcUNetError, ValueError):
    """An input file or folder is unreadable, malformed or not what was expected."""


class ConfigError(RRcUNetError, ValueError):
    """An option or configuration value is invalid."""
