"""Tests for load_demo: determinism, planted truth, and the rating it drives."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hypothesaes.datasets import load_demo
from sklearn_hypothesaes.keywords import KeywordAnnotator, parse_concept_terms


@pytest.fixture(scope="module")
def demo():
    return load_demo(4000, random_state=0)


def test_shapes_and_types(demo):
    n = 4000
    assert isinstance(demo.texts, list) and len(demo.texts) == n
    assert all(isinstance(t, str) and t for t in demo.texts)
    assert demo.y.shape == (n,) and demo.y.dtype == np.float64
    assert set(np.unique(demo.y)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    np.testing.assert_array_equal(demo.y_binary, (demo.y >= 4).astype(int))
    assert isinstance(demo.truth, pd.DataFrame) and demo.truth.shape == (n, 10)
    assert demo.truth.dtypes.unique().tolist() == [np.dtype(np.uint8)]
    assert list(demo.truth.columns) == demo.concepts["name"].tolist()
    assert {
        "name",
        "description",
        "planted",
        "effect",
        "prevalence",
        "keywords",
        "concept",
        "phrasings",
        "examples",
    } <= set(demo.concepts.columns)
    for examples, keywords in zip(demo.concepts["examples"], demo.concepts["keywords"]):
        assert len(examples) == 3 and all("{" not in e for e in examples)
        assert all(any(k in e.lower() for k in keywords) for e in examples)
    np.testing.assert_allclose(demo.concepts["prevalence"], demo.truth.mean(axis=0))
    assert demo.concepts["planted"].sum() == 7
    assert (demo.concepts.loc[~demo.concepts["planted"], "effect"] == 0).all()
    assert "planted" in demo.DESCR


def test_deterministic_and_seed_dependent():
    a = load_demo(300, random_state=3)
    b = load_demo(300, random_state=3)
    c = load_demo(300, random_state=4)
    assert a.texts == b.texts
    np.testing.assert_array_equal(a.y, b.y)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert a.texts != c.texts


def test_length_and_sentence_count(demo):
    words = np.array([len(t.split()) for t in demo.texts])
    sentences = np.array([len(re.findall(r"[.!?](?:\s|$)", t)) for t in demo.texts])
    assert sentences.min() >= 2 and sentences.max() <= 6
    assert 30 <= words.mean() <= 60
    assert words.max() <= 100


def test_keywords_mark_exactly_the_planted_aspects(demo):
    """Every phrasing of an aspect uses one of its keywords; filler sometimes does
    (e.g. "a few minutes from our hotel"), as in real reviews."""
    ann = KeywordAnnotator(demo.concepts["concept"].tolist()).fit()
    found = ann.transform(demo.texts)
    truth = demo.truth.to_numpy()
    for j, name in enumerate(demo.concepts["name"]):
        recall = found[truth[:, j] == 1, j].mean()
        precision = truth[found[:, j] == 1, j].mean()
        assert recall == 1.0, name
        assert precision > 0.75, name
    for concept, keywords in zip(demo.concepts["concept"], demo.concepts["keywords"]):
        assert parse_concept_terms(concept) == keywords


def test_each_aspect_has_many_phrasings(demo):
    truth = demo.truth.to_numpy()
    for j, aspect in demo.concepts.iterrows():
        texts = [demo.texts[i] for i in np.flatnonzero(truth[:, j])]
        keyword = re.compile(r"\b(" + "|".join(aspect["keywords"]) + r")\b", re.I)
        sentences = {s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if keyword.search(s)}
        assert len(sentences) >= 10, aspect["name"]
        assert len(aspect["phrasings"]) >= 4


def test_planted_effects_drive_rating_and_distractors_do_not():
    demo = load_demo(8000, random_state=1)
    X = np.column_stack([np.ones(len(demo.y)), demo.truth.to_numpy()])
    coef = np.linalg.lstsq(X, demo.y, rcond=None)[0][1:]
    effects = demo.concepts["effect"].to_numpy()
    planted = demo.concepts["planted"].to_numpy()
    assert np.all(np.sign(coef[planted]) == np.sign(effects[planted]))
    assert np.all(np.abs(coef[planted]) > 0.4)
    assert np.all(np.abs(coef[~planted]) < 0.1)
    # Aspects occur independently of one another.
    corr = np.corrcoef(demo.truth.to_numpy(), rowvar=False)
    assert np.abs(corr - np.eye(len(corr))).max() < 0.1


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_bad_n_samples(n):
    with pytest.raises(InvalidParameterError, match="n_samples"):
        load_demo(n)
