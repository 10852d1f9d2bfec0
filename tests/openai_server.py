"""A small OpenAI-compatible HTTP server for tests and benchmarks (127.0.0.1 only).

It speaks enough of the API for the real ``openai`` package:
``POST /v1/chat/completions``, ``POST /v1/responses``, ``GET /v1/models``,
``POST /v1/files`` (multipart), ``GET /v1/files/{id}/content``,
``POST /v1/batches`` and ``GET /v1/batches/{id}``. ``GET /_stats`` returns the
request log summary as JSON (not part of the OpenAI API).

Answers are checkable: an ``answer(concept, text) -> bool`` function decides
each yes/no (default: whether one of the concept's quoted terms, or else its last
word, occurs in the text as a whole word). The prompt is parsed from our
templates (``PROPERTY:`` / ``PROPERTIES:`` + ``<text>...</text>``) and from the
reference package's (``PROPERTY: "..."`` / ``TEXT: "..."``). Token usage is the
documented estimate ``ceil(chars / 4) + 4`` per message, the same for every client.

Faults are injected per request: ``fault_rates={"429": 0.1, "500": 0.05, "hang":
0.01, "malformed": 0.05, "empty": 0.05, "garbage": 0.05}`` (seeded; "garbage" is a
200 response whose body is not JSON), and/or ``fault_schedule=[...]``:
the n-th request carrying the same prompt gets ``fault_schedule[n]`` (None = no
fault), so every item meets every fault kind once. ``hold_after=N`` makes every
request after the N-th completed one hang until :meth:`FakeOpenAIServer.release`.

Run standalone: ``python tests/openai_server.py --latency 0.05`` prints the URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP

FAULT_KINDS = ("429", "500", "hang", "malformed", "empty", "garbage")
_OUR_PAIR = re.compile(r"PROPERTY: (.*?)\n<text>\n(.*)\n</text>", re.DOTALL)
_OUR_MULTI = re.compile(r"PROPERTIES:\n(.*?)\n<text>\n(.*)\n</text>", re.DOTALL)
_REF_PAIR = re.compile(r'PROPERTY: "(.*)"\nTEXT: "(.*)"\nOutput:\s*$', re.DOTALL)
_REF_MARK = 'PROPERTY: "'
_QUOTED = re.compile(r'"([^"]+)"')
_WORD = re.compile(r"[\w']+")


def estimate_tokens(text: str) -> int:
    return int(math.ceil(len(text) / 4))


def default_answer(concept: str, text: str) -> bool:
    """Yes when a quoted term of the concept (or its last word) is a word of the text."""
    terms = _QUOTED.findall(concept) or _WORD.findall(concept)[-1:]
    words = set(_WORD.findall(text.lower()))
    return any((t.lower() in words) if " " not in t else (t.lower() in text.lower()) for t in terms)


class FakeOpenAIServer:
    """OpenAI-compatible server on 127.0.0.1 running in a background thread.

    Parameters
    ----------
    latency : float
        Seconds each completion waits before answering.
    answer : callable
        ``answer(concept, text) -> bool``.
    fault_rates : dict
        Probability per request of each fault kind (see module docstring).
    fault_schedule : list
        Fault for the 1st, 2nd, ... request of the same prompt.
    retry_after : float
        Value of the ``Retry-After`` header sent with 429s.
    hang_seconds : float
        How long a "hang" fault waits before closing the connection unanswered.
    hold_after : int
        After this many completed answers, further requests wait for ``release()``.
    think : bool
        Wrap answers in a ``<think>...</think>`` block like a reasoning model.
    verbose_answers : bool
        Answer "Yes. <reason>" instead of a bare "Yes" when max_tokens allows.
    api_key : str
        When set, requests without ``Authorization: Bearer <api_key>`` get a 401.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        answer=default_answer,
        fault_rates: dict | None = None,
        fault_schedule: list | None = None,
        retry_after: float = 0.05,
        hang_seconds: float = 30.0,
        hold_after: int | None = None,
        think: bool = False,
        verbose_answers: bool = False,
        seed: int = 0,
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.api_key = api_key
        self.inflight = 0
        self.max_inflight = 0
        self.latency = latency
        self.answer = answer
        self.fault_rates = dict(fault_rates or {})
        self.fault_schedule = list(fault_schedule or [])
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.hold_after = hold_after
        self.think = think
        self.verbose_answers = verbose_answers
        self.port = port
        self._rng = random.Random(seed)
        self.log: list[dict] = []  # one entry per API request
        self._seen: Counter = Counter()
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._release: asyncio.Event | None = None
        self._ready = threading.Event()
        self.n_completed = 0

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._release = asyncio.Event()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def _close():
            self._server.close()
            self._release.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def release(self) -> None:
        """Let held requests go on (see ``hold_after``)."""
        self.hold_after = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- log helpers -------------------------------------------------------------------
    def completed(self) -> list[dict]:
        """Log entries of requests answered with a usable 200 answer.

        Requests that were held (``hold_after``) are left out: their client may
        be gone by the time they are released.
        """
        with self._lock:
            return [
                e
                for e in self.log
                if e.get("status") == 200 and not e.get("fault") and not e.get("held")
            ]

    def stats(self) -> dict:
        with self._lock:
            entries = list(self.log)
        return {
            "n_requests": len(entries),
            "n_completed": sum(1 for e in entries if e.get("status") == 200),
            "prompt_tokens": sum(e.get("prompt_tokens", 0) for e in entries),
            "completion_tokens": sum(e.get("completion_tokens", 0) for e in entries),
            "faults": dict(Counter(e["fault"] for e in entries if e.get("fault"))),
            "max_inflight": self.max_inflight,
            "paths": dict(Counter(e["path"] for e in entries)),
        }

    # -- HTTP plumbing -----------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                else:
                    body = await reader.readexactly(int(headers.get("content-length", 0)))
                result = await self._dispatch(method, target.split("?")[0], headers, body)
                if result is None:  # a hang: close without answering
                    writer.close()
                    return
                status, payload, extra = result
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                ctype = (
                    "application/octet-stream"
                    if isinstance(payload, bytes)
                    else ("application/json")
                )
                reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(
                    status, "Error"
                )
                ctype = extra.pop("Content-Type", ctype)
                out = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}"]
                out += [f"Content-Length: {len(data)}", "Connection: keep-alive"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _dispatch(self, method, path, headers, body):
        if method == "GET" and path == "/_stats":
            return 200, self.stats(), {}
        if method == "GET" and path == "/v1/models":
            return (
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "fake-model", "object": "model", "created": 0, "owned_by": "tests"}
                    ],
                },
                {},
            )
        if method == "POST" and path in ("/v1/chat/completions", "/v1/responses"):
            return await self._completion(path, headers, json.loads(body or b"{}"))
        if method == "POST" and path == "/v1/files":
            return self._upload(headers, body)
        m = re.fullmatch(r"/v1/files/([^/]+)/content", path)
        if method == "GET" and m:
            data = self._files.get(m[1])
            return (200, data, {}) if data is not None else (404, _error("no such file"), {})
        if method == "POST" and path == "/v1/batches":
            return self._create_batch(json.loads(body))
        m = re.fullmatch(r"/v1/batches/([^/]+)", path)
        if method == "GET" and m:
            return self._get_batch(m[1])
        return 404, _error(f"unknown route {method} {path}"), {}

    # -- completions -------------------------------------------------------------------
    def _pick_fault(self, key: str) -> str | None:
        with self._lock:
            n = self._seen[key]
            self._seen[key] += 1
            if n < len(self.fault_schedule) and self.fault_schedule[n]:
                return self.fault_schedule[n]
            roll = self._rng.random()
        acc = 0.0
        for kind in FAULT_KINDS:
            acc += self.fault_rates.get(kind, 0.0)
            if roll < acc:
                return kind
        return None

    def _answer_text(self, messages: list[dict], req: dict) -> str:
        prompt = "\n".join(_content_text(m.get("content")) for m in messages)
        user = _content_text(messages[-1].get("content")) if messages else ""
        m = _OUR_MULTI.search(user)
        if m:
            answers = {}
            for line in m[1].split("\n"):
                cid, _, concept = line.partition(": ")
                answers[cid.strip()] = bool(self.answer(concept, m[2]))
            return json.dumps(answers)
        # The reference prompt has worked examples first: parse its last PROPERTY.
        m = _OUR_PAIR.search(user) or _REF_PAIR.search(prompt[prompt.rfind(_REF_MARK) :])
        if not m:
            return "I can only answer annotation prompts."
        yes = bool(self.answer(m[1], m[2]))
        word = "Yes" if yes else "No"
        max_tokens = req.get("max_tokens") or req.get("max_output_tokens") or 1000
        if self.verbose_answers and max_tokens > 5:
            word += ". The text " + ("does" if yes else "does not") + " show it."
        return word

    async def _completion(self, path: str, headers: dict, req: dict):
        messages = req.get("messages") if "messages" in req else req.get("input", [])
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        key = json.dumps(messages, sort_keys=True)
        entry = {
            "path": path,
            "time": time.time(),
            "key": key,
            "model": req.get("model"),
            "prompt_tokens": sum(
                estimate_tokens(_content_text(m.get("content"))) + 4 for m in messages
            ),
            "authorization": headers.get("authorization", ""),
        }
        with self._lock:
            self.log.append(entry)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            entry.update(status=401, fault="auth")
            return 401, _error("Incorrect API key provided.", "invalid_api_key"), {}
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._answer(path, req, messages, key, entry)
        finally:
            self.inflight -= 1

    async def _answer(self, path, req, messages, key, entry):
        if self.hold_after is not None and self.n_completed >= self.hold_after:
            entry.update(fault="held", held=True)
            await self._release.wait()
        fault = self._pick_fault(key)
        if self.latency:
            await asyncio.sleep(self.latency)
        entry["fault"] = fault
        if fault == "429":
            entry["status"] = 429
            return (
                429,
                _error("rate limited", "rate_limit_exceeded"),
                {"retry-after": str(self.retry_after)},
            )
        if fault == "500":
            entry["status"] = 500
            return 500, _error("internal error", "server_error"), {}
        if fault == "hang":
            entry["status"] = None
            await asyncio.sleep(self.hang_seconds)
            return None
        if fault == "garbage":
            entry["status"] = 200
            return 200, b"<html>upstream proxy error</html>", {"Content-Type": "application/json"}
        text = self._answer_text(messages, req)
        if self.think:
            text = "<think>Let me look at the text carefully.</think>\n" + text
        if fault == "malformed":
            text = "Maybe? {not json"
        elif fault == "empty":
            text = ""
        c_tok = estimate_tokens(text)
        entry.update(status=200, completion_tokens=c_tok, answer=text)
        with self._lock:
            if not fault:
                self.n_completed += 1
        rid = uuid.uuid4().hex[:12]
        usage_chat = {
            "prompt_tokens": entry["prompt_tokens"],
            "completion_tokens": c_tok,
            "total_tokens": entry["prompt_tokens"] + c_tok,
        }
        if path == "/v1/chat/completions":
            return 200, _chat_body(rid, req.get("model"), text, usage_chat), {}
        body = {
            "id": f"resp_{rid}",
            "object": "response",
            "created_at": int(time.time()),
            "model": req.get("model"),
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{rid}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": entry["prompt_tokens"],
                "output_tokens": c_tok,
                "total_tokens": entry["prompt_tokens"] + c_tok,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        return 200, body, {}

    # -- files and batches -------------------------------------------------------------
    def _upload(self, headers: dict, body: bytes):
        msg = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {headers.get('content-type')}\r\n\r\n".encode() + body
        )
        purpose, data, filename = "batch", b"", "upload.jsonl"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "purpose":
                purpose = part.get_payload(decode=True).decode()
            elif name == "file":
                data = part.get_payload(decode=True)
                filename = part.get_filename() or filename
        fid = f"file-{uuid.uuid4().hex[:12]}"
        self._files[fid] = data
        with self._lock:
            self.log.append({"path": "/v1/files", "time": time.time(), "status": 200})
        return (
            200,
            {
                "id": fid,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
            },
            {},
        )

    def _create_batch(self, req: dict):
        bid = f"batch_{uuid.uuid4().hex[:12]}"
        lines = self._files[req["input_file_id"]].decode().splitlines()
        out = []
        for line in filter(None, lines):
            item = json.loads(line)
            body = item["body"]
            text = self._answer_text(body.get("messages", []), body)
            p_tok = sum(
                estimate_tokens(_content_text(m.get("content"))) + 4 for m in body["messages"]
            )
            usage = {
                "prompt_tokens": p_tok,
                "completion_tokens": estimate_tokens(text),
                "total_tokens": p_tok + estimate_tokens(text),
            }
            out.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                    "custom_id": item["custom_id"],
                    "response": {
                        "status_code": 200,
                        "request_id": uuid.uuid4().hex[:8],
                        "body": _chat_body(uuid.uuid4().hex[:8], body.get("model"), text, usage),
                    },
                    "error": None,
                }
            )
        fid = f"file-{uuid.uuid4().hex[:12]}"
        self._files[fid] = ("\n".join(json.dumps(o) for o in out) + "\n").encode()
        batch = {
            "id": bid,
            "object": "batch",
            "endpoint": req["endpoint"],
            "input_file_id": req["input_file_id"],
            "completion_window": req["completion_window"],
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": len(out), "completed": 0, "failed": 0},
            "_output": fid,
            "_polls": 0,
        }
        self._batches[bid] = batch
        with self._lock:
            self.log.append({"path": "/v1/batches", "time": time.time(), "status": 200})
        return 200, _public(batch), {}

    def _get_batch(self, bid: str):
        batch = self._batches.get(bid)
        if batch is None:
            return 404, _error("no such batch"), {}
        batch["_polls"] += 1
        if batch["_polls"] >= 2:  # in progress at the first poll, then done
            n = batch["request_counts"]["total"]
            batch.update(status="completed", output_file_id=batch["_output"])
            batch["request_counts"] = {"total": n, "completed": n, "failed": 0}
        return 200, _public(batch), {}


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _chat_body(rid: str, model, text: str, usage: dict) -> dict:
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _error(message: str, code: str = "error") -> dict:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(latency=args.latency, port=args.port).start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
