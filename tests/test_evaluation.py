import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sklearn_hypothesaes.evaluation import annotation_similarity, match_hypotheses


def _binary(n, h, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n, h)) < 0.3).astype(np.uint8)


def test_similarity_matches_numpy_corrcoef():
    G = _binary(200, 4, 0)
    R = _binary(200, 3, 1)
    sim = annotation_similarity(G, R)
    full = np.corrcoef(np.c_[R, G].T.astype(float))
    np.testing.assert_allclose(sim, full[:3, 3:], atol=1e-12)


def test_jaccard_by_hand():
    G = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    R = np.array([[1], [0], [1], [0]])
    # reference marks rows {0, 2}; generated 0 marks {0, 1}: 1/3; generated 1 marks {1, 2}: 1/3
    np.testing.assert_allclose(annotation_similarity(G, R, metric="jaccard"), [[1 / 3, 1 / 3]])
    R2 = np.array([[1], [1], [0], [0]])
    np.testing.assert_allclose(annotation_similarity(G, R2, metric="jaccard"), [[1.0, 1 / 3]])


def test_constant_column_has_zero_similarity():
    G = np.c_[np.ones(10), np.r_[np.ones(5), np.zeros(5)]]
    R = np.r_[np.ones(5), np.zeros(5)][:, None]
    sim = annotation_similarity(G, R)
    assert sim[0, 0] == 0.0
    assert sim[0, 1] == pytest.approx(1.0)


def test_recovers_permuted_noisy_copies():
    rng = np.random.default_rng(0)
    R = _binary(2000, 5, 2)
    perm = np.array([3, 0, 4, 1, 2])
    G = R[:, perm].copy()
    flip = rng.random(G.shape) < 0.05
    G[flip] = 1 - G[flip]
    G = np.c_[G, _binary(2000, 3, 3)]  # three unrelated extra hypotheses
    res = match_hypotheses(G, R)
    assert res.n_recovered == 5
    # reference i lives in generated column where perm == i
    expected = np.argsort(perm)
    np.testing.assert_array_equal(res.table["generated_index"].to_numpy(), expected)
    assert (res.table["similarity"] > 0.7).all()
    assert res.recovery_rate == 1.0


def test_significance_requirement_and_threshold():
    R = _binary(500, 2, 4)
    G = R.copy()
    res = match_hypotheses(G, R, significant=[True, False])
    assert res.table["recovered"].tolist() == [True, False]
    assert res.n_recovered == 1
    res = match_hypotheses(G, R, threshold=1.0)
    assert res.n_recovered == 2
    unrelated = _binary(500, 2, 5)
    assert match_hypotheses(unrelated, R, threshold=0.5).n_recovered == 0


def test_fewer_generated_than_reference_leaves_unmatched():
    R = _binary(300, 3, 6)
    G = R[:, [1]]
    res = match_hypotheses(G, R, reference_names=["a", "b", "c"], generated_names=["only"])
    t = res.table.set_index("reference")
    assert t.loc["b", "generated"] == "only"
    assert t.loc["a", "generated_index"] == -1 and pd.isna(t.loc["a", "generated"])
    assert t.loc["a", "similarity"] == 0.0
    assert res.n_recovered == 1
    assert res.mean_similarity == pytest.approx(1 / 3)


def test_names_from_dataframes_and_sparse_input():
    R = pd.DataFrame(_binary(100, 2, 7), columns=["waits", "rude"])
    G = sp.csr_matrix(R.to_numpy()[:, ::-1])
    res = match_hypotheses(G, R)
    assert res.table["reference"].tolist() == ["waits", "rude"]
    assert res.table["generated"].tolist() == ["generated1", "generated0"]


def test_pairwise_annotations_supported():
    rng = np.random.default_rng(8)
    R = rng.integers(-1, 2, size=(400, 2))
    res = match_hypotheses(R[:, ::-1], R)
    assert res.n_recovered == 2
    assert np.allclose(res.table["similarity"], 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"generated": np.zeros((5, 2)), "reference": np.zeros((4, 2))}, "same texts"),
        ({"generated": np.full((5, 2), np.nan), "reference": np.zeros((5, 2))}, "NaN"),
        (
            {"generated": np.zeros((5, 2)), "reference": np.zeros((5, 1)), "significant": [1]},
            "one entry",
        ),
        (
            {
                "generated": np.zeros((5, 2)),
                "reference": np.zeros((5, 1)),
                "reference_names": ["a", "b"],
            },
            "reference_names",
        ),
        ({"generated": [["a", "b"]] * 3, "reference": np.zeros((3, 1))}, "numeric"),
        ({"generated": np.zeros((1, 1)), "reference": np.zeros((1, 1))}, "At least 2"),
    ],
)
def test_bad_input_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        match_hypotheses(**kwargs)


def test_invalid_metric_rejected():
    with pytest.raises(ValueError, match="metric"):
        match_hypotheses(np.zeros((3, 1)), np.zeros((3, 1)), metric="cosine")


annotation_matrices = st.integers(1, 4).flatmap(
    lambda h: arrays(np.int8, st.tuples(st.integers(4, 25), st.just(h)), elements=st.integers(0, 1))
)


@given(
    R=arrays(np.int8, (12, 3), elements=st.integers(0, 1)),
    G=arrays(np.int8, (12, 4), elements=st.integers(0, 1)),
    seed=st.integers(0, 10_000),
)
def test_property_matching_is_optimal_and_permutation_invariant(R, G, seed):
    res = match_hypotheses(G, R)
    sim = res.similarity
    assert np.all(np.abs(sim) <= 1.0)
    # brute force over every injective map of 3 reference concepts into 4 generated
    best = max(sum(sim[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(4), 3))
    assert res.table["similarity"].sum() == pytest.approx(best, abs=1e-9)
    # matched columns are distinct
    idx = res.table["generated_index"].to_numpy()
    assert len(set(idx)) == len(idx)
    # permuting texts or generated columns leaves the optimal total unchanged
    rng = np.random.default_rng(seed)
    rows = rng.permutation(12)
    cols = rng.permutation(4)
    res2 = match_hypotheses(G[rows][:, cols], R[rows])
    assert res2.table["similarity"].sum() == pytest.approx(best, abs=1e-9)
    assert (
        res2.n_recovered == res.n_recovered
        or np.isclose(np.sort(res.table["similarity"]), np.sort(res2.table["similarity"])).all()
    )


@given(R=annotation_matrices)
def test_property_self_match_recovers_every_informative_concept(R):
    res = match_hypotheses(R, R, threshold=0.999)
    informative = R.std(axis=0) > 0
    # every non-constant column is perfectly matched to itself (or an identical column)
    assert res.n_recovered == int(informative.sum())
    assert 0 <= res.n_recovered <= R.shape[1]
