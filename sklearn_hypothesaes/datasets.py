"""Built-in data with known ground truth.

:func:`make_planted_embeddings` draws embedding-like vectors from a known
dictionary of atoms, with a target driven by a few known "causal" atoms. It is
what tests and benchmarks use to measure quality (atom recovery, selection of
the causal neurons), not only speed.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["make_planted_embeddings"]

_CHUNK_ROWS = 8192


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left")],
        "n_atoms": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_causal": [Interval(Integral, 0, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "target_noise": [Interval(Real, 0, None, closed="left")],
        "out": [str, os.PathLike, None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_planted_embeddings(
    n_samples: int = 10_000,
    n_features: int = 1536,
    n_atoms: int = 512,
    k: int = 8,
    *,
    n_causal: int = 10,
    noise: float = 0.01,
    target_noise: float = 0.5,
    out: str | os.PathLike | None = None,
    random_state=None,
) -> Bunch:
    """Generate unit-norm embeddings from a known sparse dictionary.

    Each row is a positive combination of ``k`` distinct atoms drawn at random
    from a dictionary of ``n_atoms`` unit vectors in ``R^n_features``, plus
    Gaussian noise of relative size ``noise``; rows are L2-normalised. A
    regression target is a weighted sum of the coefficients of ``n_causal``
    atoms (half with positive, half with negative weights) plus noise; a binary
    target is drawn from a logistic model of the same signal.

    Parameters
    ----------
    n_samples : int, default=10_000
        Number of rows.
    n_features : int, default=1536
        Embedding dimension ``d``.
    n_atoms : int, default=512
        Size of the true dictionary.
    k : int, default=8
        Number of atoms active in each row. Must not exceed ``n_atoms``.
    n_causal : int, default=10
        Number of atoms that drive the target (``ceil(n_causal / 2)`` positive,
        the rest negative). Must not exceed ``n_atoms``.
    noise : float, default=0.01
        Norm of the additive noise relative to the (unit) signal norm.
    target_noise : float, default=0.5
        Standard deviation of the target noise relative to the standard
        deviation of the target signal.
    out : str or path-like, default=None
        If given, ``X`` is written to this ``.npy`` file chunk by chunk and
        returned as a read-only ``numpy.memmap``, so data larger than memory can
        be generated.
    random_state : int, RandomState instance or None, default=None
        Controls every random draw.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With fields

        - ``X`` : ndarray of shape (n_samples, n_features), float32, unit rows.
        - ``y`` : ndarray of shape (n_samples,), float64 regression target.
        - ``y_binary`` : ndarray of shape (n_samples,), int64 in {0, 1}.
        - ``atoms`` : ndarray of shape (n_atoms, n_features), float32, unit rows.
        - ``codes`` : csr_matrix of shape (n_samples, n_atoms), float32, the
          true non-negative coefficients (``k`` non-zeros a row).
        - ``causal_atoms`` : ndarray of shape (n_causal,), indices into ``atoms``.
        - ``causal_weights`` : ndarray of shape (n_causal,), their weights.

    Examples
    --------
    >>> from sklearn_hypothesaes.datasets import make_planted_embeddings
    >>> data = make_planted_embeddings(200, n_features=32, n_atoms=16, k=3, random_state=0)
    >>> data.X.shape, int(data.codes.getnnz(axis=1).max())
    ((200, 32), 3)
    """
    if k > n_atoms:
        raise ValueError(
            f"k={k} atoms per row cannot exceed n_atoms={n_atoms}; lower k or raise n_atoms."
        )
    if n_causal > n_atoms:
        raise ValueError(f"n_causal={n_causal} cannot exceed n_atoms={n_atoms}; lower n_causal.")
    rng = check_random_state(random_state)

    atoms = rng.standard_normal((n_atoms, n_features)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)

    causal_atoms = rng.choice(n_atoms, size=n_causal, replace=False)
    n_pos = (n_causal + 1) // 2
    signs = np.r_[np.ones(n_pos), -np.ones(n_causal - n_pos)]
    causal_weights = signs * rng.uniform(1.0, 2.0, size=n_causal)

    if out is not None:
        X = np.lib.format.open_memmap(
            os.fspath(out), mode="w+", dtype=np.float32, shape=(n_samples, n_features)
        )
    else:
        X = np.empty((n_samples, n_features), dtype=np.float32)
    indices = np.empty((n_samples, k), dtype=np.int64)
    coefs = np.empty((n_samples, k), dtype=np.float32)

    noise_scale = np.float32(noise / np.sqrt(n_features))
    for start in range(0, n_samples, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n_samples)
        m = stop - start
        # k distinct atoms per row: the k smallest of uniform keys.
        keys = rng.random((m, n_atoms))
        idx = (
            np.argpartition(keys, k - 1, axis=1)[:, :k]
            if k < n_atoms
            else np.tile(np.arange(n_atoms), (m, 1))
        )
        c = rng.uniform(0.1, 1.0, size=(m, k)).astype(np.float32)
        signal = np.einsum("mk,mkd->md", c, atoms[idx], optimize=True)
        signal /= np.linalg.norm(signal, axis=1, keepdims=True)
        signal += noise_scale * rng.standard_normal(signal.shape).astype(np.float32)
        signal /= np.linalg.norm(signal, axis=1, keepdims=True)
        X[start:stop] = signal
        indices[start:stop] = idx
        coefs[start:stop] = c
    if out is not None:
        X.flush()
        del X
        X = np.load(os.fspath(out), mmap_mode="r")

    order = np.argsort(indices, axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    coefs = np.take_along_axis(coefs, order, axis=1)
    codes = sp.csr_matrix(
        (coefs.ravel(), indices.ravel(), np.arange(0, n_samples * k + 1, k)),
        shape=(n_samples, n_atoms),
    )

    weight_of_atom = np.zeros(n_atoms)
    weight_of_atom[causal_atoms] = causal_weights
    signal = np.asarray(codes @ weight_of_atom).ravel()
    sd = signal.std()
    scale = sd if sd > 0 else 1.0
    y = signal + target_noise * scale * rng.standard_normal(n_samples)
    z = (signal - signal.mean()) / scale
    y_binary = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-2.0 * z))).astype(np.int64)

    return Bunch(
        X=X,
        y=y,
        y_binary=y_binary,
        atoms=atoms,
        codes=codes,
        causal_atoms=causal_atoms,
        causal_weights=causal_weights,
    )
