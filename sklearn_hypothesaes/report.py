"""Validate hypotheses on held-out data: separation scores, a multivariate model, corrections.

:class:`HypothesisReport` is step 5 of the HypotheSAEs method. Given 0/1
annotations of held-out texts with each hypothesis (n x H) and the target, it
reports per hypothesis the separation score with a two-group t-test and the
coefficient of a joint OLS (continuous target) or logit (binary target) with
its standard error, confidence interval and a p-value corrected for the number
of hypotheses tested, plus metrics of the hypotheses taken together.

Hard cases are handled explicitly and written into the table's ``note``
column: constant and exactly collinear annotation columns are left out of the
regression, and (quasi-)separation in the logit switches to a Firth-penalised
fit with profile penalised-likelihood inference instead of reporting the
meaningless Wald p-value of an infinite coefficient.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_hypothesaes._report_stats import (
    ModelFitError,
    RegressionFit,
    adjust_pvalues,
    collinear_columns,
    fit_logit_firth,
    fit_logit_mle,
    fit_ols,
    ranking_metrics,
    separated_columns,
    two_group_ttest,
)
from sklearn_hypothesaes._targets import infer_task

__all__ = ["HypothesisReport", "ModelFitError"]

_N_EXAMPLE_ROWS = 5
_CORRECTION_NAMES = {
    "bonferroni": "Bonferroni",
    "holm": "Holm",
    "fdr_bh": "Benjamini-Hochberg FDR",
    "none": "no",
}
_TABLE_COLUMNS = [
    "hypothesis",
    "separation_score",
    "separation_pval",
    "regression_coef",
    "regression_se",
    "regression_ci_low",
    "regression_ci_high",
    "regression_pval",
    "pval_corrected",
    "significant",
    "feature_prevalence",
    "n_with_concept",
    "note",
]


class HypothesisReport(BaseEstimator):
    """Paper-ready statistics for natural-language hypotheses on held-out data.

    For each hypothesis (a column of 0/1 annotations) the report gives

    - the **separation score** ``E[y | concept] - E[y | no concept]`` with a
      two-group t-test (Welch's by default);
    - the coefficient of a **multivariate model** of ``y`` on all hypotheses
      together (OLS for a continuous target, logit for a binary one), with its
      standard error, confidence interval and p-value;
    - that p-value **corrected** for the number of hypotheses tested
      (Bonferroni by default, as in the paper) and whether it is significant.

    ``metrics_`` describes the hypotheses taken together (R², or AUC, AUPRC and
    McFadden's pseudo-R²) and the number of significant hypotheses. See the
    user guide ``docs/report.md`` for the definitions and the hard cases.

    Parameters
    ----------
    task : {"auto", "regression", "binary", "multiclass"}, default="auto"
        Kind of target. ``"auto"``: two distinct values give ``"binary"``, other
        numeric targets ``"regression"`` (integer star ratings included), and
        non-numeric labels with more than two values ``"multiclass"``, analysed
        one class against the rest.
    alpha : float, default=0.1
        Significance level applied to the corrected p-values (the paper uses
        0.1 with Bonferroni, i.e. ``p < 0.1 / H``).
    correction : {"bonferroni", "holm", "fdr_bh", "none"}, default="bonferroni"
        Multiple-testing correction across all hypotheses (and all classes for
        a multiclass target). ``"fdr_bh"`` is Benjamini-Hochberg, controlling
        the false discovery rate instead of the family-wise error rate.
    pairwise : bool or "auto", default="auto"
        Whether annotations compare two texts A and B: 1 when only A has the
        concept, -1 when only B has it, 0 otherwise, with ``y`` describing A
        relative to B. ``"auto"`` is True when any annotation is -1.
    ttest : {"welch", "student"}, default="welch"
        Two-group test of the separation score: Welch's unequal-variance
        t-test, or Student's pooled-variance t-test (the reference behaviour).
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3"}, default="nonrobust"
        Covariance of the OLS coefficients; ``"HC3"`` gives
        heteroskedasticity-robust standard errors. Ignored for logit.
    logit_separation : {"firth", "drop", "raise"}, default="firth"
        What to do when a hypothesis (quasi-)perfectly separates a binary
        target, which makes the logit coefficient infinite: ``"firth"`` fits
        Firth's penalised logit and tests the separated hypotheses with profile
        penalised likelihood; ``"drop"`` leaves them out of the regression with
        a note; ``"raise"`` raises :class:`ModelFitError`.
    ci_level : float, default=0.95
        Confidence level of the coefficient intervals (not adjusted for
        multiple testing).
    significance : {"regression", "separation"}, default="regression"
        Which p-value the correction and ``significant`` are based on.

    Attributes
    ----------
    table_ : pandas.DataFrame of shape (H, 13) or (n_classes * H, 14)
        One row per hypothesis (per class and hypothesis for multiclass, with a
        leading ``class`` column), in input order, with columns ``hypothesis``,
        ``separation_score``, ``separation_pval``, ``regression_coef``,
        ``regression_se``, ``regression_ci_low``, ``regression_ci_high``,
        ``regression_pval``, ``pval_corrected``, ``significant``,
        ``feature_prevalence``, ``n_with_concept`` and ``note`` (why a value is
        missing or how it was obtained; empty when standard).
    metrics_ : dict
        ``task``, ``pairwise``, ``model``, ``n``, ``n_hypotheses``, ``n_tests``,
        ``n_significant``, ``alpha``, ``correction``, ``threshold`` (the raw
        p-value threshold for Bonferroni, else None), ``r2`` and ``adj_r2``
        (regression) or ``auc``, ``auprc`` and ``pseudo_r2`` (binary; macro
        averages for multiclass, with ``per_class`` holding each class's
        values), and ``notes`` (list of str describing the methods used and
        every column left out).
    hypotheses_ : list of str of length H
        Hypothesis names, from ``hypotheses``, the DataFrame columns, or
        ``"h0"``, ``"h1"``, ...
    task_ : str
        The task actually used.
    pairwise_ : bool
        Whether the annotations were treated as pairwise.
    classes_ : ndarray of shape (n_classes,)
        Target classes (binary and multiclass tasks only); for binary, the
        second one is the positive class.
    example_indices_ : dict of str to ndarray
        For each hypothesis, up to 5 row indices of texts with the concept
        (evenly spread), used by :meth:`to_html` to show example texts.
    n_samples_ : int
        Number of annotated texts.
    n_features_in_ : int
        Number of hypotheses H.
    feature_names_in_ : ndarray of shape (H,)
        Column names when ``annotations`` is a DataFrame with string columns.

    See Also
    --------
    sklearn_hypothesaes.keywords.KeywordAnnotator : Offline annotations.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hypothesaes.report import HypothesisReport
    >>> rng = np.random.default_rng(0)
    >>> A = rng.integers(0, 2, size=(500, 3))
    >>> y = 1.0 * A[:, 0] + rng.normal(size=500)
    >>> report = HypothesisReport().fit(A, y, hypotheses=["waits", "price", "decor"])
    >>> report.table_["significant"].tolist()
    [True, False, False]
    >>> report.metrics_["n_significant"], report.task_
    (1, 'regression')
    """

    _parameter_constraints: dict = {
        "task": [StrOptions({"auto", "regression", "binary", "multiclass"})],
        "alpha": [Interval(numbers.Real, 0, 1, closed="neither")],
        "correction": [StrOptions({"bonferroni", "holm", "fdr_bh", "none"})],
        "pairwise": ["boolean", StrOptions({"auto"})],
        "ttest": [StrOptions({"welch", "student"})],
        "cov_type": [StrOptions({"nonrobust", "HC0", "HC1", "HC2", "HC3"})],
        "logit_separation": [StrOptions({"firth", "drop", "raise"})],
        "ci_level": [Interval(numbers.Real, 0, 1, closed="neither")],
        "significance": [StrOptions({"regression", "separation"})],
    }

    def __init__(
        self,
        *,
        task: str = "auto",
        alpha: float = 0.1,
        correction: str = "bonferroni",
        pairwise: bool | str = "auto",
        ttest: str = "welch",
        cov_type: str = "nonrobust",
        logit_separation: str = "firth",
        ci_level: float = 0.95,
        significance: str = "regression",
    ) -> None:
        self.task = task
        self.alpha = alpha
        self.correction = correction
        self.pairwise = pairwise
        self.ttest = ttest
        self.cov_type = cov_type
        self.logit_separation = logit_separation
        self.ci_level = ci_level
        self.significance = significance

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, annotations: Any, y: Any, hypotheses: Sequence[str] | None = None):
        """Compute the statistics of every hypothesis.

        Parameters
        ----------
        annotations : array-like, DataFrame or sparse matrix of shape (n, H)
            0/1 (or boolean) annotations of each text with each hypothesis;
            -1/0/1 for pairwise comparisons.
        y : array-like of shape (n,)
            Target: continuous, binary (any two labels; the larger one, in
            sorted order, is positive) or class labels.
        hypotheses : sequence of str of length H, default=None
            Hypothesis names; defaults to the DataFrame's columns or ``"h0"``...

        Returns
        -------
        self : HypothesisReport
            The fitted report.
        """
        A = self._validate_annotations(annotations)
        n, H = A.shape
        self.hypotheses_ = self._resolve_names(annotations, hypotheses, H)
        y_arr = _validate_target(y, n)
        self.pairwise_ = self._resolve_pairwise(A)
        self.task_, targets = self._resolve_task(y_arr)
        self.n_samples_ = n

        notes = [self._ttest_note(), *self._model_notes()]
        per_target = []
        for label, y01_or_y in targets:
            result = self._analyse(A, y01_or_y)
            per_target.append((label, result))

        pvals = np.concatenate([r[f"{self.significance}_pval"] for _label, r in per_target]).astype(
            float
        )
        corrected = adjust_pvalues(pvals, self.correction)
        significant = np.nan_to_num(corrected, nan=np.inf) <= self.alpha
        m = pvals.size

        frames = []
        for k, (label, r) in enumerate(per_target):
            sl = slice(k * H, (k + 1) * H)
            frame = pd.DataFrame(
                {
                    "hypothesis": self.hypotheses_,
                    "separation_score": r["separation_score"],
                    "separation_pval": r["separation_pval"],
                    "regression_coef": r["coef"],
                    "regression_se": r["se"],
                    "regression_ci_low": r["ci_low"],
                    "regression_ci_high": r["ci_high"],
                    "regression_pval": r["regression_pval"],
                    "pval_corrected": corrected[sl],
                    "significant": significant[sl],
                    "feature_prevalence": r["prevalence"],
                    "n_with_concept": r["n_with_concept"],
                    "note": r["note"],
                }
            )
            if label is not None:
                frame.insert(0, "class", _plain(label))
            frames.append(frame)
            notes.extend(
                (f"[{label}] " if label is not None else "") + note for note in r["model_notes"]
            )
        self.table_ = pd.concat(frames, ignore_index=True)
        self.example_indices_ = _example_indices(A, self.hypotheses_)

        n_sig = int(significant.sum())
        corr = _CORRECTION_NAMES[self.correction]
        threshold = self.alpha / m if self.correction == "bonferroni" else None
        notes.append(
            f"{corr} correction over {m} tests (every hypothesis counts, tested or not)"
            + (f": significant when p < {threshold:.3g}" if threshold is not None else "")
            + f"; alpha = {self.alpha:g}; based on the {self.significance} p-values"
        )
        metrics: dict[str, Any] = {
            "task": self.task_,
            "pairwise": self.pairwise_,
            "model": per_target[0][1]["model"],
            "n": n,
            "n_hypotheses": H,
            "n_tests": m,
            "n_significant": n_sig,
            "alpha": float(self.alpha),
            "correction": self.correction,
            "threshold": threshold,
        }
        if self.task_ == "multiclass":
            per_class = {_plain(label): r["metrics"] for label, r in per_target}
            for key in ("auc", "auprc", "pseudo_r2"):
                metrics[key] = float(np.mean([v[key] for v in per_class.values()]))
            metrics["model"] = ", ".join(sorted({r["model"] for _l, r in per_target}))
            metrics["per_class"] = per_class
            notes.append("one-vs-rest: a separate model per class; AUC etc. are macro averages")
        else:
            metrics.update(per_target[0][1]["metrics"])
        metrics["notes"] = notes
        self.metrics_ = metrics
        return self

    # ----------------------------------------------------------- validation
    def _validate_annotations(self, annotations: Any) -> np.ndarray:
        if isinstance(annotations, pd.DataFrame):
            bad = [c for c in annotations.columns if not _is_numeric_or_bool(annotations[c])]
            if bad:
                raise TypeError(
                    f"Annotation columns {bad[:5]} are not numeric or boolean; annotations "
                    "must be 0/1 (or -1/0/1 for pairwise comparisons)."
                )
        elif not sp.issparse(annotations):
            arr = np.asarray(annotations)
            if arr.ndim == 1:
                raise ValueError(
                    "annotations must be 2-D (n_texts, n_hypotheses); for a single "
                    "hypothesis pass annotations.reshape(-1, 1)."
                )
        A = validate_data(
            self,
            annotations,
            accept_sparse=("csr", "csc", "coo"),
            dtype=np.float64,
            ensure_all_finite=False,
            ensure_min_samples=3,
            reset=True,
        )
        if sp.issparse(A):
            A = A.toarray()
        A = np.ascontiguousarray(A, dtype=np.float64)
        if not np.all(np.isfinite(A)):
            bad_rows = np.flatnonzero(~np.isfinite(A).all(axis=1))
            bad_cols = np.flatnonzero(~np.isfinite(A).all(axis=0))
            raise ValueError(
                f"annotations contain NaN or infinite values in {bad_rows.size} text(s) "
                f"(first rows {bad_rows[:5].tolist()}, columns {bad_cols[:5].tolist()}); "
                "drop those texts or re-annotate them before fitting."
            )
        return A

    def _resolve_pairwise(self, A: np.ndarray) -> bool:
        zero_one = (A == 0) | (A == 1)  # elementwise checks: np.unique would sort n * H values
        has_minus_one = bool((A == -1).any())
        pairwise = has_minus_one if self.pairwise == "auto" else bool(self.pairwise)
        ok = (zero_one | (A == -1)) if pairwise else zero_one
        if not ok.all():
            bad_cols = np.flatnonzero(~ok.all(axis=0))
            extra = np.unique(A[:, bad_cols][~ok[:, bad_cols]])
            cols = [self.hypotheses_[j] for j in bad_cols[:5]]
            kind = "-1/0/1 (pairwise)" if pairwise else "0/1"
            hint = (
                " For pairwise comparisons (A minus B) use -1/0/1 and pairwise=True or 'auto'."
                if not pairwise and set(extra.tolist()) <= {-1.0}
                else " Binarise scores first (e.g. annotations >= 0.5)."
            )
            raise ValueError(
                f"annotations must be {kind}; found values {extra[:5].tolist()} in hypotheses "
                f"{cols}.{hint}"
            )
        return pairwise

    def _resolve_names(self, annotations: Any, hypotheses: Any, H: int) -> list[str]:
        if hypotheses is not None:
            if isinstance(hypotheses, str):
                raise TypeError("hypotheses must be a sequence of strings, not one string.")
            names = list(hypotheses)
            if len(names) != H:
                raise ValueError(
                    f"hypotheses has {len(names)} names but annotations have {H} columns."
                )
            if not all(isinstance(h, str) for h in names):
                raise TypeError("hypotheses must all be strings.")
        elif isinstance(annotations, pd.DataFrame):
            names = [str(c) for c in annotations.columns]
        else:
            names = [f"h{j}" for j in range(H)]
        dupes = sorted({h for h in names if names.count(h) > 1})
        if dupes:
            raise ValueError(f"Hypothesis names must be unique; repeated: {dupes[:5]}.")
        return names

    def _resolve_task(self, y: np.ndarray) -> tuple[str, list[tuple[Any, np.ndarray]]]:
        task, classes = infer_task(
            y,
            self.task,
            single_value_hint="nothing can separate it. Check the target column and that "
            "the held-out split is not filtered to one class.",
        )
        if task == "regression":
            self.__dict__.pop("classes_", None)  # from an earlier classification fit
            return task, [(None, y.astype(np.float64))]
        self.classes_ = classes
        if task == "binary":
            if classes.size != 2:
                raise ValueError(
                    f"task='binary' needs exactly two distinct values in y; found "
                    f"{classes.size}. Use task='regression' or 'multiclass'."
                )
            return task, [(None, (y == classes[1]).astype(np.float64))]
        if self.pairwise_:
            raise ValueError(
                "Pairwise annotations need a binary or continuous target (A relative to B), "
                "not a multiclass one."
            )
        if classes.size < 3:
            raise ValueError("task='multiclass' needs at least three classes; use 'binary'.")
        return task, [(c, (y == c).astype(np.float64)) for c in classes]

    # -------------------------------------------------------------- analysis
    def _analyse(self, A: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Separation scores and the multivariate fit for one (binary or continuous) target."""
        n, H = A.shape
        binary = self.task_ != "regression"
        notes: list[list[str]] = [[] for _ in range(H)]
        model_notes: list[str] = []
        equal_var = self.ttest == "student"

        if self.pairwise_:
            pos = (A > 0).astype(np.float64)
            neg = (A < 0).astype(np.float64)
            test = two_group_ttest(pos, neg, y, equal_var=equal_var)
            separation = test.diff / 2.0
            n_with = (pos + neg).sum(axis=0)
        else:
            test = two_group_ttest(A, None, y, equal_var=equal_var)
            separation = test.diff
            n_with = test.n1
        for j, reason in enumerate(test.reason):
            if reason:
                notes[j].append(f"separation test undefined: {reason}")

        X = np.empty((n, H + 1))
        X[:, 0] = 1.0
        X[:, 1:] = A
        col_min, col_max = A.min(axis=0), A.max(axis=0)
        constant = [j for j in range(H) if col_min[j] == col_max[j]]
        for j in constant:
            value = col_min[j]
            notes[j].append(
                f"dropped from the regression: constant column (every value is {value:g})"
            )
        candidates = [j + 1 for j in range(H) if j not in constant]
        dropped, gram_all = collinear_columns(X, candidates)
        for col, partners in dropped.items():
            names = [("the intercept" if c == 0 else self.hypotheses_[c - 1]) for c in partners]
            notes[col - 1].append(
                "dropped from the regression: exactly collinear with " + ", ".join(names)
            )
        kept = [c for c in candidates if c not in dropped]
        if len(dropped) or constant:
            model_notes.append(
                f"{len(constant) + len(dropped)} hypothesis column(s) left out of the "
                "regression (constant or exactly collinear); see the table's note column"
            )

        separated: dict[int, str] = {}
        if binary:
            separated = separated_columns(X, y, kept, pairwise=self.pairwise_)
            if separated and self.logit_separation == "raise":
                listed = "; ".join(
                    f"{self.hypotheses_[c - 1]!r}: {d}" for c, d in separated.items()
                )
                raise ModelFitError(
                    f"Perfect or quasi-perfect separation in the logit ({listed}): the "
                    "maximum-likelihood coefficients are infinite. Use "
                    "logit_separation='firth' (penalised fit) or 'drop'."
                )
            if separated and self.logit_separation == "drop":
                for c, d in separated.items():
                    notes[c - 1].append(f"dropped from the regression: perfect separation ({d})")
                kept = [c for c in kept if c not in separated]
                model_notes.append(
                    f"{len(separated)} hypothesis column(s) perfectly separating y left out "
                    "of the logit"
                )
                separated = {}

        cols = [0, *kept]
        if n <= len(cols):
            raise ValueError(
                f"Only {n} texts for a regression with {len(cols)} parameters (intercept and "
                f"{len(kept)} hypotheses); annotate more texts than hypotheses + 1."
            )
        Xk = X if len(cols) == X.shape[1] else X[:, cols]
        if binary:
            fit = self._fit_logit(Xk, y, separated, cols, model_notes)
        else:
            where = {c: i for i, c in enumerate([0, *candidates])}
            idx = [where[c] for c in cols]
            gram = gram_all[np.ix_(idx, idx)]
            fit = fit_ols(Xk, y, cov_type=self.cov_type, ci_level=self.ci_level, gram=gram)

        coef = np.full(H, np.nan)
        se = np.full(H, np.nan)
        lo = np.full(H, np.nan)
        hi = np.full(H, np.nan)
        pval = np.full(H, np.nan)
        for pos_in_fit, c in enumerate(cols[1:], start=1):
            j = c - 1
            coef[j], se[j] = fit.params[pos_in_fit], fit.bse[pos_in_fit]
            lo[j], hi[j] = fit.ci_low[pos_in_fit], fit.ci_high[pos_in_fit]
            pval[j] = fit.pvalues[pos_in_fit]
            if c in separated:
                notes[j].append(
                    f"perfect separation ({separated[c]}): Firth-penalised coefficient, "
                    "profile penalised-likelihood p-value and interval"
                )
            elif fit.inference[pos_in_fit] == "plr":
                notes[j].append("profile penalised-likelihood p-value and interval")

        metrics: dict[str, Any] = {}
        if binary:
            metrics["auc"], metrics["auprc"] = ranking_metrics(y, fit.fitted)
            metrics["pseudo_r2"] = fit.stats["pseudo_r2"]
        else:
            metrics["r2"] = fit.stats["r2"]
            metrics["adj_r2"] = fit.stats["adj_r2"]
        model_notes.extend(fit.notes)
        prevalence = (A != 0).mean(axis=0)
        return {
            "separation_score": separation,
            "separation_pval": test.pval,
            "coef": coef,
            "se": se,
            "ci_low": lo,
            "ci_high": hi,
            "regression_pval": pval,
            "prevalence": prevalence,
            "n_with_concept": n_with.astype(np.int64),
            "note": ["; ".join(parts) for parts in notes],
            "metrics": metrics,
            "model": fit.model,
            "model_notes": model_notes,
        }

    def _fit_logit(
        self,
        Xk: np.ndarray,
        y: np.ndarray,
        separated: dict[int, str],
        cols: list[int],
        model_notes: list[str],
    ) -> RegressionFit:
        position = {c: i for i, c in enumerate(cols)}
        if separated:
            model_notes.append(
                "Firth-penalised logit (perfect separation by "
                + ", ".join(repr(self.hypotheses_[c - 1]) for c in separated)
                + "); Wald inference for the other hypotheses"
            )
            return fit_logit_firth(Xk, y, [position[c] for c in separated], ci_level=self.ci_level)
        fit, reason = fit_logit_mle(Xk, y, ci_level=self.ci_level)
        if fit is not None:
            return fit
        if self.logit_separation != "firth":
            raise ModelFitError(
                f"The logit maximum-likelihood fit failed ({reason}), which points to "
                "separation by a combination of hypotheses. Use logit_separation='firth'."
            )
        model_notes.append(
            f"Firth-penalised logit ({reason}, by a combination of hypotheses); profile "
            "penalised-likelihood inference for every hypothesis"
        )
        return fit_logit_firth(Xk, y, list(range(1, Xk.shape[1])), ci_level=self.ci_level)

    def _ttest_note(self) -> str:
        test = "Welch (unequal variances)" if self.ttest == "welch" else "Student (pooled)"
        if self.pairwise_:
            return (
                "separation score (pairwise) = (E[y | only A has it] - E[y | only B has it]) / 2,"
                f" tested with a two-sided {test} t-test between those two groups"
            )
        return (
            "separation score = E[y | concept] - E[y | no concept], tested with a two-sided "
            f"{test} t-test"
        )

    def _model_notes(self) -> list[str]:
        if self.task_ == "regression":
            return [
                f"OLS of y on all hypotheses with an intercept (Cholesky solve of X'X, "
                f"equal to statsmodels OLS); {self.cov_type} standard errors, t-tests; "
                f"{self.ci_level:.0%} confidence intervals"
            ]
        return [
            "logit of y on all hypotheses with an intercept; Wald z-tests; "
            f"{self.ci_level:.0%} confidence intervals; AUC/AUPRC are in-sample"
        ]

    # -------------------------------------------------------------- output
    def to_frame(self, sort_by: str | None = None, ascending: bool = False) -> pd.DataFrame:
        """The results table as a new DataFrame.

        Parameters
        ----------
        sort_by : str, default=None
            Column to sort by (e.g. ``"separation_score"``); None keeps input order.
        ascending : bool, default=False
            Sort order.

        Returns
        -------
        frame : pandas.DataFrame
            A copy of :attr:`table_`.
        """
        check_is_fitted(self, "table_")
        frame = self.table_.copy()
        if sort_by is not None:
            if sort_by not in frame.columns:
                raise ValueError(f"sort_by must be one of {list(frame.columns)}; got {sort_by!r}.")
            keys = ["class", sort_by] if "class" in frame.columns else [sort_by]
            frame = frame.sort_values(
                keys, ascending=[True, ascending][-len(keys) :], kind="stable"
            )
        return frame

    def summary(self) -> str:
        """One-line summary of the fit: n, significant count, overall metrics.

        Returns
        -------
        text : str
            E.g. ``"n=500; 1 of 3 hypotheses significant (Bonferroni, alpha=0.1); R²=0.21"``.
        """
        check_is_fitted(self, "metrics_")
        m = self.metrics_
        parts = [
            f"n={m['n']}",
            f"{m['n_significant']} of {m['n_tests']} "
            f"{'class-hypothesis pairs' if self.task_ == 'multiclass' else 'hypotheses'} "
            f"significant ({_CORRECTION_NAMES[m['correction']]} correction, alpha={m['alpha']:g})",
        ]
        if "r2" in m:
            parts.append(f"R²={m['r2']:.3f}")
        else:
            parts.append(
                f"AUC={m['auc']:.3f}, AUPRC={m['auprc']:.3f}, pseudo-R²={m['pseudo_r2']:.3f}"
            )
        parts.append(m["model"])
        return "; ".join(parts)

    def to_markdown(self, sort_by: str | None = "separation_score", digits: int = 3) -> str:
        """A markdown summary line and table, ready for a paper draft or a README.

        Parameters
        ----------
        sort_by : str or None, default="separation_score"
            Column to sort by (descending); None keeps input order.
        digits : int, default=3
            Significant digits of the numbers.

        Returns
        -------
        text : str
            Markdown text.
        """
        frame = self.to_frame(sort_by=sort_by)
        columns = [c for c in frame.columns if c != "note"]
        header = "| " + " | ".join(columns) + " |"
        rule = "|" + "|".join("---" if c in ("hypothesis", "class") else "---:" for c in columns)
        lines = [self.summary(), "", header, rule + "|"]
        for _, row in frame.iterrows():
            cells = [_format_cell(row[c], digits).replace("|", "\\|") for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [
            ((f"[{r['class']}] " if "class" in frame.columns else "") + r["hypothesis"], r["note"])
            for _, r in frame.iterrows()
            if r["note"]
        ]
        if notes:
            lines.append("")
            lines.extend(f"- {h}: {note}" for h, note in notes)
        return "\n".join(lines) + "\n"

    def plot(self, *, ax: Any = None, sort_by: str | None = "regression_coef"):
        """Forest plot of the regression coefficients with their confidence intervals.

        Significant hypotheses are drawn filled, the others hollow. Uses
        :class:`matplotlib.figure.Figure` directly, so the global pyplot backend
        and state are left alone.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            Axes to draw on; a new figure is made when None.
        sort_by : str or None, default="regression_coef"
            Order of the rows (largest at the top); None keeps input order.

        Returns
        -------
        fig : matplotlib.figure.Figure
            The figure holding the plot.
        """
        from sklearn_hypothesaes._report_html import forest_plot

        return forest_plot(self, ax=ax, sort_by=sort_by)

    def to_html(
        self,
        path: str | Path,
        examples: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        *,
        title: str = "Hypothesis report",
        n_examples: int = 3,
    ) -> Path:
        """Write one self-contained HTML file: summary, metrics, forest plot, table.

        The plot is embedded as a base64 PNG and the style inline; the file
        loads no script, font or other resource, so it opens offline and can be
        mailed as is.

        Parameters
        ----------
        path : str or Path
            Where to write the file.
        examples : mapping or sequence of str, default=None
            Example texts per hypothesis: either ``{hypothesis: [texts]}``, or
            the ``n`` texts the report was fitted on (in order), from which up
            to ``n_examples`` texts with each concept are shown.
        title : str, default="Hypothesis report"
            Page title.
        n_examples : int, default=3
            Maximum number of example texts per hypothesis.

        Returns
        -------
        path : Path
            The written file.
        """
        from sklearn_hypothesaes._report_html import write_html

        return write_html(self, path, examples, title=title, n_examples=n_examples)


# ---------------------------------------------------------------------- helpers
def _is_numeric_or_bool(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _validate_target(y: Any, n: int) -> np.ndarray:
    if y is None:
        raise ValueError("y is required: the target value of each annotated text.")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"y must be 1-D; got a DataFrame with {y.shape[1]} columns.")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series) and isinstance(y.dtype, pd.CategoricalDtype):
        y = y.astype(object)
    if isinstance(y, pd.Series):
        missing = y.isna().to_numpy()
        y_arr = y.to_numpy()
    else:
        y_arr = np.asarray(y)
        missing = pd.isna(y_arr) if y_arr.ndim == 1 else None
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        raise ValueError("y must be 1-D; got shape (n, 1). Pass y.ravel().")
    if y_arr.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {y_arr.shape}.")
    if y_arr.shape[0] != n:
        raise ValueError(
            f"annotations have {n} rows but y has {y_arr.shape[0]} values; they must "
            "describe the same texts in the same order."
        )
    if missing is not None and np.any(missing):
        rows = np.flatnonzero(missing)
        raise ValueError(
            f"y has {rows.size} missing value(s) (first rows {rows[:5].tolist()}); drop those "
            "texts from both annotations and y."
        )
    if y_arr.dtype.kind == "O":
        try:
            y_arr = y_arr.astype(np.float64)
        except (TypeError, ValueError):
            y_arr = y_arr.astype(str)
    if y_arr.dtype.kind == "f" and not np.all(np.isfinite(y_arr)):
        rows = np.flatnonzero(~np.isfinite(y_arr))
        raise ValueError(f"y has {rows.size} infinite value(s) (first rows {rows[:5].tolist()}).")
    return y_arr


def _plain(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar (for dict keys and table cells)."""
    return value.item() if isinstance(value, np.generic) else value


def _example_indices(A: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    out = {}
    mask_by_column = np.ascontiguousarray((A != 0).T)  # contiguous scans per column
    for j, name in enumerate(names):
        rows = np.flatnonzero(mask_by_column[j])
        if rows.size > _N_EXAMPLE_ROWS:
            rows = rows[np.linspace(0, rows.size - 1, _N_EXAMPLE_ROWS).round().astype(int)]
        out[name] = rows
    return out


def _format_cell(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if value != 0 and (abs(value) < 10**-(digits) or abs(value) >= 10**6):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)
