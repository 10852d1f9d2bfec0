"""Naming what SAE neurons detect, with fidelity scoring.

Every interpreter shares the same skeleton (:class:`BaseInterpreter`):

1. For each neuron, split the texts at random into an *explanation* part
   and a held-apart *scoring* part.
2. Sample examples from the explanation part: the top-activating texts
   (``sampling="top"``) or random texts from a percentile band of the
   positive activations (``sampling="percentile"``), against random texts
   where the neuron is zero (or, with ``low_percentile``, random texts from a
   low band of its positive activations).
3. Propose candidate concepts from those examples (the subclass's job:
   contrastive key terms for :class:`OfflineInterpreter`, an LLM for the LLM
   interpreter).
4. Score each candidate on the scoring part: annotate its top-activating and
   zero-activating texts with the concept and compare (precision, recall, F1,
   correlation with the activations); keep the best by ``scoring_metric``.

Neurons that never fire, or fire too rarely to sample from, get a row with a
``status`` that says so instead of being skipped.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from tqdm.auto import tqdm

from sklearn_hypothesaes._usage import Usage
from sklearn_hypothesaes.annotate import AnnotationError, LLMConceptAnnotator
from sklearn_hypothesaes.cache import SQLiteCache, make_key, open_cache
from sklearn_hypothesaes.exceptions import AnnotationWarning
from sklearn_hypothesaes.keywords import (
    check_texts,
    format_keyword_concept,
    match_concepts,
    parse_concept_terms,
)
from sklearn_hypothesaes.llm import OpenAIClient
from sklearn_hypothesaes.prompts import load_prompt

__all__ = [
    "BaseInterpreter",
    "NeuronInterpreter",
    "OfflineInterpreter",
    "explore_neurons",
    "fidelity_metrics",
    "pair_texts_to_individual",
    "parse_interpretation",
    "sample_examples",
    "split_explain_score",
]

logger = logging.getLogger(__name__)

_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
SCORING_METRICS = ("f1", "precision", "recall", "correlation")
RESULT_COLUMNS = [
    "neuron",
    "hypothesis",
    "precision",
    "recall",
    "f1",
    "correlation",
    "candidates",
    "positive_examples",
    "negative_examples",
    "n_positive",
    "prevalence",
    "status",
]


# ---------------------------------------------------------------------------
# Shared kernels: example sampling and fidelity.
# ---------------------------------------------------------------------------


def split_explain_score(
    n_samples: int, scoring_fraction: float, rng: np.random.RandomState
) -> np.ndarray:
    """Boolean mask of the texts held apart for scoring (the rest explain).

    Parameters
    ----------
    n_samples : int
        Number of texts.
    scoring_fraction : float
        Fraction of texts held apart, in (0, 1).
    rng : RandomState
        Random generator.

    Returns
    -------
    mask : ndarray of shape (n_samples,), bool
        True for texts held apart for scoring.
    """
    return rng.random_sample(n_samples) < scoring_fraction


def _band(values: np.ndarray, idx: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Indices in ``idx`` whose value lies in a percentile band of ``values[idx]``."""
    if idx.size == 0:
        return idx
    v = values[idx]
    lo, hi = np.percentile(v, percentiles)
    return idx[(v >= lo) & (v <= hi)]


def sample_examples(
    activations: np.ndarray,
    n_per_class: int,
    *,
    sampling: str = "top",
    high_percentile: tuple[float, float] = (90, 100),
    low_percentile: tuple[float, float] | None = None,
    candidates: np.ndarray | None = None,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative example indices for one neuron.

    Parameters
    ----------
    activations : ndarray of shape (n_samples,)
        The neuron's non-negative activations.
    n_per_class : int
        Examples wanted on each side (fewer are returned when fewer exist).
    sampling : {"top", "percentile"}, default="top"
        ``"top"``: the highest activations (ties broken by index);
        ``"percentile"``: a random draw among the positive activations that
        lie in ``high_percentile`` of the positive activations.
    high_percentile : tuple of float, default=(90, 100)
        Band used by ``sampling="percentile"``.
    low_percentile : tuple of float or None, default=None
        ``None``: negatives are random texts where the activation is zero.
        Otherwise a random draw from this band of the positive activations.
    candidates : ndarray of int or None, default=None
        Restrict sampling to these indices (e.g. the explanation part).
    rng : RandomState
        Random generator.

    Returns
    -------
    positive : ndarray of int
        Indices of positive examples, highest activation first.
    negative : ndarray of int
        Indices of negative examples, in increasing index order.
    """
    idx = np.arange(activations.size) if candidates is None else np.asarray(candidates)
    values = activations[idx]
    pos_pool = idx[values > 0]
    if sampling == "top":
        order = np.lexsort((pos_pool, -activations[pos_pool]))
        positive = pos_pool[order[:n_per_class]]
    else:
        band = _band(activations, pos_pool, high_percentile)
        take = min(n_per_class, band.size)
        positive = rng.choice(band, size=take, replace=False) if take else band
        positive = positive[np.lexsort((positive, -activations[positive]))]
    if low_percentile is None:
        neg_pool = idx[values == 0]
    else:
        neg_pool = np.setdiff1d(_band(activations, pos_pool, low_percentile), positive)
    take = min(n_per_class, neg_pool.size)
    negative = np.sort(rng.choice(neg_pool, size=take, replace=False)) if take else neg_pool[:0]
    return positive, negative


def fidelity_metrics(
    annotations: np.ndarray, labels: np.ndarray, activations: np.ndarray
) -> dict[str, float]:
    """How well a concept's annotations match a neuron.

    Parameters
    ----------
    annotations : ndarray of shape (n,)
        0/1 annotations of the scoring texts with the concept; NaN marks an
        item without an answer, left out of every metric.
    labels : ndarray of shape (n,)
        1 for the neuron's top-activating scoring texts, 0 for its negatives.
    activations : ndarray of shape (n,)
        The neuron's activations on the same texts.

    Returns
    -------
    metrics : dict
        ``precision`` (TP / annotated positive; 0 when nothing is annotated),
        ``recall`` (TP / positives), ``f1``, and ``correlation`` (Pearson
        correlation of annotations and activations; 0 when either is constant).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hypothesaes.interpret import fidelity_metrics
    >>> m = fidelity_metrics(np.array([1, 1, 0, 1]), np.array([1, 1, 0, 0]),
    ...                      np.array([2.0, 1.0, 0.0, 0.0]))
    >>> round(m["precision"], 3), round(m["recall"], 3), round(m["f1"], 3)
    (0.667, 1.0, 0.8)
    """
    a = np.asarray(annotations, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    act = np.asarray(activations, dtype=np.float64)
    answered = ~np.isnan(a)
    if not answered.all():  # items without an answer are left out
        a, y, act = a[answered], y[answered], act[answered]
    tp = float(np.sum(a * y))
    n_annotated = float(a.sum())
    n_pos = float(y.sum())
    precision = tp / n_annotated if n_annotated else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if a.size > 1 and a.std() > 0 and act.std() > 0:
        correlation = float(np.corrcoef(a, act)[0, 1])
    else:
        correlation = 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correlation": correlation}


def _truncate(text: str, max_words: int | None) -> str:
    if max_words is None:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + " ..."


def _check_activations(
    activations, n_texts: int, columns: list[int] | None = None, name: str = "activations"
):
    """Activations (only ``columns`` if given) as a float64 array or CSC matrix.

    Checks the row count against the texts, and finiteness and signs of the
    columns used; unused columns are neither copied nor checked.
    """
    if isinstance(activations, pd.DataFrame):
        activations = activations.to_numpy()
    if not sp.issparse(activations):
        activations = np.asarray(activations)
        if activations.ndim == 1:
            activations = activations[:, None]
        if activations.ndim != 2:
            raise ValueError(
                f"{name} must be 2-dimensional (n_texts, n_neurons), got {activations.shape}."
            )
        if not np.issubdtype(activations.dtype, np.number) or np.iscomplexobj(activations):
            raise TypeError(f"{name} must be numeric, got dtype {activations.dtype}.")
    if activations.shape[0] != n_texts:
        raise ValueError(
            f"{name} has {activations.shape[0]} rows but there are {n_texts} texts; pass one "
            "row of activations per text, in the same order."
        )
    if columns is not None:
        activations = activations[:, columns]
    if sp.issparse(activations):
        A = sp.csc_matrix(activations, dtype=np.float64)
        data = A.data
    else:
        A = np.asarray(activations, dtype=np.float64)
        data = A
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if data.size and data.min() < 0:
        raise ValueError(
            f"{name} has negative values. Interpreters read the activations of individual texts "
            "(non-negative SAE activations). For a pairwise task, do not pass the differences "
            "Z_A - Z_B: pass the activations of the individual texts, e.g. "
            "pair_texts_to_individual(texts_a, texts_b, sae.transform(E_a), sae.transform(E_b))."
        )
    return A


def _n_columns(activations) -> int:
    shape = getattr(activations, "shape", None)
    if shape is None:
        shape = np.shape(activations)
    return 1 if len(shape) == 1 else int(shape[1])


def _column(A, j: int) -> np.ndarray:
    if sp.issparse(A):
        return A[:, [j]].toarray().ravel()
    return np.ascontiguousarray(A[:, j])


def pair_texts_to_individual(texts_a, texts_b, activations_a, activations_b):
    """Individual texts and their activations from a pairwise dataset.

    A pairwise task (which of two texts wins) selects neurons on activation
    differences, but a neuron is interpreted on the texts themselves. This
    stacks both sides and keeps each distinct text once.

    Parameters
    ----------
    texts_a, texts_b : list, ndarray or Series of str of length n_pairs
        The two texts of each pair.
    activations_a, activations_b : array-like or sparse matrix of shape (n_pairs, n_neurons)
        Their (non-negative) activations.

    Returns
    -------
    texts : list of str
        Distinct texts, in order of first appearance (side A first).
    activations : ndarray or csr_matrix of shape (len(texts), n_neurons)
        Their activations.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hypothesaes.interpret import pair_texts_to_individual
    >>> texts, acts = pair_texts_to_individual(["a", "b"], ["c", "a"],
    ...                                        np.eye(2), np.ones((2, 2)))
    >>> texts, acts.shape
    (['a', 'b', 'c'], (3, 2))
    """
    ta = check_texts(texts_a, name="texts_a")
    tb = check_texts(texts_b, name="texts_b")
    if len(ta) != len(tb):
        raise ValueError(f"texts_a has {len(ta)} texts but texts_b has {len(tb)}.")
    both = ta + tb
    if sp.issparse(activations_a) or sp.issparse(activations_b):
        stacked = sp.vstack([sp.csr_matrix(activations_a), sp.csr_matrix(activations_b)]).tocsr()
    else:
        stacked = np.vstack([np.asarray(activations_a), np.asarray(activations_b)])
    if stacked.shape[0] != len(both):
        raise ValueError("Each activation matrix needs one row per pair.")
    first: dict[str, int] = {}
    for i, t in enumerate(both):
        first.setdefault(t, i)
    keep = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    return [both[i] for i in keep], stacked[keep]


# ---------------------------------------------------------------------------
# The shared interpreter skeleton.
# ---------------------------------------------------------------------------


class BaseInterpreter(BaseEstimator):
    """Shared sampling, scoring and output of neuron interpreters.

    Subclasses implement :meth:`_propose` (candidate concepts from examples)
    and :meth:`_annotate` (0/1 annotations of texts with concepts); they may
    override :meth:`_propose_all` / :meth:`_annotate_all` to batch work across
    neurons. Parameters are documented on the subclasses.
    """

    _parameter_constraints: dict = {
        "sampling": [StrOptions({"top", "percentile"})],
        "high_percentile": [tuple, list],
        "low_percentile": [tuple, list, None],
        "n_examples": [Interval(Integral, 2, None, closed="left")],
        "max_words_per_example": [Interval(Integral, 1, None, closed="left"), None],
        "scoring_metric": [StrOptions(set(SCORING_METRICS))],
        "n_scoring_examples": [Interval(Integral, 2, None, closed="left")],
        "min_positives": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- hooks ------------------------------------------------------------
    def _propose(
        self, pos_texts: list[str], neg_texts: list[str], rng: np.random.RandomState
    ) -> list[str]:
        raise NotImplementedError

    def _annotate(self, concepts: list[str], texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _propose_all(self, jobs: list[dict], texts: list[str]) -> list[list[str]]:
        return [self._propose(j["pos_texts"], j["neg_texts"], j["rng"]) for j in jobs]

    def _annotate_all(self, jobs: list[dict]) -> list[np.ndarray]:
        return [self._annotate(j["candidates"], j["score_texts"]) for j in jobs]

    # -- validation -------------------------------------------------------
    def _check_percentiles(self) -> None:
        for name in ("high_percentile", "low_percentile"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 2 or not 0 <= value[0] < value[1] <= 100:
                raise ValueError(
                    f"{name} must be a pair (low, high) with 0 <= low < high <= 100, got {value!r}."
                )

    def _neuron_indices(self, neurons, n_neurons: int) -> list[int]:
        if neurons is None:
            return list(range(n_neurons))
        if isinstance(neurons, Integral):
            neurons = [neurons]
        out = []
        for j in neurons:
            if not isinstance(j, Integral) or isinstance(j, bool):
                raise TypeError(f"neurons must be integer column indices, got {j!r}.")
            if not 0 <= j < n_neurons:
                raise ValueError(
                    f"Neuron {j} is out of range: activations have {n_neurons} columns."
                )
            out.append(int(j))
        return out

    # -- main entry point ---------------------------------------------------
    def interpret(self, texts, activations, neurons=None) -> pd.DataFrame:
        """Name the concept of each neuron and score its fidelity.

        Parameters
        ----------
        texts : list, ndarray or Series of str of length n_samples
            The texts the activations were computed on.
        activations : array-like, DataFrame or sparse matrix of shape (n_samples, n_neurons)
            Non-negative activations (e.g. ``TopKSAETransformer.transform``).
        neurons : int or list of int, default=None
            Column indices to interpret; ``None`` interprets every column.

        Returns
        -------
        result : DataFrame
            One row per requested neuron with columns ``neuron``,
            ``hypothesis`` (the chosen concept, ``None`` if the neuron could
            not be interpreted), ``precision``, ``recall``, ``f1``,
            ``correlation`` (fidelity of the chosen concept on held-apart
            texts), ``candidates`` (list of dicts with ``concept`` and its
            fidelity metrics), ``positive_examples`` and
            ``negative_examples`` (the texts the concept was derived from),
            ``n_positive`` (texts with a positive activation), ``prevalence``
            (their fraction) and ``status`` (``"ok"`` or the reason there is
            no hypothesis, e.g. ``"dead neuron"``).
        """
        self._validate_params()
        self._check_percentiles()
        texts = check_texts(texts)
        cols = self._neuron_indices(neurons, _n_columns(activations))
        A = _check_activations(activations, len(texts), cols)
        base_seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        n = len(texts)
        n_per_class = self.n_examples // 2
        n_score = self.n_scoring_examples // 2
        scoring_fraction = self.n_scoring_examples / (self.n_examples + self.n_scoring_examples)

        rows: list[dict[str, Any]] = []
        jobs: list[dict[str, Any]] = []
        for k, j in enumerate(cols):
            a = _column(A, k)
            n_pos = int(np.count_nonzero(a))
            row: dict[str, Any] = {
                "neuron": j,
                "hypothesis": None,
                "precision": np.nan,
                "recall": np.nan,
                "f1": np.nan,
                "correlation": np.nan,
                "candidates": [],
                "positive_examples": [],
                "negative_examples": [],
                "n_positive": n_pos,
                "prevalence": n_pos / n if n else 0.0,
                "status": "ok",
            }
            rows.append(row)
            if n_pos == 0:
                row["status"] = "dead neuron"
                continue
            if n_pos < self.min_positives:
                row["status"] = (
                    f"too few positive examples ({n_pos} < min_positives={self.min_positives})"
                )
                continue
            # Seeds depend on the neuron, not on which other neurons are asked for.
            rng = np.random.RandomState(np.random.SeedSequence([base_seed, j]).generate_state(1))
            held = split_explain_score(n, scoring_fraction, rng)
            explain_idx = np.flatnonzero(~held)
            score_idx = np.flatnonzero(held)
            pos, neg = sample_examples(
                a,
                n_per_class,
                sampling=self.sampling,
                high_percentile=tuple(self.high_percentile),
                low_percentile=None if self.low_percentile is None else tuple(self.low_percentile),
                candidates=explain_idx,
                rng=rng,
            )
            s_pos, s_neg = sample_examples(
                a,
                n_score,
                sampling="top",
                low_percentile=None if self.low_percentile is None else tuple(self.low_percentile),
                candidates=score_idx,
                rng=rng,
            )
            problem = None
            if pos.size == 0 or s_pos.size == 0:
                problem = "too few positive examples to hold some apart for scoring"
            elif neg.size == 0 or s_neg.size == 0:
                problem = (
                    "no negative examples (the neuron fires on every text)"
                    if self.low_percentile is None
                    else "no texts in low_percentile band"
                )
            if problem:
                row["status"] = problem
                continue
            pos_texts = [_truncate(texts[i], self.max_words_per_example) for i in pos]
            neg_texts = [_truncate(texts[i], self.max_words_per_example) for i in neg]
            row["positive_examples"] = pos_texts
            row["negative_examples"] = neg_texts
            score_rows = np.concatenate([s_pos, s_neg])
            jobs.append(
                {
                    "row": row,
                    "rng": rng,
                    "pos_texts": pos_texts,
                    "neg_texts": neg_texts,
                    "score_texts": [
                        _truncate(texts[i], self.max_words_per_example) for i in score_rows
                    ],
                    "score_labels": np.r_[np.ones(s_pos.size), np.zeros(s_neg.size)],
                    "score_activations": a[score_rows],
                    # For subclasses that draw further example sets (one per candidate).
                    "activations": a,
                    "explain_idx": explain_idx,
                    "seed": (base_seed, j),
                }
            )

        proposals = self._propose_all(jobs, texts)
        for job, candidates in zip(jobs, proposals):
            job["candidates"] = list(dict.fromkeys(candidates))  # distinct, in order
            if not job["candidates"]:
                job["row"]["status"] = job.get("failure") or "no candidate concept found"
        scored = [j for j in jobs if j["candidates"]]
        annotations = self._annotate_all(scored)
        for job, ann in zip(scored, annotations):
            cands = []
            for c, concept in enumerate(job["candidates"]):
                metrics = fidelity_metrics(ann[:, c], job["score_labels"], job["score_activations"])
                cands.append({"concept": concept, **metrics})
            # Best by the metric; ties keep the earlier (simpler) candidate.
            best = max(range(len(cands)), key=lambda k: (cands[k][self.scoring_metric], -k))
            row = job["row"]
            row["candidates"] = cands
            row["hypothesis"] = cands[best]["concept"]
            shown = job.get("examples", {}).get(row["hypothesis"])
            if shown is not None:  # the examples the chosen concept was derived from
                row["positive_examples"], row["negative_examples"] = shown
            for m in ("precision", "recall", "f1", "correlation"):
                row[m] = cands[best][m]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ---------------------------------------------------------------------------
# The offline interpreter: contrastive key terms.
# ---------------------------------------------------------------------------


def _log_odds_z(
    pos_counts: np.ndarray, neg_counts: np.ndarray, prior: np.ndarray, prior_strength: float
) -> np.ndarray:
    """Log-odds ratio with an informative Dirichlet prior, as a z-score.

    Monroe, Colaresi & Quinn (2008), "Fightin' Words", eq. 16-22: ``prior``
    is the background frequency of each term, scaled to ``prior_strength``
    pseudo-counts in all.
    """
    alpha = prior_strength * prior / prior.sum()
    a0 = alpha.sum()
    n_p = pos_counts.sum()
    n_n = neg_counts.sum()
    lp = np.log(pos_counts + alpha) - np.log(n_p + a0 - pos_counts - alpha)
    ln = np.log(neg_counts + alpha) - np.log(n_n + a0 - neg_counts - alpha)
    var = 1.0 / (pos_counts + alpha) + 1.0 / (neg_counts + alpha)
    return (lp - ln) / np.sqrt(var)


def _greedy_terms(
    P: np.ndarray, labels: np.ndarray, max_terms: int, min_gain: float
) -> list[list[int]]:
    """Forward selection of term columns maximising F1 of their union.

    Returns the selected column lists after each step that raised F1 by at
    least ``min_gain``.
    """
    n_pos = labels.sum()
    current = np.zeros(P.shape[0], dtype=bool)
    chosen: list[int] = []
    steps: list[list[int]] = []
    best_f1 = 0.0
    Pb = P.astype(bool)
    y = labels.astype(bool)
    for _ in range(max_terms):
        union = Pb | current[:, None]
        tp = (union & y[:, None]).sum(axis=0)
        annotated = union.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(annotated + n_pos > 0, 2 * tp / (annotated + n_pos), 0.0)
        f1[chosen] = -1.0
        k = int(np.argmax(f1))  # first maximum: the higher-ranked term wins ties
        if f1[k] < best_f1 + max(min_gain, 1e-12):
            break
        best_f1 = float(f1[k])
        chosen.append(k)
        current = union[:, k]
        steps.append(list(chosen))
    return steps


class OfflineInterpreter(BaseInterpreter):
    """Name neurons by contrastive key terms, without an LLM.

    For each neuron, the texts that fire it are contrasted with texts that do
    not: every unigram and bigram (stop words removed) gets a log-odds
    z-score with an informative Dirichlet prior (background frequencies from
    all sampled texts). The highest-scoring terms are combined greedily into
    concepts ``mentions "a", "b" or "c"`` (each step adds the term that most
    improves F1 on the examples); each such concept is a candidate, scored by
    :class:`~sklearn_hypothesaes.keywords.KeywordAnnotator` on held-apart
    texts, and the best by ``scoring_metric`` is kept. The output concepts are
    exactly what the offline annotator checks. Deterministic for a fixed
    ``random_state``.

    Parameters
    ----------
    n_examples : int, default=200
        Examples sampled to derive terms (half positive, half negative).
    sampling : {"top", "percentile"}, default="top"
        Positive examples: the top-activating texts, or a random draw from the
        ``high_percentile`` band of the positive activations.
    high_percentile : tuple of float, default=(90, 100)
        Percentile band (of positive activations) for ``sampling="percentile"``.
    low_percentile : tuple of float or None, default=None
        ``None``: negatives are random texts where the neuron is zero.
        Otherwise negatives are drawn from this band of positive activations
        (for example ``(0, 50)`` to contrast strong with weak firing).
    max_words_per_example : int or None, default=256
        Texts are truncated to this many words (examples and scoring).
    scoring_metric : {"f1", "precision", "recall", "correlation"}, default="f1"
        Fidelity metric that picks the best candidate.
    n_scoring_examples : int, default=100
        Held-apart texts per neuron for fidelity (half top-activating, half
        negatives as in ``low_percentile``).
    max_terms : int, default=5
        Most quoted terms in a concept; also the most candidates per neuron.
    n_candidate_terms : int, default=100
        Top-ranked terms the greedy combination chooses from.
    min_f1_gain : float, default=0.01
        A term joins a concept only if it raises F1 on the examples by at
        least this much (keeps concepts short and free of chance words).
    ngram_range : tuple of int, default=(1, 2)
        Word n-grams considered as terms.
    min_count : int, default=2
        A term must occur in at least this many positive examples.
    prior_strength : float, default=100.0
        Total pseudo-counts of the Dirichlet prior (larger shrinks rare terms
        harder).
    n_background : int, default=2000
        Random texts added to the sampled examples to estimate the prior.
    min_positives : int, default=10
        Neurons firing on fewer texts are reported with a status instead.
    random_state : int, RandomState instance or None, default=None
        Seeds the explanation/scoring split and the example draws (one seed
        per neuron derived from it).
    verbose : bool, default=False
        Show a progress bar over neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hypothesaes.interpret import OfflineInterpreter
    >>> texts = [f"the {w} was {v}" for w in ("soup", "tea", "bread", "cake")
    ...          for v in ("cold", "fine", "good", "okay", "nice")] * 4
    >>> acts = np.array([[1.0 if "cold" in t else 0.0] for t in texts])
    >>> res = OfflineInterpreter(random_state=0, min_positives=2).interpret(texts, acts)
    >>> res.loc[0, "hypothesis"], float(res.loc[0, "f1"])
    ('mentions "cold"', 1.0)
    """

    _parameter_constraints: dict = {
        **BaseInterpreter._parameter_constraints,
        "max_terms": [Interval(Integral, 1, None, closed="left")],
        "n_candidate_terms": [Interval(Integral, 1, None, closed="left")],
        "min_f1_gain": [Interval(Real, 0, 1, closed="both")],
        "ngram_range": [tuple, list],
        "min_count": [Interval(Integral, 1, None, closed="left")],
        "prior_strength": [Interval(Real, 0, None, closed="neither")],
        "n_background": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_examples: int = 200,
        *,
        sampling: str = "top",
        high_percentile: tuple[float, float] = (90, 100),
        low_percentile: tuple[float, float] | None = None,
        max_words_per_example: int | None = 256,
        scoring_metric: str = "f1",
        n_scoring_examples: int = 100,
        max_terms: int = 5,
        n_candidate_terms: int = 100,
        min_f1_gain: float = 0.01,
        ngram_range: tuple[int, int] = (1, 2),
        min_count: int = 2,
        prior_strength: float = 100.0,
        n_background: int = 2000,
        min_positives: int = 10,
        random_state=None,
        verbose: bool = False,
    ):
        self.n_examples = n_examples
        self.sampling = sampling
        self.high_percentile = high_percentile
        self.low_percentile = low_percentile
        self.max_words_per_example = max_words_per_example
        self.scoring_metric = scoring_metric
        self.n_scoring_examples = n_scoring_examples
        self.max_terms = max_terms
        self.n_candidate_terms = n_candidate_terms
        self.min_f1_gain = min_f1_gain
        self.ngram_range = ngram_range
        self.min_count = min_count
        self.prior_strength = prior_strength
        self.n_background = n_background
        self.min_positives = min_positives
        self.random_state = random_state
        self.verbose = verbose

    def _propose_all(self, jobs: list[dict], texts: list[str]) -> list[list[str]]:
        lo, hi = (int(v) for v in self.ngram_range)
        if len(self.ngram_range) != 2 or not 1 <= lo <= hi:
            raise ValueError(
                f"ngram_range must be (low, high) with 1 <= low <= high, got {self.ngram_range!r}."
            )
        if not jobs:
            return []
        # Background texts for the prior: a random sample of all texts, drawn
        # with a seed of its own so it does not depend on the neurons asked for.
        rng = np.random.RandomState(
            np.random.SeedSequence(
                [check_random_state(self.random_state).randint(np.iinfo(np.int32).max), 1]
            ).generate_state(1)
        )
        n_bg = min(self.n_background, len(texts))
        background = np.sort(rng.choice(len(texts), size=n_bg, replace=False))
        # One vocabulary for every neuron: each distinct text is vectorised once.
        corpus: dict[str, int] = {}
        for i in background:
            corpus.setdefault(_truncate(texts[i], self.max_words_per_example), len(corpus))
        for job in jobs:
            for text in (*job["pos_texts"], *job["neg_texts"]):
                corpus.setdefault(text, len(corpus))
        vectorizer = CountVectorizer(
            lowercase=True,
            token_pattern=r"(?u)\b\w+\b",
            ngram_range=(lo, hi),
            binary=True,
            dtype=np.float64,
        )
        X = vectorizer.fit_transform(list(corpus)).tocsr()
        terms = vectorizer.get_feature_names_out()
        usable = np.array([_usable_term(t) for t in terms], dtype=bool)
        prior = np.asarray(X.sum(axis=0)).ravel() + 0.5

        out = []
        bar = tqdm(jobs, desc="Interpreting neurons", disable=not self.verbose)
        for job in bar:
            pos_rows = np.array([corpus[t] for t in job["pos_texts"]])
            neg_rows = np.array([corpus[t] for t in job["neg_texts"]])
            pos_counts = np.asarray(X[pos_rows].sum(axis=0)).ravel()
            neg_counts = np.asarray(X[neg_rows].sum(axis=0)).ravel()
            z = _log_odds_z(pos_counts, neg_counts, prior, float(self.prior_strength))
            ok = usable & (pos_counts >= self.min_count) & (z > 0)
            ranked = np.flatnonzero(ok)
            ranked = ranked[np.lexsort((ranked, -z[ranked]))][: self.n_candidate_terms]
            if ranked.size == 0:
                out.append([])
                continue
            rows = np.concatenate([pos_rows, neg_rows])
            P = X[rows][:, ranked].toarray()
            labels = np.r_[np.ones(pos_rows.size), np.zeros(neg_rows.size)]
            steps = _greedy_terms(P, labels, self.max_terms, self.min_f1_gain)
            out.append([format_keyword_concept([terms[ranked[k]] for k in s]) for s in steps])
        return out

    def _annotate(self, concepts: list[str], texts: list[str]) -> np.ndarray:
        return match_concepts(texts, [parse_concept_terms(c) for c in concepts])


def _usable_term(term: str) -> bool:
    """Terms worth naming: no stop word at either end, not only digits."""
    words = term.split()
    if words[0] in ENGLISH_STOP_WORDS or words[-1] in ENGLISH_STOP_WORDS:
        return False
    return not all(w.isdigit() or len(w) < 2 for w in words)


# ---------------------------------------------------------------------------
# The LLM interpreter.
# ---------------------------------------------------------------------------

NAMESPACE_INTERPRET = "interpretation"

DEFAULT_TASK_INSTRUCTIONS = """An example feature could be:
- "uses multiple adjectives to describe colors"
- "describes a patient experiencing seizures or epilepsy"
- "contains multiple single-digit numbers\""""

_INTERP_PREFIXES = ("- ", '"-', '" -', "* ", "-")


def parse_interpretation(text: str) -> str:
    """Extract the feature from an interpretation answer.

    ``<think>...</think>`` blocks of reasoning models are dropped; the first
    non-empty line is kept, without a leading bullet (``- ``) and surrounding
    quotes. An unclosed reasoning block (the answer was cut off) or an empty
    answer raises ValueError, so the request is retried.

    Parameters
    ----------
    text : str
        The model's answer.

    Returns
    -------
    feature : str

    Examples
    --------
    >>> from sklearn_hypothesaes.interpret import parse_interpretation
    >>> parse_interpretation('<think>They all wait.</think>\\n- "mentions long waits"')
    'mentions long waits'
    >>> parse_interpretation('- "mentions "cold" soup"\\nBecause ...')
    'mentions "cold" soup'
    """
    body = _THINK_BLOCK_RE.sub("", text)
    if re.search(r"<think>", body, re.IGNORECASE):
        raise ValueError("reasoning block was not closed (answer cut off?)")
    line = next((ln.strip() for ln in body.splitlines() if ln.strip()), "")
    for prefix in _INTERP_PREFIXES:
        if line.startswith(prefix):
            line = line[len(prefix) :].strip()
            break
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    elif line.count('"') % 2 == 1:  # a quote without its partner at either end
        line = line[1:] if line.startswith('"') else line[:-1] if line.endswith('"') else line
        line = line.strip()
    if not line:
        raise ValueError(f"no feature in the answer: {text[:80]!r}")
    return line


def _format_samples(texts: list[str]) -> str:
    # A text cannot close its own delimiter and smuggle instructions after it.
    safe = (re.sub(r"<(/?)sample>", r"<\1 sample>", t, flags=re.IGNORECASE) for t in texts)
    return "\n".join(f"<sample>{t}</sample>" for t in safe)


class NeuronInterpreter(BaseInterpreter):
    """Name neurons with an LLM and keep the candidate with the best fidelity.

    For each neuron the LLM sees positive samples (the top-activating texts,
    or a random draw from a percentile band of the positive activations) and
    negative samples (random texts where the neuron is zero, or a low band of
    its activations) and proposes one concrete feature. With
    ``n_candidates > 1`` each candidate is proposed from its own draw of
    examples (seeds derived from ``random_state``). Every candidate is scored
    by :class:`~sklearn_hypothesaes.annotate.LLMConceptAnnotator` on texts held
    apart from the ones shown: half the neuron's top-activating held-apart
    texts, half its negatives; precision, recall, F1 and correlation with the
    activations are computed, and the best candidate by ``scoring_metric`` is
    kept.

    Interpretations are cached (key: endpoint, model, request parameters,
    prompt name, version and text, the rendered prompt with its example texts,
    and the candidate number), and so are the scoring annotations (the
    annotator's cache), so a re-run sends no request.

    Parameters
    ----------
    client : OpenAIClient or None, default=None
        Endpoint and model of the interpreter. None uses ``OpenAIClient()``.
        Its ``temperature`` is replaced by this estimator's ``temperature``.
    n_candidates : int, default=1
        Candidate interpretations per neuron.
    sampling : {"top", "percentile"}, default="top"
        Positive samples: the top-activating texts, or a random draw from the
        ``high_percentile`` band of the positive activations (as in the paper).
    high_percentile : tuple of float, default=(90, 100)
        Percentile band (of positive activations) for ``sampling="percentile"``.
    low_percentile : tuple of float or None, default=None
        ``None``: negatives are random texts where the neuron is zero.
        Otherwise negatives are drawn from this band of positive activations.
    n_examples : int, default=20
        Samples shown to the LLM per candidate (half positive, half negative).
    max_words_per_example : int or None, default=256
        Texts are truncated to this many words (shown samples and scoring).
    task_instructions : str or None, default=None
        Task-specific instructions inserted in the prompt (e.g. the kind of
        feature wanted, example features). None uses generic examples.
    temperature : float or None, default=0.7
        Sampling temperature of the interpretation requests.
    max_interpretation_tokens : int or None, default=None
        Completion token limit of an interpretation (None: the server's
        default). Leave room for the reasoning of reasoning models.
    scoring_metric : {"f1", "precision", "recall", "correlation"}, default="f1"
        Fidelity metric that picks the best candidate.
    n_scoring_examples : int, default=100
        Held-apart texts per neuron for fidelity (half top-activating, half
        negatives as in ``low_percentile``).
    annotator : LLMConceptAnnotator or None, default=None
        Annotator whose parameters (client, cache, word limit, prompt version,
        ``on_failure``) score the candidates. None builds one with ``client``
        and ``cache``. ``on_failure="zero"`` counts an unanswered item as 0,
        ``"nan"`` leaves it out of the metrics, ``"raise"`` raises
        :class:`~sklearn_hypothesaes.annotate.AnnotationError`.
    prompt_version : int or None, default=None
        Version of the ``interpret`` prompt template; None uses the latest.
    min_positives : int, default=10
        Neurons firing on fewer texts are reported with a status instead.
    cache : None, bool, str, path or SQLiteCache, default=None
        Interpretation cache (None: the default directory, False: none, a
        path: that directory); also the annotation cache when ``annotator``
        is None.
    random_state : int, RandomState instance or None, default=None
        Seeds the explanation/scoring split and the example draws (one seed
        per neuron and candidate derived from it).
    verbose : bool, default=True
        Progress bars and info logging.

    Attributes
    ----------
    usage_ : Usage
        Set by :meth:`interpret`: requests, tokens and cost (when the client has
        prices) of that call, interpretation and fidelity scoring together.

    Examples
    --------
    >>> from sklearn_hypothesaes.interpret import NeuronInterpreter
    >>> from sklearn_hypothesaes.llm import OpenAIClient
    >>> interp = NeuronInterpreter(OpenAIClient("my-model"), n_candidates=3)
    >>> msgs = interp.build_prompt(["cold soup", "cold tea"], ["warm bread"])
    >>> [m["role"] for m in msgs], "<sample>cold tea</sample>" in msgs[1]["content"]
    (['system', 'user'], True)
    """

    _parameter_constraints: dict = {
        **BaseInterpreter._parameter_constraints,
        "client": [HasMethods(["complete", "request_identity", "validate"]), None],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "task_instructions": [str, None],
        "temperature": [Interval(Real, 0, None, closed="left"), None],
        "max_interpretation_tokens": [Interval(Integral, 1, None, closed="left"), None],
        "annotator": [HasMethods(["annotate_pairs"]), None],
        "prompt_version": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [None, "boolean", str, os.PathLike, SQLiteCache],
    }

    def __init__(
        self,
        client=None,
        *,
        n_candidates: int = 1,
        sampling: str = "top",
        high_percentile: tuple[float, float] = (90, 100),
        low_percentile: tuple[float, float] | None = None,
        n_examples: int = 20,
        max_words_per_example: int | None = 256,
        task_instructions: str | None = None,
        temperature: float | None = 0.7,
        max_interpretation_tokens: int | None = None,
        scoring_metric: str = "f1",
        n_scoring_examples: int = 100,
        annotator=None,
        prompt_version: int | None = None,
        min_positives: int = 10,
        cache=None,
        random_state=None,
        verbose: bool = True,
    ):
        self.client = client
        self.n_candidates = n_candidates
        self.sampling = sampling
        self.high_percentile = high_percentile
        self.low_percentile = low_percentile
        self.n_examples = n_examples
        self.max_words_per_example = max_words_per_example
        self.task_instructions = task_instructions
        self.temperature = temperature
        self.max_interpretation_tokens = max_interpretation_tokens
        self.scoring_metric = scoring_metric
        self.n_scoring_examples = n_scoring_examples
        self.annotator = annotator
        self.prompt_version = prompt_version
        self.min_positives = min_positives
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- pieces ---------------------------------------------------------------
    def _client(self):
        """The interpreter's client with this estimator's temperature (a copy)."""
        client = OpenAIClient(verbose=self.verbose) if self.client is None else self.client
        client = copy.copy(client)  # never mutate the user's client
        client.temperature = self.temperature
        if not self.verbose:
            client.verbose = False
        return client

    def _annotator(self) -> LLMConceptAnnotator:
        if self.annotator is None:
            return LLMConceptAnnotator(
                client=self.client,
                cache=self.cache,
                max_words=self.max_words_per_example,
                verbose=self.verbose,
            )
        return self.annotator

    def build_prompt(self, positive_texts: list[str], negative_texts: list[str]) -> list[dict]:
        """Chat messages asking for the feature of one example set.

        Parameters
        ----------
        positive_texts, negative_texts : list of str
            Samples where the neuron fires and where it does not (already
            truncated).

        Returns
        -------
        messages : list of dict
            ``[{"role": "system", ...}, {"role": "user", ...}]``.
        """
        instructions = (
            DEFAULT_TASK_INSTRUCTIONS if self.task_instructions is None else self.task_instructions
        )
        return load_prompt("interpret", self.prompt_version).render(
            task_instructions=instructions.strip(),
            positive_examples=_format_samples(positive_texts),
            negative_examples=_format_samples(negative_texts),
        )

    def _example_sets(self, job: dict, texts: list[str]) -> list[tuple[list[str], list[str]]]:
        """One (positive, negative) example set per candidate; the first is the job's."""
        sets = [(job["pos_texts"], job["neg_texts"])]
        low = None if self.low_percentile is None else tuple(self.low_percentile)
        for c in range(1, self.n_candidates):
            seed = np.random.SeedSequence([*job["seed"], c]).generate_state(1)
            pos, neg = sample_examples(
                job["activations"],
                self.n_examples // 2,
                sampling=self.sampling,
                high_percentile=tuple(self.high_percentile),
                low_percentile=low,
                candidates=job["explain_idx"],
                rng=np.random.RandomState(seed),
            )
            sets.append(
                (
                    [_truncate(texts[i], self.max_words_per_example) for i in pos],
                    [_truncate(texts[i], self.max_words_per_example) for i in neg],
                )
            )
        return sets

    # -- hooks ----------------------------------------------------------------
    def _propose_all(self, jobs: list[dict], texts: list[str]) -> list[list[str]]:
        self.usage_ = Usage()  # LLM spend of this interpret() call
        if not jobs:
            return []
        client = self._client()
        client.validate()
        template = load_prompt("interpret", self.prompt_version)
        ident = client.request_identity(
            prompt=template.identity, max_tokens=self.max_interpretation_tokens
        )
        prompts: list[list[dict]] = []
        keys: list[str] = []
        owners: list[tuple[int, int]] = []  # (job, candidate) of each prompt
        for n, job in enumerate(jobs):
            job["example_sets"] = self._example_sets(job, texts)
            for c, (pos, neg) in enumerate(job["example_sets"]):
                messages = self.build_prompt(pos, neg)
                prompts.append(messages)
                keys.append(make_key(request=ident, messages=messages, candidate=c))
                owners.append((n, c))
        cache = open_cache(self.cache)
        found = cache.get_many(NAMESPACE_INTERPRET, keys) if cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        answers: dict[int, str] = {i: found[k] for i, k in enumerate(keys) if k in found}
        errors: dict[int, str] = {}
        if self.verbose:
            logger.info(
                "Interpreting %d neurons x %d candidates: %d from cache, %d requests.",
                len(jobs),
                self.n_candidates,
                len(keys) - len(todo),
                len(todo),
            )
        if todo:

            def on_result(index: int, res) -> None:
                if res.ok and cache is not None:
                    cache.put(NAMESPACE_INTERPRET, keys[todo[index]], res.value)

            run = client.complete(
                [prompts[i] for i in todo],
                parse=parse_interpretation,
                max_tokens=self.max_interpretation_tokens,
                on_result=on_result,
                desc="Interpreting",
            )
            for i, res in zip(todo, run.results):
                if res.ok:
                    answers[i] = res.value
                else:
                    errors[i] = res.error or "no answer"
            self.usage_ = self.usage_ + run.usage
        out: list[list[str]] = [[] for _ in jobs]
        for i, (n, c) in enumerate(owners):
            job = jobs[n]
            if i in answers:
                concept = answers[i]
                out[n].append(concept)
                job.setdefault("examples", {}).setdefault(concept, job["example_sets"][c])
            else:
                job.setdefault("errors", []).append(errors[i])
        for job, concepts in zip(jobs, out):
            if not concepts:
                kinds = ", ".join(sorted(set(job.get("errors", []))))
                job["failure"] = f"interpretation failed ({kinds}) after retries"
            del job["example_sets"]
        n_failed = sum(len(j.get("errors", [])) for j in jobs)
        if n_failed:
            warnings.warn(
                f"{n_failed} of {len(keys)} interpretation requests got no usable answer after "
                "retries; those candidates are left out (not cached, so a re-run asks again).",
                AnnotationWarning,
                stacklevel=3,
            )
        return out

    def _annotate_all(self, jobs: list[dict]) -> list[np.ndarray]:
        if not jobs:
            return []
        annotator = self._annotator()
        # One concurrent run for every (scoring text, candidate) of every neuron.
        pair_texts: list[str] = []
        pair_concepts: list[str] = []
        for job in jobs:
            for text in job["score_texts"]:
                for concept in job["candidates"]:
                    pair_texts.append(text)
                    pair_concepts.append(concept)
        values, usage = annotator.annotate_pairs(pair_texts, pair_concepts, return_usage=True)
        values = np.asarray(values, dtype=float)
        self.usage_ = getattr(self, "usage_", Usage()) + usage
        n_failed = int(np.isnan(values).sum())
        policy = getattr(annotator, "on_failure", "zero")
        if n_failed:
            msg = (
                f"{n_failed} of {values.size} scoring annotations have no usable answer "
                "after retries. Re-running asks only for these; answers that arrived are cached."
            )
            if policy == "raise":
                raise AnnotationError(msg)
            how = "counted as 0" if policy == "zero" else "left out of the fidelity metrics"
            warnings.warn(f"{msg} They are {how}.", AnnotationWarning, stacklevel=3)
            if policy == "zero":
                values = np.nan_to_num(values, nan=0.0)
        out = []
        start = 0
        for job in jobs:
            size = len(job["score_texts"]) * len(job["candidates"])
            out.append(values[start : start + size].reshape(len(job["score_texts"]), -1))
            start += size
        return out


# ---------------------------------------------------------------------------
# Exploration: what did the SAE learn, before any target is involved?
# ---------------------------------------------------------------------------


def explore_neurons(
    texts,
    activations,
    *,
    n_neurons: int = 10,
    strategy: str = "prevalent",
    interpreter: BaseInterpreter | None = None,
    n_top_texts: int = 5,
    random_state=None,
) -> pd.DataFrame:
    """Interpret random or the most prevalent neurons of a fitted SAE.

    Parameters
    ----------
    texts : list, ndarray or Series of str of length n_samples
        Texts the SAE activations were computed on.
    activations : array-like or sparse matrix of shape (n_samples, n_neurons)
        SAE activations, e.g. ``sae.transform(embeddings)``.
    n_neurons : int, default=10
        How many neurons to interpret.
    strategy : {"prevalent", "random"}, default="prevalent"
        ``"prevalent"``: the neurons that fire on the most texts;
        ``"random"``: a random draw among neurons that fire at least once.
    interpreter : BaseInterpreter or None, default=None
        Interpreter to use, e.g. a :class:`NeuronInterpreter` to have an LLM
        name the neurons; ``None`` uses :class:`OfflineInterpreter` with
        ``random_state``.
    n_top_texts : int, default=5
        Top-activating texts listed per neuron.
    random_state : int, RandomState instance or None, default=None
        Seeds the random choice of neurons (and the default interpreter).

    Returns
    -------
    result : DataFrame
        The interpreter's output for the chosen neurons (sorted by
        prevalence, highest first), plus a ``top_texts`` column with the
        ``n_top_texts`` highest-activating texts of each neuron.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hypothesaes.interpret import explore_neurons
    >>> texts = ["cold soup", "hot tea", "cold tea", "green tea"] * 10
    >>> acts = np.array([[("cold" in t) * 1.0, ("tea" in t) * 2.0] for t in texts])
    >>> out = explore_neurons(texts, acts, n_neurons=1, random_state=0)
    >>> int(out.loc[0, "neuron"]), out.loc[0, "top_texts"][0]
    (1, 'hot tea')
    """
    if strategy not in ("prevalent", "random"):
        raise ValueError(f"strategy must be 'prevalent' or 'random', got {strategy!r}.")
    if not isinstance(n_neurons, Integral) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive integer, got {n_neurons!r}.")
    texts = check_texts(texts)
    A = _check_activations(activations, len(texts))
    fires = np.asarray((A > 0).sum(axis=0)).ravel()
    alive = np.flatnonzero(fires > 0)
    if strategy == "prevalent":
        order = alive[np.lexsort((alive, -fires[alive]))]
        chosen = order[:n_neurons]
    else:
        rng = check_random_state(random_state)
        chosen = rng.choice(alive, size=min(n_neurons, alive.size), replace=False)
        chosen = chosen[np.lexsort((chosen, -fires[chosen]))]
    if interpreter is None:
        interpreter = OfflineInterpreter(random_state=random_state)
    result = interpreter.interpret(texts, A, [int(j) for j in chosen])
    tops = []
    for j in chosen:
        a = _column(A, int(j))
        top = np.lexsort((np.arange(a.size), -a))[:n_top_texts]
        tops.append([texts[i] for i in top if a[i] > 0])
    result["top_texts"] = tops
    return result
