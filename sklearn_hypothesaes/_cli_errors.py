"""Errors the ``hypothesaes`` command reports as one line, without a traceback."""

from __future__ import annotations

__all__ = ["CommandError", "DataError"]


class DataError(ValueError):
    """Input data or options the command cannot use; the message says why and what to do.

    Reported with exit status 2.
    """


class CommandError(RuntimeError):
    """A run that failed for another reason; reported with exit status 1."""
