"""Grid searches and cross-validation on a dask cluster through joblib.

scikit-learn parallelises ``GridSearchCV``/``cross_validate`` with joblib;
``joblib.parallel_config(backend="dask")`` sends those tasks to a
``dask.distributed`` cluster (one machine or many). Each task trains a
:class:`~sklearn_hypothesaes.sae.TopKSAETransformer` with torch, whose intra-op
thread pool defaults to every core of the machine: several tasks on one
machine then oversubscribe its cores. :func:`cap_torch_threads` fixes the
number of torch threads in every worker process; :class:`TorchThreadsPlugin`
does the same for workers that join later.

Example (one machine)::

    from dask.distributed import Client, LocalCluster
    from joblib import parallel_config
    from sklearn_hypothesaes.distributed import cap_torch_threads

    cluster = LocalCluster(n_workers=4, threads_per_worker=1)
    client = Client(cluster)
    cap_torch_threads(client, 1)
    with parallel_config(backend="dask"):
        search.fit(X, y)          # a GridSearchCV over a pipeline

On a real cluster, connect with ``Client("tcp://scheduler-host:8786")`` instead
of starting a ``LocalCluster``; the data passed to ``fit`` is shipped to the
workers by joblib, so every worker needs the package installed (and, for a
memmap, the file at the same path).
"""

from __future__ import annotations

import os

try:  # the ``dask`` extra; without it only set_torch_threads is usable
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - depends on the environment
    _WorkerPluginBase = object

__all__ = ["TorchThreadsPlugin", "cap_torch_threads", "set_torch_threads"]

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_torch_threads(n_threads: int) -> int:
    """Cap torch's intra-op threads in the current process.

    Also sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``
    for libraries initialised later in the process.

    Parameters
    ----------
    n_threads : int
        Threads per process, at least 1.

    Returns
    -------
    n_threads : int
        ``torch.get_num_threads()`` after the change.

    Examples
    --------
    >>> import torch
    >>> from sklearn_hypothesaes.distributed import set_torch_threads
    >>> before = torch.get_num_threads()
    >>> set_torch_threads(1)
    1
    >>> _ = set_torch_threads(before)
    """
    n = _check_threads(n_threads)
    import torch

    torch.set_num_threads(n)
    for var in _THREAD_ENV:
        os.environ[var] = str(n)
    return torch.get_num_threads()


def _check_threads(n_threads) -> int:
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer; got {n_threads!r}.")
    return n_threads


class TorchThreadsPlugin(_WorkerPluginBase):
    """dask ``WorkerPlugin`` that caps torch threads on every worker, new ones included.

    Register it with ``client.register_plugin(TorchThreadsPlugin(1))``.

    Parameters
    ----------
    n_threads : int, default=1
        Torch intra-op threads per worker process.
    """

    name = "sklearn-hypothesaes-torch-threads"

    def __init__(self, n_threads: int = 1) -> None:
        self.n_threads = _check_threads(n_threads)

    def setup(self, worker=None) -> None:
        set_torch_threads(self.n_threads)

    def teardown(self, worker=None) -> None:
        """Nothing to undo."""

    def transition(self, key, start, finish, **kwargs) -> None:
        """Not used."""


def cap_torch_threads(client, n_threads: int = 1) -> dict:
    """Cap torch threads on every worker of a dask cluster (present and future).

    Parameters
    ----------
    client : dask.distributed.Client
        A connected client.
    n_threads : int, default=1
        Torch threads per worker process. With ``threads_per_worker=t`` task
        slots per worker, ``t * n_threads`` should not exceed the worker's cores.

    Returns
    -------
    threads : dict
        ``{worker_address: torch.get_num_threads()}`` after the change.
    """
    n = _check_threads(n_threads)
    if _WorkerPluginBase is object:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cap_torch_threads needs dask.distributed: pip install 'dask[distributed]'."
        )
    client.register_plugin(TorchThreadsPlugin(n), name=TorchThreadsPlugin.name)
    return client.run(_torch_threads)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
