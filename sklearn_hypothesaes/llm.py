"""Client for any OpenAI-compatible chat endpoint: concurrency, retries, usage.

:class:`OpenAIClient` holds only plain configuration values (model, base URL,
the *name* of the environment variable with the key, limits), so estimators
that hold it clone, pickle and grid-search like any scikit-learn parameter.
The ``openai`` SDK client is built for each run inside the event loop and
closed afterwards; the API key is read from the environment at that moment
and never stored.

Requests run concurrently on asyncio behind a synchronous facade
(:meth:`OpenAIClient.complete`) that also works inside a running event loop
such as Jupyter's. Each item is retried by our own layer (exponential backoff
with jitter, honouring ``Retry-After``) on rate limits, server errors,
timeouts, connection errors and empty or unparseable answers; concurrency is
halved on a 429 and grows back by one after a window of successes. The SDK's
own retries are turned off so that every 429 reaches the adaptive limiter.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sklearn.base import BaseEstimator

from sklearn_hypothesaes._http import FastTransport, HTTPStatusError
from sklearn_hypothesaes._usage import (
    Usage,
    estimate_cost,
    estimate_message_tokens,
    validate_prices,
)

__all__ = [
    "BudgetExceededError",
    "Completion",
    "CompletionRun",
    "LLMError",
    "OpenAIClient",
    "llm_endpoint_configured",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV_VARS = ("OPENAI_API_KEY", "OPENAI_KEY_SAE")
_LOCAL_KEY_PLACEHOLDER = "no-key-needed"
_MAX_RETRY_AFTER = 120.0

Messages = list[dict[str, str]]


def llm_endpoint_configured() -> bool:
    """Return True when an LLM endpoint is configured in the environment.

    That is when ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` or the reference
    package's ``OPENAI_KEY_SAE`` is set to a non-empty value.

    Examples
    --------
    >>> import os
    >>> llm_endpoint_configured() == any(
    ...     os.environ.get(v) for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_KEY_SAE"))
    True
    """
    return any(
        os.environ.get(name) for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", *KEY_ENV_VARS)
    )


class LLMError(RuntimeError):
    """The endpoint refused the whole run (bad key, unknown model, bad URL)."""


class BudgetExceededError(RuntimeError):
    """The next request would have exceeded the client's ``budget``.

    Answers received before the stop are kept (and cached by the annotator);
    :attr:`run` holds the partial :class:`CompletionRun`.
    """

    def __init__(self, message: str, run: CompletionRun | None = None) -> None:
        super().__init__(message)
        self.run = run


class _RetryableAnswer(Exception):
    """An answer that arrived but cannot be used (empty or unparseable)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class Completion:
    """Outcome of one item of :meth:`OpenAIClient.complete`.

    Attributes
    ----------
    text : str or None
        The answer text of the last attempt (None when no answer arrived).
    value : object
        ``parse(text)`` when a parser was given, else ``text``; None on failure.
    ok : bool
        Whether a usable answer arrived.
    error : str or None
        Kind of the last error (``"rate_limit"``, ``"server_error"``, ``"timeout"``,
        ``"connection"``, ``"empty"``, ``"unparseable"``, ``"bad_request"``, ``"budget"``).
    attempts : int
        Requests sent for this item.
    prompt_tokens, completion_tokens : int
        Tokens of all attempts of this item.
    """

    text: str | None = None
    value: Any = None
    ok: bool = False
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CompletionRun:
    """Results of :meth:`OpenAIClient.complete`, in input order, and the run's usage."""

    results: list[Completion]
    usage: Usage = field(default_factory=Usage)

    @property
    def texts(self) -> list[str | None]:
        return [r.text if r.ok else None for r in self.results]

    @property
    def values(self) -> list[Any]:
        return [r.value for r in self.results]


class _AdaptiveLimiter:
    """Bounds in-flight requests; halves the bound on 429, regrows additively.

    Waiters queue in FIFO order and a release hands its slot to exactly one of
    them, so a finished request wakes one coroutine, not every waiting one.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self._successes = 0
        self._last_cut = -math.inf
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releaser counted us in `active` before waking us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._free_slot()  # granted, then cancelled: give the slot back
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def _free_slot(self) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    async def release(self, *, ok: bool, rate_limited: bool) -> None:
        if rate_limited:
            now = time.monotonic()
            if now - self._last_cut > 1.0:  # one cut per burst of 429s
                self.limit = max(1, self.limit // 2)
                self._last_cut = now
                self._successes = 0
        elif ok and self.limit < self.maximum:
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
        self._free_slot()


def _retry_after_seconds(exc: Exception) -> float | None:
    headers = getattr(exc, "headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return min(_MAX_RETRY_AFTER, max(0.0, float(raw) / divisor))
        except ValueError:
            continue
    return None


def run_coroutine_sync(factory: Callable[[], Any]) -> Any:
    """Run ``factory()``'s coroutine to completion from synchronous code.

    Inside a running event loop (Jupyter), the coroutine runs on a fresh loop in
    a worker thread, since the running loop cannot be re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class OpenAIClient(BaseEstimator):
    """Configuration of an OpenAI-compatible chat endpoint, and a concurrent runner.

    Works with OpenAI, Azure-compatible gateways, vLLM, Ollama, llama.cpp server
    and LM Studio: anything serving ``/v1/chat/completions`` (default) or
    ``/v1/responses``. Holds plain values only, so it clones and pickles; the
    API key is read from the environment at call time.

    Parameters
    ----------
    model : str, default="gpt-4o-mini"
        Model name sent with every request.
    base_url : str, default=None
        Endpoint base URL, e.g. ``"http://localhost:8000/v1"``. None reads
        ``OPENAI_BASE_URL`` and falls back to OpenAI's API.
    api_key_env : str, default=None
        Name of the environment variable holding the key. None tries
        ``OPENAI_API_KEY`` then ``OPENAI_KEY_SAE``. With a non-OpenAI base URL
        and no key set, a placeholder is sent (local servers ignore it).
    api : {"chat", "responses"}, default="chat"
        Chat Completions (what local servers implement) or the Responses API.
    max_concurrency : int, default=30
        Most requests in flight at once (lowered adaptively on 429s).
    timeout : float, default=60.0
        Seconds before a single request is abandoned and retried.
    max_retries : int, default=6
        Retries per item after the first attempt (our layer; the SDK's own
        retries are off).
    backoff_base : float, default=0.5
        First retry delay in seconds; doubled at each retry with jitter.
    max_backoff : float, default=30.0
        Longest delay between retries (``Retry-After`` may ask for more, up to 120 s).
    temperature : float or None, default=0.0
        Sampling temperature; None leaves it to the server.
    request_kwargs : dict, default=None
        Extra request fields (e.g. ``{"seed": 0}`` or ``{"extra_body": {...}}``).
    prices : dict, default=None
        Price per million tokens, ``{"prompt": 0.15, "completion": 0.60}``, for
        cost estimates.
    budget : float, default=None
        Hard limit on the cost of one run (needs ``prices``): no request is sent
        that could take the run over it; :class:`BudgetExceededError` is raised
        once in-flight requests have finished.
    transport : {"auto", "fast", "openai"}, default="auto"
        HTTP layer for completions. ``"openai"`` sends them through the
        ``openai`` SDK's ``AsyncOpenAI`` client (proxies, custom ``httpx``
        settings); ``"fast"`` through a lean keep-alive HTTP/1.1 client that
        costs several times less CPU per request (see :mod:`~sklearn_hypothesaes._http`);
        ``"auto"`` uses ``"fast"`` unless a proxy is set in the environment
        (``HTTP(S)_PROXY``/``ALL_PROXY``). Status codes, retries and usage are
        handled identically.
    verbose : bool, default=True
        Show a progress bar for runs of more than a few items.

    Examples
    --------
    >>> client = OpenAIClient("my-model", base_url="http://127.0.0.1:8000/v1")
    >>> client.get_params()["model"], client.endpoint
    ('my-model', 'http://127.0.0.1:8000/v1')
    >>> client.estimate([[{"role": "user", "content": "Is the sky blue?"}]], max_tokens=1)
    {'n_requests': 1, 'prompt_tokens': 8, 'completion_tokens': 1, 'cost': None}
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        api: Literal["chat", "responses"] = "chat",
        max_concurrency: int = 30,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        temperature: float | None = 0.0,
        request_kwargs: dict | None = None,
        prices: dict | None = None,
        budget: float | None = None,
        transport: Literal["auto", "fast", "openai"] = "auto",
        verbose: bool = True,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.api = api
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.temperature = temperature
        self.request_kwargs = request_kwargs
        self.prices = prices
        self.budget = budget
        self.transport = transport
        self.verbose = verbose

    # -- configuration ---------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Resolved base URL: ``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's."""
        url = self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return str(url).rstrip("/")

    def validate(self) -> None:
        """Check the parameters; raise ValueError/TypeError saying what to fix."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty string, got {self.model!r}.")
        if self.api not in ("chat", "responses"):
            raise ValueError(f"api must be 'chat' or 'responses', got {self.api!r}.")
        for name, low in (("max_concurrency", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        for name in ("timeout", "backoff_base", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        if self.transport not in ("auto", "fast", "openai"):
            raise ValueError(
                f"transport must be 'auto', 'fast' or 'openai', got {self.transport!r}."
            )
        if self.timeout == 0:
            raise ValueError("timeout must be > 0 seconds.")
        if self.temperature is not None and not isinstance(self.temperature, (int, float)):
            raise TypeError(f"temperature must be a number or None, got {self.temperature!r}.")
        if self.request_kwargs is not None and not isinstance(self.request_kwargs, Mapping):
            raise TypeError("request_kwargs must be a dict or None.")
        validate_prices(self.prices)
        if self.budget is not None:
            if self.prices is None:
                raise ValueError("budget needs a price table: pass prices={'prompt': ..., ...}.")
            if not isinstance(self.budget, (int, float)) or self.budget < 0:
                raise ValueError(f"budget must be a number >= 0, got {self.budget!r}.")

    def request_identity(self, **overrides: Any) -> dict:
        """Everything about a request except its messages, for cache keys.

        The key itself is never part of it.
        """
        ident = {
            "endpoint": self.endpoint,
            "api": self.api,
            "model": self.model,
            "temperature": self.temperature,
            "request_kwargs": dict(self.request_kwargs or {}),
        }
        ident.update(overrides)
        return ident

    def _api_key(self) -> str:
        names = (self.api_key_env,) if self.api_key_env else KEY_ENV_VARS
        for name in names:
            value = os.environ.get(name)
            if value:
                return value
        if self.endpoint != DEFAULT_BASE_URL:
            return _LOCAL_KEY_PLACEHOLDER
        raise LLMError(
            f"No API key found in {' or '.join(names)}. Set it in the environment "
            "(export OPENAI_API_KEY=...), or point base_url / OPENAI_BASE_URL at a "
            "local OpenAI-compatible server."
        )

    def _use_fast_transport(self) -> bool:
        if self.transport != "auto":
            return self.transport == "fast"
        proxies = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        return not any(os.environ.get(v) or os.environ.get(v.lower()) for v in proxies)

    def make_transport(self):
        """The HTTP layer for one run: a :class:`FastTransport` or an ``AsyncOpenAI``."""
        if self._use_fast_transport():
            from sklearn_hypothesaes._version import __version__

            headers = {
                "Authorization": f"Bearer {self._api_key()}",
                "User-Agent": f"sklearn-hypothesaes/{__version__}",
            }
            return FastTransport(self.endpoint, headers, float(self.timeout))
        return self.make_async_client()

    def make_async_client(self):
        """Build an ``openai.AsyncOpenAI`` for one run (key read now, not stored)."""
        import openai

        return openai.AsyncOpenAI(
            api_key=self._api_key(),
            base_url=self.endpoint,
            timeout=float(self.timeout),
            max_retries=0,
        )

    # -- estimates ---------------------------------------------------------------------
    def estimate(self, prompts: Sequence[Messages | str], *, max_tokens: int | None = None) -> dict:
        """Dry run: estimated tokens and cost of sending ``prompts`` once each.

        Prompt tokens use :func:`~sklearn_hypothesaes._usage.estimate_tokens`
        (``ceil(chars / 4)`` plus 4 per message); completion tokens assume each
        answer uses ``max_tokens`` (16 when None). Nothing is sent.
        """
        messages = [_as_messages(p) for p in prompts]
        prompt_tokens = sum(estimate_message_tokens(m) for m in messages)
        completion_tokens = len(messages) * (16 if max_tokens is None else max_tokens)
        return {
            "n_requests": len(messages),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": estimate_cost(self.prices, prompt_tokens, completion_tokens),
        }

    # -- running -----------------------------------------------------------------------
    def complete(
        self,
        prompts: Sequence[Messages | str],
        *,
        parse: Callable[[str], Any] | None = None,
        max_tokens: int | None = None,
        json_schema: dict | None = None,
        on_result: Callable[[int, Completion], None] | None = None,
        desc: str = "LLM",
        progress_total: int | None = None,
        progress_initial: int = 0,
    ) -> CompletionRun:
        """Run chat requests concurrently with retries; return texts and usage.

        Parameters
        ----------
        prompts : sequence of str or list of message dicts
            One request each; a string becomes a single user message.
        parse : callable, default=None
            ``parse(text) -> value``; a ``ValueError`` marks the answer
            unparseable and the item is retried.
        max_tokens : int, default=None
            Completion token limit per request.
        json_schema : dict, default=None
            ``{"name": ..., "schema": {...}}`` to request structured JSON output.
        on_result : callable, default=None
            ``on_result(index, completion)``, called as each item finishes, e.g.
            to commit answers to a cache while the run goes on.
        desc, progress_total, progress_initial
            Progress bar label, and totals when part of the work was done before
            (e.g. cache hits).

        Returns
        -------
        run : CompletionRun
            ``run.results[i]`` belongs to ``prompts[i]``; ``run.usage`` the totals.
        """
        self.validate()
        items = [_as_messages(p) for p in prompts]  # bad prompts fail before any thread starts
        return run_coroutine_sync(
            lambda: self.acomplete(
                items,
                parse=parse,
                max_tokens=max_tokens,
                json_schema=json_schema,
                on_result=on_result,
                desc=desc,
                progress_total=progress_total,
                progress_initial=progress_initial,
            )
        )

    async def acomplete(
        self,
        prompts: Sequence[Messages | str],
        *,
        parse: Callable[[str], Any] | None = None,
        max_tokens: int | None = None,
        json_schema: dict | None = None,
        on_result: Callable[[int, Completion], None] | None = None,
        desc: str = "LLM",
        progress_total: int | None = None,
        progress_initial: int = 0,
    ) -> CompletionRun:
        """Asynchronous version of :meth:`complete`."""
        self.validate()
        items = [_as_messages(p) for p in prompts]
        runner = _Runner(self, parse, max_tokens, json_schema, on_result)
        from tqdm.auto import tqdm

        total = progress_total if progress_total is not None else len(items)
        bar = tqdm(
            total=total,
            initial=progress_initial,
            desc=desc,
            unit="req",
            disable=not self.verbose or len(items) < 20,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        if progress_initial:
            bar.set_postfix(cached=progress_initial, refresh=False)
        runner.bar = bar
        transport = self.make_transport()
        try:
            run = await runner.run(transport, items)
        finally:
            bar.close()
            if isinstance(transport, FastTransport):
                await transport.aclose()
            else:
                await transport.close()
        if runner.budget_hit:
            raise BudgetExceededError(
                f"Stopped before exceeding the budget of {self.budget}: "
                f"{run.usage.n_succeeded} of {len(items)} items done (cost so far "
                f"{run.usage.cost:.4f}). Finished answers are kept; raise the budget "
                "and run again to continue.",
                run,
            )
        return run

    def run_batch(
        self,
        prompts: Sequence[Messages | str],
        *,
        parse: Callable[[str], Any] | None = None,
        max_tokens: int | None = None,
        json_schema: dict | None = None,
        batch_id: str | None = None,
        on_submitted: Callable[[str], None] | None = None,
        poll_interval: float = 30.0,
        max_wait: float | None = None,
    ) -> CompletionRun:
        """Run the requests through the OpenAI Batch API (half price, slower).

        Uploads a JSONL file, creates the batch, polls it every
        ``poll_interval`` seconds and downloads the results. ``on_submitted(batch_id)``
        is called once the batch exists so that the caller can store the id;
        passing that id back as ``batch_id`` resumes polling instead of
        submitting again. With ``max_wait`` (seconds), a batch still running
        raises :class:`~sklearn_hypothesaes._llm_batch.BatchPendingError`.

        Returns
        -------
        run : CompletionRun
            As :meth:`complete`; unanswered or unparseable items are not ``ok``.
        """
        from sklearn_hypothesaes._llm_batch import run_batch

        self.validate()
        return run_batch(
            self,
            [_as_messages(p) for p in prompts],
            parse=parse,
            max_tokens=max_tokens,
            json_schema=json_schema,
            batch_id=batch_id,
            on_submitted=on_submitted,
            poll_interval=poll_interval,
            max_wait=max_wait,
        )


def _as_messages(prompt: Messages | str) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if type(prompt) is list and all(type(m) is dict for m in prompt):
        return prompt  # the common case; requests only read it, so no copy
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        return [dict(m) for m in prompt]
    raise TypeError(
        "Each prompt must be a string or a list of {'role': ..., 'content': ...} dicts; "
        f"got {type(prompt).__name__}."
    )


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception to ``(error kind, action)``; action is retry, fail or fatal."""
    import openai

    if isinstance(exc, _RetryableAnswer):
        return exc.kind, "retry"
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
        return "timeout", "retry"
    if isinstance(exc, openai.APIResponseValidationError):
        return "unparseable", "retry"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        if status == 429:
            return "rate_limit", "retry"
        if status in (401, 403, 404):
            return "fatal", "fatal"
        if status in (408, 409) or status >= 500:
            return "server_error", "retry"
        return "bad_request", "fail"
    if isinstance(exc, (openai.APIConnectionError, ConnectionError, OSError)):
        return "connection", "retry"
    if isinstance(exc, ValueError):  # bad JSON body, or parse() refused the answer
        return "unparseable", "retry"
    raise exc


def _chat_text_usage(data: Any) -> tuple[str | None, int | None, int | None]:
    if not isinstance(data, Mapping):
        raise _RetryableAnswer("unparseable", "response is not a JSON object")
    choices = data.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], Mapping) else None
    text = message.get("content") if isinstance(message, Mapping) else None
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    return text, usage.get("prompt_tokens"), usage.get("completion_tokens")


def _responses_text_usage(data: Any) -> tuple[str | None, int | None, int | None]:
    if not isinstance(data, Mapping):
        raise _RetryableAnswer("unparseable", "response is not a JSON object")
    parts = []
    for item in data.get("output") or []:
        if isinstance(item, Mapping) and item.get("type") == "message":
            for content in item.get("content") or []:
                if isinstance(content, Mapping) and content.get("type") == "output_text":
                    parts.append(content.get("text") or "")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    text = "".join(parts) if parts else data.get("output_text")
    return text, usage.get("input_tokens"), usage.get("output_tokens")


class _Runner:
    """One concurrent run: workers pull items, the limiter bounds requests."""

    def __init__(self, cfg: OpenAIClient, parse, max_tokens, json_schema, on_result) -> None:
        self.cfg = cfg
        self.parse = parse
        self.max_tokens = max_tokens
        self.json_schema = json_schema
        self.on_result = on_result
        self.usage = Usage(cost=0.0 if cfg.prices is not None else None)
        self.rng = random.Random()
        self.bar = None
        self.budget_hit = False
        self.reserved = 0.0
        self.fatal: BaseException | None = None

    def _request_kwargs(self, messages: Messages) -> dict:
        cfg = self.cfg
        kwargs: dict[str, Any] = {"model": cfg.model}
        if cfg.api == "chat":
            kwargs["messages"] = messages
            if self.max_tokens is not None:
                kwargs["max_tokens"] = self.max_tokens
            if self.json_schema is not None:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"strict": True, **self.json_schema},
                }
        else:
            kwargs["input"] = messages
            if self.max_tokens is not None:
                kwargs["max_output_tokens"] = self.max_tokens
            if self.json_schema is not None:
                kwargs["text"] = {
                    "format": {"type": "json_schema", "strict": True, **self.json_schema}
                }
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        kwargs.update(cfg.request_kwargs or {})
        return kwargs

    async def _send(self, aclient, messages: Messages) -> tuple[str | None, int, int]:
        kwargs = self._request_kwargs(messages)
        extra_headers = kwargs.pop("extra_headers", None)
        kwargs.update(kwargs.pop("extra_body", None) or {})
        path = "/chat/completions" if self.cfg.api == "chat" else "/responses"
        if isinstance(aclient, FastTransport):
            status, headers, body = await aclient.post_json(path, kwargs, extra_headers)
            if status >= 400:
                raise HTTPStatusError(status, headers, body)
            data = json.loads(body)
        else:
            # The SDK's generic ``post`` with ``cast_to=object`` keeps its HTTP layer,
            # error classes and timeouts but skips request transforms and response
            # models, which halves its CPU time per request.
            options = {"headers": extra_headers} if extra_headers else {}
            data = await aclient.post(path, body=kwargs, cast_to=object, options=options)
        if self.cfg.api == "chat":
            text, p_tok, c_tok = _chat_text_usage(data)
        else:
            text, p_tok, c_tok = _responses_text_usage(data)
        if p_tok is None:
            p_tok = estimate_message_tokens(messages)
        if c_tok is None:
            c_tok = int(math.ceil(len(text or "") / 4))
        return text, int(p_tok), int(c_tok)

    def _projected_cost(self, messages: Messages) -> float:
        completion = 16 if self.max_tokens is None else self.max_tokens
        return estimate_cost(self.cfg.prices, estimate_message_tokens(messages), completion)

    def _delay(self, attempt: int, exc: Exception | None) -> float:
        base = min(self.cfg.max_backoff, self.cfg.backoff_base * (2**attempt))
        delay = base * (0.5 + 0.5 * self.rng.random())
        retry_after = _retry_after_seconds(exc) if exc is not None else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _item(self, aclient, limiter: _AdaptiveLimiter, messages: Messages) -> Completion:
        cfg = self.cfg
        done = Completion()
        for attempt in range(cfg.max_retries + 1):
            if cfg.budget is not None:
                projected = self._projected_cost(messages)
                if self.usage.cost + self.reserved + projected > cfg.budget:
                    self.budget_hit = True
                    done.error = "budget"
                    return done
                self.reserved += projected
            else:
                projected = 0.0
            await limiter.acquire()
            exc: Exception | None = None
            rate_limited = False
            ok = False
            try:
                done.attempts += 1
                self.usage.n_requests += 1
                if attempt:
                    self.usage.n_retries += 1
                text, p_tok, c_tok = await self._send(aclient, messages)
                done.text = text
                done.prompt_tokens += p_tok
                done.completion_tokens += c_tok
                self.usage.prompt_tokens += p_tok
                self.usage.completion_tokens += c_tok
                if self.usage.cost is not None:
                    self.usage.cost += estimate_cost(cfg.prices, p_tok, c_tok)
                if text is None or not text.strip():
                    raise _RetryableAnswer("empty", "empty answer")
                done.value = self.parse(text) if self.parse is not None else text
                done.ok = True
                done.error = None
                ok = True
            except Exception as e:  # classified below; unknown errors propagate
                kind, action = _classify(e)
                done.error = kind
                if action == "fatal":
                    self.fatal = e
                    return done
                if kind == "rate_limit":
                    rate_limited = True
                    self.usage.n_rate_limited += 1
                if action == "fail":  # e.g. 400: this request is wrong, retrying won't help
                    self.usage.add_error(kind)
                    logger.warning("Request rejected: %s", e)
                    return done
                exc = e
            finally:
                self.reserved -= projected
                await limiter.release(ok=ok, rate_limited=rate_limited)
            if ok:
                return done
            self.usage.add_error(done.error or "unknown")
            if attempt < cfg.max_retries:
                delay = self._delay(attempt, exc)
                logger.debug("Retrying after %s in %.2fs", done.error, delay)
                await asyncio.sleep(delay)
        return done

    async def run(self, aclient, items: list[Messages]) -> CompletionRun:
        results: list[Completion | None] = [None] * len(items)
        limiter = _AdaptiveLimiter(self.cfg.max_concurrency)
        queue = iter(range(len(items)))

        async def worker() -> None:
            for index in queue:
                if self.fatal is not None or self.budget_hit:
                    return
                res = await self._item(aclient, limiter, items[index])
                if self.fatal is not None:
                    return
                if res.error == "budget":
                    continue
                results[index] = res
                if res.ok:
                    self.usage.n_succeeded += 1
                else:
                    self.usage.n_failed += 1
                if self.on_result is not None:
                    self.on_result(index, res)
                if self.bar is not None:
                    self.bar.update(1)

        n_workers = min(len(items), 2 * self.cfg.max_concurrency)
        await asyncio.gather(*(worker() for _ in range(n_workers)))
        if self.fatal is not None:
            exc = self.fatal
            status = getattr(exc, "status_code", "?")
            raise LLMError(
                f"The endpoint {self.cfg.endpoint} refused the run (HTTP {status}: "
                f"{type(exc).__name__}). Check the API key variable "
                f"({self.cfg.api_key_env or 'OPENAI_API_KEY'}), the model name "
                f"{self.cfg.model!r} and base_url. Answers received before were kept."
            ) from exc
        final = [r if r is not None else Completion(error="budget") for r in results]
        return CompletionRun(final, self.usage)
