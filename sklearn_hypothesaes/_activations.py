"""Read-only float64 views of an activation matrix for the selection kernels.

Activations are either ``scipy.sparse`` (what :class:`TopKSAETransformer`
returns) or dense arrays. Every statistic the selectors need (column sums,
column sums of squares, ``X.T @ v``, the Gram matrix, column subsets) is
computed here without densifying sparse input and, for dense input, in row
blocks so that a float32 array is never copied whole to float64.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_BLOCK_ROWS = 8192
# Dense input at most this dense is converted to sparse once: every kernel is
# then proportional to the number of non-zeros instead of n_samples * n_neurons.
_SPARSIFY_DENSITY = 0.25


class ActivationMatrix:
    """Float64 access to activations of shape (n_samples, n_neurons).

    Sparse input (and dense input that is mostly zeros) is held once as a
    float64 CSC matrix; other dense input is kept as given and converted to
    float64 block by block.
    """

    def __init__(self, X) -> None:
        self.n_samples, self.n_features = X.shape
        if not sp.issparse(X) and X.size and np.count_nonzero(X) <= _SPARSIFY_DENSITY * X.size:
            X = _dense_to_csc(X)
        if sp.issparse(X):
            csc = sp.csc_matrix(X, dtype=np.float64, copy=True)
            csc.eliminate_zeros()
            csc.sort_indices()
            self.sparse = True
            self.csc = csc
            self.dense = None
        else:
            self.sparse = False
            self.csc = None
            self.dense = np.asarray(X)

    # -- per-column statistics -------------------------------------------------
    def column_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Sum and sum of squares of every column, float64."""
        if self.sparse:
            s1 = np.asarray(self.csc.sum(axis=0)).ravel()
            s2 = np.asarray(self.csc.multiply(self.csc).sum(axis=0)).ravel()
            return s1, s2
        s1 = np.zeros(self.n_features)
        s2 = np.zeros(self.n_features)
        for block in self._dense_blocks():
            s1 += block.sum(axis=0)
            s2 += np.einsum("ij,ij->j", block, block)
        return s1, s2

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Column means and population standard deviations (as StandardScaler)."""
        s1, s2 = self.column_sums()
        mean = s1 / self.n_samples
        var = np.maximum(s2 / self.n_samples - mean**2, 0.0)
        std = np.sqrt(var)
        # Variance below float64 resolution of the mean is a constant column.
        std[var <= 1e-12 * np.maximum(mean**2, np.finfo(np.float64).tiny)] = 0.0
        return mean, std

    def count_nonzero(self) -> np.ndarray:
        """Number of non-zero entries of every column."""
        if self.sparse:
            return np.diff(self.csc.indptr).astype(np.int64)
        counts = np.zeros(self.n_features, dtype=np.int64)
        for start in range(0, self.n_samples, _BLOCK_ROWS):
            counts += np.count_nonzero(self.dense[start : start + _BLOCK_ROWS], axis=0)
        return counts

    def count_positive(self) -> np.ndarray:
        """Number of positive entries of every column."""
        if self.sparse:
            positive = np.r_[0, np.cumsum(self.csc.data > 0)]
            return (positive[self.csc.indptr[1:]] - positive[self.csc.indptr[:-1]]).astype(np.int64)
        counts = np.zeros(self.n_features, dtype=np.int64)
        for start in range(0, self.n_samples, _BLOCK_ROWS):
            counts += np.count_nonzero(self.dense[start : start + _BLOCK_ROWS] > 0, axis=0)
        return counts

    # -- products --------------------------------------------------------------
    def rmatvec(self, v: np.ndarray) -> np.ndarray:
        """``X.T @ v`` for ``v`` of shape (n_samples,) or (n_samples, t)."""
        v = np.asarray(v, dtype=np.float64)
        if self.sparse:
            return np.asarray(self.csc.T @ v)
        out = np.zeros((self.n_features,) + v.shape[1:])
        for start, block in self._dense_blocks(with_start=True):
            out += block.T @ v[start : start + block.shape[0]]
        return out

    def gram(self) -> np.ndarray:
        """``X.T @ X`` as a dense float64 (n_features, n_features) array."""
        if self.sparse:
            G = (self.csc.T @ self.csc).toarray()
        else:
            G = np.zeros((self.n_features, self.n_features))
            for block in self._dense_blocks():
                G += block.T @ block
        return G

    def columns(self, idx: np.ndarray):
        """Columns ``idx`` as float64: CSC if the activations are sparse, else dense."""
        idx = np.asarray(idx, dtype=np.intp)
        if self.sparse:
            return self.csc[:, idx]
        return np.asarray(self.dense[:, idx], dtype=np.float64)

    def column_values(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and values of the non-zero entries of column ``j``."""
        if self.sparse:
            lo, hi = self.csc.indptr[j], self.csc.indptr[j + 1]
            return self.csc.indices[lo:hi], self.csc.data[lo:hi]
        col = np.asarray(self.dense[:, j], dtype=np.float64)
        rows = np.flatnonzero(col)
        return rows, col[rows]

    def _dense_blocks(self, with_start: bool = False):
        for start in range(0, self.n_samples, _BLOCK_ROWS):
            block = np.asarray(self.dense[start : start + _BLOCK_ROWS], dtype=np.float64)
            yield (start, block) if with_start else block


def _dense_to_csc(X) -> sp.csc_matrix:
    """Mostly-zero dense array to CSC, block by block (no full float64 copy)."""
    blocks = [
        sp.csr_matrix(np.asarray(X[start : start + _BLOCK_ROWS], dtype=np.float64))
        for start in range(0, X.shape[0], _BLOCK_ROWS)
    ]
    return sp.vstack(blocks, format="csc")


def columns_product(cols, weights: np.ndarray | None = None) -> np.ndarray:
    """``cols.T @ diag(weights) @ cols`` as a dense array (cols sparse or dense)."""
    if sp.issparse(cols):
        right = cols if weights is None else sp.diags(weights) @ cols
        return np.asarray((cols.T @ right).toarray())
    right = cols if weights is None else cols * weights[:, None]
    return cols.T @ right


def columns_matvec(cols, w: np.ndarray) -> np.ndarray:
    """``cols @ w`` as a dense float64 vector."""
    return np.asarray(cols @ w).ravel()
