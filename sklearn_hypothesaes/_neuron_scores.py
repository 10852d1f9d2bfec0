"""Per-neuron scores, vectorised over all neurons of (sparse) activations."""

from __future__ import annotations

import numpy as np

from sklearn_hypothesaes._activations import ActivationMatrix


def correlation_scores(design: ActivationMatrix, Y: np.ndarray, mean, std) -> np.ndarray:
    """Pearson correlation of every neuron with every column of ``Y``.

    Returns shape (n_targets, n_neurons); constant (including dead) neurons get 0.
    """
    n = design.n_samples
    Yc = Y - Y.mean(axis=0)
    y_std = np.sqrt(np.mean(Yc**2, axis=0))
    # Centring X is unnecessary: Yc sums to zero, so X' Yc = (X - mean)' Yc.
    cov = design.rmatvec(Yc).T / n  # (n_targets, n_neurons)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (std[None, :] * y_std[:, None])
    corr[:, std == 0] = 0.0
    return np.clip(np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)


def separation_scores(
    design: ActivationMatrix, Y: np.ndarray, n_top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separation score of every neuron for every column of ``Y``.

    ``mean(y over the n_top largest positive activations) - mean(y over rows
    where the activation is exactly 0)``. Neurons with fewer than ``n_top``
    positive activations use those they have. Ties at the cut are broken by
    row order.

    Returns ``(scores, n_positive, eligible)``: scores of shape (n_targets,
    n_neurons), the number of positive activations per neuron, and whether a
    neuron has at least one positive and one zero activation (else its score is 0).
    """
    n, m = design.n_samples, design.n_features
    n_targets = Y.shape[1]
    totals = Y.sum(axis=0)
    scores = np.zeros((n_targets, m))
    n_positive = design.count_positive()
    n_nonzero = design.count_nonzero()
    n_zero = n - n_nonzero
    eligible = (n_positive > 0) & (n_zero > 0)
    # Target sums over each neuron's non-zero rows, for all neurons at once.
    if design.sparse:
        csc = design.csc
        cum = np.vstack([np.zeros((1, n_targets)), np.cumsum(Y[csc.indices], axis=0)])
        nonzero_sums = cum[csc.indptr[1:]] - cum[csc.indptr[:-1]]  # (m, n_targets)
    else:
        nonzero_sums = np.zeros((m, n_targets))
        for j in np.flatnonzero(eligible):
            rows, _ = design.column_values(j)
            nonzero_sums[j] = Y[rows].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero_means = (totals[None, :] - nonzero_sums) / n_zero[:, None]
    y1 = Y[:, 0] if n_targets == 1 else None
    for j in np.flatnonzero(eligible).tolist():
        rows, vals = design.column_values(j)
        if n_positive[j] < rows.size:
            pos = vals > 0
            rows, vals = rows[pos], vals[pos]
        n_pos = rows.size
        if n_pos > n_top:
            # The n_top largest values; among equal values the earlier rows.
            cut = np.partition(vals, n_pos - n_top)[n_pos - n_top]
            cand = vals >= cut
            rows, vals = rows[cand], vals[cand]
            if rows.size > n_top:
                rows = rows[np.lexsort((rows, -vals))[:n_top]]
        if y1 is not None:
            scores[0, j] = y1[rows].mean()
        else:
            scores[:, j] = Y[rows].mean(axis=0)
    scores[:, eligible] -= zero_means[eligible].T
    return scores, n_positive, eligible
