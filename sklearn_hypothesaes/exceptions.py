"""Warning and error classes raised by sklearn_hypothesaes.

Each warning has its own class so users can filter exactly what they mean to,
e.g. ``warnings.simplefilter("ignore", DeviceWarning)``.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "AnnotationWarning",
    "CacheError",
    "ConvergenceWarning",
    "DataLeakageWarning",
    "DeviceWarning",
    "SelectionWarning",
]


class DeviceWarning(UserWarning):
    """A requested compute device is unavailable and another one is used."""


class AnnotationWarning(UserWarning):
    """Some items could not be annotated (failed or unparseable answers)."""


class SelectionWarning(UserWarning):
    """Neuron selection could not honour the request exactly."""


class DataLeakageWarning(UserWarning):
    """Evaluation data overlaps with the data the model was fitted on."""


class CacheError(RuntimeError):
    """A cache database exists but cannot be read; it is never deleted."""
