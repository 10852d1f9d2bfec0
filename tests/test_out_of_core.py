"""Out-of-core training and inference: memmaps, .npy shards, chunked output, resumable embedding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import HashingVectorizer

from sklearn_hypothesaes.datasets import make_planted_embeddings
from sklearn_hypothesaes.out_of_core import (
    ShardedRows,
    embed_to_shards,
    gather_rows,
    load_sparse_shards,
    release_pages,
    transform_to_shards,
)
from sklearn_hypothesaes.sae import TopKSAETransformer

REPO = Path(__file__).resolve().parent.parent
SAE_KW = dict(M=32, K=4, max_epochs=2, batch_size=128, device="cpu", random_state=0, verbose=0)

# Trains one SAE in a fresh process and reports the growth of its peak RSS
# during the fit: the peak (VmHWM, which counts mapped file pages too) is reset
# through /proc/self/clear_refs just before loading, so imports do not mask it.
_FIT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from sklearn_hypothesaes.sae import TopKSAETransformer

    path, mode, out = sys.argv[1:4]
    kw = dict(M=64, K=4, max_epochs=1, batch_size=4096, device="cpu", random_state=0, verbose=0)
    # warm up torch's allocator and kernels on a tiny problem first
    TopKSAETransformer(**{**kw, "batch_size": 64}).fit(np.random.rand(256, 8).astype("f4"))
    def status(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS")
    X = np.load(path, mmap_mode="r" if mode == "memmap" else None)
    sae = TopKSAETransformer(**kw).fit(X)
    peak = status("VmHWM")
    np.save(out, sae.W_dec_)
    print(json.dumps({"growth": peak - before, "history": sae.history_["train_loss"].tolist()}))
    """
)


def _fit_in_subprocess(path, mode, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", _FIT_SCRIPT, str(path), mode, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memmap_fit_uses_far_less_memory_than_the_data_and_matches_in_ram(tmp_path):
    """The memmap fit's peak RSS grows by well under half the data size.

    The in-RAM fit of the same file in the same way is the control: its growth
    exceeds the data size, so the measurement does see data held in memory.
    """
    n, d = 400_000, 256  # 400 MiB of float32
    path = tmp_path / "X.npy"
    make_planted_embeddings(n, n_features=d, n_atoms=128, k=4, out=path, random_state=0)
    data_bytes = n * d * 4

    mm = _fit_in_subprocess(path, "memmap", tmp_path / "W_mm.npy")
    ram = _fit_in_subprocess(path, "ram", tmp_path / "W_ram.npy")

    assert mm["growth"] < 0.5 * data_bytes, mm["growth"]
    assert ram["growth"] > 0.9 * data_bytes, ram["growth"]
    np.testing.assert_array_equal(np.load(tmp_path / "W_mm.npy"), np.load(tmp_path / "W_ram.npy"))
    assert mm["history"] == ram["history"]


@pytest.fixture(scope="module")
def planted():
    return make_planted_embeddings(1500, n_features=16, n_atoms=24, k=3, random_state=3).X


def _write_shards(X, directory, sizes):
    paths, start = [], 0
    for i, size in enumerate(sizes):
        p = Path(directory) / f"s{i}.npy"
        np.save(p, X[start : start + size])
        paths.append(p)
        start += size
    return paths


def test_fit_on_shards_and_memmap_matches_in_ram(planted, tmp_path):
    X = planted
    paths = _write_shards(X, tmp_path, [700, 1, 799])
    np.save(tmp_path / "all.npy", X)
    ref = TopKSAETransformer(**SAE_KW).fit(X)
    on_shards = TopKSAETransformer(**SAE_KW).fit([str(p) for p in paths])
    on_memmap = TopKSAETransformer(**SAE_KW).fit(np.load(tmp_path / "all.npy", mmap_mode="r"))
    for other in (on_shards, on_memmap):
        np.testing.assert_array_equal(other.W_dec_, ref.W_dec_)
        np.testing.assert_array_equal(other.b_pre_, ref.b_pre_)
        assert other.n_features_in_ == 16
    A_ref = ref.transform(X)
    assert (on_shards.transform(paths) != A_ref).nnz == 0
    assert (ref.transform(ShardedRows(paths)) != A_ref).nnz == 0
    assert ref.score(paths) == pytest.approx(ref.score(X), rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
    data=st.data(),
)
def test_sharded_rows_indexes_like_the_concatenated_array(tmp_path_factory, sizes, data):
    directory = tmp_path_factory.mktemp("shards")
    n = sum(sizes)
    X = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    rows = ShardedRows(_write_shards(X, directory, sizes))
    assert rows.shape == X.shape and len(rows) == n
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(0, n))
    np.testing.assert_array_equal(rows[a:b], X[a:b])
    idx = np.array(data.draw(st.lists(st.integers(-n, n - 1), max_size=10)), dtype=np.int64)
    np.testing.assert_array_equal(rows[idx], X[idx])
    np.testing.assert_array_equal(np.asarray(rows), X)
    np.testing.assert_array_equal(rows[::2], X[::2])


def test_sharded_rows_rejects_bad_shards(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "c.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "i.npy", np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match="all shards must agree"):
        ShardedRows([tmp_path / "a.npy", tmp_path / "b.npy"])
    with pytest.raises(ValueError, match="2-D"):
        ShardedRows([tmp_path / "c.npy"])
    with pytest.raises(ValueError, match="does not exist"):
        ShardedRows([tmp_path / "missing.npy"])
    with pytest.raises(ValueError, match="float32 or float64"):
        ShardedRows([tmp_path / "i.npy"])
    with pytest.raises(TypeError, match="list of .npy paths"):
        ShardedRows(str(tmp_path / "a.npy"))
    with pytest.raises(IndexError):
        ShardedRows([tmp_path / "a.npy"])[[5]]


def test_memmap_validation_errors(planted, tmp_path):
    bad = np.lib.format.open_memmap(
        tmp_path / "nan.npy", mode="w+", dtype=np.float32, shape=(50, 4)
    )
    bad[:] = 1.0
    bad[37, 2] = np.nan
    bad.flush()
    with pytest.raises(ValueError, match="NaN or infinity"):
        TopKSAETransformer(**{**SAE_KW, "batch_size": 8}).fit(
            np.load(tmp_path / "nan.npy", mmap_mode="r")
        )
    sae = TopKSAETransformer(**SAE_KW).fit(planted)
    np.save(tmp_path / "narrow.npy", np.ones((10, 5), np.float32))
    with pytest.raises(ValueError, match="has 5 features"):
        sae.transform([tmp_path / "narrow.npy"])


def test_release_pages_keeps_data_intact(tmp_path):
    X = np.random.RandomState(0).rand(5000, 64).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert float(mm.sum()) == pytest.approx(float(X.sum()), rel=1e-5)
    release_pages(mm)
    release_pages(mm[10:20])
    release_pages(X)  # in memory: nothing to do
    np.testing.assert_array_equal(mm, X)


@given(
    rows=st.lists(st.integers(0, 2999), max_size=400),
    chunk_rows=st.integers(1, 64),
    chunk_bytes=st.integers(1, 40_000),
)
@settings(max_examples=40, deadline=None)
def test_gather_rows_equals_fancy_indexing(tmp_path_factory, rows, chunk_rows, chunk_bytes):
    path = tmp_path_factory.getbasetemp() / "gather.npy"
    if not path.exists():
        np.save(path, np.arange(3000 * 7, dtype=np.float32).reshape(3000, 7))
    mm = np.load(path, mmap_mode="r")
    idx = np.array(rows, dtype=np.int64)  # unsorted, with repeats
    got = gather_rows(mm, idx, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes)
    np.testing.assert_array_equal(got, np.asarray(mm)[idx])
    np.testing.assert_array_equal(gather_rows(mm, np.sort(idx)), np.asarray(mm)[np.sort(idx)])


_GATHER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from sklearn_hypothesaes.out_of_core import gather_rows

    def status(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    X = np.load(sys.argv[1], mmap_mode="r")
    rows = np.sort(np.random.default_rng(0).choice(len(X), 1024, replace=False))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS")
    out = gather_rows(X, rows, chunk_bytes=8 * 2**20)
    growth = status("VmHWM") - before
    assert np.array_equal(out, np.asarray(X[rows]))  # after the peak was taken
    print(json.dumps({"growth": growth}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_gathering_scattered_rows_maps_a_bounded_part_of_the_file(tmp_path):
    """1,024 rows spread over 256 MiB must not map the whole file at once.

    The kernel may map a large folio of the page cache per fault, so without
    a bound on each chunk's byte range this gather mapped nearly all of the
    file (measured: 1.3 GB for a 3 GB file).
    """
    n, d = 262_144, 256  # 256 MiB of float32, cached by the write
    path = tmp_path / "X.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 32768):
        mm[start : start + 32768] = np.random.default_rng(start).random((32768, d))
    mm.flush()
    del mm
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", _GATHER_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    growth = json.loads(res.stdout.strip().splitlines()[-1])["growth"]
    assert growth < 64 * 2**20, growth  # the 4 MiB of rows plus a few 8 MiB windows


def test_transform_to_shards_matches_transform_and_resumes(planted, tmp_path):
    X = planted
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    sae = TopKSAETransformer(**SAE_KW).fit(X)
    paths = transform_to_shards(sae, mm, tmp_path / "acts", chunk_rows=400)
    assert [p.name for p in paths] == [f"part-{i:05d}.npz" for i in range(4)]
    A = load_sparse_shards(paths)
    assert sp.isspmatrix_csr(A) and A.shape == (1500, 32)
    assert (A != sae.transform(X)).nnz == 0

    # interrupted run: part 2 missing; a rerun recomputes only that part
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    paths[2].unlink()
    again = transform_to_shards(sae, mm, tmp_path / "acts", chunk_rows=400)
    assert again == paths
    for p in (paths[0], paths[1], paths[3]):
        assert p.stat().st_mtime_ns == mtimes[p]
    assert (load_sparse_shards(again) != A).nnz == 0
    with pytest.raises(ValueError, match="chunk_rows"):
        transform_to_shards(sae, mm, tmp_path / "x", chunk_rows=0)


class CountingEmbedder:
    """A real hashing text embedder that records every text it embeds."""

    def __init__(self, fail_after=None):
        self.vectorizer = HashingVectorizer(n_features=32, alternate_sign=False, norm="l2")
        self.seen: list[str] = []
        self.fail_after = fail_after

    def transform(self, texts):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.seen.extend(texts)
        return self.vectorizer.transform(texts).toarray()


def test_embed_to_shards_resumes_without_re_embedding(tmp_path):
    texts = [f"review {i} says the wait was {i % 7} minutes" for i in range(23)]
    first = CountingEmbedder(fail_after=10)  # dies when asked for the third shard
    with pytest.raises(KeyboardInterrupt):
        embed_to_shards(texts, first, tmp_path / "emb", shard_size=5)
    assert first.seen == texts[:10]
    assert sorted(p.name for p in (tmp_path / "emb").glob("shard-*.npy")) == [
        "shard-00000.npy",
        "shard-00001.npy",
    ]

    second = CountingEmbedder()
    X = embed_to_shards(texts, second, tmp_path / "emb", shard_size=5)
    assert second.seen == texts[10:]  # nothing embedded twice
    assert X.shape == (23, 32) and X.dtype == np.float32
    expected = HashingVectorizer(n_features=32, alternate_sign=False).transform(texts).toarray()
    np.testing.assert_allclose(np.asarray(X), expected, rtol=1e-6)

    third = CountingEmbedder()
    embed_to_shards(texts, third, tmp_path / "emb", shard_size=5)
    assert third.seen == []

    changed = texts[:12] + ["a different text"] + texts[13:]
    fourth = CountingEmbedder()
    embed_to_shards(changed, fourth, tmp_path / "emb", shard_size=5)
    assert fourth.seen == changed[10:15]  # only the shard whose texts changed

    with pytest.raises(ValueError, match="shard_size"):
        embed_to_shards(texts, CountingEmbedder(), tmp_path / "emb", shard_size=4)
    with pytest.raises(TypeError, match="single string"):
        embed_to_shards("one text", CountingEmbedder(), tmp_path / "other")
