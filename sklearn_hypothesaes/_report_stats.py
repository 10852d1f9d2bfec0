"""Numerical kernels behind :class:`~sklearn_hypothesaes.report.HypothesisReport`.

Everything here works on plain numpy arrays and knows nothing about names,
tables or estimators:

- vectorised two-group t-tests (Welch or Student) for every annotation column;
- constant and exactly collinear column detection on the Gram matrix;
- the multivariate fits: statsmodels OLS / Logit, and a Firth-penalised logit
  (with profile penalised-likelihood tests and intervals) for separated data;
- multiple-testing corrections that count every submitted hypothesis.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

# A group variance below this fraction of the overall variance of y counts as zero:
# one-pass sums leave ~1e-16 residue where the exact variance is 0.
_ZERO_VARIANCE_RTOL = 1e-12
# A column whose squared residual, after projecting on the columns kept before it,
# is below this fraction of its squared norm is exactly collinear (annotations are
# small integers, so their Gram matrix is exact in float64).
_COLLINEAR_RTOL = 1e-9
# Logit coefficients beyond this magnitude (an odds ratio of e^15) on 0/1 or
# -1/0/1 features only arise from (quasi-)separation.
_SEPARATION_COEF = 15.0


class ModelFitError(RuntimeError):
    """The multivariate regression of the target on the hypotheses failed to fit."""


# --------------------------------------------------------------------------- #
# Separation scores: two-group t-tests, vectorised over columns
# --------------------------------------------------------------------------- #
@dataclass
class GroupTest:
    """Two-group comparison for every column (arrays of length H)."""

    diff: np.ndarray  # mean(group 1) - mean(group 0)
    pval: np.ndarray
    n1: np.ndarray
    n0: np.ndarray
    reason: list[str]  # why a p-value is missing, "" when present


def _group_sums(G: np.ndarray, yc: np.ndarray) -> tuple[np.ndarray, ...]:
    n = G.sum(axis=0)
    s = G.T @ yc
    q = G.T @ (yc * yc)
    return n, s, q


def two_group_ttest(
    G1: np.ndarray,
    G0: np.ndarray | None,
    y: np.ndarray,
    *,
    equal_var: bool = False,
) -> GroupTest:
    """t-test of ``y`` between the rows in ``G1[:, j]`` and in ``G0[:, j]``, per column.

    ``G1`` and ``G0`` are 0/1 float matrices (n, H); ``G0=None`` means the
    complement of ``G1``. Welch's unequal-variance test by default, Student's
    pooled-variance test with ``equal_var=True``; two-sided p-values. A p-value
    is NaN (with a reason) when a group holds fewer than two texts or when both
    groups have no variance at all.
    """
    yc = y - y.mean()  # centring keeps the one-pass variance accurate
    n1, s1, q1 = _group_sums(G1, yc)
    if G0 is None:
        n_tot, s_tot, q_tot = float(len(y)), float(yc.sum()), float(yc @ yc)
        n0, s0, q0 = n_tot - n1, s_tot - s1, q_tot - q1
    else:
        n0, s0, q0 = _group_sums(G0, yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = s1 / n1
        m0 = s0 / n0
        v1 = np.maximum(q1 - n1 * m1 * m1, 0.0) / (n1 - 1)
        v0 = np.maximum(q0 - n0 * m0 * m0, 0.0) / (n0 - 1)
        scale = max(float(np.var(y)), np.finfo(float).tiny)
        v1 = np.where(v1 <= _ZERO_VARIANCE_RTOL * scale, 0.0, v1)
        v0 = np.where(v0 <= _ZERO_VARIANCE_RTOL * scale, 0.0, v0)
        diff = m1 - m0
        if equal_var:
            df = n1 + n0 - 2
            sp2 = ((n1 - 1) * v1 + (n0 - 1) * v0) / df
            se = np.sqrt(sp2 * (1 / n1 + 1 / n0))
        else:
            a1, a0 = v1 / n1, v0 / n0
            se = np.sqrt(a1 + a0)
            df = (a1 + a0) ** 2 / (a1 * a1 / (n1 - 1) + a0 * a0 / (n0 - 1))
        t = diff / se
        pval = 2.0 * stats.t.sf(np.abs(t), df)
    reason = []
    for j in range(len(n1)):
        if n1[j] < 2 or n0[j] < 2:
            reason.append("fewer than 2 texts in a group")
        elif se[j] == 0:
            reason.append("no variance of y within either group")
        else:
            reason.append("")
    pval = np.where([r == "" for r in reason], pval, np.nan)
    diff = np.where((n1 > 0) & (n0 > 0), diff, np.nan)
    return GroupTest(diff=diff, pval=pval, n1=n1, n0=n0, reason=reason)


# --------------------------------------------------------------------------- #
# Design checks
# --------------------------------------------------------------------------- #
def collinear_columns(
    X: np.ndarray, candidates: list[int]
) -> tuple[dict[int, list[int]], np.ndarray]:
    """Columns of ``X`` (which starts with an intercept) exactly collinear with earlier ones.

    Walks the ``candidates`` in order after the intercept (column 0), keeping a
    column unless it is a linear combination of the intercept and the columns
    kept before it. Returns ``{dropped column: [columns it is a combination of]}``
    (0 meaning the intercept), and the Gram matrix of ``[0, *candidates]``.
    Works on the Gram matrix with an incremental Cholesky factor, so it costs
    one (n, p) x (p, n) product plus O(p^3).
    """
    cols = [0, *candidates]
    Xc = X if cols == list(range(X.shape[1])) else X[:, cols]  # avoid a copy when possible
    G = Xc.T @ Xc
    kept = [0]  # positions in cols
    L = np.array([[np.sqrt(G[0, 0])]])
    dropped: dict[int, list[int]] = {}
    for pos in range(1, len(cols)):
        g = G[kept, pos]
        ell = np.linalg.solve(L, g)
        resid = G[pos, pos] - ell @ ell
        if resid <= _COLLINEAR_RTOL * G[pos, pos]:
            coef = np.linalg.solve(L.T, ell)
            partners = [cols[kept[i]] for i in np.flatnonzero(np.abs(coef) > 1e-6)]
            dropped[cols[pos]] = partners
            continue
        k = L.shape[0]
        L_new = np.zeros((k + 1, k + 1))
        L_new[:k, :k] = L
        L_new[k, :k] = ell
        L_new[k, k] = np.sqrt(resid)
        L = L_new
        kept.append(pos)
    return dropped, G


def separated_columns(
    X: np.ndarray, y01: np.ndarray, candidates: list[int], *, pairwise: bool = True
) -> dict[int, str]:
    """Columns whose 2x2 (or 3x2) table with a binary target has an empty cell.

    Such a column alone makes the logit likelihood increase forever along its
    coefficient (quasi-complete separation): the maximum-likelihood estimate is
    infinite and its Wald p-value meaningless. Returns ``{column: description}``.
    """
    out: dict[int, str] = {}
    if not candidates:
        return out
    all_after_intercept = candidates == list(range(1, X.shape[1]))
    Xc = X[:, 1:] if all_after_intercept else X[:, candidates]  # a view when possible
    pos_cells = np.c_[y01, 1.0 - y01]
    if pairwise:
        has_pos = (Xc > 0).astype(np.float64)
        has_neg = (Xc < 0).astype(np.float64)
        np_, nn = (has_neg.T @ pos_cells).T  # other text's concept & positive / negative
        any_neg = (np_ + nn) > 0
    else:  # 0/1 columns: the indicator is the column itself
        has_pos = Xc
        np_ = nn = np.zeros(len(candidates))
        any_neg = np.zeros(len(candidates), dtype=bool)
    # Counts of the cells that matter, for all columns in one product each.
    pp, pn = (has_pos.T @ pos_cells).T  # concept & positive, concept & negative
    for k, j in enumerate(candidates):
        tail = " (and every pair favouring the other text is {})"
        # Direction +beta_j separates when no (x>0, y=0) and no (x<0, y=1) exist.
        if pn[k] == 0 and np_[k] == 0:
            out[j] = "every text with the concept is positive" + (
                tail.format("negative") if any_neg[k] else ""
            )
        elif pp[k] == 0 and nn[k] == 0:
            out[j] = "every text with the concept is negative" + (
                tail.format("positive") if any_neg[k] else ""
            )
    return out


# --------------------------------------------------------------------------- #
# Multivariate fits
# --------------------------------------------------------------------------- #
@dataclass
class RegressionFit:
    """Coefficient-level results of one multivariate fit (intercept first)."""

    params: np.ndarray
    bse: np.ndarray
    pvalues: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    fitted: np.ndarray  # fitted mean (OLS) or probability (logit)
    model: str
    stats: dict[str, float] = field(default_factory=dict)
    inference: list[str] = field(default_factory=list)  # per coefficient: "wald", "plr"
    notes: list[str] = field(default_factory=list)


def fit_ols(
    X: np.ndarray,
    y: np.ndarray,
    *,
    cov_type: str,
    ci_level: float,
    gram: np.ndarray | None = None,
) -> RegressionFit:
    """OLS of ``y`` on ``X`` (intercept included in ``X``).

    Solved from the Gram matrix ``X'X`` (usually already formed by
    :func:`collinear_columns`) by Cholesky with one step of iterative
    refinement: the columns are exactly independent 0/1 (or -1/0/1) indicators,
    so this matches statsmodels' SVD-based ``OLS`` (``pinv``) to ~1e-10 while
    costing a fraction of it. Standard errors, t-tests and intervals follow
    statsmodels' definitions (``use_t=True``), including the HC0-HC3 sandwich
    estimators.
    """
    n, p = X.shape
    df_resid = n - p
    if df_resid < 1:
        raise ModelFitError(f"OLS needs more texts ({n}) than parameters ({p}).")
    G = X.T @ X if gram is None else gram
    try:
        chol = np.linalg.cholesky(G)
    except np.linalg.LinAlgError as exc:
        raise ModelFitError(f"The OLS regression of y on the hypotheses failed: {exc}") from exc
    chol_inv = np.linalg.inv(chol)
    G_inv = chol_inv.T @ chol_inv
    beta = G_inv @ (X.T @ y)
    fitted = X @ beta
    beta = beta + G_inv @ (X.T @ (y - fitted))  # iterative refinement
    fitted = X @ beta
    resid = y - fitted
    ssr = float(resid @ resid)
    centred = y - y.mean()
    sst = float(centred @ centred)
    notes = []
    if cov_type == "nonrobust":
        cov = G_inv * (ssr / df_resid)
    else:
        omega = resid * resid
        if cov_type in ("HC2", "HC3"):
            leverage = np.einsum("ij,ij->i", X @ G_inv, X)
            with np.errstate(divide="ignore", invalid="ignore"):
                omega = omega / (1.0 - leverage) ** (1 if cov_type == "HC2" else 2)
            if not np.all(np.isfinite(omega)):
                notes.append(
                    f"{cov_type} standard errors are undefined for some coefficients (a "
                    "concept present in a single text has leverage 1); use "
                    "cov_type='nonrobust' or drop it"
                )
        elif cov_type == "HC1":
            omega = omega * (n / df_resid)
        meat = X.T @ (X * omega[:, None])
        cov = G_inv @ meat @ G_inv
    with np.errstate(invalid="ignore"):
        bse = np.sqrt(np.diag(cov))
        tvalues = beta / bse
    pvalues = 2 * stats.t.sf(np.abs(tvalues), df_resid)
    q = stats.t.ppf(0.5 + ci_level / 2, df_resid)
    r2 = 1.0 - ssr / sst
    return RegressionFit(
        params=beta,
        bse=bse,
        pvalues=pvalues,
        ci_low=beta - q * bse,
        ci_high=beta + q * bse,
        fitted=fitted,
        model="OLS",
        stats={"r2": r2, "adj_r2": 1.0 - (1.0 - r2) * (n - 1) / df_resid},
        inference=["wald"] * p,
        notes=notes,
    )


def _loglik_null(y01: np.ndarray) -> float:
    p = y01.mean()
    return float(len(y01) * (p * np.log(p) + (1 - p) * np.log1p(-p)))


def _logit_loglik(eta: np.ndarray, y01: np.ndarray) -> float:
    # log p = -log(1+e^-eta), log(1-p) = -log(1+e^eta)
    return float(-(y01 * np.logaddexp(0, -eta) + (1 - y01) * np.logaddexp(0, eta)).sum())


def fit_logit_mle(
    X: np.ndarray, y01: np.ndarray, *, ci_level: float, maxiter: int = 100
) -> tuple[RegressionFit | None, str]:
    """Maximum-likelihood logit with statsmodels.

    Returns ``(fit, "")`` or ``(None, reason)`` when the estimates point to
    separation (non-convergence, a perfect-separation warning, or coefficients
    of a size only separation produces). Any other failure raises
    :class:`ModelFitError`.
    """
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        HessianInversionWarning,
        PerfectSeparationError,
        PerfectSeparationWarning,
    )

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = Logit(y01, X).fit(disp=0, maxiter=maxiter, method="newton")
            bse = np.asarray(res.bse)
            pvalues = np.asarray(res.pvalues)
            ci = np.asarray(res.conf_int(alpha=1 - ci_level))
    except PerfectSeparationError:
        return None, "perfect separation reported by statsmodels"
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ModelFitError(
            f"The logistic regression of y on the hypotheses failed: {exc}"
        ) from exc
    kinds = {type(w.message) for w in caught}
    params = np.asarray(res.params)
    if PerfectSeparationWarning in kinds:
        return None, "perfect separation reported by statsmodels"
    if np.any(np.abs(params) > _SEPARATION_COEF) or not np.all(np.isfinite(bse)):
        return None, "diverging coefficients (quasi-complete separation)"
    if ConvergenceWarning in kinds or HessianInversionWarning in kinds:
        if not res.mle_retvals.get("converged", False):
            return None, "Newton iterations did not converge"
    return (
        RegressionFit(
            params=params,
            bse=bse,
            pvalues=pvalues,
            ci_low=ci[:, 0],
            ci_high=ci[:, 1],
            fitted=np.asarray(res.predict()),
            model="Logit",
            # McFadden's R² in closed form: statsmodels' prsquared refits the null
            # model with Nelder-Mead, which costs more than the model itself.
            stats={"pseudo_r2": float(1 - res.llf / _loglik_null(y01)), "llf": float(res.llf)},
            inference=["wald"] * X.shape[1],
        ),
        "",
    )


def _firth_state(X: np.ndarray, y01: np.ndarray, beta: np.ndarray):
    """Penalised log-likelihood, modified score and information at ``beta``."""
    eta = X @ beta
    p = 1.0 / (1.0 + np.exp(-eta))
    w = p * (1.0 - p)
    info = X.T @ (X * w[:, None])
    try:
        chol = np.linalg.cholesky(info)
    except np.linalg.LinAlgError:
        return None
    # Leverages of the weighted hat matrix: h_i = w_i x_i' I^-1 x_i.
    # Invert the small (p, p) factor, then one (n, p) x (p, p) product. (numpy's
    # small-matrix routines: scipy's triangular solve has a large fixed cost.)
    chol_inv = np.linalg.inv(chol)
    Z = (X * np.sqrt(w)[:, None]) @ chol_inv.T
    h = np.einsum("ij,ij->i", Z, Z)
    penalised = _logit_loglik(eta, y01) + np.log(np.diag(chol)).sum()
    score = X.T @ (y01 - p + h * (0.5 - p))
    return penalised, score, info, chol, p


def firth_logit(
    X: np.ndarray,
    y01: np.ndarray,
    *,
    fixed: dict[int, float] | None = None,
    start: np.ndarray | None = None,
    tol: float = 1e-8,
    maxiter: int = 200,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Firth's bias-reduced logistic regression (Firth 1993), by modified Newton steps.

    Maximises ``loglik(beta) + 0.5 * log det I(beta)``; the estimates stay
    finite under separation. ``fixed`` pins some coefficients (the profile
    penalised likelihood of :func:`firth_profile_pvalue` keeps the penalty of
    the full design, as R's ``logistf`` does). Returns ``(beta,
    penalised_loglik, information, fitted_probabilities)``.
    """
    p_dim = X.shape[1]
    fixed = fixed or {}
    free = np.array([j for j in range(p_dim) if j not in fixed])
    beta = np.zeros(p_dim) if start is None else np.array(start, dtype=float)
    for j, v in fixed.items():
        beta[j] = v
    state = _firth_state(X, y01, beta)
    if state is None:
        raise ModelFitError("The Firth-penalised logit has a singular information matrix.")
    for _ in range(maxiter):
        pen, score, info, _chol, _p = state
        try:
            step_free = np.linalg.solve(info[np.ix_(free, free)], score[free])
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ModelFitError(f"The Firth-penalised logit failed: {exc}") from exc
        # Cap the step (as logistf does) and halve it until the penalised likelihood rises.
        biggest = np.max(np.abs(step_free))
        if biggest > 5.0:
            step_free *= 5.0 / biggest
        step = np.zeros(p_dim)
        step[free] = step_free
        full_step = True
        for _halving in range(30):
            new_state = _firth_state(X, y01, beta + step)
            if new_state is not None and new_state[0] >= pen - 1e-10:
                break
            step /= 2.0
            full_step = False
        else:
            break
        beta = beta + step
        state = new_state
        # Converged when the step is negligible, or when a full Newton step no longer
        # changes the objective (fitted probabilities saturated at 0/1 leave some
        # directions flat to machine precision; the likelihood is then final).
        flat = full_step and abs(new_state[0] - pen) < 1e-10 * max(1.0, abs(pen))
        if np.max(np.abs(step)) < tol or flat:
            break
    else:
        raise ModelFitError(f"The Firth-penalised logit did not converge in {maxiter} iterations.")
    pen, _score, info, _chol, p = state
    return beta, pen, info, p


def firth_profile_pvalue(
    X: np.ndarray, y01: np.ndarray, j: int, beta: np.ndarray, pen: float
) -> float:
    """Penalised likelihood-ratio test of ``beta[j] = 0`` (chi-square, 1 df)."""
    start = beta.copy()
    start[j] = 0.0
    _b, pen0, _i, _p = firth_logit(X, y01, fixed={j: 0.0}, start=start)
    stat = max(2.0 * (pen - pen0), 0.0)
    return float(stats.chi2.sf(stat, 1))


def firth_profile_ci(
    X: np.ndarray,
    y01: np.ndarray,
    j: int,
    beta: np.ndarray,
    pen: float,
    se: float,
    ci_level: float,
) -> tuple[float, float]:
    """Profile penalised-likelihood confidence interval of ``beta[j]``."""
    crit = stats.chi2.ppf(ci_level, 1)

    def gap(b: float) -> float:
        start = beta.copy()
        start[j] = b
        _b, pen_b, _i, _p = firth_logit(X, y01, fixed={j: b}, start=start)
        return 2.0 * (pen - pen_b) - crit

    bounds = []
    for sign in (-1.0, 1.0):
        width = max(se, 0.5)
        far = beta[j] + sign * width
        for _ in range(40):
            if gap(far) > 0:
                break
            width *= 2.0
            far = beta[j] + sign * width
        else:
            bounds.append(sign * np.inf)
            continue
        lo, hi = sorted((beta[j], far))
        bounds.append(optimize.brentq(gap, lo, hi, xtol=1e-5))
    return float(bounds[0]), float(bounds[1])


def fit_logit_firth(
    X: np.ndarray, y01: np.ndarray, separated: list[int], *, ci_level: float
) -> RegressionFit:
    """Firth logit; profile penalised-likelihood inference for the ``separated`` columns.

    Wald statistics from the penalised information serve the other columns,
    whose likelihood is regular; for a separated column the Wald interval is
    badly misleading (Heinze & Schemper 2002), so its p-value and interval come
    from the profile penalised likelihood.
    """
    beta, pen, info, p = firth_logit(X, y01)
    cov = np.linalg.inv(info)
    bse = np.sqrt(np.diag(cov))
    z = stats.norm.ppf(0.5 + ci_level / 2)
    pvalues = 2 * stats.norm.sf(np.abs(beta / bse))
    ci_low, ci_high = beta - z * bse, beta + z * bse
    inference = ["wald"] * X.shape[1]
    for j in separated:
        pvalues[j] = firth_profile_pvalue(X, y01, j, beta, pen)
        ci_low[j], ci_high[j] = firth_profile_ci(X, y01, j, beta, pen, bse[j], ci_level)
        inference[j] = "plr"
    eta = X @ beta
    llf = _logit_loglik(eta, y01)
    return RegressionFit(
        params=beta,
        bse=bse,
        pvalues=pvalues,
        ci_low=ci_low,
        ci_high=ci_high,
        fitted=p,
        model="Firth logit",
        stats={"pseudo_r2": float(1 - llf / _loglik_null(y01)), "llf": llf},
        inference=inference,
    )


def ranking_metrics(y01: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """ROC AUC (Mann-Whitney, ties counted half) and average precision (sklearn's definition)."""
    n_pos = float(y01.sum())
    n_neg = len(y01) - n_pos
    ranks = stats.rankdata(score)
    auc = (ranks[y01 == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-score, kind="mergesort")
    s_sorted, y_sorted = score[order], y01[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return float(auc), ap


# --------------------------------------------------------------------------- #
# Multiple testing
# --------------------------------------------------------------------------- #
def adjust_pvalues(pvals: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values counting every entry as a test, NaN ones included.

    A missing p-value is treated as 1 (a test that cannot reject), so a
    hypothesis that could not be tested never makes the others easier to pass.
    NaN stays NaN in the output. Methods: ``"bonferroni"``, ``"holm"``,
    ``"fdr_bh"`` (Benjamini-Hochberg), ``"none"``.
    """
    pvals = np.asarray(pvals, dtype=float)
    m = pvals.size
    out = np.full(m, np.nan)
    finite = np.isfinite(pvals)
    if method == "none":
        return pvals.copy()
    filled = np.where(finite, pvals, 1.0)
    order = np.argsort(filled, kind="stable")
    ranked = filled[order]
    if method == "bonferroni":
        adj = np.minimum(filled * m, 1.0)
        out[finite] = adj[finite]
        return out
    if method == "holm":
        factors = m - np.arange(m)
        adj_ranked = np.minimum(np.maximum.accumulate(ranked * factors), 1.0)
    elif method == "fdr_bh":
        factors = m / np.arange(1, m + 1)
        adj_ranked = np.minimum(np.minimum.accumulate((ranked * factors)[::-1])[::-1], 1.0)
    else:
        raise ValueError(f"Unknown correction {method!r}.")
    adj = np.empty(m)
    adj[order] = adj_ranked
    out[finite] = adj[finite]
    return out
