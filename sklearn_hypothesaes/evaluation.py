"""Evaluation of generated hypotheses against known (reference) hypotheses.

On data with planted concepts, the question "did the method find them?" is
answered the way the HypotheSAEs paper does on its synthetic benchmarks: annotate
the same texts with every generated hypothesis and every reference concept, measure
how similar each generated column is to each reference column, and pair them one to
one with the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`)
maximising the total similarity. A reference concept counts as *recovered* when its
partner is similar enough (and, optionally, significant on held-out data).

Similarity is measured on the annotations, not on the wording, so a generated
``mentions "wait", "minutes" or "hour"`` matches a planted "long waits" concept when
both mark the same texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = ["annotation_similarity", "match_hypotheses"]


def _as_annotation_matrix(A, name: str) -> tuple[np.ndarray, list[str] | None]:
    columns = None
    if isinstance(A, pd.DataFrame):
        columns = [str(c) for c in A.columns]
        A = A.to_numpy()
    elif sp.issparse(A):
        A = A.toarray()
    try:
        A = np.asarray(A, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numeric n x H matrix of annotations (0/1, or -1/0/1 for "
            f"pairwise data); converting it to numbers failed: {exc}"
        ) from exc
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n texts x H hypotheses), got {A.ndim}-d.")
    if not np.isfinite(A).all():
        bad = np.unique(np.nonzero(~np.isfinite(A))[1])
        raise ValueError(
            f"{name} contains NaN or infinite values in column(s) {bad.tolist()}; annotate "
            "every text or drop the unannotated rows first."
        )
    return A, columns


def _check_pair(generated, reference) -> tuple[np.ndarray, np.ndarray, list | None, list | None]:
    G, g_cols = _as_annotation_matrix(generated, "generated")
    R, r_cols = _as_annotation_matrix(reference, "reference")
    if G.shape[0] != R.shape[0]:
        raise ValueError(
            f"generated has {G.shape[0]} rows but reference has {R.shape[0]}: both must "
            "annotate the same texts in the same order."
        )
    if G.shape[0] < 2:
        raise ValueError("At least 2 annotated texts are needed to compare annotations.")
    return G, R, g_cols, r_cols


def _correlation(G: np.ndarray, R: np.ndarray) -> np.ndarray:
    Gc = G - G.mean(axis=0)
    Rc = R - R.mean(axis=0)
    g_norm = np.sqrt((Gc**2).sum(axis=0))
    r_norm = np.sqrt((Rc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = (Rc.T @ Gc) / np.outer(r_norm, g_norm)
    # A constant column carries no information about any other column.
    sim[~np.isfinite(sim)] = 0.0
    return np.clip(sim, -1.0, 1.0)


def _jaccard(G: np.ndarray, R: np.ndarray) -> np.ndarray:
    Gb = (G != 0).astype(np.float64)
    Rb = (R != 0).astype(np.float64)
    inter = Rb.T @ Gb
    union = Rb.sum(axis=0)[:, None] + Gb.sum(axis=0)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(union > 0, inter / union, 0.0)
    return sim


@validate_params(
    {
        "generated": ["array-like", "sparse matrix"],
        "reference": ["array-like", "sparse matrix"],
        "metric": [StrOptions({"correlation", "jaccard"})],
    },
    prefer_skip_nested_validation=True,
)
def annotation_similarity(generated, reference, *, metric: str = "correlation") -> np.ndarray:
    """Similarity of every reference concept to every generated hypothesis.

    Parameters
    ----------
    generated : array-like or sparse matrix of shape (n_texts, n_generated)
        Annotations of the texts with the generated hypotheses (0/1; -1/0/1 for
        pairwise data).
    reference : array-like or sparse matrix of shape (n_texts, n_reference)
        Annotations of the same texts with the reference concepts.
    metric : {"correlation", "jaccard"}, default="correlation"
        ``"correlation"``: Pearson correlation of the columns (the phi coefficient
        for 0/1 columns); a constant column has similarity 0 to everything.
        ``"jaccard"``: size of the intersection over the union of the texts each
        column marks (non-zero entries).

    Returns
    -------
    similarity : ndarray of shape (n_reference, n_generated)
        ``similarity[i, j]`` compares reference concept ``i`` with generated
        hypothesis ``j``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    >>> gen = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    >>> annotation_similarity(gen, ref).round(2).tolist()
    [[-1.0, 1.0], [1.0, -1.0]]
    """
    G, R, _, _ = _check_pair(generated, reference)
    return _correlation(G, R) if metric == "correlation" else _jaccard(G, R)


@validate_params(
    {
        "generated": ["array-like", "sparse matrix"],
        "reference": ["array-like", "sparse matrix"],
        "generated_names": ["array-like", None],
        "reference_names": ["array-like", None],
        "metric": [StrOptions({"correlation", "jaccard"})],
        "threshold": [Interval(Real, -1, 1, closed="both")],
        "significant": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def match_hypotheses(
    generated,
    reference,
    *,
    generated_names: Sequence[str] | None = None,
    reference_names: Sequence[str] | None = None,
    metric: str = "correlation",
    threshold: float = 0.5,
    significant: Sequence[bool] | None = None,
) -> Bunch:
    """Match generated hypotheses one to one to reference concepts and score recovery.

    The matching maximises the summed similarity (:func:`annotation_similarity`)
    over one-to-one pairings (Hungarian algorithm). With more generated hypotheses
    than reference concepts some generated ones stay unmatched, and vice versa.

    Parameters
    ----------
    generated : array-like or sparse matrix of shape (n_texts, n_generated)
        Annotations of the texts with the generated hypotheses. Column names of a
        DataFrame are used as names.
    reference : array-like or sparse matrix of shape (n_texts, n_reference)
        Annotations of the same texts with the reference (e.g. planted) concepts.
    generated_names : sequence of str, default=None
        Names of the generated hypotheses (default: DataFrame columns or
        ``"generated<j>"``).
    reference_names : sequence of str, default=None
        Names of the reference concepts (default: DataFrame columns or
        ``"reference<i>"``).
    metric : {"correlation", "jaccard"}, default="correlation"
        Similarity of annotation columns, see :func:`annotation_similarity`.
    threshold : float, default=0.5
        A reference concept is recovered when its matched hypothesis has a
        similarity of at least ``threshold``.
    significant : array-like of bool of shape (n_generated,), default=None
        Whether each generated hypothesis was significant on held-out data (e.g.
        ``HypothesisReport.table_["significant"]``). When given, recovery also
        requires the matched hypothesis to be significant.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        With fields

        - ``table`` : DataFrame with one row per reference concept: ``reference``,
          ``generated`` (matched hypothesis name, missing when unmatched), ``generated_index``
          (column index or -1), ``similarity`` (0 when unmatched), ``significant``
          (when given) and ``recovered``.
        - ``similarity`` : ndarray of shape (n_reference, n_generated).
        - ``n_recovered`` : int, ``n_reference`` : int.
        - ``recovery_rate`` : float, ``n_recovered / n_reference``.
        - ``mean_similarity`` : float, mean matched similarity over reference
          concepts (unmatched count as 0).
        - ``threshold``, ``metric`` : the settings used.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]])
    >>> gen = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    >>> res = match_hypotheses(gen, ref, reference_names=["waits", "rude"])
    >>> res.table[["reference", "generated_index", "recovered"]].values.tolist()
    [['waits', 1, True], ['rude', 0, True]]
    >>> res.n_recovered
    2
    """
    G, R, g_cols, r_cols = _check_pair(generated, reference)
    n_gen, n_ref = G.shape[1], R.shape[1]
    g_names = _names(generated_names, g_cols, n_gen, "generated")
    r_names = _names(reference_names, r_cols, n_ref, "reference")
    sig = None
    if significant is not None:
        sig = np.asarray(significant)
        if sig.shape != (n_gen,):
            raise ValueError(
                f"significant must have one entry per generated hypothesis ({n_gen}), "
                f"got shape {sig.shape}."
            )
        try:
            sig = pd.array(sig, dtype="boolean").to_numpy(dtype=bool, na_value=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"significant must hold booleans: {exc}") from exc

    sim = _correlation(G, R) if metric == "correlation" else _jaccard(G, R)
    matched = np.full(n_ref, -1, dtype=np.int64)
    if n_gen and n_ref:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        matched[rows] = cols
    has = matched >= 0
    matched_sim = np.zeros(n_ref)
    matched_sim[has] = sim[np.arange(n_ref)[has], matched[has]]
    # a tolerance so that identical columns (similarity 1 up to rounding) meet threshold=1
    recovered = has & (matched_sim >= threshold - 1e-9)
    table = pd.DataFrame(
        {
            "reference": r_names,
            "generated": [g_names[j] if j >= 0 else None for j in matched],
            "generated_index": matched,
            "similarity": matched_sim,
        }
    )
    if sig is not None:
        matched_sig = np.zeros(n_ref, dtype=bool)
        matched_sig[has] = sig[matched[has]]
        table["significant"] = matched_sig
        recovered &= matched_sig
    table["recovered"] = recovered
    n_recovered = int(recovered.sum())
    return Bunch(
        table=table,
        similarity=sim,
        n_recovered=n_recovered,
        n_reference=n_ref,
        recovery_rate=n_recovered / n_ref if n_ref else float("nan"),
        mean_similarity=float(matched_sim.mean()) if n_ref else float("nan"),
        threshold=float(threshold),
        metric=metric,
    )


def _names(given, from_frame, n: int, prefix: str) -> list[str]:
    if given is not None:
        names = [str(x) for x in given]
        if len(names) != n:
            raise ValueError(f"{prefix}_names has {len(names)} entries for {n} {prefix} columns.")
        return names
    if from_frame is not None:
        return from_frame
    return [f"{prefix}{i}" for i in range(n)]
