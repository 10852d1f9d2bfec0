"""Which kind of target a ``y`` is: one rule shared by selection and statistics."""

from __future__ import annotations

import numpy as np


def infer_task(y: np.ndarray, task: str, *, single_value_hint: str) -> tuple[str, np.ndarray]:
    """Resolve ``task="auto"`` from the values of ``y`` and check the requested task.

    Two distinct values make a binary task; more numeric values a regression;
    more non-numeric values (or booleans) a multiclass task.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
        The target.
    task : {"auto", "regression", "binary", "multiclass"}
        The requested task.
    single_value_hint : str
        What the caller tells the user when ``y`` has only one value.

    Returns
    -------
    task : str
        The resolved task.
    classes : ndarray
        The sorted distinct values of ``y``.
    """
    numeric = y.dtype.kind in "biuf"
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(
            f"y has a single value ({classes[0]!r}) for all {y.size} samples; {single_value_hint}"
        )
    if task == "auto":
        if classes.size == 2:
            task = "binary"
        elif numeric and y.dtype.kind != "b":
            task = "regression"
        else:
            task = "multiclass"
    if task == "regression" and not numeric:
        raise ValueError(
            f"task='regression' needs a numeric target y; got labels of dtype {y.dtype}. Use "
            "task='binary' or task='multiclass' for class labels."
        )
    return task, classes
