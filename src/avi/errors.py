"""Errors that name the problem in one line.

Every error raised for bad input is a :class:`AviError`, a ``ValueError`` subclass, so Python
users can catch ``ValueError`` and the CLI can turn it into a one-line message and exit code 2.
"""

from __future__ import annotations

__all__ = ["AviError", "ConfigError", "DataError", "RunError", "first_line"]


class AviError(ValueError):
    """Base class of avi's input errors: the message is one line that names the problem."""


class ConfigError(AviError):
    """An unknown key, preset or option, or a value out of range."""


class DataError(AviError):
    """Data that cannot be used: missing file, NaN/inf, wrong shape, non-binary for Bernoulli."""


class RunError(AviError):
    """A run directory that is missing, incomplete or from an incompatible configuration."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), for errors
    that report a library's or a user's exception in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
