"""Select the SAE neurons that predict a target (step 3 of HypotheSAEs).

:class:`NeuronSelector` is a scikit-learn feature selector over neuron
activations (dense or ``scipy.sparse``, never densified):

- ``method="lasso"``: L1-penalised regression on standardised activations with
  the penalty chosen so that exactly ``n_select`` neurons are non-zero, read off
  the regularisation path (LARS on a Gram matrix for squared loss; a
  warm-started, screened proximal Newton path for logistic loss). See
  :mod:`sklearn_hypothesaes._lasso_path`.
- ``method="correlation"``: Pearson correlation of each neuron with the target.
- ``method="separation"``: mean target over a neuron's top positive activations
  minus the mean target where it is zero.
"""

from __future__ import annotations

import logging
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_hypothesaes._activations import ActivationMatrix
from sklearn_hypothesaes._lasso_path import (
    LogisticL1Path,
    StandardisedGram,
    lasso_exact_n_squared,
)
from sklearn_hypothesaes._neuron_scores import correlation_scores, separation_scores
from sklearn_hypothesaes._targets import infer_task
from sklearn_hypothesaes.exceptions import SelectionWarning

__all__ = ["NeuronSelector"]

logger = logging.getLogger("sklearn_hypothesaes.selection")


class NeuronSelector(SelectorMixin, BaseEstimator):
    """Select the neurons (columns of SAE activations) that predict a target.

    Parameters
    ----------
    n_select : int, default=20
        Number of neurons to select. Must not exceed the number of neurons.
    method : {"lasso", "correlation", "separation"}, default="lasso"
        How neurons are scored and selected.

        - ``"lasso"``: an L1-penalised model on standardised activations whose
          penalty ``alpha_`` is chosen so that exactly ``n_select`` coefficients
          are non-zero; neurons are ranked by absolute standardised coefficient.
        - ``"correlation"``: absolute Pearson correlation with the target.
        - ``"separation"``: absolute separation score, the mean target over the
          ``n_top_activating`` largest positive activations minus the mean
          target over the rows where the neuron is exactly zero.
    task : {"auto", "regression", "binary", "multiclass"}, default="auto"
        Kind of target. ``"auto"``: two distinct values is ``"binary"``; more
        than two numeric values is ``"regression"`` (integer ratings included);
        more than two non-numeric labels is ``"multiclass"``. Multiclass
        targets are handled one-vs-rest; see Notes.
    loss : {"auto", "squared", "logistic"}, default="auto"
        Loss of the Lasso (ignored by the other methods). ``"auto"`` is squared
        loss for regression and logistic loss for classification.
        ``"squared"`` on a classification target fits the Lasso to the 0/1
        class indicator, which is much faster on large data.
    n_top_activating : int, default=100
        Number of largest positive activations averaged by the separation score.
    tol : float, default=1e-6
        Convergence tolerance of the logistic-loss solver, on the change of the
        standardised coefficients.
    max_iter : int, default=100
        Maximum proximal Newton iterations per penalty of the logistic path.
    verbose : bool, default=False
        Log progress of the selection at INFO level (logger
        ``sklearn_hypothesaes.selection``).

    Attributes
    ----------
    selected_ : ndarray of shape (n_selected,)
        Indices of the selected neurons, most important first. ``n_selected``
        is ``n_select`` unless fewer neurons can be selected (a
        :class:`~sklearn_hypothesaes.exceptions.SelectionWarning` says why).
    scores_ : ndarray of shape (n_features_in_,) or (n_classes, n_features_in_)
        Score of every neuron: standardised Lasso coefficient at ``alpha_``
        (zero for unselected neurons), Pearson correlation, or separation score.
        Constant (including dead) neurons score 0. For a binary target the sign
        refers to ``classes_[1]``; for a multiclass target there is one row per
        class (one-vs-rest).
    alpha_ : float, ndarray of shape (n_classes,) or None
        Lasso penalty at which exactly ``n_select`` neurons are active (one per
        class for multiclass); ``None`` for the other methods. Squared loss:
        the ``alpha`` of :class:`sklearn.linear_model.Lasso` on standardised
        activations. Logistic loss: ``C = 1 / alpha_`` in
        :class:`sklearn.linear_model.LogisticRegression` with ``l1_ratio=1`` on
        standardised activations (unpenalised intercept).
    n_iter_ : int
        Lasso path steps taken (LARS iterations, or penalties solved on the
        logistic path), summed over classes; 1 (a single pass) for the other
        methods.
    task_ : str
        The resolved task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
    loss_ : str or None
        The resolved Lasso loss, ``None`` for the other methods.
    classes_ : ndarray of shape (n_classes,)
        Class labels, for classification tasks only.
    n_active_ : ndarray of shape (n_features_in_,)
        Number of non-zero activations of each neuron.
    n_positive_ : ndarray of shape (n_features_in_,)
        Number of positive activations of each neuron.
    low_support_ : ndarray of shape (n_features_in_,)
        True for neurons with some but fewer than ``n_top_activating`` positive
        activations: their separation score averages all they have.
    n_features_in_ : int
        Number of neurons seen during :term:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Neuron names seen during :term:`fit`, when ``A`` is a DataFrame with
        string column names.

    See Also
    --------
    sklearn.feature_selection.SelectFromModel : Selection by a fitted model's
        coefficients, without control of the exact number selected.

    Notes
    -----
    Dead and constant neurons are never selected. Activations may be negative,
    e.g. differences ``Z_A - Z_B`` of two texts' activations for a pairwise
    target: the Lasso and correlation use them as they are; the separation
    score then compares the top positive differences against rows with no
    difference, and negative differences enter neither mean.

    Multiclass targets are handled one-vs-rest: each class indicator gets its
    own scores (a row of ``scores_``; for the Lasso its own path with exactly
    ``n_select`` non-zeros and its own ``alpha_``), and ``selected_`` takes the
    classes' rankings in turn (each class's best neuron, then each class's
    second, ..., skipping repeats) until ``n_select`` neurons are chosen.

    :meth:`transform` keeps the selected columns in their original order, as
    every scikit-learn selector does; ``selected_`` gives the importance order.

    Examples
    --------
    >>> from sklearn_hypothesaes.datasets import make_planted_embeddings
    >>> from sklearn_hypothesaes.selection import NeuronSelector
    >>> data = make_planted_embeddings(
    ...     2000, n_features=16, n_atoms=32, k=4, n_causal=4, random_state=0)
    >>> selector = NeuronSelector(n_select=4).fit(data.codes, data.y)
    >>> sorted(selector.selected_.tolist()) == sorted(data.causal_atoms.tolist())
    True
    >>> selector.transform(data.codes).shape
    (2000, 4)
    """

    _parameter_constraints: dict = {
        "n_select": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"lasso", "correlation", "separation"})],
        "task": [StrOptions({"auto", "regression", "binary", "multiclass"})],
        "loss": [StrOptions({"auto", "squared", "logistic"})],
        "n_top_activating": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        n_select: int = 20,
        *,
        method: str = "lasso",
        task: str = "auto",
        loss: str = "auto",
        n_top_activating: int = 100,
        tol: float = 1e-6,
        max_iter: int = 100,
        verbose: bool = False,
    ) -> None:
        self.n_select = n_select
        self.method = method
        self.task = task
        self.loss = loss
        self.n_top_activating = n_top_activating
        self.tol = tol
        self.max_iter = max_iter
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, A, y):
        """Score every neuron and select ``n_select`` of them.

        Parameters
        ----------
        A : {array-like, sparse matrix} of shape (n_samples, n_neurons)
            Neuron activations, e.g. the output of
            :class:`~sklearn_hypothesaes.sae.TopKSAETransformer`. Sparse input is
            never densified.
        y : array-like of shape (n_samples,)
            Target: continuous, binary or multiclass labels.

        Returns
        -------
        self : NeuronSelector
            The fitted selector.
        """
        X, y = validate_data(
            self,
            A,
            y,
            accept_sparse=("csr", "csc"),
            dtype=(np.float64, np.float32),
            ensure_min_samples=2,
            y_numeric=False,
        )
        n_samples, n_features = X.shape
        if self.n_select > n_features:
            raise ValueError(
                f"n_select={self.n_select} exceeds the number of neurons: A has "
                f"{n_features} feature(s). Lower n_select or use more neurons."
            )
        task, Y = self._encode_target(y)
        self.task_ = task
        loss = None
        if self.method == "lasso":
            loss = self.loss
            if loss == "auto":
                loss = "squared" if task == "regression" else "logistic"
            if loss == "logistic" and task == "regression":
                raise ValueError(
                    "loss='logistic' needs a classification target but the task is "
                    "'regression'; use loss='squared' or pass task='binary'/'multiclass'."
                )
        self.loss_ = loss

        design = ActivationMatrix(X)
        mean, std = design.mean_std()
        usable = std > 0
        self.n_active_ = design.count_nonzero()
        self.n_positive_ = design.count_positive()
        self.low_support_ = (self.n_positive_ > 0) & (self.n_positive_ < self.n_top_activating)

        n_usable = int(usable.sum())
        if n_usable == 0:
            raise ValueError(
                "Every neuron is constant (dead) on these activations; nothing can be "
                "selected. Check that A holds the SAE activations of these texts."
            )

        self.alpha_ = None
        self.n_iter_ = 1  # one pass over the activations; the Lasso counts path steps
        if self.method == "lasso":
            scores, rankings = self._fit_lasso(design, Y, mean, std, usable, loss)
        elif self.method == "correlation":
            scores = correlation_scores(design, Y, mean, std)
            rankings = [_rank(row, usable) for row in scores]
        else:
            scores, _, eligible = separation_scores(design, Y, self.n_top_activating)
            rankings = [_rank(row, eligible) for row in scores]

        selected = _round_robin(rankings, self.n_select)
        if len(selected) < self.n_select:
            warnings.warn(
                f"Only {len(selected)} of the requested n_select={self.n_select} neurons "
                f"could be selected: {n_features - n_usable} of {n_features} neurons are "
                "constant (dead) or cannot be scored on these activations.",
                SelectionWarning,
                stacklevel=2,
            )
        self.selected_ = np.asarray(selected, dtype=np.intp)
        self.scores_ = scores[0] if scores.shape[0] == 1 else scores
        if self.method == "separation" and self.low_support_[self.selected_].any():
            low = self.selected_[self.low_support_[self.selected_]]
            warnings.warn(
                f"{low.size} selected neuron(s) have fewer than n_top_activating="
                f"{self.n_top_activating} positive activations (e.g. neuron {int(low[0])} "
                f"with {int(self.n_positive_[low[0]])}); their separation score averages "
                "all the positive activations they have. See low_support_.",
                SelectionWarning,
                stacklevel=2,
            )
        if self.verbose:
            logger.info(
                "NeuronSelector(method=%s, task=%s): selected %s", self.method, task, selected
            )
        return self

    def _encode_target(self, y) -> tuple[str, np.ndarray]:
        """Resolve the task and return the target as float columns (n_samples, n_targets)."""
        y = np.asarray(y)
        if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity; drop or impute those rows first.")
        numeric = y.dtype.kind in "fiub"
        task, classes = infer_task(
            y, self.task, single_value_hint="selection needs a target that varies."
        )
        if task == "regression":
            return task, y.astype(np.float64)[:, None]
        if numeric and type_of_target(y) == "continuous":
            raise ValueError(
                f"task={self.task!r} needs class labels but y is continuous "
                f"({classes.size} distinct non-integer values); use task='regression'."
            )
        if task == "binary" and classes.size != 2:
            raise ValueError(
                f"task='binary' needs exactly 2 classes, y has {classes.size}; "
                "use task='multiclass'."
            )
        self.classes_ = classes
        if classes.size == 2:
            return "binary", (y == classes[1]).astype(np.float64)[:, None]
        return "multiclass", (y[:, None] == classes[None, :]).astype(np.float64)

    def _fit_lasso(self, design, Y, mean, std, usable, loss):
        n_targets = Y.shape[1]
        n_features = design.n_features
        n_usable = int(usable.sum())
        n_target_select = min(self.n_select, n_usable)
        scores = np.zeros((n_targets, n_features))
        alphas = np.zeros(n_targets)
        n_iter = 0
        rankings = []
        if loss == "squared":
            gram = StandardisedGram(design, mean, std)
            with np.errstate(divide="ignore", invalid="ignore"):
                xty_all = design.rmatvec(Y - Y.mean(axis=0)) / std[:, None]
            xty_all[~usable] = 0.0
        for t in range(n_targets):
            if loss == "squared":
                result = lasso_exact_n_squared(
                    gram, xty_all[:, t], design.n_samples, n_target_select, usable
                )
                scores[t] = result.coef
            else:
                path = LogisticL1Path(
                    design, Y[:, t], std, usable, tol=self.tol, max_iter=self.max_iter
                )
                result = path.exact_n(n_target_select)
                scores[t] = result.coef
                if not path.converged:
                    warnings.warn(
                        "The logistic Lasso path did not fully converge; the selection "
                        "may differ from the exact solution. Raise max_iter or tol.",
                        SelectionWarning,
                        stacklevel=3,
                    )
            alphas[t] = result.alpha
            n_iter += result.n_iter
            if not result.exact and n_target_select == self.n_select:
                what = f" for class {self.classes_[t]!r}" if n_targets > 1 else ""
                warnings.warn(
                    f"No Lasso penalty gives exactly n_select={self.n_select} non-zero "
                    f"neurons{what} (neurons enter the path together or the path ends "
                    f"first); using the penalty with {result.n_active} non-zero and "
                    "keeping the largest coefficients.",
                    SelectionWarning,
                    stacklevel=3,
                )
            rankings.append(_rank(scores[t], scores[t] != 0))
            if self.verbose:
                logger.info(
                    "Lasso (%s loss) target %d: alpha=%.6g, %d active",
                    loss,
                    t,
                    result.alpha,
                    result.n_active,
                )
        self.alpha_ = float(alphas[0]) if n_targets == 1 else alphas
        self.n_iter_ = int(n_iter)
        return scores, rankings

    def _get_support_mask(self):
        check_is_fitted(self)
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _rank(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Eligible indices by decreasing absolute score (ties: lower index first)."""
    idx = np.flatnonzero(eligible)
    return idx[np.argsort(-np.abs(scores[idx]), kind="stable")]


def _round_robin(rankings: list[np.ndarray], n_select: int) -> list[int]:
    """Take each ranking's next neuron in turn, skipping repeats, up to n_select."""
    selected: list[int] = []
    seen: set[int] = set()
    depth = max((len(r) for r in rankings), default=0)
    for level in range(depth):
        for ranking in rankings:
            if level < len(ranking):
                j = int(ranking[level])
                if j not in seen:
                    seen.add(j)
                    selected.append(j)
                    if len(selected) == n_select:
                        return selected
    return selected
