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

    Sparse input (and dense input that is mostly zeros) is held as a float64
    sparse matrix in its own layout, the other layout being built only when a
    kernel needs it; other dense input is kept as given and converted to
    float64 block by block.
    """

    def __init__(self, X) -> None:
        self.n_samples, self.n_features = X.shape
        if not sp.issparse(X) and X.size and np.count_nonzero(X) <= _SPARSIFY_DENSITY * X.size:
            X = _dense_to_csr(X)
        self._csc = None
        self._csr = None
        if sp.issparse(X):
            self.sparse = True
            self.dense = None
            # Keep the input's layout (an SAE returns CSR); build the other on demand.
            if X.format == "csc":
                self._csc = _clean(sp.csc_matrix(X, dtype=np.float64))
            else:
                self._csr = _clean(sp.csr_matrix(X, dtype=np.float64))
        else:
            self.sparse = False
            self.dense = np.asarray(X)

    @property
    def csc(self) -> sp.csc_matrix:
        """The sparse activations in CSC layout (built on first use)."""
        if self._csc is None:
            self._csc = self._csr.tocsc()
            self._csc.sort_indices()
        return self._csc

    @property
    def csr(self) -> sp.csr_matrix:
        """The sparse activations in CSR layout (built on first use)."""
        if self._csr is None:
            self._csr = self._csc.tocsr()
        return self._csr

    def _indices_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Column index and value of every stored entry, in whichever layout exists."""
        if self._csr is not None:
            return self._csr.indices, self._csr.data
        csc = self._csc
        return np.repeat(np.arange(self.n_features), np.diff(csc.indptr)), csc.data

    # -- per-column statistics -------------------------------------------------
    def column_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Sum and sum of squares of every column, float64."""
        if self.sparse:
            cols, data = self._indices_data()
            s1 = np.bincount(cols, weights=data, minlength=self.n_features)
            s2 = np.bincount(cols, weights=data * data, minlength=self.n_features)
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
            cols, _ = self._indices_data()
            return np.bincount(cols, minlength=self.n_features).astype(np.int64)
        counts = np.zeros(self.n_features, dtype=np.int64)
        for start in range(0, self.n_samples, _BLOCK_ROWS):
            counts += np.count_nonzero(self.dense[start : start + _BLOCK_ROWS], axis=0)
        return counts

    def count_positive(self) -> np.ndarray:
        """Number of positive entries of every column."""
        if self.sparse:
            cols, data = self._indices_data()
            return np.bincount(cols[data > 0], minlength=self.n_features).astype(np.int64)
        counts = np.zeros(self.n_features, dtype=np.int64)
        for start in range(0, self.n_samples, _BLOCK_ROWS):
            counts += np.count_nonzero(self.dense[start : start + _BLOCK_ROWS] > 0, axis=0)
        return counts

    # -- products --------------------------------------------------------------
    def rmatvec(self, v: np.ndarray) -> np.ndarray:
        """``X.T @ v`` for ``v`` of shape (n_samples,) or (n_samples, t)."""
        v = np.asarray(v, dtype=np.float64)
        if self.sparse:
            X = self._csr if self._csr is not None else self._csc
            return np.asarray(X.T @ v)
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

    def gram_columns(self, idx: np.ndarray) -> np.ndarray:
        """``X.T @ X[:, idx]`` as a dense float64 (n_features, len(idx)) array.

        For sparse activations this costs about ``nnz(X[:, idx]) * nnz per row``.
        """
        idx = np.asarray(idx, dtype=np.intp)
        if self.sparse:
            return np.asarray((self.csc[:, idx].T @ self.csr).toarray()).T
        out = np.zeros((self.n_features, idx.size))
        for block in self._dense_blocks():
            out += block.T @ block[:, idx]
        return out

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


def _dense_to_csr(X) -> sp.csr_matrix:
    """Mostly-zero dense array to CSR, block by block (no full float64 copy)."""
    blocks = [
        sp.csr_matrix(np.asarray(X[start : start + _BLOCK_ROWS], dtype=np.float64))
        for start in range(0, X.shape[0], _BLOCK_ROWS)
    ]
    return sp.vstack(blocks, format="csr")


def _clean(X):
    """Drop explicitly stored zeros (copying only when there are any)."""
    if X.nnz and not np.all(X.data != 0):
        X = X.copy()
        X.eliminate_zeros()
    return X


def columns_matvec(cols, w: np.ndarray) -> np.ndarray:
    """``cols @ w`` as a dense float64 vector."""
    return np.asarray(cols @ w).ravel()
