"""Embeddings larger than memory: sharded row sources, chunked transforms, resumable embedding.

* :class:`ShardedRows` presents a list of ``.npy`` files (each opened with
  ``mmap_mode="r"``) as one read-only 2-D array of rows, which
  :class:`~sklearn_hypothesaes.sae.TopKSAETransformer` ``fit``/``transform``/
  ``score`` accept like a ``numpy.memmap``: rows are read block by block.
* :func:`release_pages` drops the pages of a memory-mapped array from the
  resident set of the process (they stay in the kernel's page cache), so that a
  full pass over a memmap does not make the process's RSS grow to the file size.
* :func:`transform_to_shards` encodes a memmap (or :class:`ShardedRows`) chunk
  by chunk and writes each chunk of sparse activations as its own ``.npz`` file;
  :func:`load_sparse_shards` stacks them back into one CSR matrix.
* :func:`embed_to_shards` embeds a large corpus straight into ``.npy`` shards and
  resumes after an interruption without re-embedding finished shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ShardedRows",
    "as_row_source",
    "embed_to_shards",
    "gather_rows",
    "load_sparse_shards",
    "release_pages",
    "transform_to_shards",
]

logger = logging.getLogger("sklearn_hypothesaes.out_of_core")

_MANIFEST = "manifest.json"


def release_pages(X) -> None:
    """Drop the resident pages of a memory-mapped array (or of each shard).

    Reading a ``numpy.memmap`` maps file pages into the process; they count
    towards its resident set size until the kernel needs the memory. This
    advises the kernel (``MADV_DONTNEED``) that the mapping's pages are no
    longer needed by this process; later reads fetch them again from the page
    cache or the disk. Does nothing for in-memory arrays or where ``madvise``
    is unavailable.

    Parameters
    ----------
    X : ndarray, numpy.memmap or ShardedRows
        The array whose mapped pages to release.
    """
    if isinstance(X, ShardedRows):
        for shard in X.shards:
            release_pages(shard)
        return
    if getattr(X, "mode", None) not in ("r", "r+", "readonly", "readwrite"):
        return  # in memory, or a copy-on-write mapping whose pages hold private changes
    mm = getattr(X, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if isinstance(mm, mmap.mmap) and advice is not None:
        try:
            mm.madvise(advice)
        except (OSError, ValueError):  # pragma: no cover - platform dependent
            pass


def _releasable_mapping(X):
    if getattr(X, "mode", None) not in ("r", "r+", "readonly", "readwrite"):
        return None
    mm = getattr(X, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or getattr(mm, "madvise", None) is None:
        return None
    if getattr(mmap, "MADV_DONTNEED", None) is None:  # pragma: no cover - platform dependent
        return None
    return mm


def gather_rows(
    X, rows: np.ndarray, *, chunk_rows: int = 1024, chunk_bytes: int = 64 * 2**20
) -> np.ndarray:
    """Copy rows ``X[rows]`` into memory, keeping a memmap's resident pages bounded.

    Touching scattered rows of a memmap maps far more than the rows themselves:
    the kernel maps whole page-cache folios (up to megabytes) on every fault, so
    1,024 rows scattered over a 3 GB file were measured to map 1.3 GB. For a
    read-only memmap the rows are therefore copied in chunks of at most
    ``chunk_rows`` rows lying within one ``chunk_bytes`` window of the file,
    and the pages of each chunk's byte range are released right after.

    Parameters
    ----------
    X : ndarray, numpy.memmap or ShardedRows
        2-D source.
    rows : ndarray of int
        Row indices, preferably sorted (unsorted ones are read in sorted order
        and returned in the order given).
    chunk_rows : int, default=1024
        Most rows copied between two releases.
    chunk_bytes : int, default=64 MiB
        Widest byte range of the file that one chunk may touch.

    Returns
    -------
    block : ndarray of shape (len(rows), X.shape[1])
    """
    mm = _releasable_mapping(X)
    if mm is None:
        return X[rows]
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.size, X.shape[1]), dtype=X.dtype)
    if rows.size == 0:
        return out
    order = None
    if rows.size > 1 and np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start_of_x = X.ctypes.data - base
    stride = X.strides[0]
    # Chunk boundaries: wherever the rows enter a new chunk_bytes window of the
    # file, and every chunk_rows rows within a window.
    window = (start_of_x + rows * stride) // max(1, int(chunk_bytes))
    bounds = [0]
    for edge in [*np.flatnonzero(np.diff(window)) + 1, rows.size]:
        bounds.extend(range(bounds[-1] + chunk_rows, int(edge), chunk_rows))
        bounds.append(int(edge))
    for i, j in zip(bounds[:-1], bounds[1:]):
        r = rows[i:j]
        if order is None:
            out[i:j] = X[r]
        else:  # straight to the requested positions: no second block-sized copy
            out[order[i:j]] = X[r]
        lo = start_of_x + int(r[0]) * stride
        hi = start_of_x + (int(r[-1]) + 1) * stride
        lo -= lo % mmap.PAGESIZE
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(mm)) - lo)
        except (OSError, ValueError):  # pragma: no cover - platform dependent
            pass
    return out


class ShardedRows:
    """A read-only 2-D array made of the rows of several ``.npy`` files.

    Supports what block-wise readers need: ``shape``, ``dtype``, ``ndim``,
    ``len()``, row slices ``X[a:b]`` and sorted or unsorted integer row arrays
    ``X[idx]`` (both return in-memory float arrays). Never loads more than the
    requested rows.

    Parameters
    ----------
    paths : sequence of str or path-like
        ``.npy`` files, each of shape ``(n_i, d)`` with the same ``d`` and dtype
        (float32 or float64), in row order.

    Attributes
    ----------
    shards : list of numpy.memmap
        The opened shards.
    offsets : ndarray of shape (n_shards + 1,)
        First global row of each shard, then the total row count.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn_hypothesaes.out_of_core import ShardedRows
    >>> d = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     np.save(os.path.join(d, f"s{i}.npy"), np.full((3, 2), i, dtype=np.float32))
    >>> X = ShardedRows([os.path.join(d, "s0.npy"), os.path.join(d, "s1.npy")])
    >>> X.shape, X[2:4].tolist()
    ((6, 2), [[0.0, 0.0], [1.0, 1.0]])
    """

    ndim = 2

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError("ShardedRows takes a list of .npy paths, not a single path.")
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("ShardedRows needs at least one .npy shard; got an empty list.")
        shards = []
        for p in paths:
            if not p.is_file():
                raise ValueError(f"Shard {str(p)!r} does not exist or is not a file.")
            arr = np.load(p, mmap_mode="r")
            if arr.ndim != 2:
                raise ValueError(
                    f"Shard {str(p)!r} has shape {arr.shape}; every shard must be 2-D."
                )
            shards.append(arr)
        d, dtype = shards[0].shape[1], shards[0].dtype
        for p, arr in zip(paths, shards):
            if arr.shape[1] != d or arr.dtype != dtype:
                raise ValueError(
                    f"Shard {str(p)!r} has {arr.shape[1]} columns of {arr.dtype}, but the first "
                    f"shard has {d} columns of {dtype}; all shards must agree."
                )
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"Shards must hold float32 or float64 values; got {dtype}.")
        self.paths = paths
        self.shards = shards
        self.offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in shards])]).astype(
            np.int64
        )
        self.dtype = dtype
        self.shape = (int(self.offsets[-1]), int(d))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedRows(n_shards={len(self.shards)}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, cols = key
            return self[rows][:, cols]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self._slice(start, stop)
        if np.isscalar(key):
            i = int(key)
            if i < 0:
                i += self.shape[0]
            return self._slice(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        idx = np.where(idx < 0, idx + self.shape[0], idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"Row index out of range for {self.shape[0]} rows.")
        out = np.empty((idx.size, self.shape[1]), dtype=self.dtype)
        shard_of = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            out[where] = gather_rows(self.shards[s], idx[where] - self.offsets[s])
        return out

    def _slice(self, start: int, stop: int) -> np.ndarray:
        stop = max(start, stop)
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = 0
        s = first
        while start < stop and s < len(self.shards):
            lo = start - self.offsets[s]
            hi = min(stop, self.offsets[s + 1]) - self.offsets[s]
            out[pos : pos + hi - lo] = self.shards[s][lo:hi]
            pos += hi - lo
            start = self.offsets[s] + hi
            s += 1
        return out


def _is_shard_list(X) -> bool:
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(isinstance(p, (str, os.PathLike)) for p in X)
        and all(os.fspath(p).endswith(".npy") for p in X)
    )


def as_row_source(X):
    """Turn a list of ``.npy`` paths into :class:`ShardedRows`; return anything else as is.

    Only a non-empty list or tuple of paths that all end in ``.npy`` counts as
    shards (so a list of texts passed by mistake gets scikit-learn's usual
    conversion error).

    Parameters
    ----------
    X : list of str or path-like, ShardedRows, or array-like
        Input of ``fit``/``transform``.

    Returns
    -------
    X : ShardedRows or the input unchanged
    """
    if _is_shard_list(X):
        return ShardedRows(X)
    return X


def _csr_from_chunk(A) -> sp.csr_matrix:
    return A if sp.issparse(A) else sp.csr_matrix(np.asarray(A, dtype=np.float32))


def transform_to_shards(
    transformer,
    X,
    out_dir: str | os.PathLike,
    *,
    chunk_rows: int = 100_000,
    overwrite: bool = False,
) -> list[Path]:
    """Encode ``X`` chunk by chunk, writing each chunk's sparse output to its own file.

    Only one chunk of input rows and its activations are in memory at a time;
    the pages of a memory-mapped ``X`` are released after each chunk. Chunks
    already written by an earlier, interrupted call are kept (unless
    ``overwrite=True``), so a rerun resumes.

    Parameters
    ----------
    transformer : fitted transformer
        E.g. a fitted ``TopKSAETransformer``; its ``transform`` is called on
        each chunk.
    X : ndarray, numpy.memmap, ShardedRows or list of .npy paths
        Input rows.
    out_dir : str or path-like
        Directory for ``part-00000.npz``, ``part-00001.npz``, ... (created).
    chunk_rows : int, default=100_000
        Rows per chunk and per output file.
    overwrite : bool, default=False
        Recompute every chunk even if its file exists.

    Returns
    -------
    paths : list of pathlib.Path
        The chunk files in row order; pass them to :func:`load_sparse_shards`.
    """
    X = as_row_source(X)
    if getattr(X, "ndim", 2) != 2:
        raise ValueError(f"X must be 2-D; got shape {getattr(X, 'shape', None)}.")
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer; got {chunk_rows}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = X.shape[0]
    paths = []
    for i, start in enumerate(range(0, n, chunk_rows)):
        path = out / f"part-{i:05d}.npz"
        paths.append(path)
        if path.exists() and not overwrite:
            continue
        A = _csr_from_chunk(transformer.transform(X[start : start + chunk_rows]))
        tmp = out / f".part-{i:05d}.tmp.npz"
        sp.save_npz(tmp, A, compressed=False)
        os.replace(tmp, path)
        release_pages(X)
    return paths


def load_sparse_shards(paths: Sequence[str | os.PathLike]) -> sp.csr_matrix:
    """Stack the chunk files written by :func:`transform_to_shards` into one CSR matrix.

    Parameters
    ----------
    paths : sequence of str or path-like
        ``.npz`` files in row order.

    Returns
    -------
    A : csr_matrix of shape (n_samples, M)
    """
    if not paths:
        raise ValueError("load_sparse_shards needs at least one .npz path; got none.")
    return sp.vstack([sp.load_npz(p) for p in paths], format="csr")


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def embed_to_shards(
    texts: Sequence[str],
    embedder,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 100_000,
    dtype=np.float32,
) -> ShardedRows:
    """Embed a corpus into ``.npy`` shards, resuming after an interruption.

    The texts are cut into consecutive shards of ``shard_size``; each is
    embedded with ``embedder.transform`` and written atomically (to a temporary
    file, then renamed) as ``shard-00000.npy``, ... . A ``manifest.json``
    records the shard size and a digest of each shard's texts; on a rerun,
    shards whose file exists and whose texts are unchanged are skipped, so an
    interrupted run resumes where it stopped and nothing is embedded twice.

    Parameters
    ----------
    texts : sequence of str
        The corpus.
    embedder : object with ``transform(texts) -> (n, d)`` array
        E.g. ``sklearn_hypothesaes.embedding.TextEmbedder(...)`` (already
        fitted if it needs fitting).
    out_dir : str or path-like
        Directory for the shards and the manifest (created).
    shard_size : int, default=100_000
        Texts per shard. Must match the value of an earlier run being resumed.
    dtype : numpy dtype, default=numpy.float32
        Stored dtype.

    Returns
    -------
    X : ShardedRows
        All shards as one row source, ready for ``TopKSAETransformer.fit``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string.")
    texts = list(texts)
    if not texts:
        raise ValueError("embed_to_shards needs at least one text; got none.")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("Every element of texts must be a str.")
    shard_size = int(shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer; got {shard_size}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / _MANIFEST
    manifest = {"shard_size": shard_size, "shards": {}}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("shard_size") != shard_size:
            raise ValueError(
                f"{str(out)!r} holds shards of {old.get('shard_size')} texts, but "
                f"shard_size={shard_size} was passed; pass the same shard_size to resume or use "
                "a new out_dir."
            )
        manifest = old
    paths = []
    n_embedded = 0
    for i, start in enumerate(range(0, len(texts), shard_size)):
        chunk = texts[start : start + shard_size]
        name = f"shard-{i:05d}.npy"
        path = out / name
        paths.append(path)
        digest = _texts_digest(chunk)
        if path.exists() and manifest["shards"].get(name) == digest:
            continue
        emb = np.asarray(embedder.transform(chunk), dtype=dtype)
        if emb.ndim != 2 or emb.shape[0] != len(chunk):
            raise ValueError(
                f"embedder.transform returned shape {emb.shape} for {len(chunk)} texts; "
                "expected a 2-D array with one row per text."
            )
        tmp = out / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
        os.replace(tmp, path)
        manifest["shards"][name] = digest
        tmp_manifest = out / f".{_MANIFEST}.tmp"
        tmp_manifest.write_text(json.dumps(manifest))
        os.replace(tmp_manifest, manifest_path)
        n_embedded += len(chunk)
    logger.info("embed_to_shards: embedded %d of %d texts into %s", n_embedded, len(texts), out)
    return ShardedRows(paths)
