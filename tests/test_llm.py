"""OpenAIClient against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).parent))

from openai_server import FakeOpenAIServer, default_answer

from sklearn_hypothesaes._usage import estimate_message_tokens, estimate_tokens
from sklearn_hypothesaes.annotate import parse_yes_no
from sklearn_hypothesaes.llm import (
    BudgetExceededError,
    LLMError,
    OpenAIClient,
    _AdaptiveLimiter,
    llm_endpoint_configured,
)
from sklearn_hypothesaes.prompts import available_prompts, load_prompt

CONCEPT = 'mentions "food"'
TEXTS = [f"review {i} " + ("good food" if i % 3 == 0 else "nice staff") for i in range(24)]


def _prompts(texts=TEXTS, concept=CONCEPT):
    template = load_prompt("annotate")
    return [template.render(concept=concept, text=t) for t in texts]


def _expected(texts=TEXTS, concept=CONCEPT):
    return ["Yes" if default_answer(concept, t) else "No" for t in texts]


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _client(srv, **kw):
    params = dict(base_url=srv.url, verbose=False, backoff_base=0.01, timeout=5.0)
    params.update(kw)
    return OpenAIClient("test-model", **params)


# -- configuration -------------------------------------------------------------------------
def test_llm_endpoint_configured(monkeypatch):
    assert llm_endpoint_configured() is False
    monkeypatch.setenv("OPENAI_KEY_SAE", "k")
    assert llm_endpoint_configured() is True
    monkeypatch.delenv("OPENAI_KEY_SAE")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert llm_endpoint_configured() is True


def test_client_clones_and_pickles_without_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-stored-123")
    client = OpenAIClient("m", base_url="http://127.0.0.1:9/v1", max_concurrency=7)
    clone(client)  # sklearn's clone checks params round-trip
    blob = pickle.dumps(client)
    assert b"sk-never-stored-123" not in blob
    assert pickle.loads(blob).get_params() == client.get_params()
    assert clone(client).get_params()["max_concurrency"] == 7


def test_auto_transport_uses_the_sdk_behind_a_proxy(monkeypatch):
    from sklearn_hypothesaes._http import FastTransport

    client = OpenAIClient("m", base_url="http://127.0.0.1:9/v1")
    assert isinstance(client.make_transport(), FastTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not isinstance(client.make_transport(), FastTransport)
    assert isinstance(client.set_params(transport="fast").make_transport(), FastTransport)


def test_fast_transport_replaces_a_dead_pooled_connection():
    with FakeOpenAIServer() as srv:
        client = _client(srv, transport="fast", max_concurrency=1)

        async def two_runs_one_pool():
            transport = client.make_transport()
            runner_prompts = _prompts(TEXTS[:2])
            first = await transport.post_json(
                "/chat/completions", {"model": "m", "messages": runner_prompts[0]}
            )
            for conn in transport._idle:  # the pooled connection dies while idle
                conn.writer.transport.abort()
            second = await transport.post_json(
                "/chat/completions", {"model": "m", "messages": runner_prompts[1]}
            )
            await transport.aclose()
            return first[0], second[0]

        assert asyncio.run(two_runs_one_pool()) == (200, 200)


def test_endpoint_resolution(monkeypatch):
    assert OpenAIClient().endpoint == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/")
    assert OpenAIClient().endpoint == "http://localhost:11434/v1"
    assert OpenAIClient(base_url="http://x:1/v1").endpoint == "http://x:1/v1"


@pytest.mark.parametrize(
    "params, match",
    [
        ({"api": "completions"}, "api must be"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"budget": 1.0}, "price table"),
        ({"prices": {"prompt": -1}}, "finite number"),
        ({"prices": {"tokens": 1}}, "Unknown price keys"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_parameters_say_what_to_fix(params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        OpenAIClient(**params).validate()


def test_missing_key_for_openai_is_a_clear_error():
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        OpenAIClient(verbose=False).complete(["hi"])


def test_prompt_loader_lists_versions():
    prompts = available_prompts()
    assert 1 in prompts["annotate"] and 1 in prompts["annotate_multi"]
    with pytest.raises(ValueError, match="No prompt template"):
        load_prompt("nope")
    with pytest.raises(ValueError, match="versions"):
        load_prompt("annotate", version=999)


# -- running ---------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["fast", "openai"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_complete_returns_answers_in_order_with_usage(server, api, transport):
    run = _client(server, api=api, transport=transport).complete(_prompts(), max_tokens=5)
    assert run.texts == _expected()
    assert all(r.ok and r.attempts == 1 for r in run.results)
    stats = server.stats()
    assert stats["paths"] == {f"/v1/{'chat/completions' if api == 'chat' else 'responses'}": 24}
    # Token counts are what the server reported.
    assert run.usage.prompt_tokens == stats["prompt_tokens"]
    assert run.usage.completion_tokens == stats["completion_tokens"]
    assert run.usage.n_requests == 24 and run.usage.n_succeeded == 24
    # The server computes usage with the documented estimate.
    assert stats["prompt_tokens"] == sum(estimate_message_tokens(p) for p in _prompts())


def test_concurrency_is_bounded_and_used():
    with FakeOpenAIServer(latency=0.05) as srv:
        run = _client(srv, max_concurrency=8).complete(_prompts(TEXTS * 3))
        assert run.usage.n_succeeded == 72
        assert 4 <= srv.max_inflight <= 8


def test_api_key_is_read_from_the_environment_at_call_time(monkeypatch):
    with FakeOpenAIServer(api_key="sk-late-key") as srv:
        client = _client(srv, api_key_env="MY_LLM_KEY")
        monkeypatch.setenv("MY_LLM_KEY", "sk-late-key")  # set after construction
        assert client.complete(["PROPERTY: x\n<text>\nx\n</text>"]).texts == ["Yes"]
        assert srv.log[-1]["authorization"] == "Bearer sk-late-key"


@pytest.mark.parametrize("transport", ["fast", "openai"])
def test_wrong_key_stops_the_run_with_a_clear_error(monkeypatch, transport):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000")
    with FakeOpenAIServer(api_key="sk-right") as srv:
        with pytest.raises(LLMError, match="refused the run") as info:
            _client(srv, transport=transport).complete(_prompts())
        assert "sk-wrong-0000" not in str(info.value)
        assert len(srv.log) <= 2 * 30  # stops early instead of trying every item


@pytest.mark.parametrize("transport", ["fast", "openai"])
@pytest.mark.parametrize("fault", ["429", "500", "hang", "malformed", "empty", "garbage"])
def test_every_fault_kind_is_survived_with_correct_answers(fault, transport):
    # Each prompt's first attempt meets the fault; the retry must give the right answer.
    with FakeOpenAIServer(fault_schedule=[fault], retry_after=0.01, hang_seconds=5) as srv:
        run = _client(srv, timeout=0.5, transport=transport).complete(
            _prompts(TEXTS[:8]), parse=parse_yes_no
        )
        assert run.values == [int(a == "Yes") for a in _expected(TEXTS[:8])]
        assert run.usage.n_failed == 0
        assert run.usage.n_retries == 8
        per_prompt = defaultdict(int)
        for entry in srv.log:
            per_prompt[entry["key"]] += 1
        assert set(per_prompt.values()) == {2}


def test_mixed_random_faults_with_reasoning_model_answers():
    rates = {"429": 0.15, "500": 0.1, "malformed": 0.1, "empty": 0.1, "garbage": 0.05}
    with FakeOpenAIServer(fault_rates=rates, think=True, retry_after=0.01, seed=3) as srv:
        run = _client(srv, max_retries=10).complete(_prompts(), parse=parse_yes_no)
        assert run.values == [int(a == "Yes") for a in _expected()]
        assert run.usage.n_retries > 0 and run.usage.n_failed == 0


@pytest.mark.parametrize("transport", ["fast", "openai"])
def test_retry_after_is_honoured(transport):
    with FakeOpenAIServer(fault_schedule=["429"], retry_after=0.4) as srv:
        _client(srv, transport=transport).complete(_prompts(TEXTS[:4]))
        times = defaultdict(list)
        for entry in srv.log:
            times[entry["key"]].append(entry["time"])
        gaps = [t[1] - t[0] for t in times.values()]
        assert len(gaps) == 4 and min(gaps) >= 0.35


def test_items_failing_every_retry_are_reported_not_raised():
    with FakeOpenAIServer(fault_rates={"500": 1.0}) as srv:
        run = _client(srv, max_retries=2).complete(_prompts(TEXTS[:5]))
        assert run.texts == [None] * 5
        assert run.usage.n_failed == 5 and run.usage.n_requests == 15
        assert run.usage.errors == {"server_error": 15}
        assert all(r.error == "server_error" and r.attempts == 3 for r in run.results)


def test_adaptive_limiter_halves_on_429_and_regrows():
    async def scenario():
        lim = _AdaptiveLimiter(8)
        await lim.acquire()
        await lim.release(ok=False, rate_limited=True)
        assert lim.limit == 4
        await lim.acquire()
        await lim.release(ok=False, rate_limited=True)  # same burst: no second cut
        assert lim.limit == 4
        for _ in range(4):
            await lim.acquire()
            await lim.release(ok=True, rate_limited=False)
        assert lim.limit == 5

    asyncio.run(scenario())


def test_adaptive_limiter_hands_slots_over_in_order_and_survives_cancellation():
    async def scenario():
        lim = _AdaptiveLimiter(2)
        await lim.acquire()
        await lim.acquire()
        order = []

        async def waiter(name):
            await lim.acquire()
            order.append(name)

        tasks = [asyncio.create_task(waiter(n)) for n in "abc"]
        await asyncio.sleep(0)
        assert lim.active == 2 and len(lim._waiters) == 3
        tasks[1].cancel()  # "b" gives up while queued: its place must not leak
        await asyncio.sleep(0)
        await lim.release(ok=True, rate_limited=False)
        await asyncio.sleep(0)
        assert order == ["a"] and lim.active == 2
        await lim.release(ok=True, rate_limited=False)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert order == ["a", "c"] and lim.active == 2 and not lim._waiters

        # Granted a slot, then cancelled before running: the slot comes back.
        late = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        await lim.release(ok=True, rate_limited=False)  # grants `late` its slot
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)
        assert lim.active == 1
        await lim.release(ok=True, rate_limited=False)
        assert lim.active == 0

    asyncio.run(scenario())


def test_rate_limits_lower_the_concurrency():
    with FakeOpenAIServer(latency=0.02, fault_rates={"429": 0.5}, retry_after=0.0) as srv:
        run = _client(srv, max_concurrency=16, max_retries=20).complete(_prompts(TEXTS * 2))
        assert run.usage.n_failed == 0 and run.usage.n_rate_limited > 0
        assert srv.max_inflight <= 16


def test_budget_stops_before_exceeding():
    prices = {"prompt": 1000.0, "completion": 1000.0}  # per million tokens
    prompts = _prompts()
    per_request = (estimate_message_tokens(prompts[0]) + 16) * 1000.0 / 1e6
    budget = per_request * 5.5
    with FakeOpenAIServer() as srv:
        client = _client(srv, prices=prices, budget=budget, max_concurrency=2)
        with pytest.raises(BudgetExceededError, match="budget") as info:
            client.complete(prompts)
        run = info.value.run
        assert run.usage.cost <= budget
        assert 1 <= run.usage.n_succeeded <= 5
        assert len(srv.log) == run.usage.n_requests


def test_dry_run_estimate_sends_nothing(server):
    client = _client(server, prices={"prompt": 0.15, "completion": 0.6})
    est = client.estimate(_prompts(), max_tokens=1)
    assert est["n_requests"] == 24
    assert est["prompt_tokens"] == sum(estimate_message_tokens(p) for p in _prompts())
    assert est["cost"] == pytest.approx((est["prompt_tokens"] * 0.15 + 24 * 0.6) / 1e6)
    assert server.log == []
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2


def test_sync_facade_works_inside_a_running_event_loop(server):
    client = _client(server)

    async def notebook_cell():
        return client.complete(_prompts(TEXTS[:3])).texts

    assert asyncio.run(notebook_cell()) == _expected(TEXTS[:3])

    async def async_caller():
        return (await client.acomplete(_prompts(TEXTS[:3]))).texts

    assert asyncio.run(async_caller()) == _expected(TEXTS[:3])


def test_json_schema_request_and_on_result_callback(server):
    seen = []
    schema = {"name": "x", "schema": {"type": "object"}}
    run = _client(server).complete(
        _prompts(TEXTS[:4]), json_schema=schema, on_result=lambda i, r: seen.append(i)
    )
    assert sorted(seen) == [0, 1, 2, 3] and run.usage.n_succeeded == 4


def test_bad_prompt_type_is_rejected(server):
    with pytest.raises(TypeError, match="string or a list"):
        _client(server).complete([42])


def test_hang_is_cut_by_the_timeout():
    with FakeOpenAIServer(fault_rates={"hang": 1.0}, hang_seconds=10) as srv:
        start = time.perf_counter()
        run = _client(srv, timeout=0.3, max_retries=1).complete(_prompts(TEXTS[:2]))
        assert time.perf_counter() - start < 5
        assert [r.error for r in run.results] == ["timeout", "timeout"]


def test_fast_transport_reads_chunked_gzip_and_connection_close():
    import gzip
    import json as _json

    from sklearn_hypothesaes._http import FastTransport

    body = gzip.compress(_json.dumps({"ok": True}).encode())

    async def chunked(reader, writer):
        raw = await reader.readuntil(b"\r\n\r\n")
        length = int(
            [h for h in raw.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(
                b":"
            )[1]
        )
        await reader.readexactly(length)
        half = len(body) // 2
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + f"{half:x}\r\n".encode()
            + body[:half]
            + b"\r\n"
            + f"{len(body) - half:x}\r\n".encode()
            + body[half:]
            + b"\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(chunked, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = FastTransport(f"http://127.0.0.1:{port}/v1", {}, timeout=5)
        status, headers, data = await transport.post_json("/x", {"a": 1})
        pooled = len(transport._idle)
        server.close()
        return status, _json.loads(data), pooled

    assert asyncio.run(scenario()) == (200, {"ok": True}, 0)
