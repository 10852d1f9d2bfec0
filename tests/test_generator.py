"""HypothesisGenerator end to end: demo data, pairwise, multiclass, several SAEs,
grid search, persistence, the leakage guard, the LLM path through the test server."""

from __future__ import annotations

import logging
import pickle
import re
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import FeatureUnion, Pipeline

from sklearn_hypothesaes.datasets import load_demo
from sklearn_hypothesaes.embedding import TextEmbedder
from sklearn_hypothesaes.evaluation import match_hypotheses
from sklearn_hypothesaes.exceptions import DataLeakageWarning
from sklearn_hypothesaes.generator import HypothesisGenerator
from sklearn_hypothesaes.keywords import KeywordAnnotator
from sklearn_hypothesaes.sae import TopKSAETransformer
from sklearn_hypothesaes.selection import NeuronSelector

# SAE training is capped at a few epochs to keep the tests fast
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_DEMO = 3000
N_FIT = 2100


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """3,000 demo reviews embedded once with the real offline model."""
    data = load_demo(N_DEMO, random_state=0)
    cache = tmp_path_factory.mktemp("embed-cache")
    E = TextEmbedder(cache=cache, verbose=False).fit(data.texts).transform(data.texts)
    data.E = np.asarray(E, dtype=np.float32)
    data.cache = cache
    return data


def _sae(M=32, K=4, seed=0, epochs=15):
    # small batches: with a few thousand texts the SAE needs the optimiser steps
    return TopKSAETransformer(
        M=M, K=K, batch_size=128, max_epochs=epochs, random_state=seed, verbose=False
    )


def _full_sae():
    """The setting that recovers the planted aspects from 2,100 reviews."""
    return _sae(128, 8, epochs=40)


def _generator(**kw):
    params = dict(
        embedder=None,
        sae=_sae(),
        selector=NeuronSelector(n_select=8),
        interpreter="offline",
        annotator="offline",
        task="regression",
        random_state=0,
        verbose=False,
    )
    params.update(kw)
    return HypothesisGenerator(**params)


def _hold_idx(demo) -> np.ndarray:
    """Rows after N_FIT, minus reviews whose text also occurs in the fitting part
    (short synthetic reviews repeat now and then)."""
    texts = list(demo.texts)
    seen = set(texts[:N_FIT])
    return np.array([i for i in range(N_FIT, len(texts)) if texts[i] not in seen])


def _split(demo):
    texts = list(demo.texts)
    hold = _hold_idx(demo)
    return texts[:N_FIT], [texts[i] for i in hold], demo.y[:N_FIT], demo.y[hold]


@pytest.fixture(scope="module")
def fitted(demo):
    fit_texts, _, y_fit, _ = _split(demo)
    gen = _generator(sae=_full_sae(), selector=NeuronSelector(n_select=10))
    return gen.fit(fit_texts, y_fit, embeddings=demo.E[:N_FIT])


# -- the method works ------------------------------------------------------------------------
def test_planted_concepts_recovered_and_significant_on_held_out_data(demo, fitted):
    _, hold_texts, _, y_hold = _split(demo)
    report = fitted.report(hold_texts, y_hold)
    planted = demo.concepts.loc[demo.concepts["planted"], "name"].tolist()
    truth = demo.truth[planted].to_numpy()[_hold_idx(demo)]
    result = match_hypotheses(
        fitted.transform(hold_texts),
        truth,
        reference_names=planted,
        significant=report.table_["significant"].to_numpy(),
    )
    # most of the 7 planted aspects are found, named by their words, and significant
    assert result.n_recovered >= 5, result.table
    # distractor aspects (no effect on the rating) are not reported as significant
    distractors = demo.concepts.loc[~demo.concepts["planted"], "name"].tolist()
    on_distractors = match_hypotheses(
        fitted.transform(hold_texts),
        demo.truth[distractors].to_numpy()[_hold_idx(demo)],
        significant=report.table_["significant"].to_numpy(),
    )
    assert on_distractors.n_recovered <= 1


def test_shuffled_target_gives_almost_no_significant_hypothesis(demo):
    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    rng = np.random.default_rng(1)
    gen = _generator(sae=_full_sae(), selector=NeuronSelector(n_select=10))
    gen.fit(fit_texts, rng.permutation(y_fit), embeddings=demo.E[:N_FIT])
    report = gen.report(hold_texts, rng.permutation(y_hold))
    assert report.table_["significant"].sum() <= 1


def test_hypotheses_frame_contents(demo, fitted):
    hyp = fitted.hypotheses_
    for col in (
        "neuron",
        "neuron_name",
        "hypothesis",
        "selector_score",
        "activation_prevalence",
        "precision",
        "recall",
        "f1",
        "correlation",
        "positive_examples",
        "status",
        "used",
    ):
        assert col in hyp.columns, col
    assert len(hyp) == 10
    assert hyp["selection_rank"].tolist() == list(range(10))
    np.testing.assert_array_equal(hyp["neuron"].to_numpy(), fitted.selector_.selected_)
    assert hyp["neuron_name"].str.fullmatch(r"sae\d+").all()
    used = hyp[hyp["used"]]
    assert used["hypothesis"].tolist() == fitted.hypotheses_list_
    assert used["hypothesis"].is_unique
    assert used["hypothesis"].str.startswith("mentions ").all()
    assert ((hyp["activation_prevalence"] > 0) & (hyp["activation_prevalence"] <= 1)).all()
    # transform is the keyword annotator over the hypotheses
    X = list(demo.texts[:50])
    expected = KeywordAnnotator(fitted.hypotheses_list_).fit(X).transform(X)
    out = fitted.transform(X)
    assert out.dtype == np.uint8 and out.shape == (50, len(fitted.hypotheses_list_))
    np.testing.assert_array_equal(out, expected)


def test_pipeline_is_a_concept_bottleneck_model(demo, fitted):
    fit_texts, hold_texts, _, _ = _split(demo)
    yb = demo.y_binary
    pipe = Pipeline(
        [
            ("hyp", _generator(task="binary", sae=_full_sae(), selector=NeuronSelector(8))),
            ("clf", LogisticRegression()),
        ]
    )
    pipe.fit(fit_texts, yb[:N_FIT], hyp__embeddings=demo.E[:N_FIT])
    auc = roc_auc_score(yb[_hold_idx(demo)], pipe.predict_proba(hold_texts)[:, 1])
    assert auc > 0.7
    coef = pd.Series(pipe[-1].coef_[0], index=pipe[:-1].get_feature_names_out())
    assert len(coef) == len(pipe[0].hypotheses_list_)


def test_set_output_pandas(demo, fitted):
    out = pickle.loads(pickle.dumps(fitted)).set_output(transform="pandas")
    frame = out.transform(demo.texts[:5])
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == out.hypotheses_list_
    np.testing.assert_array_equal(frame.to_numpy(), fitted.transform(demo.texts[:5]))


def test_multiclass_end_to_end(demo):
    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    to_label = np.array(["low", "low", "mid", "high", "high"])
    labels_fit = to_label[y_fit.astype(int) - 1]
    labels_hold = to_label[y_hold.astype(int) - 1]
    gen = _generator(task="auto").fit(fit_texts, labels_fit, embeddings=demo.E[:N_FIT])
    assert gen.task_ == "multiclass"
    assert gen.classes_.tolist() == ["high", "low", "mid"]
    report = gen.report(hold_texts, labels_hold)
    assert set(report.table_["class"]) == {"high", "low", "mid"}
    assert report.table_["significant"].sum() >= 2


def test_pairwise_end_to_end(demo):
    rng = np.random.default_rng(0)
    texts = np.asarray(demo.texts, dtype=object)
    n_pairs = 1500
    a = rng.integers(0, N_FIT, size=n_pairs)
    b = rng.integers(0, N_FIT, size=n_pairs)
    keep = demo.y[a] != demo.y[b]
    a, b = a[keep], b[keep]
    pairs = list(zip(texts[a], texts[b]))
    wins = (demo.y[a] > demo.y[b]).astype(int)
    gen = _generator(pairwise=True, task="auto", sae=_full_sae(), selector=NeuronSelector(8))
    gen.fit(pairs, wins, embeddings=(demo.E[a], demo.E[b]))
    assert gen.task_ == "binary"
    # held-out pairs from texts never seen in fit
    hold = _hold_idx(demo)
    ha = rng.choice(hold, size=1500)
    hb = rng.choice(hold, size=1500)
    keep = demo.y[ha] != demo.y[hb]
    ha, hb = ha[keep], hb[keep]
    hold_pairs = list(zip(texts[ha], texts[hb]))
    H = gen.transform(hold_pairs)
    assert H.dtype == np.int8 and set(np.unique(H)) <= {-1, 0, 1}
    single = gen.annotator_.transform(list(texts[ha])).astype(int) - gen.annotator_.transform(
        list(texts[hb])
    ).astype(int)
    np.testing.assert_array_equal(H, single)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataLeakageWarning)
        report = gen.report(hold_pairs, (demo.y[ha] > demo.y[hb]).astype(int))
    assert report.pairwise_
    assert report.table_["significant"].sum() >= 2


def test_feature_union_of_saes_names_the_source(demo):
    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    union = FeatureUnion([("big", _sae(48, 6, seed=1)), ("small", _sae(12, 2, seed=2))])
    gen = _generator(sae=union, selector=NeuronSelector(n_select=10))
    gen.fit(fit_texts, y_fit, embeddings=demo.E[:N_FIT])
    names = gen.hypotheses_["neuron_name"]
    assert names.str.match(r"^(big|small)__sae\d+$").all()
    big = names.str.startswith("big__")
    assert (gen.hypotheses_.loc[big, "neuron"] < 48).all()
    assert (gen.hypotheses_.loc[~big, "neuron"] >= 48).all()
    report = gen.report(hold_texts, y_hold)
    assert report.table_["significant"].sum() >= 3


def test_grid_search_over_M_and_K_embeds_each_text_once(demo, tmp_path, caplog):
    texts = list(demo.texts[:300])
    y = demo.y_binary[:300]
    embedder = TextEmbedder(cache=tmp_path / "cache", verbose=False)
    pipe = Pipeline(
        [
            ("hyp", _generator(embedder=embedder, task="binary", selector=NeuronSelector(4))),
            ("clf", LogisticRegression()),
        ]
    )
    search = GridSearchCV(pipe, {"hyp__sae__M": [16, 32], "hyp__sae__K": [2, 4]}, cv=2)
    with caplog.at_level(logging.DEBUG, logger="sklearn_hypothesaes.embedding"):
        search.fit(texts, y)
    assert set(search.cv_results_["param_hyp__sae__M"]) == {16, 32}
    computed = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) computed", r.getMessage()))
    ]
    # 4 settings x 2 folds + the refit = 9 fits, yet every distinct text is embedded once
    assert len(computed) == 9
    assert sum(computed) == len(set(texts))


def test_joblib_round_trip_in_a_fresh_process(demo, fitted, tmp_path):
    path = tmp_path / "gen.joblib"
    joblib.dump(fitted, path)
    texts = list(demo.texts[-20:])
    expected = fitted.transform(texts)
    code = (
        "import joblib, sys, json\n"
        f"gen = joblib.load({str(path)!r})\n"
        f"texts = {texts!r}\n"
        "print(json.dumps(gen.transform(texts).tolist()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    import json

    np.testing.assert_array_equal(
        np.array(json.loads(proc.stdout.strip().splitlines()[-1])), expected
    )


def test_report_warns_on_training_texts(demo, fitted):
    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    with pytest.warns(DataLeakageWarning, match="used in fit"):
        fitted.report(fit_texts[:300], y_fit[:300])
    assert fitted.overlap_with_fit(fit_texts[:300]) == 300
    mixed = fit_texts[:10] + hold_texts[:90]
    assert fitted.overlap_with_fit(mixed) >= 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataLeakageWarning)
        fitted.report(hold_texts, y_hold)


def test_fit_leaves_parameters_untouched_and_clones(demo):
    gen = _generator()
    fit_texts, _, y_fit, _ = _split(demo)
    before = gen.get_params(deep=False)
    gen.fit(fit_texts[:400], y_fit[:400], embeddings=demo.E[:400])
    assert not hasattr(gen.sae, "W_enc_")  # the template was cloned, not fitted
    assert gen.get_params(deep=False) == before
    again = clone(gen).fit(fit_texts[:400], y_fit[:400], embeddings=demo.E[:400])
    assert again.hypotheses_list_ == gen.hypotheses_list_  # deterministic under random_state


def test_embedder_used_when_no_embeddings_given(demo):
    texts = list(demo.texts[:300])
    gen = _generator(
        embedder=TextEmbedder(cache=demo.cache, verbose=False), selector=NeuronSelector(4)
    )
    gen.fit(texts, demo.y[:300])
    assert gen.embedder_ is not None
    with_E = _generator(selector=NeuronSelector(4)).fit(
        texts, demo.y[:300], embeddings=demo.E[:300]
    )
    assert with_E.embedder_ is None
    assert gen.hypotheses_list_ == with_E.hypotheses_list_


@pytest.mark.parametrize(
    "X, y, kwargs, error, message",
    [
        (["a good text", 3, "another"], [1.0, 2.0, 3.0], {}, TypeError, r"row\(s\) \[1\]"),
        (["a good text", "  ", "x"], [1.0, 2.0, 3.0], {}, ValueError, "empty text"),
        ("just one string", [1.0], {}, TypeError, "single string"),
        (["a", "b", "c"], [1.0, 2.0], {}, ValueError, "y has 2"),
        (["a", "b", "c"], [1.0, np.nan, 2.0], {}, ValueError, "NaN"),
        (["a", "b", "c"], [2.0, 2.0, 2.0], {}, ValueError, "single value"),
        (["a", "b", "c"], [1.0, 2.0, 3.0], {"embeddings": np.ones((2, 4))}, ValueError, "2 rows"),
        (
            ["a", "b", "c"],
            [1.0, 2.0, 3.0],
            {"embeddings": np.full((3, 4), np.nan)},
            ValueError,
            "NaN",
        ),
        (["a", "b", "c"], [1.0, 2.0, 3.0], {}, ValueError, "embedder=None needs"),
    ],
)
def test_input_errors(X, y, kwargs, error, message):
    with pytest.raises(error, match=message):
        _generator().fit(X, y, **kwargs)


def test_pairwise_input_errors():
    gen = _generator(pairwise=True, task="auto")
    with pytest.raises(ValueError, match="pairs"):
        gen.fit(["a", "b"], [0, 1], embeddings=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"embeddings=\(embeddings_A"):
        gen.fit([("a", "b"), ("c", "d")], [0, 1], embeddings=np.ones((2, 3)))
    with pytest.raises(ValueError, match="multiclass"):
        gen.fit([("a", "b"), ("c", "d"), ("e", "f")], ["x", "y", "z"])


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError, match="interpreter"):
        HypothesisGenerator(interpreter="magic").fit(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="n_hypotheses"):
        HypothesisGenerator(n_hypotheses=0).fit(["a", "b"], [0, 1])


# -- the LLM path through the local OpenAI-compatible server ---------------------------------
def test_llm_path_end_to_end_through_test_server(demo, monkeypatch, tmp_path):
    from openai_server import FakeOpenAIServer

    from sklearn_hypothesaes.annotate import LLMConceptAnnotator

    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    hold_texts, y_hold = hold_texts[:150], y_hold[:150]
    secret = "sk-test-secret-value-0123456789"
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        # "auto" sees the configured endpoint and annotates with the LLM
        gen = _generator(
            interpreter="offline",
            annotator="auto",
            selector=NeuronSelector(n_select=5),
            cache=tmp_path / "llm-cache",
        )
        gen.fit(fit_texts, y_fit, embeddings=demo.E[:N_FIT])
        assert gen.mode_ == "llm"
        assert isinstance(gen.annotator_, LLMConceptAnnotator)
        report = gen.report(hold_texts, y_hold)
        n_answered = len(server.completed())
    H = len(gen.hypotheses_list_)
    assert n_answered == len(set(hold_texts)) * H
    assert gen.annotator_.usage_.prompt_tokens > 0
    # the server says yes exactly when a quoted term occurs, as the keyword annotator does
    offline = KeywordAnnotator(gen.hypotheses_list_).fit(hold_texts).transform(hold_texts)
    np.testing.assert_allclose(report.table_["feature_prevalence"], offline.mean(axis=0))
    assert report.n_samples_ == len(hold_texts)
    # the key is read from the environment at call time and never pickled
    path = tmp_path / "gen.joblib"
    joblib.dump(gen, path)
    assert secret.encode() not in path.read_bytes()


def test_full_llm_path_interprets_and_annotates_through_test_server(demo, monkeypatch, tmp_path):
    """With an endpoint configured, "auto" names neurons with the LLM and annotates with it."""
    from interp_server import InterpretingServer

    from sklearn_hypothesaes.annotate import LLMConceptAnnotator
    from sklearn_hypothesaes.interpret import NeuronInterpreter

    fit_texts, hold_texts, y_fit, y_hold = _split(demo)
    hold_texts, y_hold = hold_texts[:120], y_hold[:120]
    with InterpretingServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-llm-path")
        gen = _generator(
            interpreter="auto",
            annotator="auto",
            selector=NeuronSelector(n_select=3),
            cache=tmp_path / "llm-cache",
        )
        gen.fit(fit_texts, y_fit, embeddings=demo.E[:N_FIT])
        assert gen.mode_ == "llm"
        assert isinstance(gen.interpreter_, NeuronInterpreter)
        assert isinstance(gen.annotator_, LLMConceptAnnotator)
        ok = gen.hypotheses_[gen.hypotheses_["status"] == "ok"]
        assert len(ok) >= 2
        # the server names a neuron by its most contrastive word
        assert all(h.startswith("mentions the word ") for h in ok["hypothesis"])
        assert ok["f1"].between(0, 1).all()
        n_before = len(server.completed())
        report = gen.report(hold_texts, y_hold)
        assert len(server.completed()) > n_before  # held-out texts annotated by the LLM
    assert report.n_samples_ == len(hold_texts)
    assert list(report.table_["hypothesis"]) == gen.hypotheses_list_


def test_every_parameter_and_fitted_attribute_is_documented(fitted):
    doc = HypothesisGenerator.__doc__
    for name in HypothesisGenerator().get_params(deep=False):
        assert f"\n    {name} : " in doc, name
    attributes = doc.split("Attributes\n    ----------")[1].split("See Also")[0]
    fitted_names = [k for k in vars(fitted) if k.endswith("_") and not k.startswith("_")]
    assert len(fitted_names) >= 10
    for name in fitted_names:
        assert f"\n    {name} : " in attributes, name
