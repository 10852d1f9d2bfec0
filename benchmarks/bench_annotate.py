"""LLM annotation: ours vs ``hypothesaes.annotate.annotate_texts_with_concepts``.

Both run against the same local OpenAI-compatible server (``tests/openai_server.py``,
started in its own process for each trial) that answers after 50 ms, with the
same concurrency (30): at most 30 / 0.05 s = 600 requests/s are possible.

Cases
-----
``live``
    2,000 texts x 5 concepts (10,000 annotations), empty caches.
``cached``
    20,000 texts x 10 concepts (200,000 annotations), every answer already in
    the tool's own cache (written directly, untimed), so only the cached
    re-run is timed. The server must see no request.

Configs
-------
``reference``       hypothesaes 2.0.1 (Responses API, 30 threads, JSON cache).
``ours_pair``       LLMConceptAnnotator, one yes/no request per pair, Chat Completions.
``ours_responses``  the same over the Responses API (what the reference uses).
``ours_multi``      one JSON request per text for all concepts.

Metrics: ``annotate_s`` (the annotation call only; ratios are taken on it),
``items_per_s``, ``accuracy`` (against the server's answer function), and
``prompt_tokens_per_item`` as counted by the server with the documented
estimate ``ceil(chars / 4) + 4`` per message, identical for both tools.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CASES = [
    {"workload": "live", "n_texts": 2000, "n_concepts": 5},
    {"workload": "cached", "n_texts": 20000, "n_concepts": 10},
]
QUICK_CASES = [
    {"workload": "live", "n_texts": 300, "n_concepts": 5},
    {"workload": "cached", "n_texts": 2000, "n_concepts": 10},
]
BASELINE = "reference"
RATIO_METRICS = ("annotate_s",)
LATENCY = 0.05
CONCURRENCY = 30

_TOPICS = [
    "food", "wait", "staff", "price", "parking", "music", "dessert", "noise",
    "view", "coffee", "menu", "table", "owner", "portion", "drinks",
]  # fmt: skip
_FILLER = (
    "we came here on a friday evening with friends and the place was busy but we "
    "found a seat near the window and ordered a few things to share before the show"
).split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        words = rng.sample(_FILLER, 25) + rng.sample(_TOPICS, 3) + rng.sample(_FILLER, 20)
        rng.shuffle(words)
        texts.append(f"Review {i}: " + " ".join(words) + ".")
    return texts


def make_concepts(n: int) -> list[str]:
    return [f'mentions "{t}"' for t in _TOPICS[:n]]


def setup(case: dict) -> dict:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(LATENCY)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip()
    texts = make_texts(case["n_texts"])
    concepts = make_concepts(case["n_concepts"])
    from openai_server import default_answer

    truth = np.array([[default_answer(c, t) for c in concepts] for t in texts], dtype=np.uint8)
    return {"server": proc, "url": url, "texts": texts, "concepts": concepts, "truth": truth}


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats") as resp:
        return json.loads(resp.read())


def _finish(data: dict, A: np.ndarray, seconds: float, before: dict) -> dict:
    after = _stats(data["url"])
    data["server"].terminate()
    n_items = A.size
    prompt_tokens = after["prompt_tokens"] - before["prompt_tokens"]
    return {
        "annotate_s": seconds,
        "items_per_s": n_items / seconds,
        "accuracy": float((A == data["truth"]).mean()),
        "requests": after["n_requests"] - before["n_requests"],
        "prompt_tokens_per_item": prompt_tokens / n_items,
    }


def run_reference(case: dict, data: dict) -> dict:
    os.environ["OPENAI_BASE_URL"] = data["url"]
    os.environ.pop("OPENAI_KEY_SAE", None)
    from hypothesaes import annotate as ref

    texts, concepts = data["texts"], data["concepts"]
    cache_name = None
    if case["workload"] == "cached":
        cache_name = f"bench-{os.getpid()}"
        path = Path(ref.CACHE_DIR) / f"{cache_name}_hypothesis-eval.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {
            ref.generate_cache_key(c, t): int(data["truth"][i, j])
            for i, t in enumerate(texts)
            for j, c in enumerate(concepts)
        }
        path.write_text(json.dumps(entries))
    before = _stats(data["url"])
    start = time.perf_counter()
    out = ref.annotate_texts_with_concepts(
        texts,
        concepts,
        model="bench-model",
        cache_name=cache_name,
        show_progress=False,
        n_workers=CONCURRENCY,
    )
    seconds = time.perf_counter() - start
    if cache_name:
        path.unlink()
    A = np.column_stack([out[c] for c in concepts]).astype(np.uint8)
    return _finish(data, A, seconds, before)


def _run_ours(case: dict, data: dict, *, mode: str, api: str) -> dict:
    from sklearn_hypothesaes.annotate import NAMESPACE_MULTI, NAMESPACE_PAIR, LLMConceptAnnotator
    from sklearn_hypothesaes.cache import SQLiteCache
    from sklearn_hypothesaes.llm import OpenAIClient

    texts, concepts = data["texts"], data["concepts"]
    with tempfile.TemporaryDirectory() as tmp:
        client = OpenAIClient(
            "bench-model",
            base_url=data["url"],
            api=api,
            max_concurrency=CONCURRENCY,
            verbose=False,
        )
        ann = LLMConceptAnnotator(concepts, client=client, mode=mode, cache=tmp, verbose=False)
        ann.fit(texts)
        if case["workload"] == "cached":
            cache = SQLiteCache(tmp)
            truth = data["truth"]
            if mode == "pair":
                keys = ann._pair_keys(texts, concepts, grid=True)
                values = [str(int(v)) for v in truth.ravel()]
                cache.put_many(NAMESPACE_PAIR, zip(keys, values))
            else:
                keys = ann._multi_keys(texts, concepts)
                values = ["".join(map(str, row)) for row in truth]
                cache.put_many(NAMESPACE_MULTI, zip(keys, values))
            cache.close()
        before = _stats(data["url"])
        start = time.perf_counter()
        A = ann.transform(texts)
        seconds = time.perf_counter() - start
    metrics = _finish(data, A, seconds, before)
    metrics["retries"] = ann.usage_.n_retries
    return metrics


CONFIGS = {
    "reference": run_reference,
    "ours_pair": lambda case, data: _run_ours(case, data, mode="pair", api="chat"),
    "ours_responses": lambda case, data: _run_ours(case, data, mode="pair", api="responses"),
    "ours_multi": lambda case, data: _run_ours(case, data, mode="multi", api="chat"),
}
