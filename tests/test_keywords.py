"""Tests for the offline keyword concept format and KeywordAnnotator."""

from __future__ import annotations

import pickle
import re

import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_hypothesaes.keywords import (
    KeywordAnnotator,
    check_texts,
    format_keyword_concept,
    match_concepts,
    parse_concept_terms,
)


def _reference_match(texts, concept_terms):
    """Independent per-text implementation of the documented matching rule."""
    out = np.zeros((len(texts), len(concept_terms)), dtype=np.uint8)
    for j, terms in enumerate(concept_terms):
        patterns = []
        for term in terms:
            words = re.findall(r"\w+", term.lower())
            patterns.append(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b")
        pattern = re.compile("|".join(patterns))
        for i, text in enumerate(texts):
            out[i, j] = bool(pattern.search(text.lower()))
    return out


# ---------------------------------------------------------------- format/parse


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["wait"], 'mentions "wait"'),
        (["a", "b"], 'mentions "a" or "b"'),
        (["wait", "minutes", "hour"], 'mentions "wait", "minutes" or "hour"'),
        ([" long wait "], 'mentions "long wait"'),
    ],
)
def test_format_keyword_concept(terms, expected):
    assert format_keyword_concept(terms) == expected


@pytest.mark.parametrize(
    ("terms", "error", "match"),
    [
        ("wait", TypeError, "list of strings"),
        ([], ValueError, "at least one term"),
        (['say "hi"'], ValueError, "double quote"),
        (["!!"], ValueError, "no word characters"),
    ],
)
def test_format_keyword_concept_rejects(terms, error, match):
    with pytest.raises(error, match=match):
        format_keyword_concept(terms)


def test_parse_concept_terms_forms():
    assert parse_concept_terms('mentions "wait", "minutes" or "hour"') == [
        "wait",
        "minutes",
        "hour",
    ]
    assert parse_concept_terms('"rude"') == ["rude"]
    assert parse_concept_terms('contains "a" and "b", "a"') == ["a", "b"]
    assert parse_concept_terms('mentions " long wait " or "x"') == ["long wait", "x"]


@pytest.mark.parametrize(
    ("concept", "match"),
    [
        ("mentions long waits", "no quoted terms"),
        ('mentions "wait', "unbalanced"),
        ('mentions "wait" in a "restaurant"', "between or after"),
        ('mentions "wait" a lot', "between or after"),
        ('mentions "..."', "no words"),
        ('does not mention "rude"', "negated"),
        ('Doesn\'t mention "rude" or "mean"', "negated"),
        ('mentions none of "a", "b"', "negated"),
        ('mentions "' + "x" * 300 + '"', "longer than"),
    ],
)
def test_parse_concept_terms_rejects(concept, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_concept_terms(concept)
    assert repr(concept)[1:20] in str(info.value)


def test_parse_error_says_offline_annotator_needs_quotes():
    with pytest.raises(ValueError, match="offline keyword annotator needs concepts"):
        parse_concept_terms("describes a long wait for a table")
    with pytest.raises(TypeError, match="must be a string"):
        parse_concept_terms(3)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_term = st.lists(_word, min_size=1, max_size=3).map(" ".join)


@given(st.lists(_term, min_size=1, max_size=6))
def test_format_then_parse_round_trip(terms):
    concept = format_keyword_concept(terms)
    assert parse_concept_terms(concept) == list(dict.fromkeys(terms))


# ---------------------------------------------------------------- matching


def test_matching_rules():
    texts = [
        "We WAITED, then waited more.",
        "The waiter was nice.",
        "A long-wait kind of night",
        "long\n\twait",
        "longwait",
        "Wait!",
        "snake_case_word here",
        "",
        "45 minutes",
        "Crème brûlée was COLD.",
        "A long\u2014wait \u201cforever\u201d\u2026 couldn\u2019t",
    ]
    concepts = [["wait"], ["long wait"], ["snake_case_word"], ["45"], ["crème brûlée"], ["cold"]]
    got = match_concepts(texts, concepts)
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 1, 1],
            [1, 1, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(got, expected)


_text_alphabet = st.sampled_from(
    list("ab cd  ,.-!'_\n")
    + ["wait", "long", "Wait", "WAIT", "é", "ñ", "ß", "x1", " ", "\u2019", "\u2014", "\u00a0", "…"]
)


_concept_word = st.sampled_from(["wait", "long", "a", "b", "x1", "é", "cd", "ab"])


@given(
    texts=st.lists(st.lists(_text_alphabet, max_size=30).map("".join), max_size=25),
    concepts=st.lists(
        st.lists(
            st.lists(_concept_word, min_size=1, max_size=3).map(" ".join),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fast_matcher_equals_reference(texts, concepts):
    np.testing.assert_array_equal(
        match_concepts(texts, concepts), _reference_match(texts, concepts)
    )


def test_fast_matcher_across_chunks_and_mixed_scripts():
    rng = np.random.default_rng(0)
    vocab = np.array(
        [
            "wait",
            "waiter",
            "long",
            "minutes",
            "hour",
            "café",
            "naïve",
            "rude",
            "x",
            "the",
            "don\u2019t",
            "wait\u2014long",
        ]
    )
    texts = [
        " ".join(rng.choice(vocab, size=rng.integers(0, 12))) + rng.choice(["", ".", "!"])
        for _ in range(20_000)
    ]
    concepts = [["wait", "minutes"], ["long wait"], ["café"], ["naïve rude"], ["hour"]]
    got = match_concepts(texts, concepts)
    np.testing.assert_array_equal(got, _reference_match(texts, concepts))
    assert got.sum(axis=0).min() > 0


# ---------------------------------------------------------------- annotator


def test_annotator_docstring_behaviour_and_names():
    ann = KeywordAnnotator(['mentions "wait" or "long line"', 'mentions "rude"'])
    out = ann.fit_transform(["We had a LONG line.", "Rude waiter, long wait!", "Fine."])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 0], [1, 1], [0, 0]])
    assert list(ann.get_feature_names_out()) == [
        'mentions "wait" or "long line"',
        'mentions "rude"',
    ]
    assert ann.terms_ == [["wait", "long line"], ["rude"]]


@pytest.mark.parametrize(
    "make",
    [
        list,
        tuple,
        np.array,
        pd.Series,
        lambda t: pd.DataFrame({"text": t}),
        lambda t: np.array(t, dtype=object)[:, None],
    ],
)
def test_annotator_input_types(make):
    texts = ["cold soup", "hot soup", "COLD tea"]
    ann = KeywordAnnotator(['mentions "cold"']).fit(make(texts))
    np.testing.assert_array_equal(ann.transform(make(texts)).ravel(), [1, 0, 1])


def test_annotator_errors():
    with pytest.raises(ValueError, match="needs concepts"):
        KeywordAnnotator().fit(["x"])
    with pytest.raises(ValueError, match="no quoted terms"):
        KeywordAnnotator(["talks about waiting"]).fit(["x"])
    with pytest.raises(ValueError, match="at least one concept"):
        KeywordAnnotator([]).fit(["x"])
    ann = KeywordAnnotator(['"x"']).fit(["x"])
    with pytest.raises(TypeError, match=r"rows 1 \(NoneType\), 2 \(float\)"):
        ann.transform(["a", None, np.nan])
    with pytest.raises(TypeError, match="not a single string"):
        ann.transform("a text")
    with pytest.raises(ValueError, match="1-dimensional"):
        ann.transform(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="2 columns"):
        check_texts(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_annotator_empty_inputs():
    ann = KeywordAnnotator(['"x"', '"y"']).fit(None)
    assert ann.transform([]).shape == (0, 2)
    np.testing.assert_array_equal(ann.transform(["", "   "]), np.zeros((2, 2)))


def test_set_output_pandas_keeps_index_and_names():
    texts = pd.Series(["long wait", "short"], index=[10, 20])
    ann = KeywordAnnotator(['mentions "wait"']).set_output(transform="pandas")
    out = ann.fit_transform(texts)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ['mentions "wait"']
    assert list(out.index) == [10, 20]
    assert out.iloc[:, 0].tolist() == [1, 0]


def test_pipeline_clone_and_persistence(tmp_path):
    texts = ["cold soup", "warm soup", "cold tea", "hot tea"] * 5
    y = np.array([0, 1, 0, 1] * 5)
    pipe = Pipeline(
        [
            ("ann", KeywordAnnotator(['mentions "cold"', 'mentions "tea"'])),
            ("clf", LogisticRegression()),
        ]
    )
    pipe.fit(texts, y)
    assert pipe.score(texts, y) == 1.0
    cloned = clone(pipe)
    assert cloned.get_params()["ann__concepts"] == ['mentions "cold"', 'mentions "tea"']
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict(texts), pipe.predict(texts))
    ann2 = pickle.loads(pickle.dumps(pipe.named_steps["ann"]))
    np.testing.assert_array_equal(ann2.transform(texts), pipe.named_steps["ann"].transform(texts))


def test_transform_before_fit_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        KeywordAnnotator(['"x"']).transform(["x"])
