"""Tests of HypothesisReport: numbers, calibration, hard cases, output files."""

from __future__ import annotations

import base64
import io
import pickle
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize, stats
from sklearn.base import clone
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils._param_validation import InvalidParameterError
from statsmodels.stats.multitest import multipletests

from sklearn_hypothesaes._report_stats import (
    adjust_pvalues,
    firth_logit,
    two_group_ttest,
)
from sklearn_hypothesaes.report import HypothesisReport, ModelFitError


def _binary_data(n=1500, H=6, seed=0, effects=(0.8, -0.6)):
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.1, 0.5, H)
    A = (rng.random((n, H)) < prevalence).astype(int)
    eta = -0.3 + A[:, : len(effects)] @ np.array(effects)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return A, y


def _regression_data(n=800, H=6, seed=0, effects=(0.5, -0.3)):
    rng = np.random.default_rng(seed)
    A = (rng.random((n, H)) < rng.uniform(0.1, 0.6, H)).astype(int)
    y = A[:, : len(effects)] @ np.array(effects) + rng.standard_t(5, size=n)
    return A, y


# --------------------------------------------------------------------------- #
# Numbers agree with direct scipy / statsmodels computations
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC1", "HC2", "HC3"])
@pytest.mark.parametrize("ttest", ["welch", "student"])
def test_regression_numbers_match_scipy_and_statsmodels(cov_type, ttest):
    A, y = _regression_data()
    report = HypothesisReport(cov_type=cov_type, ttest=ttest).fit(A, y)
    table = report.table_
    assert report.task_ == "regression"
    ref = sm.OLS(y, sm.add_constant(A.astype(float))).fit(cov_type=cov_type, use_t=True)
    np.testing.assert_allclose(table["regression_coef"], ref.params[1:], rtol=1e-9)
    np.testing.assert_allclose(table["regression_se"], ref.bse[1:], rtol=1e-9)
    np.testing.assert_allclose(table["regression_pval"], ref.pvalues[1:], rtol=1e-7)
    ci = ref.conf_int(alpha=0.05)
    np.testing.assert_allclose(table["regression_ci_low"], ci[1:, 0], rtol=1e-9)
    np.testing.assert_allclose(table["regression_ci_high"], ci[1:, 1], rtol=1e-9)
    assert report.metrics_["r2"] == pytest.approx(ref.rsquared, rel=1e-10)
    for j in range(A.shape[1]):
        with_c, without = y[A[:, j] == 1], y[A[:, j] == 0]
        assert table["separation_score"][j] == pytest.approx(with_c.mean() - without.mean())
        expected = stats.ttest_ind(with_c, without, equal_var=(ttest == "student")).pvalue
        assert table["separation_pval"][j] == pytest.approx(expected, rel=1e-7)
        assert table["feature_prevalence"][j] == pytest.approx(A[:, j].mean())
    bonf = np.minimum(ref.pvalues[1:] * A.shape[1], 1)
    np.testing.assert_allclose(table["pval_corrected"], bonf, rtol=1e-7)
    np.testing.assert_array_equal(table["significant"], ref.pvalues[1:] < 0.1 / A.shape[1])


def test_logit_numbers_match_statsmodels_and_sklearn():
    A, y = _binary_data()
    report = HypothesisReport(ci_level=0.9).fit(A, y)
    ref = sm.Logit(y, sm.add_constant(A.astype(float))).fit(disp=0)
    table = report.table_
    assert report.task_ == "binary" and report.metrics_["model"] == "Logit"
    np.testing.assert_allclose(table["regression_coef"], ref.params[1:], rtol=1e-6)
    np.testing.assert_allclose(table["regression_se"], ref.bse[1:], rtol=1e-6)
    np.testing.assert_allclose(table["regression_pval"], ref.pvalues[1:], rtol=1e-5)
    ci = ref.conf_int(alpha=0.1)
    np.testing.assert_allclose(table["regression_ci_low"], ci[1:, 0], rtol=1e-6)
    assert report.metrics_["pseudo_r2"] == pytest.approx(ref.prsquared, rel=1e-8)
    pred = ref.predict()
    assert report.metrics_["auc"] == pytest.approx(roc_auc_score(y, pred), rel=1e-9)
    assert report.metrics_["auprc"] == pytest.approx(average_precision_score(y, pred), rel=1e-9)
    for j in range(A.shape[1]):
        expected = stats.ttest_ind(y[A[:, j] == 1], y[A[:, j] == 0], equal_var=False).pvalue
        assert table["separation_pval"][j] == pytest.approx(expected, rel=1e-7)


def test_binary_labels_are_encoded_with_the_larger_label_positive():
    A, y = _binary_data(seed=3)
    labels = np.where(y == 1, "yes", "no")
    as_text = HypothesisReport().fit(A, labels)
    as_int = HypothesisReport().fit(A, y)
    assert list(as_text.classes_) == ["no", "yes"]
    pd.testing.assert_frame_equal(as_text.table_, as_int.table_)


@pytest.mark.parametrize("method", ["bonferroni", "holm", "fdr_bh"])
def test_corrections_match_statsmodels(method):
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, 40) ** 2
    np.testing.assert_allclose(adjust_pvalues(p, method), multipletests(p, method=method)[1])
    # A missing p-value counts as a test that cannot reject (p = 1) and stays missing.
    p_nan = p.copy()
    p_nan[[3, 17]] = np.nan
    filled = np.where(np.isnan(p_nan), 1.0, p_nan)
    expected = multipletests(filled, method=method)[1]
    got = adjust_pvalues(p_nan, method)
    assert np.isnan(got[[3, 17]]).all()
    keep = ~np.isnan(p_nan)
    np.testing.assert_allclose(got[keep], expected[keep])


@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30),
)
def test_correction_ordering_property(pvals):
    p = np.array(pvals)
    bonf, holm, bh = (adjust_pvalues(p, m) for m in ("bonferroni", "holm", "fdr_bh"))
    assert np.all(bh <= holm + 1e-12) and np.all(holm <= bonf + 1e-12)
    assert np.all(bh >= p - 1e-12) and np.all(bonf <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(bh[order]) >= -1e-12)  # adjusted p-values keep the order


@given(
    st.integers(0, 2**32 - 1),
    st.integers(6, 60),
    st.booleans(),
)
def test_vectorised_ttest_matches_scipy_property(seed, n, equal_var):
    rng = np.random.default_rng(seed)
    G = (rng.random((n, 4)) < 0.4).astype(float)
    G[:3, :] = 1.0
    G[3:6, :] = 0.0  # at least 3 texts in each group
    y = rng.normal(size=n) * rng.choice([1e-3, 1, 1e3]) + rng.choice([0, 1e4])
    res = two_group_ttest(G, None, y, equal_var=equal_var)
    for j in range(4):
        ref = stats.ttest_ind(y[G[:, j] == 1], y[G[:, j] == 0], equal_var=equal_var)
        assert res.pval[j] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


# --------------------------------------------------------------------------- #
# Calibration under the null, FDR, power
# --------------------------------------------------------------------------- #
def _binomial_upper(trials: int, rate: float, level: float = 1e-3) -> int:
    """Largest count of a Binomial(trials, rate) exceeded with probability < level."""
    return int(stats.binom.ppf(1 - level, trials, rate))


@pytest.mark.parametrize("binary", [False, True], ids=["ols", "logit"])
def test_bonferroni_controls_familywise_error_under_the_null(binary):
    # y independent of the annotations: the chance that any hypothesis is called
    # significant must be <= alpha. With R simulated data sets the number of such
    # data sets is at most Binomial(R, alpha); the test fails only if the count
    # exceeds that distribution's 99.9% quantile (a one-sided 0.1% Monte-Carlo test).
    R, n, H, alpha = 300, 300, 10, 0.1
    rng = np.random.default_rng(2024 + binary)
    A = (rng.random((R, n, H)) < rng.uniform(0.1, 0.5, (R, 1, H))).astype(np.int8)
    Y = (rng.random((R, n)) < 0.4).astype(int) if binary else rng.normal(size=(R, n))
    any_corrected = any_raw = 0
    for r in range(R):
        report = HypothesisReport(alpha=alpha).fit(A[r], Y[r])
        any_corrected += bool(report.table_["significant"].any())
        any_raw += bool((report.table_["regression_pval"] < alpha).any())
    bound = _binomial_upper(R, alpha)
    assert any_corrected <= bound
    # The check is not vacuous: without correction the family-wise rate is ~1-(1-alpha)^H.
    assert any_raw > bound


def test_benjamini_hochberg_controls_fdr_and_finds_planted_effects():
    R, n, H, q, planted = 200, 400, 10, 0.1, 3
    rng = np.random.default_rng(7)
    A = (rng.random((R, n, H)) < 0.3).astype(np.int8)
    Y = 0.45 * A[:, :, :planted].sum(axis=2) + rng.normal(size=(R, n))
    fdp, power = np.empty(R), np.empty(R)
    for r in range(R):
        sig = HypothesisReport(alpha=q, correction="fdr_bh").fit(A[r], Y[r]).table_["significant"]
        sig = sig.to_numpy()
        false = sig[planted:].sum()
        fdp[r] = false / max(sig.sum(), 1)
        power[r] = sig[:planted].mean()
    # FDR = E[FDP] <= q (m0/m q for independent tests); one-sided 0.1% CLT bound.
    assert fdp.mean() <= q + stats.norm.ppf(0.999) * fdp.std(ddof=1) / np.sqrt(R)
    assert power.mean() > 0.9


def test_power_planted_effects_are_found_and_nulls_are_not():
    rng = np.random.default_rng(11)
    n, H = 3000, 12
    A = (rng.random((n, H)) < 0.25).astype(int)
    y = 0.3 * A[:, 0] - 0.25 * A[:, 1] + 0.2 * A[:, 2] + rng.normal(size=n)
    table = HypothesisReport().fit(A, y).table_
    assert table["significant"][:3].all()
    assert np.sign(table["regression_coef"][:3]).tolist() == [1, -1, 1]
    assert table["significant"][3:].sum() <= 1


# --------------------------------------------------------------------------- #
# Hard cases: separation, constant and collinear columns
# --------------------------------------------------------------------------- #
def _separated_data(seed=5, n=600):
    rng = np.random.default_rng(seed)
    A = (rng.random((n, 4)) < 0.3).astype(int)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.7 * A[:, 0] - 0.4)))).astype(int)
    A[:, 3] = 0
    A[:12, 3] = 1
    y[:12] = 1  # every text with concept 3 is positive: quasi-complete separation
    return A, y


def test_perfect_separation_gets_a_firth_fit_not_a_bogus_pvalue():
    A, y = _separated_data()
    # The unpenalised logit "converges" to a huge coefficient with a useless p-value.
    with pytest.warns(Warning):
        mle = sm.Logit(y, sm.add_constant(A.astype(float))).fit(disp=0, maxiter=100)
        assert abs(mle.params[4]) > 10 and mle.pvalues[4] > 0.9
    report = HypothesisReport().fit(A, y, hypotheses=["a", "b", "c", "always positive"])
    row = report.table_.set_index("hypothesis").loc["always positive"]
    assert report.metrics_["model"] == "Firth logit"
    assert 1.0 < row["regression_coef"] < 8.0
    assert row["regression_pval"] < 1e-3 and bool(row["significant"])
    assert row["regression_ci_low"] > 0 and np.isfinite(row["regression_ci_high"])
    assert "perfect separation" in row["note"] and "profile penalised-likelihood" in row["note"]
    assert any("Firth" in note for note in report.metrics_["notes"])
    # Profile-likelihood p-value agrees with a brute-force constrained optimisation.
    X = sm.add_constant(A.astype(float))
    full = -optimize.minimize(lambda b: -_penalised_loglik(X, y, b), np.zeros(5)).fun
    restricted = -optimize.minimize(
        lambda b: -_penalised_loglik(X, y, np.r_[b, 0.0]), np.zeros(4)
    ).fun
    expected = stats.chi2.sf(2 * (full - restricted), 1)
    assert row["regression_pval"] == pytest.approx(expected, rel=1e-3)


def _penalised_loglik(X, y, beta):
    eta = X @ beta
    p = 1 / (1 + np.exp(-eta))
    info = X.T @ (X * (p * (1 - p))[:, None])
    ll = -(y * np.logaddexp(0, -eta) + (1 - y) * np.logaddexp(0, eta)).sum()
    return ll + 0.5 * np.linalg.slogdet(info)[1]


def test_firth_on_a_two_by_two_table_equals_the_haldane_correction():
    # For one binary covariate the Firth estimate is the log odds ratio of the
    # table with 0.5 added to every cell, even when a cell is empty.
    x = np.r_[np.ones(20), np.zeros(30)]
    y = np.r_[np.ones(20), np.ones(9), np.zeros(21)]
    X = np.c_[np.ones_like(x), x]
    beta, *_ = firth_logit(X, y)
    a, b, c, d = 20 + 0.5, 0 + 0.5, 9 + 0.5, 21 + 0.5
    assert beta[1] == pytest.approx(np.log(a * d / (b * c)), rel=1e-6)


def test_separation_can_raise_or_drop():
    A, y = _separated_data()
    with pytest.raises(ModelFitError, match="separation"):
        HypothesisReport(logit_separation="raise").fit(A, y)
    report = HypothesisReport(logit_separation="drop").fit(A, y)
    row = report.table_.iloc[3]
    assert np.isnan(row["regression_pval"]) and not row["significant"]
    assert "dropped from the regression: perfect separation" in row["note"]
    ref = sm.Logit(y, sm.add_constant(A[:, :3].astype(float))).fit(disp=0)
    np.testing.assert_allclose(report.table_["regression_coef"][:3], ref.params[1:], rtol=1e-6)


def test_separation_by_a_combination_of_hypotheses_is_detected():
    rng = np.random.default_rng(0)
    A = (rng.random((150, 3)) < 0.5).astype(int)
    y = (A[:, 0] & A[:, 1]).astype(int)  # no single 2x2 table has an empty cell
    report = HypothesisReport().fit(A, y)
    assert report.metrics_["model"] == "Firth logit"
    assert np.isfinite(report.table_["regression_coef"]).all()
    assert report.table_["note"].str.contains("profile penalised-likelihood").all()
    with pytest.raises(ModelFitError, match="combination"):
        HypothesisReport(logit_separation="drop").fit(A, y)


def test_constant_and_collinear_columns_are_dropped_with_notes():
    A, y = _regression_data(H=4)
    zeros = np.zeros((len(y), 1), dtype=int)
    ones = np.ones((len(y), 1), dtype=int)
    dup = A[:, [1]]
    complement = 1 - A[:, [2]]
    A_full = np.hstack([A, zeros, ones, dup, complement])
    names = ["a", "b", "c", "d", "never", "always", "b again", "not c"]
    report = HypothesisReport().fit(A_full, y, hypotheses=names)
    table = report.table_.set_index("hypothesis")
    assert "constant column (every value is 0)" in table.loc["never", "note"]
    assert "constant column (every value is 1)" in table.loc["always", "note"]
    assert "exactly collinear with b" in table.loc["b again", "note"]
    assert "exactly collinear with the intercept, c" in table.loc["not c", "note"]
    dropped = ["never", "always", "b again", "not c"]
    assert table.loc[dropped, "regression_coef"].isna().all()
    assert not table.loc[dropped, "significant"].any()
    ref = sm.OLS(y, sm.add_constant(A.astype(float))).fit()
    np.testing.assert_allclose(table.loc[list("abcd"), "regression_coef"], ref.params[1:])
    # Every submitted hypothesis counts in the correction.
    assert report.metrics_["n_tests"] == 8
    np.testing.assert_allclose(
        table.loc[list("abcd"), "pval_corrected"], np.minimum(ref.pvalues[1:] * 8, 1)
    )
    # The duplicate still has its own separation score.
    assert table.loc["b again", "separation_score"] == table.loc["b", "separation_score"]


# --------------------------------------------------------------------------- #
# Pairwise and multiclass targets
# --------------------------------------------------------------------------- #
def test_pairwise_effect_and_test_are_consistent_and_position_bias_free():
    rng = np.random.default_rng(3)
    n = 4000
    P = rng.choice([-1, 0, 1], size=(n, 3), p=[0.25, 0.5, 0.25])
    # Text A wins 70% of the time by position alone; concept 0 adds 0.15 win probability.
    y = (rng.random(n) < 0.7 + 0.15 * P[:, 0]).astype(int)
    report = HypothesisReport().fit(P, y)
    assert report.pairwise_ and report.task_ == "binary"
    table = report.table_
    for j in range(3):
        plus, minus = y[P[:, j] == 1], y[P[:, j] == -1]
        assert table["separation_score"][j] == pytest.approx((plus.mean() - minus.mean()) / 2)
        welch = stats.ttest_ind(plus, minus, equal_var=False).pvalue
        assert table["separation_pval"][j] == pytest.approx(welch, rel=1e-7)
        assert table["feature_prevalence"][j] == pytest.approx(np.mean(P[:, j] != 0))
    assert table["separation_score"][0] == pytest.approx(0.15, abs=0.03)
    assert abs(table["separation_score"][1]) < 0.03  # no effect despite position bias
    ref = sm.Logit(y, sm.add_constant(P.astype(float))).fit(disp=0)
    np.testing.assert_allclose(table["regression_coef"], ref.params[1:], rtol=1e-6)
    assert table["significant"].tolist() == [True, False, False]


def test_multiclass_is_one_vs_rest_with_correction_across_classes():
    rng = np.random.default_rng(4)
    n, H = 1200, 3
    A = (rng.random((n, H)) < 0.3).astype(int)
    labels = np.array(["econ", "health", "sport"])
    logits = np.c_[1.2 * A[:, 0], 1.2 * A[:, 1], np.zeros(n)]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = labels[(rng.random((n, 1)) > prob.cumsum(axis=1)).sum(axis=1)]
    report = HypothesisReport().fit(A, y)
    assert report.task_ == "multiclass"
    table = report.table_
    assert table.shape[0] == 3 * H and table["class"].tolist() == list(np.repeat(labels, H))
    assert report.metrics_["n_tests"] == 9
    sport = table[table["class"] == "sport"]
    ref = sm.Logit((y == "sport").astype(int), sm.add_constant(A.astype(float))).fit(disp=0)
    np.testing.assert_allclose(sport["regression_coef"], ref.params[1:], rtol=1e-6)
    np.testing.assert_allclose(sport["pval_corrected"], np.minimum(ref.pvalues[1:] * 9, 1))
    assert set(report.metrics_["per_class"]) == set(labels)
    econ = table[table["class"] == "econ"].set_index("hypothesis")
    assert econ.loc["h0", "significant"] and econ.loc["h0", "regression_coef"] > 0


def test_integer_ratings_default_to_regression():
    A, _ = _regression_data()
    stars = np.random.default_rng(0).integers(1, 6, size=len(A))
    assert HypothesisReport().fit(A, stars).task_ == "regression"
    assert HypothesisReport(task="multiclass").fit(A, stars).table_.shape[0] == 5 * A.shape[1]


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def test_dataframe_sparse_and_bool_inputs_agree():
    A, y = _regression_data()
    names = [f"concept {j}" for j in range(A.shape[1])]
    dense = HypothesisReport().fit(A, y, hypotheses=names).table_
    frame = HypothesisReport().fit(pd.DataFrame(A.astype(bool), columns=names), pd.Series(y))
    sparse = HypothesisReport().fit(sp.csr_matrix(A), y, hypotheses=names).table_
    pd.testing.assert_frame_equal(dense, frame.table_)
    pd.testing.assert_frame_equal(dense, sparse)
    assert frame.hypotheses_ == names and list(frame.feature_names_in_) == names


@pytest.mark.parametrize(
    ("annotations", "y", "kwargs", "error", "match"),
    [
        (np.zeros((10, 2)), np.arange(9.0), {}, ValueError, "10 rows but y has 9"),
        (np.full((10, 2), 0.5), np.arange(10.0), {}, ValueError, r"must be 0/1.*0\.5"),
        (np.r_[np.eye(2), [[2, 0]] * 8], np.arange(10.0), {}, ValueError, "values \\[2.0\\]"),
        (np.r_[[[np.nan, 0]], np.eye(2)[[0] * 9]], np.arange(10.0), {}, ValueError, "NaN"),
        (np.eye(10)[:, :3], np.r_[np.nan, np.arange(9.0)], {}, ValueError, "missing"),
        (np.eye(10)[:, :3], np.ones(10), {}, ValueError, "single value"),
        (np.ones(10), np.arange(10.0), {}, ValueError, "reshape"),
        (np.eye(10)[:, :3], np.arange(10.0), {"hypotheses": ["a"]}, ValueError, "3 columns"),
        (np.eye(10)[:, :2], np.arange(10.0), {"hypotheses": ["a", "a"]}, ValueError, "unique"),
        (np.eye(10)[:, :2], np.arange(10.0), {"hypotheses": "ab"}, TypeError, "one string"),
        (np.eye(4)[:, :3], np.arange(4.0), {}, ValueError, "annotate more texts"),
        (-np.eye(10)[:, :2], np.arange(10) % 2, {"_pairwise": False}, ValueError, "pairwise"),
        (-np.eye(10)[:, :2], np.arange(10) % 3, {"_task": "multiclass"}, ValueError, "multiclass"),
        (
            np.eye(10)[:, :2],
            np.array(list("abcdeabcde")),
            {"_task": "regression"},
            ValueError,
            "numeric",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(annotations, y, kwargs, error, match):
    params = {k[1:]: v for k, v in kwargs.items() if k.startswith("_")}
    fit_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    with pytest.raises(error, match=match):
        HypothesisReport(**params).fit(annotations, y, **fit_kwargs)


def test_invalid_parameters_are_rejected_at_fit():
    A, y = _regression_data()
    for params in ({"alpha": 1.5}, {"correction": "sidak"}, {"cov_type": "HC9"}):
        with pytest.raises(InvalidParameterError):
            HypothesisReport(**params).fit(A, y)


def test_sklearn_conventions_clone_and_pickle():
    A, y = _binary_data()
    report = HypothesisReport(alpha=0.05, correction="holm")
    assert clone(report).get_params() == report.get_params()
    assert report.fit(A, y) is report
    restored = pickle.loads(pickle.dumps(report))
    pd.testing.assert_frame_equal(restored.table_, report.table_)
    assert restored.metrics_["n_significant"] == report.metrics_["n_significant"]


# --------------------------------------------------------------------------- #
# Output: markdown, plot, HTML
# --------------------------------------------------------------------------- #
def test_markdown_lists_every_hypothesis_and_note():
    A, y = _separated_data()
    names = ["waits", "price", "decor", "always positive"]
    text = HypothesisReport().fit(A, y, hypotheses=names).to_markdown()
    assert text.startswith("n=600;")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(names)
    assert all(any(f"| {h} |" in row for row in rows) for h in names)
    assert "- always positive: perfect separation" in text


def test_plot_returns_a_figure_without_touching_pyplot_state():
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    A, y = _regression_data()
    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    fig = HypothesisReport().fit(A, y).plot()
    assert isinstance(fig, Figure)
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == A.shape[1]
    filled = ax.collections[1].get_offsets()  # significant points
    assert len(filled) == 2


class _ResourceCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.resources: list[str] = []
        self.cells: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster"):
                self.resources.append(value or "")
        self._in_td = tag == "td"

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def test_html_is_self_contained_with_plot_table_and_examples(tmp_path):
    from matplotlib.image import imread

    A, y = _separated_data()
    names = ["waits", "price", "decor", "<b>always</b> positive"]
    texts = [f"review {i} with <script>alert(1)</script>" for i in range(len(y))]
    report = HypothesisReport().fit(A, y, hypotheses=names)
    path = report.to_html(tmp_path / "report.html", examples=texts)
    html_text = path.read_text(encoding="utf-8")
    parser = _ResourceCollector()
    parser.feed(html_text)
    # Nothing to fetch: no scripts, stylesheets or external references.
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.resources and all(
        r.startswith("data:image/png;base64,") for r in parser.resources
    )
    assert not re.search(r"https?://|url\(|@import", html_text)
    # The embedded plot is a real PNG.
    payload = parser.resources[0].split(",", 1)[1]
    png = base64.b64decode(payload)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and imread(io.BytesIO(png)).shape[0] > 100
    # The table and the examples are there, escaped.
    for name in names:
        assert name in parser.cells
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert f"review {report.example_indices_['waits'][0]} with" in html_text
    assert "Firth" in html_text


def test_html_examples_by_mapping_and_errors(tmp_path):
    A, y = _regression_data(H=2)
    report = HypothesisReport().fit(A, y, hypotheses=["waits", "price"])
    path = report.to_html(
        tmp_path / "r.html", {"waits": ["a long wait", "x", "y", "z"]}, n_examples=2
    )
    text = path.read_text()
    assert "a long wait" in text and "<blockquote>y</blockquote>" not in text
    with pytest.raises(ValueError, match="fitted on"):
        report.to_html(tmp_path / "r.html", ["too", "few"])
    with pytest.raises(ValueError, match="unknown hypotheses"):
        report.to_html(tmp_path / "r.html", {"nope": ["x"]})


@given(st.integers(0, 2**32 - 1), st.integers(4, 200), st.booleans())
def test_ranking_metrics_match_sklearn_property(seed, n, ties):
    from sklearn_hypothesaes._report_stats import ranking_metrics

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0.0, 1.0]
    score = rng.integers(0, 4, n) / 4 if ties else rng.random(n)
    auc, ap = ranking_metrics(y, score)
    assert auc == pytest.approx(roc_auc_score(y, score), rel=1e-12)
    assert ap == pytest.approx(average_precision_score(y, score), rel=1e-12)


def test_significance_can_use_the_separation_tests_and_other_corrections():
    A, y = _regression_data()
    H = A.shape[1]
    sep = HypothesisReport(significance="separation").fit(A, y).table_
    np.testing.assert_allclose(sep["pval_corrected"], np.minimum(sep["separation_pval"] * H, 1))
    holm = HypothesisReport(correction="holm").fit(A, y)
    expected = multipletests(holm.table_["regression_pval"], method="holm")[1]
    np.testing.assert_allclose(holm.table_["pval_corrected"], expected)
    assert holm.metrics_["threshold"] is None
    raw = HypothesisReport(correction="none").fit(A, y).table_
    np.testing.assert_array_equal(raw["pval_corrected"], raw["regression_pval"])
    with pytest.raises(ValueError, match="sort_by"):
        holm.to_frame(sort_by="no such column")
