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
    n_positive = np.zeros(m, dtype=np.int64)
    n_zero = np.zeros(m, dtype=np.int64)
    for j in range(m):
        rows, vals = design.column_values(j)
        n_zero[j] = n - rows.size
        pos = vals > 0
        n_pos = int(np.count_nonzero(pos))
        n_positive[j] = n_pos
        if n_pos == 0 or n_zero[j] == 0:
            continue
        prow, pval = rows[pos], vals[pos]
        if n_pos > n_top:
            # The n_top largest values; among equal values the earlier rows.
            cut = np.partition(pval, n_pos - n_top)[n_pos - n_top]
            cand = pval >= cut
            prow, pval = prow[cand], pval[cand]
            top = prow[np.lexsort((prow, -pval))[:n_top]]
        else:
            top = prow
        top_mean = Y[top].mean(axis=0)
        zero_mean = (totals - Y[rows].sum(axis=0)) / n_zero[j]
        scores[:, j] = top_mean - zero_mean
    eligible = (n_positive > 0) & (n_zero > 0)
    return scores, n_positive, eligible
