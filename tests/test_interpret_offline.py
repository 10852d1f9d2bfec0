"""Tests for the interpreter skeleton (sampling, fidelity) and OfflineInterpreter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hypothesaes.datasets import load_demo
from sklearn_hypothesaes.interpret import (
    RESULT_COLUMNS,
    OfflineInterpreter,
    _log_odds_z,
    explore_neurons,
    fidelity_metrics,
    pair_texts_to_individual,
    sample_examples,
    split_explain_score,
)
from sklearn_hypothesaes.keywords import KeywordAnnotator, parse_concept_terms


@pytest.fixture(scope="module")
def demo():
    return load_demo(4000, random_state=0)


def planted_activations(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Neuron-like columns: fire on an aspect with graded strength, miss 10%,
    and fire weakly on 2% of other texts."""
    rng = np.random.default_rng(seed)
    acts = truth * rng.uniform(0.5, 2.0, size=truth.shape)
    acts *= rng.random(truth.shape) > 0.1
    acts += (rng.random(truth.shape) < 0.02) * rng.uniform(0.05, 0.4, size=truth.shape)
    return acts


@pytest.fixture(scope="module")
def demo_result(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float))
    return OfflineInterpreter(random_state=0).interpret(demo.texts, acts), acts


# ---------------------------------------------------------------- quality


def test_offline_interpreter_names_planted_words(demo, demo_result):
    result, _ = demo_result
    assert list(result.columns) == RESULT_COLUMNS
    assert (result["status"] == "ok").all()
    for j, aspect in demo.concepts.iterrows():
        row = result.loc[result["neuron"] == j].iloc[0]
        terms = parse_concept_terms(row["hypothesis"])
        # The concept names the aspect's planted words, and only words from
        # the aspect's own phrasings.
        phrasing_words = set(" ".join(aspect["phrasings"]).lower().replace(",", " ").split())
        assert set(terms) & set(aspect["keywords"]), (aspect["name"], row["hypothesis"])
        assert all(set(t.split()) <= phrasing_words for t in terms), row["hypothesis"]
        assert row["f1"] > 0.8, (aspect["name"], row["hypothesis"], row["f1"])
        assert row["correlation"] > 0.6


def test_fidelity_of_chosen_hypothesis_on_all_texts(demo, demo_result):
    """The concepts generalise: checked by KeywordAnnotator on every text."""
    result, _ = demo_result
    found = KeywordAnnotator(result["hypothesis"].tolist()).fit().transform(demo.texts)
    truth = demo.truth.to_numpy()
    for j in range(truth.shape[1]):
        assert f1_score(truth[:, j], found[:, j]) > 0.75


def test_output_structure(demo_result):
    result, acts = demo_result
    for _, row in result.iterrows():
        assert len(row["positive_examples"]) == 100
        assert len(row["negative_examples"]) == 100
        assert 1 <= len(row["candidates"]) <= 5
        assert {"concept", "precision", "recall", "f1", "correlation"} <= set(row["candidates"][0])
        best = max(c["f1"] for c in row["candidates"])
        assert row["f1"] == best
        assert row["hypothesis"] in [c["concept"] for c in row["candidates"]]
        for c in row["candidates"]:
            parse_concept_terms(c["concept"])
        assert row["n_positive"] == np.count_nonzero(acts[:, row["neuron"]])
        assert row["prevalence"] == pytest.approx(row["n_positive"] / len(acts))


def test_deterministic_and_independent_of_neuron_subset(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=1)
    interp = OfflineInterpreter(random_state=7, n_background=500)
    a = interp.interpret(demo.texts, acts, neurons=[0, 3, 4])
    b = clone(interp).interpret(demo.texts, acts, neurons=[0, 3, 4])
    pd.testing.assert_frame_equal(a, b)
    c = interp.interpret(demo.texts, acts, neurons=[4])
    assert c.loc[0, "hypothesis"] == a.loc[2, "hypothesis"]
    assert c.loc[0, "positive_examples"] == a.loc[2, "positive_examples"]


def test_sparse_dataframe_and_dense_agree(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=2)[:, :3]
    interp = OfflineInterpreter(random_state=0, n_background=300)
    dense = interp.interpret(demo.texts, acts)
    sparse = interp.interpret(pd.Series(demo.texts), sp.csr_matrix(acts))
    frame = interp.interpret(np.array(demo.texts), pd.DataFrame(acts))
    pd.testing.assert_frame_equal(dense, sparse)
    pd.testing.assert_frame_equal(dense, frame)


def test_scoring_metric_picks_best_candidate(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=3)
    for metric in ("recall", "precision", "correlation"):
        result = OfflineInterpreter(scoring_metric=metric, random_state=0).interpret(
            demo.texts, acts, neurons=[0, 2]
        )
        for _, row in result.iterrows():
            assert row[metric] == max(c[metric] for c in row["candidates"])


def test_dead_and_rare_neurons_are_reported(demo):
    n = len(demo.texts)
    acts = np.zeros((n, 3))
    acts[:5, 1] = 1.0  # fires on 5 texts only
    acts[:, 2] = 1.0  # fires on every text: no negatives
    result = OfflineInterpreter(random_state=0).interpret(demo.texts, acts)
    assert result["status"].tolist()[0] == "dead neuron"
    assert result["status"].tolist()[1].startswith("too few positive examples (5 < ")
    assert "no negative examples" in result["status"].tolist()[2]
    assert result["hypothesis"].isna().all()
    assert result["f1"].isna().all()
    assert result["n_positive"].tolist() == [0, 5, n]


def test_percentile_sampling_and_low_percentile_negatives(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=4)
    result = OfflineInterpreter(
        sampling="percentile",
        high_percentile=(50, 100),
        low_percentile=(0, 20),
        random_state=0,
    ).interpret(demo.texts, acts, neurons=[4])
    row = result.iloc[0]
    assert row["status"] == "ok"
    # Strong versus weak firing of the brisket neuron: the weak side includes
    # the spurious 2% noise, so "brisket" is what separates them.
    assert "brisket" in parse_concept_terms(row["hypothesis"])


# ---------------------------------------------------------------- kernels


def test_sample_examples_top_and_zero():
    rng = np.random.RandomState(0)
    a = np.array([0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 2.0, 0.0])
    pos, neg = sample_examples(a, 3, rng=rng)
    assert pos.tolist() == [1, 4, 6]  # highest first, ties by index
    assert set(neg.tolist()) <= {0, 2, 5, 7} and len(neg) == 3
    pos, neg = sample_examples(a, 2, candidates=np.array([0, 3, 5, 6]), rng=rng)
    assert pos.tolist() == [6, 3]
    assert set(neg.tolist()) == {0, 5}


def test_sample_examples_percentile_bands():
    rng = np.random.RandomState(0)
    a = np.r_[np.zeros(50), np.arange(1, 101, dtype=float)]
    pos, neg = sample_examples(
        a, 10, sampling="percentile", high_percentile=(80, 100), low_percentile=(0, 10), rng=rng
    )
    assert len(pos) == 10 and a[pos].min() >= np.percentile(np.arange(1, 101), 80)
    assert list(a[pos]) == sorted(a[pos], reverse=True)
    assert len(neg) == 10 and a[neg].max() <= np.percentile(np.arange(1, 101), 10)
    # Fewer than requested in the band: all of them.
    pos, _ = sample_examples(a, 30, sampling="percentile", high_percentile=(90, 100), rng=rng)
    assert len(pos) == 10


def test_split_explain_score_fraction():
    mask = split_explain_score(10_000, 1 / 3, np.random.RandomState(0))
    assert mask.dtype == bool and 0.3 < mask.mean() < 0.37


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.floats(0, 5)), min_size=2))
def test_fidelity_metrics_match_direct_computation(rows):
    ann, lab, act = (np.array(c) for c in zip(*rows))
    m = fidelity_metrics(ann, lab, act)
    assert m["precision"] == pytest.approx(precision_score(lab, ann, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(lab, ann, zero_division=0))
    assert m["f1"] == pytest.approx(f1_score(lab, ann, zero_division=0))
    if ann.std() > 0 and act.std() > 0:
        assert m["correlation"] == pytest.approx(np.corrcoef(ann, act)[0, 1])
    else:
        assert m["correlation"] == 0.0


def test_log_odds_sign_and_shrinkage():
    prior = np.array([10.0, 10.0, 10.0])
    z = _log_odds_z(np.array([20.0, 5.0, 5.0]), np.array([5.0, 5.0, 20.0]), prior, 30.0)
    assert z[0] > 0 > z[2]
    assert abs(z[1]) < 1
    # A stronger prior shrinks the same evidence.
    z_strong = _log_odds_z(np.array([20.0, 5.0, 5.0]), np.array([5.0, 5.0, 20.0]), prior, 3000.0)
    assert abs(z_strong[0]) < abs(z[0])


# ---------------------------------------------------------------- pairwise


def test_pairwise_activations_are_interpreted_on_individual_texts(demo):
    texts = np.array(demo.texts)
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=5)
    half = len(texts) // 2
    ia, ib = np.arange(half), np.arange(half, 2 * half)
    with pytest.raises(ValueError, match="pairwise"):
        OfflineInterpreter().interpret(texts[ia], acts[ia] - acts[ib])
    ind_texts, ind_acts = pair_texts_to_individual(
        texts[ia], texts[ib], sp.csr_matrix(acts[ia]), sp.csr_matrix(acts[ib])
    )
    assert len(ind_texts) == len(set(ind_texts)) == ind_acts.shape[0]
    result = OfflineInterpreter(random_state=0).interpret(ind_texts, ind_acts, neurons=[1])
    assert parse_concept_terms(result.loc[0, "hypothesis"])[0] in ("rude", "rudely", "rudest")


def test_pair_texts_dedup_and_errors():
    texts, acts = pair_texts_to_individual(["a", "b"], ["c", "a"], np.eye(2), 2 * np.eye(2))
    assert texts == ["a", "b", "c"]
    np.testing.assert_array_equal(acts, [[1, 0], [0, 1], [2, 0]])
    with pytest.raises(ValueError, match="texts_b has 1"):
        pair_texts_to_individual(["a", "b"], ["c"], np.eye(2), np.eye(1))


# ---------------------------------------------------------------- validation


def test_input_validation(demo):
    texts = demo.texts[:100]
    acts = np.ones((100, 2))
    interp = OfflineInterpreter()
    with pytest.raises(ValueError, match="100 texts"):
        interp.interpret(texts, np.ones((99, 2)))
    with pytest.raises(ValueError, match="NaN"):
        interp.interpret(texts, np.full((100, 2), np.nan))
    with pytest.raises(TypeError, match="numeric"):
        interp.interpret(texts, np.full((100, 2), "a"))
    with pytest.raises(ValueError, match="2-dimensional"):
        interp.interpret(texts, np.ones((100, 2, 1)))
    with pytest.raises(ValueError, match="out of range"):
        interp.interpret(texts, acts, neurons=[5])
    with pytest.raises(TypeError, match="integer column indices"):
        interp.interpret(texts, acts, neurons=["sae0"])
    with pytest.raises(TypeError, match="rows 0"):
        interp.interpret([None] + texts[1:], acts)
    with pytest.raises(InvalidParameterError, match="sampling"):
        OfflineInterpreter(sampling="best").interpret(texts, acts)
    with pytest.raises(InvalidParameterError, match="scoring_metric"):
        OfflineInterpreter(scoring_metric="auc").interpret(texts, acts)
    with pytest.raises(ValueError, match="high_percentile"):
        OfflineInterpreter(high_percentile=(90, 80)).interpret(texts, acts)
    with pytest.raises(ValueError, match="ngram_range"):
        OfflineInterpreter(ngram_range=(2, 1)).interpret(
            texts, acts[:, :1] * 0 + np.r_[np.ones(50), np.zeros(50)][:, None]
        )


def test_is_a_plain_estimator():
    interp = OfflineInterpreter(n_examples=50, max_terms=3, random_state=1)
    params = interp.get_params()
    assert params["n_examples"] == 50 and params["max_terms"] == 3
    assert clone(interp).get_params() == params


# ---------------------------------------------------------------- exploration


def test_explore_neurons_prevalent_and_random(demo):
    acts = planted_activations(demo.truth.to_numpy().astype(float), seed=6)
    acts = np.hstack([acts, np.zeros((len(acts), 2))])  # two dead neurons
    fires = np.count_nonzero(acts, axis=0)
    out = explore_neurons(demo.texts, sp.csr_matrix(acts), n_neurons=3, random_state=0)
    assert out["neuron"].tolist() == list(np.argsort(-fires, kind="stable")[:3])
    for _, row in out.iterrows():
        a = acts[:, row["neuron"]]
        assert row["top_texts"][0] == demo.texts[int(np.argmax(a))]
        assert len(row["top_texts"]) == 5
        assert row["status"] == "ok"
    rand = explore_neurons(demo.texts, acts, n_neurons=20, strategy="random", random_state=0)
    assert sorted(rand["neuron"]) == list(range(10))  # dead neurons are never drawn
    with pytest.raises(ValueError, match="strategy"):
        explore_neurons(demo.texts, acts, strategy="all")


@pytest.mark.parametrize("cls", [OfflineInterpreter, KeywordAnnotator])
def test_every_parameter_is_documented(cls):
    doc = cls.__doc__
    for name in cls().get_params():
        assert f"\n    {name} : " in doc, name
