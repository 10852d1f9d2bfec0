"""LLM interpretation with fidelity scoring: ours vs the reference's
``NeuronInterpreter.interpret_neurons`` + ``score_interpretations``.

Both tools interpret the same neurons of the same activations (20 neurons x 3
candidates, 20 examples shown per candidate, 100 scoring texts per neuron) against
the same local OpenAI-compatible server (``tests/interp_server.py``, started in
its own process for each trial) that answers every request after 50 ms. The
server names a neuron by one of the three words that best separate the positive
from the negative samples (chosen by a hash of the negatives), so a neuron gets
up to three distinct candidates, one of them its planted word. Both tools use 30
concurrent requests for interpretation and for scoring; caches start empty.

Configs
-------
``reference``  hypothesaes 2.0.1 (Responses API, threads, no cache).
``ours``       NeuronInterpreter (Chat Completions, asyncio, SQLite cache in a
               fresh temporary directory).

Metrics: ``interpret_s`` (the whole interpretation + scoring; ratios are taken on
it), ``requests`` (as counted by the server), ``planted`` (fraction of neurons
whose chosen concept names the planted word) and ``mean_f1`` of the chosen
concepts (the tools score on different texts: the reference on the texts it
also showed, ours on held-apart texts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CASES = [{"n_texts": 3000, "n_neurons": 20, "n_candidates": 3}]
QUICK_CASES = [{"n_texts": 1000, "n_neurons": 5, "n_candidates": 3}]
BASELINE = "reference"
RATIO_METRICS = ("interpret_s",)
LATENCY = 0.05
CONCURRENCY = 30
N_EXAMPLES = 20
N_SCORING = 100

_TOPICS = [
    "soup", "waiter", "parking", "music", "dessert", "noise", "view", "coffee", "menu",
    "table", "owner", "portion", "drinks", "bread", "salad", "pizza", "burger", "patio",
    "booth", "sushi",
]  # fmt: skip
_FILLER = (
    "we came here on a friday evening with friends and the place was busy but we "
    "found a seat near the window and ordered a few things to share before the show"
).split()


def make_data(n_texts: int, n_neurons: int, seed: int = 0):
    """Texts with three topics each; neuron j fires (random strength) on topic j."""
    rng = np.random.RandomState(seed)
    texts, acts = [], np.zeros((n_texts, n_neurons))
    for i in range(n_texts):
        topics = rng.choice(len(_TOPICS), size=3, replace=False)
        words = list(rng.choice(_FILLER, 20)) + [_TOPICS[t] for t in topics]
        rng.shuffle(words)
        texts.append(f"Review {i}: " + " ".join(words) + ".")
        for t in topics:
            if t < n_neurons:
                acts[i, t] = 0.5 + rng.rand()
    return texts, acts


def setup(case: dict) -> dict:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "interp_server.py"), "--latency", str(LATENCY),
         "--vary"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = proc.stdout.readline().strip()
    texts, acts = make_data(case["n_texts"], case["n_neurons"])
    return {"server": proc, "url": url, "texts": texts, "acts": acts}


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats") as resp:
        return json.loads(resp.read())


def _finish(data: dict, chosen: list, f1: list, seconds: float, before: dict) -> dict:
    after = _stats(data["url"])
    data["server"].terminate()
    planted = [f"mentions the word {_TOPICS[j]}" for j in range(len(chosen))]
    return {
        "interpret_s": seconds,
        "requests": after["n_requests"] - before["n_requests"],
        "planted": float(np.mean([c == p for c, p in zip(chosen, planted)])),
        "mean_f1": float(np.mean(f1)),
    }


def run_reference(case: dict, data: dict) -> dict:
    os.environ["OPENAI_BASE_URL"] = data["url"]
    os.environ.pop("OPENAI_KEY_SAE", None)
    from hypothesaes.interpret_neurons import InterpretConfig, NeuronInterpreter, SamplingConfig

    texts, acts = data["texts"], data["acts"]
    neurons = list(range(case["n_neurons"]))
    interp = NeuronInterpreter(
        interpreter_model="bench-model",
        annotator_model="bench-model",
        n_workers_interpretation=CONCURRENCY,
        n_workers_annotation=CONCURRENCY,
    )
    config = InterpretConfig(
        sampling=SamplingConfig(n_examples=N_EXAMPLES), n_candidates=case["n_candidates"]
    )
    before = _stats(data["url"])
    start = time.perf_counter()
    interps = interp.interpret_neurons(texts, acts, neurons, config=config)
    metrics = interp.score_interpretations(texts, acts, interps, show_progress=False)
    seconds = time.perf_counter() - start
    chosen, f1 = [], []
    for j in neurons:
        best = max(metrics[j].items(), key=lambda kv: kv[1]["f1"])
        chosen.append(best[0])
        f1.append(best[1]["f1"])
    return _finish(data, chosen, f1, seconds, before)


def run_ours(case: dict, data: dict) -> dict:
    from sklearn_hypothesaes.interpret import NeuronInterpreter
    from sklearn_hypothesaes.llm import OpenAIClient

    texts, acts = data["texts"], data["acts"]
    with tempfile.TemporaryDirectory() as tmp:
        client = OpenAIClient(
            "bench-model", base_url=data["url"], max_concurrency=CONCURRENCY, verbose=False
        )
        interp = NeuronInterpreter(
            client,
            n_candidates=case["n_candidates"],
            n_examples=N_EXAMPLES,
            n_scoring_examples=N_SCORING,
            cache=tmp,
            random_state=0,
            verbose=False,
        )
        before = _stats(data["url"])
        start = time.perf_counter()
        res = interp.interpret(texts, acts, list(range(case["n_neurons"])))
        seconds = time.perf_counter() - start
    return _finish(data, res["hypothesis"].tolist(), res["f1"].tolist(), seconds, before)


CONFIGS = {"reference": run_reference, "ours": run_ours}
