"""LLMConceptAnnotator: does each text have each concept? (0/1, by an LLM).

Two prompt modes:

``mode="pair"``
    One request per (text, concept) with the paper's yes/no semantics ("when
    uncertain, answer No"); prompt ``annotate`` (versioned template).
``mode="multi"``
    One request per text asking for a JSON object with every concept at once
    (JSON-schema structured output where the server supports it), which sends
    the text once instead of once per concept; prompt ``annotate_multi``.

Every answer is committed to the SQLite cache as it arrives (batched per event
loop turn), so a killed run resumes without asking for finished items again.
The cache key hashes the endpoint, API flavour, model, request parameters,
prompt template name, version and text digest, the word limit, the concept(s)
and the full text. Items that still fail after the client's retries are
counted (``n_failed_``) and handled by ``on_failure``; they are not cached, so a
re-run asks for them again.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sklearn_hypothesaes._usage import Usage
from sklearn_hypothesaes.cache import SQLiteCache, make_key, open_cache
from sklearn_hypothesaes.exceptions import AnnotationWarning
from sklearn_hypothesaes.llm import Completion, OpenAIClient
from sklearn_hypothesaes.prompts import PromptTemplate, load_prompt

__all__ = [
    "AnnotationError",
    "LLMConceptAnnotator",
    "parse_multi_answer",
    "parse_yes_no",
    "truncate_words",
]

logger = logging.getLogger(__name__)

NAMESPACE_PAIR = "annotation"
NAMESPACE_MULTI = "annotation-multi"
NAMESPACE_BATCH = "annotation-batch"

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_YES_NO_RE = re.compile(r"^[\s\"'*`(\[]*(yes|no)\b", re.IGNORECASE)
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class AnnotationError(RuntimeError):
    """Raised with ``on_failure="raise"`` when items failed after all retries.

    Every answer that did arrive is already in the cache: a re-run asks only for
    the failed items.
    """


# -- parsing ---------------------------------------------------------------------------
def _strip_reasoning(text: str) -> str:
    text = _THINK_RE.sub("", text)
    if re.search(r"<think>", text, re.IGNORECASE):
        raise ValueError("reasoning block was not closed (answer cut off?)")
    return text.strip()


def parse_yes_no(text: str) -> int:
    """Parse a yes/no answer strictly: 1 for Yes, 0 for No, else ValueError.

    The answer must start with "yes" or "no" (any case, optional quotes or
    markdown, optional explanation after it). ``<think>...</think>`` blocks of
    reasoning models are ignored.

    Examples
    --------
    >>> parse_yes_no("Yes."), parse_yes_no("<think>hmm</think>\\nNo, it does not.")
    (1, 0)
    >>> parse_yes_no("Nothing")
    Traceback (most recent call last):
    ...
    ValueError: not a yes/no answer: 'Nothing'
    """
    body = _strip_reasoning(text)
    match = _YES_NO_RE.match(body)
    if match is None:
        raise ValueError(f"not a yes/no answer: {body[:80]!r}")
    return 1 if match[1].lower() == "yes" else 0


def parse_multi_answer(text: str, n_concepts: int) -> list[int]:
    """Parse the JSON answer of the multi-concept prompt into 0/1 per concept.

    The answer must be one JSON object with exactly the ids ``p1 ... pH`` and
    boolean values (``"yes"``/``"no"`` strings are accepted too). Code fences
    and ``<think>`` blocks are ignored.

    Examples
    --------
    >>> parse_multi_answer('{"p1": true, "p2": false}', 2)
    [1, 0]
    """
    body = _strip_reasoning(text)
    fence = _FENCE_RE.match(body)
    if fence:
        body = fence[1]
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {body[:80]!r}") from exc
    if not isinstance(obj, dict):
        raise ValueError("the JSON answer is not an object")
    expected = [f"p{i + 1}" for i in range(n_concepts)]
    if set(obj) != set(expected):
        raise ValueError(f"expected keys {expected}, got {sorted(obj)}")
    out = []
    for key in expected:
        value = obj[key]
        if isinstance(value, bool):
            out.append(int(value))
        elif isinstance(value, str) and value.strip().lower() in ("yes", "no"):
            out.append(int(value.strip().lower() == "yes"))
        else:
            raise ValueError(f"{key} is {value!r}, not true/false")
    return out


def truncate_words(text: str, max_words: int | None) -> str:
    """Keep the first ``max_words`` whitespace-separated words of ``text``.

    Examples
    --------
    >>> truncate_words("one two  three four", 3)
    'one two  three'
    """
    if max_words is None:
        return text
    match = _first_words_re(max_words).match(text)
    return text if match is None else text[: match.end()]


@functools.lru_cache(maxsize=8)
def _first_words_re(max_words: int) -> re.Pattern:
    # One anchored match instead of a Python loop over every word.
    return re.compile(r"\s*(?:\S+\s+){" + str(max_words - 1) + r"}\S+")


def _delimit(text: str) -> str:
    # A text cannot close its own delimiter and smuggle instructions after it.
    return re.sub(r"<(/?)text>", r"<\1 text>", text, flags=re.IGNORECASE)


def _multi_schema(n: int) -> dict:
    keys = [f"p{i + 1}" for i in range(n)]
    return {
        "name": "concept_annotations",
        "schema": {
            "type": "object",
            "properties": {k: {"type": "boolean"} for k in keys},
            "required": keys,
            "additionalProperties": False,
        },
    }


def _check_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list, array or Series of strings, not one string.")
    if hasattr(texts, "ndim") and getattr(texts, "ndim", 1) != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one text per row); got shape "
            f"{getattr(texts, 'shape', None)}. Pass a single column, e.g. df['text']."
        )
    try:
        items = list(texts)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be a list, numpy array or pandas Series of strings; "
            f"got {type(texts).__name__}."
        ) from exc
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(
                f"{name}[{i}] is {type(t).__name__} ({t!r}), not a string. Drop or fill "
                "missing texts (e.g. series.fillna('')) before annotating."
            )
    return items


def _check_concepts(concepts) -> list[str]:
    if concepts is None:
        raise ValueError(
            "No concepts to annotate: pass concepts=[...] (natural-language "
            "properties such as 'mentions long waits for a table')."
        )
    items = _check_texts(concepts, "concepts")
    if not items:
        raise ValueError("concepts is empty; pass at least one concept.")
    for i, c in enumerate(items):
        if not c.strip():
            raise ValueError(f"concepts[{i}] is empty or blank.")
    dupes = sorted({c for c in items if items.count(c) > 1})
    if dupes:
        raise ValueError(f"concepts must be unique; repeated: {dupes}.")
    return items


# -- the estimator -----------------------------------------------------------------------
class LLMConceptAnnotator(TransformerMixin, BaseEstimator):
    """Annotate texts with natural-language concepts (0/1) using an LLM.

    Parameters
    ----------
    concepts : list of str, default=None
        The concepts (hypotheses), e.g. ``["mentions long waits", "praises the staff"]``.
        Required before ``fit``.
    client : OpenAIClient, default=None
        Endpoint, model and limits. None uses ``OpenAIClient()`` (``gpt-4o-mini``,
        ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` from the environment).
    mode : {"pair", "multi"}, default="pair"
        One yes/no request per (text, concept), or one JSON request per text
        covering all concepts (fewer prompt tokens; the model sees all concepts
        at once).
    cache : None, bool, str, path or SQLiteCache, default=None
        Answer cache: None/True the default directory (``HYPOTHESAES_CACHE_DIR``),
        False none, a path that directory.
    max_words : int or None, default=256
        Texts are cut to this many words before prompting (None: no limit).
    on_failure : {"zero", "nan", "raise"}, default="zero"
        Items without a usable answer after all retries: count as 0 (with an
        :class:`~sklearn_hypothesaes.exceptions.AnnotationWarning`), NaN (output
        becomes float32, with a warning), or raise :class:`AnnotationError` after
        all other answers are cached.
    prompt_version : int, default=None
        Version of the prompt template; None uses the latest.
    structured_output : bool, default=True
        In ``multi`` mode, request JSON-schema output (turn off for servers that
        reject ``response_format``).
    max_tokens : int, default=None
        Completion token limit; None means 8 in ``pair`` mode and ``10 + 8*H``
        in ``multi`` mode. Raise it for reasoning models that think first.
    backend : {"async", "batch"}, default="async"
        Send requests concurrently now, or through the OpenAI Batch API (half
        price on OpenAI, results within 24 h). A batch's id is stored in the
        cache as soon as it is submitted, so an interrupted ``transform`` resumes
        polling the same batch instead of paying again.
    batch_poll_interval : float, default=30.0
        Seconds between status checks of a batch.
    batch_max_wait : float or None, default=None
        Give up waiting after this many seconds with
        :class:`~sklearn_hypothesaes._llm_batch.BatchPendingError` (the batch
        keeps running; call ``transform`` again later). None waits until done.
    verbose : bool, default=True
        Progress bar (throughput, cache hits) and info logging.

    Attributes
    ----------
    concepts_ : list of str
        The validated concepts, in output column order.
    n_failed_ : int
        Cells (text, concept) without a usable answer in the last ``transform``.
    n_cached_ : int
        Cells answered from the cache in the last ``transform``.
    usage_ : Usage
        Requests, retries and tokens of the last ``transform``.

    Examples
    --------
    >>> ann = LLMConceptAnnotator(["mentions food", "is a question"], cache=False)
    >>> ann.fit(["Great pasta!"]).get_feature_names_out().tolist()
    ['mentions food', 'is a question']
    >>> ann.estimate_cost(["Great pasta!", "Why?"])["n_requests"]
    4
    """

    _parameter_constraints: dict = {
        "concepts": ["array-like", None],
        "client": [HasMethods(["complete", "request_identity", "validate"]), None],
        "mode": [StrOptions({"pair", "multi"})],
        "cache": [None, "boolean", str, os.PathLike, SQLiteCache],
        "max_words": [Interval(Integral, 1, None, closed="left"), None],
        "on_failure": [StrOptions({"zero", "nan", "raise"})],
        "prompt_version": [Interval(Integral, 1, None, closed="left"), None],
        "structured_output": ["boolean"],
        "max_tokens": [Interval(Integral, 1, None, closed="left"), None],
        "backend": [StrOptions({"async", "batch"})],
        "batch_poll_interval": [Interval(Real, 0, None, closed="left")],
        "batch_max_wait": [Interval(Real, 0, None, closed="left"), None],
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        concepts: Sequence[str] | None = None,
        *,
        client: OpenAIClient | None = None,
        mode: str = "pair",
        cache=None,
        max_words: int | None = 256,
        on_failure: str = "zero",
        prompt_version: int | None = None,
        structured_output: bool = True,
        max_tokens: int | None = None,
        backend: str = "async",
        batch_poll_interval: float = 30.0,
        batch_max_wait: float | None = None,
        verbose: bool = True,
    ) -> None:
        self.concepts = concepts
        self.client = client
        self.mode = mode
        self.cache = cache
        self.max_words = max_words
        self.on_failure = on_failure
        self.prompt_version = prompt_version
        self.structured_output = structured_output
        self.max_tokens = max_tokens
        self.backend = backend
        self.batch_poll_interval = batch_poll_interval
        self.batch_max_wait = batch_max_wait
        self.verbose = verbose

    # -- sklearn API -------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Validate the parameters and concepts; no request is sent.

        Parameters
        ----------
        X : list, array or Series of str, default=None
            Texts (only checked for type).
        y : None
            Ignored.

        Returns
        -------
        self : LLMConceptAnnotator
        """
        if X is not None:
            _check_texts(X, "X")
        self.concepts_ = _check_concepts(self.concepts)
        self._resolve_client().validate()
        self._template()
        return self

    def transform(self, X):
        """Annotate every text for every concept.

        Parameters
        ----------
        X : list, array or Series of str, shape (n_texts,)
            The texts.

        Returns
        -------
        A : ndarray of shape (n_texts, n_concepts)
            uint8 0/1; float32 with NaN for failed items when ``on_failure="nan"``.
        """
        check_is_fitted(self, "concepts_")
        texts = _check_texts(X, "X")
        n, h = len(texts), len(self.concepts_)
        if self.mode == "pair":
            values, usage, n_cached = self._annotate_pairs(texts, self.concepts_, grid=True)
            values = values.reshape(n, h)
        else:
            values, usage, n_cached = self._annotate_multi(texts, list(self.concepts_))
        self.usage_ = usage
        self.n_cached_ = int(n_cached)
        self.n_failed_ = int(np.isnan(values).sum())
        return self._finish(values)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The concepts, one per output column."""
        check_is_fitted(self, "concepts_")
        return np.asarray(self.concepts_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        tags.non_deterministic = True
        return tags

    # -- public helpers ------------------------------------------------------------------
    def annotate_pairs(
        self, texts: Sequence[str], concepts: Sequence[str], *, return_usage: bool = False
    ):
        """Annotate aligned (text, concept) pairs with the yes/no prompt.

        Works without ``fit`` (it uses only the parameters) and sets no
        attribute; this is the scoring path for neuron interpretation
        (fidelity of a candidate concept). Answers go through the same cache.

        Parameters
        ----------
        texts, concepts : sequences of str of equal length
        return_usage : bool, default=False
            Also return the run's :class:`~sklearn_hypothesaes._usage.Usage`.

        Returns
        -------
        values : ndarray of shape (n_pairs,), float
            1.0, 0.0, or NaN for items without a usable answer.
        usage : Usage
            Only with ``return_usage=True``.
        """
        texts = _check_texts(texts, "texts")
        concepts = _check_texts(concepts, "concepts")
        if len(texts) != len(concepts):
            raise ValueError(
                f"texts and concepts must have the same length ({len(texts)} != {len(concepts)})."
            )
        self._validate_params()
        values, usage, _ = self._annotate_pairs(texts, concepts)
        return (values, usage) if return_usage else values

    def estimate_cost(self, X) -> dict:
        """Dry run: requests, tokens and cost that ``transform(X)`` would spend.

        Cache hits are counted and cost nothing. Tokens use the documented
        ``ceil(chars / 4)`` estimate; completions are assumed to use
        ``max_tokens``. Nothing is sent.
        """
        if not hasattr(self, "concepts_"):
            self._validate_params()
            concepts = _check_concepts(self.concepts)
        else:
            concepts = list(self.concepts_)
        texts = _check_texts(X, "X")
        client = self._resolve_client()
        h = len(concepts)
        if self.mode == "pair":
            keys = self._pair_keys(texts, concepts, grid=True)
            namespace = NAMESPACE_PAIR
        else:
            keys = self._multi_keys(texts, concepts)
            namespace = NAMESPACE_MULTI
        cache = open_cache(self.cache)
        hits = set(_bulk_get(cache, namespace, keys)) if cache is not None else set()
        todo = [i for i, k in enumerate(keys) if k not in hits]
        if self.mode == "pair":
            prompts = [self._pair_messages(texts[i // h], concepts[i % h]) for i in todo]
        else:
            prompts = [self._multi_messages(texts[i], concepts) for i in todo]
        est = client.estimate(prompts, max_tokens=self._max_tokens(len(concepts)))
        est["n_cached"] = len(keys) - len(todo)
        return est

    # -- internals -----------------------------------------------------------------------
    def _resolve_client(self) -> OpenAIClient:
        if self.client is None:
            return OpenAIClient(verbose=self.verbose)
        if not self.verbose and getattr(self.client, "verbose", False):
            quiet = copy.copy(self.client)  # never mutate the user's client
            quiet.verbose = False
            return quiet
        return self.client

    def _template(self) -> PromptTemplate:
        name = "annotate" if self.mode == "pair" else "annotate_multi"
        return load_prompt(name, self.prompt_version)

    def _max_tokens(self, n_concepts: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return 8 if self.mode == "pair" else 10 + 8 * n_concepts

    def _identity(self, template: PromptTemplate, n_concepts: int) -> dict:
        client = self._resolve_client()
        return client.request_identity(
            prompt=template.identity,
            max_words=self.max_words,
            max_tokens=self._max_tokens(n_concepts),
            structured_output=bool(self.structured_output) if self.mode == "multi" else None,
        )

    def _pair_keys(self, texts: list[str], concepts: list[str], *, grid: bool = False) -> list[str]:
        """Cache keys of (text, concept) items: aligned pairs, or row-major text x concept.

        key = tag + text digest, where tag is the first 16 hex digits of
        ``make_key(request identity, concept)`` and the text digest the first 48 of
        SHA-256(full text). Grouping by tag lets a bulk lookup read one key range
        per concept.
        """
        ident = self._identity(self._template(), 1)
        tags: dict[str, str] = {}

        def tag(concept: str) -> str:
            value = tags.get(concept)
            if value is None:
                value = tags[concept] = make_key(request=ident, concept=concept)[:_TAG]
            return value

        if grid:
            concept_tags = [tag(c) for c in concepts]
            return [t + d for d in _text_digests(texts) for t in concept_tags]
        return [tag(c) + d for c, d in zip(concepts, _text_digests(texts))]

    def _multi_keys(self, texts: list[str], concepts: list[str]) -> list[str]:
        ident = self._identity(self._template(), len(concepts))
        t = make_key(request=ident, concepts=concepts)[:_TAG]
        return [t + d for d in _text_digests(texts)]

    def _pair_messages(self, text: str, concept: str, bodies: dict | None = None) -> list[dict]:
        body = None if bodies is None else bodies.get(text)
        if body is None:
            body = _delimit(truncate_words(text, self.max_words))
            if bodies is not None:
                bodies[text] = body
        return self._template().render(concept=concept.strip(), text=body)

    def _multi_messages(self, text: str, concepts: list[str]) -> list[dict]:
        body = _delimit(truncate_words(text, self.max_words))
        listing = "\n".join(f"p{i + 1}: {c.strip()}" for i, c in enumerate(concepts))
        return self._template().render(concepts=listing, text=body)

    def _run(self, keys, unique_todo, messages_for, parse, namespace, n_total, n_cached, h):
        """Send the missing items, committing answers to the cache as they arrive."""
        client = self._resolve_client()
        cache = open_cache(self.cache)
        answers: dict[str, object] = {}
        pending: list[tuple[str, str]] = []
        scheduled = False

        def flush() -> None:
            nonlocal scheduled
            scheduled = False
            if pending and cache is not None:
                batch = pending[:]
                pending.clear()
                cache.put_many(namespace, batch)

        def on_result(index: int, res: Completion) -> None:
            nonlocal scheduled
            if not res.ok:
                return
            key = unique_todo[index]
            answers[key] = res.value
            if cache is not None:
                pending.append((key, _encode(res.value)))
                if not scheduled:
                    scheduled = True
                    asyncio.get_running_loop().call_soon(flush)

        prompts = [messages_for(i) for i in range(len(unique_todo))]
        multi = namespace == NAMESPACE_MULTI
        schema = _multi_schema(h) if multi and self.structured_output else None
        if self.backend == "batch":
            return self._run_batch(client, cache, namespace, unique_todo, prompts, parse, schema, h)
        try:
            run = client.complete(
                prompts,
                parse=parse,
                max_tokens=self._max_tokens(h),
                json_schema=schema,
                on_result=on_result,
                desc="Annotating",
                progress_total=n_total,
                progress_initial=n_cached,
            )
        finally:
            flush()
        return answers, run.usage

    def _run_batch(self, client, cache, namespace, unique_todo, prompts, parse, schema, h):
        batch_key = make_key(items=unique_todo)
        stored = cache.get(NAMESPACE_BATCH, batch_key) if cache is not None else None
        if stored:
            logger.info("Resuming batch %s for %d items.", stored, len(unique_todo))

        def remember(batch_id: str) -> None:
            if cache is not None:
                cache.put(NAMESPACE_BATCH, batch_key, batch_id)

        run = client.run_batch(
            prompts,
            parse=parse,
            max_tokens=self._max_tokens(h),
            json_schema=schema,
            batch_id=stored,
            on_submitted=remember,
            poll_interval=self.batch_poll_interval,
            max_wait=self.batch_max_wait,
        )
        answers = {key: res.value for key, res in zip(unique_todo, run.results) if res.ok}
        if cache is not None:
            cache.put_many(namespace, [(k, _encode(v)) for k, v in answers.items()])
        return answers, run.usage

    def _annotate_pairs(self, texts: list[str], concepts: list[str], *, grid: bool = False):
        """Values (float, NaN = failed) for aligned pairs or the row-major grid."""
        h = len(concepts)
        keys = self._pair_keys(texts, concepts, grid=grid)
        cache = open_cache(self.cache)
        found = _bulk_get(cache, NAMESPACE_PAIR, keys) if cache is not None else {}
        vals = list(map(found.get, keys))
        missing = [i for i, v in enumerate(vals) if v is None]
        first: dict[str, int] = {}
        for i in missing:
            first.setdefault(keys[i], i)
        unique_todo = list(first)
        n_cached = len(keys) - len(missing)
        if self.verbose:
            logger.info(
                "Annotating %d items: %d from cache, %d requests.",
                len(keys),
                n_cached,
                len(unique_todo),
            )
        usage = Usage()
        if unique_todo:
            idx = [first[k] for k in unique_todo]
            if grid:
                item = lambda j: (texts[idx[j] // h], concepts[idx[j] % h])  # noqa: E731
            else:
                item = lambda j: (texts[idx[j]], concepts[idx[j]])  # noqa: E731
            bodies: dict[str, str] = {}  # each text is truncated and delimited once
            answers, usage = self._run(
                keys,
                unique_todo,
                lambda j: self._pair_messages(*item(j), bodies),
                parse_yes_no,
                NAMESPACE_PAIR,
                len(keys),
                n_cached,
                1,
            )
            for i in missing:
                answer = answers.get(keys[i])
                vals[i] = None if answer is None else _encode(answer)
        arr = np.array(vals, dtype=object)
        values = np.where(arr == "1", 1.0, np.where(arr == "0", 0.0, np.nan))
        return values, usage, n_cached

    def _annotate_multi(self, texts: list[str], concepts: list[str]):
        h = len(concepts)
        keys = self._multi_keys(texts, concepts)
        cache = open_cache(self.cache)
        found = _bulk_get(cache, NAMESPACE_MULTI, keys) if cache is not None else {}
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found and k not in first:
                first[k] = i
        unique_todo = list(first)
        n_cached_texts = sum(1 for k in keys if k in found)
        usage = Usage()
        answers: dict = {}
        if unique_todo:
            idx = [first[k] for k in unique_todo]
            answers, usage = self._run(
                keys,
                unique_todo,
                lambda j: self._multi_messages(texts[idx[j]], concepts),
                lambda text: parse_multi_answer(text, h),
                NAMESPACE_MULTI,
                len(keys),
                n_cached_texts,
                h,
            )
        values = np.full((len(keys), h), np.nan)
        for i, k in enumerate(keys):
            v = found.get(k)
            if v is not None:
                values[i] = [int(c) for c in str(v)]
            elif k in answers:
                values[i] = answers[k]
        return values, usage, n_cached_texts * h

    def _finish(self, values: np.ndarray) -> np.ndarray:
        n_failed = int(np.isnan(values).sum())
        if n_failed:
            msg = (
                f"{n_failed} of {values.size} annotations have no usable answer after "
                f"retries (errors: {self.usage_.errors}). Re-running transform asks "
                "only for these; answers that arrived are cached."
            )
            if self.on_failure == "raise":
                raise AnnotationError(msg)
            policy = "counted as 0" if self.on_failure == "zero" else "left as NaN"
            warnings.warn(f"{msg} They are {policy}.", AnnotationWarning, stacklevel=3)
        if self.on_failure == "nan":
            return values.astype(np.float32)
        return np.nan_to_num(values, nan=0.0).astype(np.uint8)


_TAG = 16  # hex digits of the request/concept part of a key
_RANGE_MIN = 1000  # requested keys of one tag before a range read is considered


def _text_digests(texts: list[str]) -> list[str]:
    sha = hashlib.sha256
    return [sha(t.encode("utf-8", "surrogatepass")).hexdigest()[:48] for t in texts]


def _bulk_get(cache: SQLiteCache, namespace: str, keys: list[str]) -> dict:
    """``cache.get_many`` for many keys, reading whole key ranges where that is cheaper.

    Keys sharing a tag (same request identity and concept) are contiguous in the
    table. When most of a tag's range is wanted, one range read replaces
    thousands of point lookups (2-3x faster).
    """
    by_tag: dict[str, list[str]] = {}
    for key in keys:
        by_tag.setdefault(key[:_TAG], []).append(key)
    found: dict = {}
    rest: list[str] = []
    for tag, wanted in by_tag.items():
        if len(wanted) < _RANGE_MIN or cache.count_prefix(namespace, tag) > 4 * len(wanted):
            rest.extend(wanted)  # few keys, or mostly other texts: point lookups
            continue
        found.update(cache.scan_prefix(namespace, tag))
    if rest:
        found.update(cache.get_many(namespace, sorted(rest)))
    return found


def _encode(value) -> str:
    if isinstance(value, list):
        return "".join(str(int(v)) for v in value)
    return str(int(value))
