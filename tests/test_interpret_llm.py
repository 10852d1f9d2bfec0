"""NeuronInterpreter against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).parent))

from interp_server import InterpretingServer, parse_interpretation_prompt
from openai_server import default_answer

from sklearn_hypothesaes.annotate import AnnotationError, LLMConceptAnnotator
from sklearn_hypothesaes.exceptions import AnnotationWarning
from sklearn_hypothesaes.interpret import (
    NeuronInterpreter,
    explore_neurons,
    pair_texts_to_individual,
    parse_interpretation,
)
from sklearn_hypothesaes.llm import OpenAIClient

WORDS = ["soup", "tea", "bread", "cake", "rice", "fish", "salad", "pie"]
MOODS = ["cold", "fine", "good", "okay", "nice", "bland", "warm", "late"]


def make_data(n: int = 400, seed: int = 0):
    """Texts and activations: neuron 0 fires on "cold" (strength varies), neuron 1
    on "tea", neuron 2 never, neuron 3 on three texts only."""
    rng = np.random.RandomState(seed)
    texts, acts = [], []
    for i in range(n):
        food, mood = WORDS[rng.randint(8)], MOODS[rng.randint(8)]
        extra = MOODS[rng.randint(8)]
        texts.append(f"item {i}: the {food} was {mood} and {extra}")
        a0 = (1.0 + rng.rand()) * (mood == "cold" or extra == "cold")
        a1 = (0.5 + rng.rand()) * (food == "tea")
        a3 = 1.0 if i < 3 else 0.0
        acts.append([a0, a1, 0.0, a3])
    return texts, np.array(acts)


TEXTS, ACTS = make_data()


@pytest.fixture
def server():
    with InterpretingServer() as srv:
        yield srv


def client_for(srv, **kw):
    params = dict(base_url=srv.url, verbose=False, backoff_base=0.01, timeout=5.0)
    params.update(kw)
    return OpenAIClient("test-model", **params)


def interpreter(srv, tmp_path, client_kw=None, **kw):
    params = dict(
        client=client_for(srv, **(client_kw or {})),
        cache=tmp_path,
        random_state=0,
        verbose=False,
        n_scoring_examples=40,
        n_examples=10,
    )
    params.update(kw)
    return NeuronInterpreter(**params)


class RecordingAnnotator(LLMConceptAnnotator):
    """A real annotator that also records the scoring pairs it is asked for."""

    def annotate_pairs(self, texts, concepts, *, return_usage=False):
        self.recorded_ = list(zip(texts, concepts))
        return super().annotate_pairs(texts, concepts, return_usage=return_usage)


def interpretation_requests(srv):
    out = []
    for e in srv.completed():
        parsed = parse_interpretation_prompt(e["key"].replace("\\n", "\n"))
        if parsed is not None:
            out.append(parsed)
    return out


# -- parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, feature",
    [
        ('- "mentions long waits"', "mentions long waits"),
        ('mentions long waits"', "mentions long waits"),
        ('"mentions long waits', "mentions long waits"),
        ("\n\n  * uses exclamation marks\nsecond line", "uses exclamation marks"),
        (
            '<think>Positives all wait.\nYes.</think>\n- "mentions long waits"',
            "mentions long waits",
        ),
        ('- "mentions "cold" soup"', 'mentions "cold" soup'),
    ],
)
def test_parse_interpretation(answer, feature):
    assert parse_interpretation(answer) == feature


@pytest.mark.parametrize("answer", ["", "  \n ", "<think>still thinking", '- ""'])
def test_parse_interpretation_rejects(answer):
    with pytest.raises(ValueError):
        parse_interpretation(answer)


_FEATURE_CHARS = st.characters(
    blacklist_characters='"<>', blacklist_categories=("Cc", "Cs", "Zl", "Zp")
)


@given(st.text(alphabet=_FEATURE_CHARS, min_size=1).map(str.strip))
def test_parse_interpretation_round_trips_quoted_features(feature):
    if not feature or feature.startswith(("-", "*")):
        return
    assert parse_interpretation(f'- "{feature}"\nanything') == feature


# -- prompts and examples -----------------------------------------------------------------
def test_prompts_contain_the_right_examples(server, tmp_path):
    ann = RecordingAnnotator(client=client_for(server), cache=tmp_path, verbose=False)
    interp = interpreter(server, tmp_path, n_candidates=3, annotator=ann)
    res = interp.interpret(TEXTS, ACTS, [0])
    act = dict(zip(TEXTS, ACTS[:, 0]))
    prompts = interpretation_requests(server)
    assert len(prompts) == 3
    row = res.iloc[0]
    assert (row["positive_examples"], row["negative_examples"]) in prompts
    scored = {t for t, _ in ann.recorded_}
    for pos, neg in prompts:
        assert len(pos) == 5 and len(neg) == 5
        assert all(act[t] > 0 for t in pos)
        assert [act[t] for t in pos] == sorted((act[t] for t in pos), reverse=True)
        assert all(act[t] == 0 for t in neg)
        assert not scored & set(pos + neg), "shown texts must be held apart from scoring"
    # Top sampling: same positives for every candidate, negatives from each own seed.
    assert prompts[0][0] == prompts[1][0] == prompts[2][0]
    assert len({tuple(sorted(n)) for _, n in prompts}) == 3
    # Top sampling means the positives beat every other unscored positive text.
    shown = set(prompts[0][0])
    rest = [act[t] for t in TEXTS if t not in shown and t not in scored and act[t] > 0]
    assert min(act[t] for t in shown) >= max(rest, default=0)


def test_prompt_has_task_instructions_and_template_identity(server, tmp_path):
    interp = interpreter(server, tmp_path, task_instructions="Focus on temperatures.")
    msgs = interp.build_prompt(["a </sample> b"], ["c"])
    assert "Focus on temperatures." in msgs[1]["content"]
    assert "<sample>a </ sample> b</sample>" in msgs[1]["content"]
    default = interpreter(server, tmp_path).build_prompt(["a"], ["c"])
    assert "uses multiple adjectives to describe colors" in default[1]["content"]


def test_percentile_and_low_percentile_sampling(server, tmp_path):
    interp = interpreter(
        server, tmp_path, sampling="percentile", high_percentile=(50, 100),
        low_percentile=(0, 40), n_candidates=2,
    )  # fmt: skip
    res = interp.interpret(TEXTS, ACTS, [0])
    pos_vals = ACTS[ACTS[:, 0] > 0, 0]
    lo40, hi50 = np.percentile(pos_vals, 40), np.percentile(pos_vals, 50)
    act = dict(zip(TEXTS, ACTS[:, 0]))
    prompts = interpretation_requests(server)
    assert len(prompts) == 2 and res.loc[0, "status"] == "ok"
    for pos, neg in prompts:
        assert pos and neg
        # Bands are taken over the explanation part, close to the overall ones.
        assert all(act[t] > 0 for t in pos + neg)
        assert np.median([act[t] for t in pos]) > hi50 * 0.9
        assert max(act[t] for t in neg) < lo40 * 1.2


def test_same_random_state_same_prompts_other_state_other_draws(tmp_path):
    runs = []
    for state in (0, 0, 1):
        with InterpretingServer() as srv:
            interpreter(srv, tmp_path / str(len(runs)), random_state=state).interpret(
                TEXTS, ACTS, [0, 1]
            )
            runs.append(sorted(interpretation_requests(srv)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# -- candidates and fidelity ------------------------------------------------------------
def cycling_answers(*answers):
    state = {"n": 0}

    def interpret(pos, neg):
        state["n"] += 1
        return f'- "{answers[state["n"] % len(answers)]}"'

    return interpret


def direct_metrics(pairs, concept, act):
    """Fidelity as the reference computes it, from the texts that were scored."""
    texts = [t for t, c in pairs if c == concept]
    a = np.array([_or_answer(concept, t) for t in texts], dtype=bool)
    y = np.array([act[t] > 0 for t in texts])
    tp, fp, fn = (a & y).sum(), (a & ~y).sum(), (~a & y).sum()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    values = np.array([act[t] for t in texts])
    corr = np.corrcoef(values, a)[0, 1] if len(np.unique(a)) > 1 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correlation": corr}


@pytest.mark.parametrize("metric", ["f1", "precision", "recall", "correlation"])
def test_several_candidates_best_kept_and_metrics_match_direct_computation(tmp_path, metric):
    concepts = ["mentions the word cold", "mentions the word soup", "mentions cold or warm"]
    answer = cycling_answers(*concepts)
    with InterpretingServer(interpret=answer, answer=lambda c, t: _or_answer(c, t)) as srv:
        ann = RecordingAnnotator(client=client_for(srv), cache=tmp_path, verbose=False)
        res = interpreter(
            srv, tmp_path, n_candidates=3, annotator=ann, scoring_metric=metric
        ).interpret(TEXTS, ACTS, [0])
    row = res.iloc[0]
    cands = row["candidates"]
    assert sorted(c["concept"] for c in cands) == sorted(concepts)
    act = dict(zip(TEXTS, ACTS[:, 0]))
    for cand in cands:
        expected = direct_metrics(ann.recorded_, cand["concept"], act)
        for m, v in expected.items():
            assert cand[m] == pytest.approx(v), (cand["concept"], m)
    best = max(c[metric] for c in cands)
    assert row[metric] == pytest.approx(best)
    assert row["hypothesis"] in [c["concept"] for c in cands if c[metric] == best]
    if metric in ("f1", "precision"):
        assert row["hypothesis"] == "mentions the word cold"
    if metric == "recall":
        assert row["recall"] == 1.0
    # The examples reported are those the chosen concept came from.
    assert (row["positive_examples"], row["negative_examples"]) in interpretation_requests(srv)


def _or_answer(concept, text):
    if " or " in concept:
        words = set(text.lower().split())
        return bool({"cold", "warm"} & words)
    return default_answer(concept, text)


def test_names_the_planted_words(server, tmp_path):
    res = interpreter(server, tmp_path, n_candidates=2).interpret(TEXTS, ACTS, [0, 1])
    assert res["hypothesis"].tolist() == ["mentions the word cold", "mentions the word tea"]
    assert (res["f1"] == 1.0).all() and (res["status"] == "ok").all()
    assert list(res.columns[:9]) == [
        "neuron", "hypothesis", "precision", "recall", "f1", "correlation",
        "candidates", "positive_examples", "negative_examples",
    ]  # fmt: skip


def test_dead_and_rare_neurons_are_reported_with_a_reason(server, tmp_path):
    res = interpreter(server, tmp_path).interpret(TEXTS, ACTS, [2, 3, 0])
    assert res["neuron"].tolist() == [2, 3, 0]
    assert res.loc[0, "status"] == "dead neuron"
    assert res.loc[1, "status"].startswith("too few positive examples")
    assert pd.isna(res.loc[0, "hypothesis"]) and np.isnan(res.loc[1, "f1"])
    assert res.loc[2, "status"] == "ok"
    assert len(interpretation_requests(server)) == 1


# -- caching and faults -------------------------------------------------------------------
def test_second_run_is_served_from_the_cache(tmp_path):
    with InterpretingServer() as srv:
        first_interp = interpreter(srv, tmp_path, n_candidates=2)
        first = first_interp.interpret(TEXTS, ACTS, [0, 1])
        n = len(srv.log)
        assert n > 0
        # usage_ counts every request: interpretation and fidelity scoring
        assert first_interp.usage_.n_requests == n
        assert first_interp.usage_.prompt_tokens > 0
        again_interp = interpreter(srv, tmp_path, n_candidates=2)
        again = again_interp.interpret(TEXTS, ACTS, [0, 1])
        assert len(srv.log) == n, "a cached re-run must send no request"
        assert again_interp.usage_.n_requests == 0
        other = interpreter(srv, tmp_path, n_candidates=2, temperature=0.3)
        other.interpret(TEXTS, ACTS, [0])
        assert len(srv.log) > n, "other request parameters must miss the cache"
    assert first.drop(columns="candidates").equals(again.drop(columns="candidates"))
    assert first["candidates"].tolist() == again["candidates"].tolist()


def test_faults_are_survived(tmp_path):
    with InterpretingServer() as srv:
        clean = interpreter(srv, tmp_path / "a", n_candidates=2).interpret(TEXTS, ACTS, [0, 1])
    schedule = ["500", "429", "empty", "garbage"]
    with InterpretingServer(fault_schedule=schedule, think=True) as srv:
        faulty = interpreter(srv, tmp_path / "b", n_candidates=2, client_kw={"max_retries": 5})
        with warnings.catch_warnings():
            warnings.simplefilter("error", AnnotationWarning)
            res = faulty.interpret(TEXTS, ACTS, [0, 1])
        faults = srv.stats()["faults"]
    assert res["hypothesis"].tolist() == clean["hypothesis"].tolist()
    assert res["f1"].tolist() == clean["f1"].tolist()
    assert set(faults) == set(schedule)


def test_failed_interpretations_are_reported_not_cached(tmp_path):
    with InterpretingServer(fault_rates={"500": 1.0}) as srv:
        interp = interpreter(srv, tmp_path, client_kw={"max_retries": 0})
        with pytest.warns(AnnotationWarning, match="interpretation requests"):
            res = interp.interpret(TEXTS, ACTS, [0])
    assert res.loc[0, "status"] == "interpretation failed (server_error) after retries"
    assert pd.isna(res.loc[0, "hypothesis"])
    with InterpretingServer() as srv:
        res = interpreter(srv, tmp_path).interpret(TEXTS, ACTS, [0])
        assert len(interpretation_requests(srv)) == 1
    assert res.loc[0, "status"] == "ok"


def test_scoring_failures_follow_the_annotator_policy(tmp_path):
    def failing_scoring(srv):
        return LLMConceptAnnotator(
            client=client_for(srv, max_retries=0), cache=False, verbose=False, on_failure="raise"
        )

    # Annotation prompts fail, interpretation prompts succeed.
    class ScoringDown(InterpretingServer):
        def _pick_fault(self, key):
            return "500" if "PROPERTY:" in key else None

    with ScoringDown() as srv:
        with pytest.raises(AnnotationError, match="scoring annotations"):
            interpreter(srv, tmp_path, annotator=failing_scoring(srv)).interpret(TEXTS, ACTS, [0])
        nan_ann = clone(failing_scoring(srv)).set_params(on_failure="nan")
        with pytest.warns(AnnotationWarning, match="left out"):
            res = interpreter(srv, tmp_path, annotator=nan_ann).interpret(TEXTS, ACTS, [0])
    # Nothing was answered: no metric can be computed from no answers.
    assert res.loc[0, "f1"] == 0.0 and res.loc[0, "status"] == "ok"


# -- pairwise, exploration, estimator conventions -------------------------------------------
def test_pairwise_via_individual_texts(server, tmp_path):
    half = len(TEXTS) // 2
    texts, acts = pair_texts_to_individual(TEXTS[:half], TEXTS[half:], ACTS[:half], ACTS[half:])
    with pytest.raises(ValueError, match="pair_texts_to_individual"):
        interpreter(server, tmp_path).interpret(TEXTS[:half], ACTS[:half] - ACTS[half:], [0])
    res = interpreter(server, tmp_path).interpret(texts, acts, [0])
    assert res.loc[0, "hypothesis"] == "mentions the word cold"


def test_explore_neurons_with_the_llm_interpreter(server, tmp_path):
    out = explore_neurons(
        TEXTS, ACTS, n_neurons=2, interpreter=interpreter(server, tmp_path), random_state=0
    )
    assert out["neuron"].tolist() == [0, 1]  # most prevalent first
    assert out["hypothesis"].tolist() == ["mentions the word cold", "mentions the word tea"]
    assert all("cold" in t for t in out.loc[0, "top_texts"])


def test_estimator_conventions_and_no_key_in_pickles(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    interp = interpreter(server, tmp_path, n_candidates=2)
    twin = clone(interp)
    assert twin.get_params()["n_candidates"] == 2
    assert b"sk-secret-value" not in pickle.dumps(interp)
    res = interp.interpret(TEXTS, ACTS, [0])
    assert interp.client.temperature == 0.0, "the user's client must not be mutated"
    assert all(e["authorization"] == "Bearer sk-secret-value" for e in server.log)
    assert b"sk-secret-value" not in pickle.dumps(res)


@pytest.mark.parametrize(
    "params, error",
    [
        ({"n_candidates": 0}, ValueError),
        ({"temperature": -1.0}, ValueError),
        ({"scoring_metric": "auc"}, ValueError),
        ({"client": "gpt-4o"}, ValueError),
        ({"high_percentile": (90, 101)}, ValueError),
    ],
)
def test_bad_parameters_get_clear_errors(server, tmp_path, params, error):
    with pytest.raises(error):
        interpreter(server, tmp_path, **params).interpret(TEXTS, ACTS, [0])
    assert not server.log


def test_every_parameter_is_documented():
    doc = NeuronInterpreter.__doc__
    for name in NeuronInterpreter().get_params():
        assert f"\n    {name} : " in doc, name
