"""OpenAI Batch API backend: JSONL upload, batch creation, polling, result download.

Batches cost half as much on OpenAI and have no rate limits, but finish within
a completion window (up to 24 h) instead of minutes. A run is resumable: the
caller receives the batch id as soon as the batch exists (``on_submitted``) and
can store it; passing it back as ``batch_id`` polls that batch instead of
submitting (and paying for) a new one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sklearn_hypothesaes._usage import Usage, estimate_cost, estimate_message_tokens

if TYPE_CHECKING:  # pragma: no cover
    from sklearn_hypothesaes.llm import CompletionRun, OpenAIClient

__all__ = ["BatchPendingError", "run_batch"]

logger = logging.getLogger(__name__)

_DONE = {"completed", "failed", "expired", "cancelled"}


class BatchPendingError(RuntimeError):
    """The batch did not finish within ``max_wait``; run again to resume it.

    Attributes
    ----------
    batch_id : str
        Id of the batch still running at the provider.
    """

    def __init__(self, message: str, batch_id: str) -> None:
        super().__init__(message)
        self.batch_id = batch_id


def run_batch(
    cfg: OpenAIClient,
    prompts: list[list[dict]],
    *,
    parse: Callable[[str], Any] | None = None,
    max_tokens: int | None = None,
    json_schema: dict | None = None,
    batch_id: str | None = None,
    on_submitted: Callable[[str], None] | None = None,
    poll_interval: float = 30.0,
    max_wait: float | None = None,
) -> CompletionRun:
    """Run ``prompts`` through the Batch API; see :meth:`OpenAIClient.run_batch`."""
    import openai

    from sklearn_hypothesaes.llm import (
        Completion,
        CompletionRun,
        _chat_text_usage,
        _responses_text_usage,
        _Runner,
    )

    runner = _Runner(cfg, parse, max_tokens, json_schema, None)
    endpoint = "/v1/chat/completions" if cfg.api == "chat" else "/v1/responses"
    client = openai.OpenAI(
        api_key=cfg._api_key(), base_url=cfg.endpoint, timeout=float(cfg.timeout), max_retries=3
    )
    try:
        if batch_id is None:
            lines = []
            for i, messages in enumerate(prompts):
                body = runner._request_kwargs(messages)
                body.pop("extra_headers", None)
                body.update(body.pop("extra_body", None) or {})
                lines.append(
                    json.dumps(
                        {"custom_id": str(i), "method": "POST", "url": endpoint, "body": body},
                        ensure_ascii=False,
                    )
                )
            data = ("\n".join(lines) + "\n").encode("utf-8")
            uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h"
            )
            batch_id = batch.id
            logger.info("Submitted batch %s with %d requests.", batch_id, len(prompts))
            if on_submitted is not None:
                on_submitted(batch_id)
        start = time.monotonic()
        while True:
            batch = client.batches.retrieve(batch_id)
            if batch.status in _DONE:
                break
            if max_wait is not None and time.monotonic() - start + poll_interval > max_wait:
                raise BatchPendingError(
                    f"Batch {batch_id} is still {batch.status}; run again later to "
                    "collect it (the id is kept, nothing is resubmitted).",
                    batch_id,
                )
            time.sleep(poll_interval)
        results = [Completion(error="batch_missing") for _ in prompts]
        usage = Usage(cost=0.0 if cfg.prices is not None else None)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = client.files.content(file_id).content.decode("utf-8")
            for line in filter(None, content.splitlines()):
                record = json.loads(line)
                try:
                    index = int(record["custom_id"])
                    res = results[index]
                except (KeyError, ValueError, IndexError):
                    continue
                res.attempts = 1
                usage.n_requests += 1
                response = record.get("response") or {}
                if record.get("error") or response.get("status_code", 200) >= 400:
                    res.error = "batch_error"
                    continue
                body = response.get("body") or {}
                try:
                    if cfg.api == "chat":
                        text, p_tok, c_tok = _chat_text_usage(body)
                    else:
                        text, p_tok, c_tok = _responses_text_usage(body)
                except Exception:
                    res.error = "unparseable"
                    continue
                p_tok = p_tok if p_tok is not None else estimate_message_tokens(prompts[index])
                c_tok = c_tok if c_tok is not None else len(text or "") // 4
                res.text, res.prompt_tokens, res.completion_tokens = text, p_tok, c_tok
                usage.prompt_tokens += p_tok
                usage.completion_tokens += c_tok
                if not text or not text.strip():
                    res.error = "empty"
                    continue
                try:
                    res.value = parse(text) if parse is not None else text
                except ValueError:
                    res.error = "unparseable"
                    continue
                res.ok, res.error = True, None
        for res in results:
            if res.ok:
                usage.n_succeeded += 1
            else:
                usage.n_failed += 1
                usage.add_error(res.error or "unknown")
        if usage.cost is not None:
            usage.cost = estimate_cost(cfg.prices, usage.prompt_tokens, usage.completion_tokens)
        if batch.status != "completed":
            logger.warning("Batch %s ended with status %s.", batch_id, batch.status)
        return CompletionRun(results, usage)
    finally:
        client.close()
