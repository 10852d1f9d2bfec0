"""Tests for NeuronSelector (sklearn_hypothesaes.selection)."""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_hypothesaes.datasets import make_planted_embeddings
from sklearn_hypothesaes.exceptions import SelectionWarning
from sklearn_hypothesaes.selection import NeuronSelector

METHODS = ["lasso", "correlation", "separation"]


@pytest.fixture(scope="module")
def planted():
    """Top-K-like activations (the true codes) whose neurons are the planted atoms."""
    return make_planted_embeddings(
        3000, n_features=16, n_atoms=64, k=4, n_causal=6, target_noise=0.3, random_state=0
    )


def _dense_standardised(A):
    return StandardScaler().fit_transform(A.toarray() if sp.issparse(A) else A)


# -----------------------------------------------------------------------------
# scikit-learn conventions
# -----------------------------------------------------------------------------
@parametrize_with_checks(
    [
        NeuronSelector(1),
        NeuronSelector(1, method="correlation"),
        NeuronSelector(1, method="separation", n_top_activating=5),
    ],
    # No expected failures: every check passes.
    expected_failed_checks=lambda est: {},
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        check(estimator)


def test_pipeline_feature_names_pandas_clone_pickle(planted):
    names = [f"sae{i}" for i in range(planted.codes.shape[1])]
    A = pd.DataFrame(planted.codes.toarray(), columns=names)
    pipe = Pipeline([("select", NeuronSelector(6)), ("model", Lasso(alpha=0.01))])
    pipe.set_output(transform="pandas")
    pipe.fit(A, planted.y)
    selector = pipe.named_steps["select"]
    out = selector.transform(A)
    assert isinstance(out, pd.DataFrame)
    expected = sorted(int(i) for i in planted.causal_atoms)
    assert list(out.columns) == [f"sae{i}" for i in expected]
    assert list(selector.get_feature_names_out()) == [f"sae{i}" for i in expected]
    # Names from an upstream step pass through (sparse input has none of its own).
    sparse_sel = NeuronSelector(6).fit(planted.codes, planted.y)
    assert list(sparse_sel.get_feature_names_out(names)) == [f"sae{i}" for i in expected]

    restored = pickle.loads(pickle.dumps(selector))
    np.testing.assert_array_equal(restored.selected_, selector.selected_)
    cloned = clone(selector)
    assert not hasattr(cloned, "selected_") and cloned.get_params() == selector.get_params()


def test_joblib_roundtrip_and_grid_search(planted, tmp_path):
    pipe = Pipeline(
        [("select", NeuronSelector(method="correlation")), ("model", LogisticRegression())]
    )
    grid = GridSearchCV(pipe, {"select__n_select": [2, 6]}, cv=3, scoring="roc_auc")
    grid.fit(planted.codes, planted.y_binary)
    assert grid.best_params_["select__n_select"] == 6
    path = tmp_path / "pipe.joblib"
    joblib.dump(grid.best_estimator_, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(planted.codes), grid.best_estimator_.predict_proba(planted.codes)
    )


# -----------------------------------------------------------------------------
# Planted ground truth
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", ["y", "y_binary"])
def test_selects_the_causal_atoms(planted, method, target):
    selector = NeuronSelector(6, method=method).fit(planted.codes, planted[target])
    assert set(selector.selected_.tolist()) == set(planted.causal_atoms.tolist())
    assert selector.task_ == ("regression" if target == "y" else "binary")
    # Scores carry the sign of the planted effect.
    signs = np.sign(selector.scores_[planted.causal_atoms])
    np.testing.assert_array_equal(signs, np.sign(planted.causal_weights))


def test_decoder_directions_of_selected_neurons_match_causal_atoms(planted):
    """The selected neurons' dictionary directions are the causal atoms' directions."""
    selector = NeuronSelector(6).fit(planted.codes, planted.y)
    chosen = planted.atoms[np.sort(selector.selected_)]
    causal = planted.atoms[np.sort(planted.causal_atoms)]
    cos = np.abs(chosen @ causal.T)
    assert np.all(cos.max(axis=1) > 0.999)


# -----------------------------------------------------------------------------
# Exact-N Lasso is the same optimisation problem as sklearn's
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("n_select", [1, 4, 13, 30])
@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_squared_lasso_matches_sklearn_lasso_at_alpha(planted, n_select, layout):
    A = {"csr": planted.codes, "csc": planted.codes.tocsc(), "dense": planted.codes.toarray()}
    selector = NeuronSelector(n_select).fit(A[layout], planted.y)
    assert selector.loss_ == "squared"
    assert np.count_nonzero(selector.scores_) == n_select == selector.selected_.size
    Xs = _dense_standardised(planted.codes)
    brute = Lasso(alpha=selector.alpha_, tol=1e-9, max_iter=100_000).fit(Xs, planted.y)
    assert set(np.flatnonzero(brute.coef_)) == set(selector.selected_.tolist())
    np.testing.assert_allclose(selector.scores_, brute.coef_, atol=1e-6)
    # Importance order: decreasing absolute coefficient.
    assert np.all(np.diff(np.abs(selector.scores_[selector.selected_])) <= 0)


@pytest.mark.parametrize("n_select", [2, 9, 20])
@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_logistic_lasso_matches_sklearn_l1_logistic_at_alpha(planted, n_select, layout):
    A = planted.codes if layout == "csr" else planted.codes.toarray()
    selector = NeuronSelector(n_select).fit(A, planted.y_binary)
    assert selector.loss_ == "logistic"
    assert np.count_nonzero(selector.scores_) == n_select == selector.selected_.size
    Xs = _dense_standardised(planted.codes)
    # liblinear penalises the intercept; a large intercept_scaling makes that
    # penalty negligible, giving the problem with a free intercept.
    brute = LogisticRegression(
        C=1.0 / selector.alpha_,
        l1_ratio=1.0,
        solver="liblinear",
        intercept_scaling=1e4,
        tol=1e-10,
        max_iter=100_000,
    ).fit(Xs, planted.y_binary)
    assert set(np.flatnonzero(brute.coef_.ravel())) == set(selector.selected_.tolist())
    np.testing.assert_allclose(selector.scores_, brute.coef_.ravel(), atol=1e-4)


def test_squared_loss_for_a_binary_target_is_the_lasso_on_the_indicator(planted):
    selector = NeuronSelector(8, loss="squared").fit(planted.codes, planted.y_binary)
    assert selector.task_ == "binary" and selector.loss_ == "squared"
    brute = Lasso(alpha=selector.alpha_, tol=1e-9, max_iter=100_000).fit(
        _dense_standardised(planted.codes), planted.y_binary
    )
    assert set(np.flatnonzero(brute.coef_)) == set(selector.selected_.tolist())


def test_duplicate_neurons_do_not_break_exactness(planted):
    """A neuron duplicated exactly can never enter the path beside its twin."""
    j = int(planted.causal_atoms[0])
    A = sp.hstack([planted.codes, planted.codes[:, [j]]], format="csr")
    selector = NeuronSelector(6).fit(A, planted.y)
    assert selector.selected_.size == 6 == np.count_nonzero(selector.scores_)
    assert len({j, A.shape[1] - 1} & set(selector.selected_.tolist())) == 1


# -----------------------------------------------------------------------------
# Properties
# -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return make_planted_embeddings(
        600, n_features=8, n_atoms=24, k=3, n_causal=4, target_noise=0.5, random_state=1
    )


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), method=st.sampled_from(METHODS), binary=st.booleans())
def test_row_permutation_does_not_change_selection(small, seed, method, binary):
    y = small.y_binary if binary else small.y
    perm = np.random.default_rng(seed).permutation(y.size)
    a = NeuronSelector(5, method=method).fit(small.codes, y)
    b = NeuronSelector(5, method=method).fit(small.codes[perm], y[perm])
    np.testing.assert_array_equal(a.selected_, b.selected_)
    np.testing.assert_allclose(a.scores_, b.scores_, rtol=1e-5, atol=1e-8)


@settings(max_examples=10)
@given(
    neuron=st.integers(0, 23),
    log_scale=st.floats(-3, 3),
    binary=st.booleans(),
)
def test_scaling_a_neuron_does_not_change_lasso_selection(small, neuron, log_scale, binary):
    y = small.y_binary if binary else small.y
    scaled = small.codes.tocsc(copy=True)
    scaled[:, neuron] = scaled[:, neuron] * 10.0**log_scale
    a = NeuronSelector(5).fit(small.codes, y)
    b = NeuronSelector(5).fit(scaled.tocsr(), y)
    np.testing.assert_array_equal(a.selected_, b.selected_)
    assert b.alpha_ == pytest.approx(a.alpha_, rel=1e-4)


@settings(max_examples=15)
@given(n_select=st.integers(1, 24), binary=st.booleans())
def test_lasso_always_selects_exactly_n_select(small, n_select, binary):
    y = small.y_binary if binary else small.y
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelectionWarning)
        selector = NeuronSelector(n_select).fit(small.codes, y)
    assert selector.selected_.size == n_select
    assert np.count_nonzero(selector.scores_) == n_select


# -----------------------------------------------------------------------------
# Correlation and separation
# -----------------------------------------------------------------------------
def _separation_brute_force(A, y, n_top):
    """Direct per-neuron definition: top positive activations vs exactly-zero rows."""
    scores = np.zeros(A.shape[1])
    for j in range(A.shape[1]):
        col = A[:, j]
        pos = np.flatnonzero(col > 0)
        zero = np.flatnonzero(col == 0)
        if pos.size == 0 or zero.size == 0:
            continue
        top = pos[np.lexsort((pos, -col[pos]))[:n_top]]
        scores[j] = y[top].mean() - y[zero].mean()
    return scores


def test_correlation_matches_numpy_and_ignores_dead_neurons(small):
    A = sp.hstack([small.codes, sp.csr_matrix((small.y.size, 2))], format="csr")
    selector = NeuronSelector(24, method="correlation").fit(A, small.y)
    dense = A.toarray()
    expected = [np.corrcoef(dense[:, j], small.y)[0, 1] for j in range(24)]
    np.testing.assert_allclose(selector.scores_[:24], expected, atol=1e-10)
    np.testing.assert_array_equal(selector.scores_[24:], 0.0)
    assert not {24, 25} & set(selector.selected_.tolist())
    assert np.all(np.isfinite(selector.scores_))


def test_separation_matches_definition_and_flags_low_support(small):
    rng = np.random.default_rng(0)
    A = small.codes.toarray()
    A[:, 0] = 0.0  # dead
    A[:, 1] = 0.5  # constant, never zero
    A[:5, 2] = [0.0, 0.3, 0.9, 0.3, 0.1]  # few positives
    A[5:, 2] = 0.0
    A[:, 3] = np.round(rng.random(A.shape[0]), 1) * (rng.random(A.shape[0]) < 0.3)  # ties
    y = small.y
    with pytest.warns(SelectionWarning, match="fewer than n_top_activating"):
        selector = NeuronSelector(24, method="separation", n_top_activating=50).fit(
            sp.csr_matrix(A), y
        )
    np.testing.assert_allclose(selector.scores_, _separation_brute_force(A, y, 50), atol=1e-12)
    assert selector.scores_[0] == 0.0 and selector.scores_[1] == 0.0
    assert not {0, 1} & set(selector.selected_.tolist())
    assert selector.selected_.size == 22  # the dead and the constant neuron are left out
    assert selector.low_support_[2] and selector.n_positive_[2] == 4


def test_separation_on_pairwise_differences():
    """Signed activations: top positive differences against rows with no difference."""
    rng = np.random.default_rng(3)
    n, m = 2000, 12
    Z_a = rng.random((n, m)) * (rng.random((n, m)) < 0.2)
    Z_b = rng.random((n, m)) * (rng.random((n, m)) < 0.2)
    D = Z_a - Z_b
    # Text A is preferred when it has more of concept 4 than text B.
    y = (D[:, 4] + 0.1 * rng.standard_normal(n) > 0).astype(int)
    for method in METHODS:
        selector = NeuronSelector(1, method=method).fit(sp.csr_matrix(D), y)
        assert selector.selected_.tolist() == [4], method
    selector = NeuronSelector(3, method="separation", n_top_activating=30).fit(D, y)
    np.testing.assert_allclose(
        selector.scores_, _separation_brute_force(D, y.astype(float), 30), atol=1e-12
    )


@pytest.mark.parametrize("method", METHODS)
def test_dense_float32_and_sparse_agree(small, method):
    dense32 = small.codes.toarray().astype(np.float32)
    a = NeuronSelector(5, method=method).fit(small.codes, small.y)
    b = NeuronSelector(5, method=method).fit(dense32, small.y)
    np.testing.assert_array_equal(a.selected_, b.selected_)
    assert b.transform(dense32).dtype == np.float32


def test_dense_input_that_is_not_sparse(small):
    """Fully dense activations (no zeros) take the blockwise dense path."""
    rng = np.random.default_rng(0)
    A = small.codes.toarray() + 0.01 + 0.001 * rng.random(small.codes.shape)
    for method in ("lasso", "correlation"):
        selector = NeuronSelector(4, method=method).fit(A, small.y)
        assert set(selector.selected_.tolist()) == set(small.causal_atoms.tolist())
    binary = NeuronSelector(4).fit(A, small.y_binary)
    assert binary.selected_.size == 4


# -----------------------------------------------------------------------------
# Multiclass
# -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multiclass():
    data = make_planted_embeddings(3000, n_features=8, n_atoms=40, k=4, random_state=2)
    codes = data.codes.toarray()
    # Class "a" texts carry atom 3, "b" atom 7, "c" atom 11; others are "none".
    rng = np.random.default_rng(2)
    labels = np.array(["none"] * codes.shape[0], dtype=object)
    for name, atom in (("a", 3), ("b", 7), ("c", 11)):
        labels[(codes[:, atom] > 0) & (rng.random(codes.shape[0]) < 0.9)] = name
    return data.codes, labels


@pytest.mark.parametrize("method", METHODS)
def test_multiclass_one_vs_rest_round_robin(multiclass, method):
    A, labels = multiclass
    selector = NeuronSelector(3, method=method).fit(A, labels)
    assert selector.task_ == "multiclass"
    assert list(selector.classes_) == ["a", "b", "c", "none"]
    assert selector.scores_.shape == (4, A.shape[1])
    assert set(selector.selected_.tolist()) == {3, 7, 11}
    # Each class's best neuron is its own atom, with a positive score.
    for cls, atom in (("a", 3), ("b", 7), ("c", 11)):
        row = selector.scores_[list(selector.classes_).index(cls)]
        assert np.argmax(np.abs(row)) == atom and row[atom] > 0
    if method == "lasso":
        assert selector.alpha_.shape == (4,)
        assert np.all(np.count_nonzero(selector.scores_, axis=1) == 3)
    assert selector.transform(A).shape == (A.shape[0], 3)


def test_integer_ratings_are_regression_unless_told(multiclass):
    A, labels = multiclass
    codes = {"none": 0, "a": 1, "b": 2, "c": 3}
    y = np.array([codes[v] for v in labels])
    assert NeuronSelector(3).fit(A, y).task_ == "regression"
    assert NeuronSelector(3, task="multiclass").fit(A, y).task_ == "multiclass"


# -----------------------------------------------------------------------------
# Errors and warnings
# -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "y_kind", "match"),
    [
        ({"n_select": 0}, "y", "n_select"),
        ({"n_select": 25}, "y", r"n_select=25 exceeds .* 24 feature"),
        ({"method": "lars"}, "y", "method"),
        ({"task": "binary"}, "y", "continuous"),
        ({"task": "multiclass"}, "y", "continuous"),
        ({"task": "binary"}, "three", "exactly 2 classes"),
        ({"task": "regression"}, "strings", "numeric target"),
        ({"loss": "logistic"}, "y", "classification target"),
        ({}, "constant", "single value"),
        ({}, "nan", "NaN"),
        ({}, "short", "inconsistent numbers of samples"),
    ],
)
def test_clear_errors(small, kwargs, y_kind, match):
    n = small.y.size
    y = {
        "y": small.y,
        "three": np.arange(n) % 3,
        "strings": np.where(np.arange(n) % 3 == 0, "x", np.where(np.arange(n) % 3 == 1, "y", "z")),
        "constant": np.ones(n),
        "nan": np.where(np.arange(n) == 5, np.nan, small.y),
        "short": small.y[:-1],
    }[y_kind]
    with pytest.raises(ValueError, match=match):
        NeuronSelector(**kwargs).fit(small.codes, y)


def test_all_dead_activations_error():
    with pytest.raises(ValueError, match="constant"):
        NeuronSelector(2).fit(sp.csr_matrix((50, 4)), np.arange(50.0))


@pytest.mark.parametrize("method", METHODS)
def test_fewer_usable_neurons_than_requested_warns(small, method):
    A = sp.hstack([small.codes[:, :3], sp.csr_matrix((small.y.size, 5))], format="csr")
    with pytest.warns(SelectionWarning, match="Only 3 of the requested n_select=6"):
        selector = NeuronSelector(6, method=method).fit(A, small.y)
    assert set(selector.selected_.tolist()) <= {0, 1, 2}
    assert selector.selected_.size == 3


def test_unfitted_and_wrong_width_transform(small):
    selector = NeuronSelector(3)
    with pytest.raises(Exception, match="not fitted"):
        selector.transform(small.codes)
    selector.fit(small.codes, small.y)
    with pytest.raises(ValueError, match="features"):
        selector.transform(small.codes[:, :10])


def test_verbose_logs_the_path(small, caplog):
    with caplog.at_level("INFO", logger="sklearn_hypothesaes.selection"):
        NeuronSelector(3, verbose=True).fit(small.codes, small.y_binary)
    assert any("alpha=" in rec.getMessage() for rec in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO", logger="sklearn_hypothesaes.selection"):
        NeuronSelector(3).fit(small.codes, small.y_binary)
    assert not caplog.records
