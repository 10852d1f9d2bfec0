"""Offline path: KeywordAnnotator throughput and OfflineInterpreter wall time.

The reference package has no offline annotator or interpreter, so the
annotator is compared with the straightforward alternative (one compiled,
case-insensitive regular expression per concept, searched text by text),
and the interpreter is reported in absolute time against its target
(100,000 texts x 20 neurons in under 30 s on 2 cores).

Configs
-------
``regex_per_text`` (baseline)
    ``re.compile(r"\\b(?:t1|t2)\\b", re.I).search(text)`` per text and
    concept, on the first 100,000 texts (per-text cost is what matters).
``keyword_annotator``
    :class:`KeywordAnnotator` on all ``n_texts`` texts.
``offline_interpreter``
    :class:`OfflineInterpreter` on the first ``n_interpret`` texts and 20
    neuron-like sparse activation columns driven by the planted aspects of
    :func:`load_demo` (graded strength, 10% misses, 2% spurious weak
    firing). ``recovered`` is the fraction of neurons whose hypothesis names
    one of its aspect's planted keywords.

Run: ``python -m benchmarks offline`` (``--quick`` for a small case).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from sklearn_hypothesaes.datasets import load_demo
from sklearn_hypothesaes.interpret import OfflineInterpreter
from sklearn_hypothesaes.keywords import KeywordAnnotator, parse_concept_terms

CASES = [{"n_texts": 1_000_000, "n_interpret": 100_000, "n_concepts": 20}]
QUICK_CASES = [{"n_texts": 50_000, "n_interpret": 20_000, "n_concepts": 20}]
BASELINE = "regex_per_text"
RATIO_METRICS = ("us_per_text",)
_N_DISTINCT = 100_000
_N_REGEX = 100_000


def _demo(n: int):
    path = os.path.join(tempfile.gettempdir(), f"sklearn_hypothesaes_bench_demo_{n}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    demo = load_demo(n, random_state=0)
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(demo, fh)
    os.replace(path + ".tmp", path)
    return demo


def _concepts(demo, n_concepts: int) -> list[str]:
    """The aspects' keyword concepts plus one-word concepts of other words."""
    concepts = demo.concepts["concept"].tolist()
    extra = ["table", "dinner", "menu", "salad", "window", "friend", "steak", "soup", "tea", "bar"]
    concepts += [f'mentions "{w}"' for w in extra]
    return concepts[:n_concepts]


def setup(case):
    n_distinct = min(_N_DISTINCT, case["n_texts"], max(case["n_interpret"], 1))
    demo = _demo(max(n_distinct, case["n_interpret"]))
    reps = -(-case["n_texts"] // len(demo.texts))
    texts = (demo.texts * reps)[: case["n_texts"]]
    truth = demo.truth.to_numpy()[: case["n_interpret"]].astype(np.float64)
    cols = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        acts = truth * rng.uniform(0.5, 2.0, size=truth.shape)
        acts *= rng.random(truth.shape) > 0.1
        acts += (rng.random(truth.shape) < 0.02) * rng.uniform(0.05, 0.4, size=truth.shape)
        cols.append(acts)
    activations = sp.csr_matrix(np.hstack(cols), dtype=np.float32)
    keywords = demo.concepts["keywords"].tolist() * 2
    return {
        "texts": texts,
        "concepts": _concepts(demo, case["n_concepts"]),
        "activations": activations,
        "keywords": keywords,
    }


def run_regex(case, data):
    texts = data["texts"][:_N_REGEX]
    patterns = []
    for concept in data["concepts"]:
        terms = parse_concept_terms(concept)
        patterns.append(re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.I))
    start = time.perf_counter()
    out = np.array([[p.search(t) is not None for p in patterns] for t in texts], dtype=np.uint8)
    seconds = time.perf_counter() - start
    return {"us_per_text": 1e6 * seconds / len(texts), "n_texts": len(texts), "hits": out.sum()}


def run_annotator(case, data):
    ann = KeywordAnnotator(data["concepts"]).fit()
    start = time.perf_counter()
    out = ann.transform(data["texts"])
    seconds = time.perf_counter() - start
    return {
        "us_per_text": 1e6 * seconds / len(data["texts"]),
        "n_texts": len(data["texts"]),
        "annotate_seconds": seconds,
        "hits_first_100k": out[:_N_REGEX].sum(),
    }


def run_interpreter(case, data):
    n = case["n_interpret"]
    start = time.perf_counter()
    result = OfflineInterpreter(random_state=0).interpret(
        data["texts"][:n], data["activations"], neurons=None
    )
    seconds = time.perf_counter() - start
    recovered = [
        bool(set(parse_concept_terms(h)) & set(kw)) if isinstance(h, str) else False
        for h, kw in zip(result["hypothesis"], data["keywords"])
    ]
    return {
        "interpret_seconds": seconds,
        "n_texts": n,
        "n_neurons": len(result),
        "recovered": float(np.mean(recovered)),
        "median_f1": float(result["f1"].median()),
    }


CONFIGS = {
    "regex_per_text": run_regex,
    "keyword_annotator": run_annotator,
    "offline_interpreter": run_interpreter,
}
