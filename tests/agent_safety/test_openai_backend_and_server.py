"""OpenAIBackend against our own OpenAI-compatible server on loopback: round trip, batching, our server's
5xx retried and its 4xx not, and the API key kept out of names and logs. (Every fault of a real endpoint,
one at a time: test_openai_faults.py.)"""

import contextlib
import logging
import threading

import httpx
import openai
import pytest

from agent_safety.backends import ChatMessage, ChatRequest, RetryPolicy, ScriptedBackend
from agent_safety.backends.openai_backend import OpenAIBackend
from agent_safety.server import ServerThread, make_app

SECRET = "sk-test-do-not-leak-123"


@contextlib.contextmanager
def serve(reply, **app_kwargs):
    """(server, scripted backend behind it, list of HTTP paths hit) for the duration of the block."""
    backend = ScriptedBackend(reply)
    app = make_app(backend, model_name="test-model", **app_kwargs)
    hits, lock = [], threading.Lock()

    @app.middleware("http")
    async def count(request, call_next):
        with lock:
            hits.append(request.url.path)
        return await call_next(request)

    with ServerThread(app) as server:
        yield server, backend, hits


def _request(text="hi", **kw):
    return ChatRequest(messages=(ChatMessage("system", "be brief"), ChatMessage("user", text)), **kw)


def _client(server, sleeps=None, max_attempts=3, **kw):
    retry = RetryPolicy(max_attempts=max_attempts, backoff_s=0.01, jitter=0.0)
    return OpenAIBackend(model="test-model", base_url=server.base_url, api_key=SECRET, timeout_s=5.0, retry=retry,
                         sleep=(sleeps.append if sleeps is not None else (lambda s: None)), **kw)


def test_round_trip_preserves_messages_and_sampling():
    with serve(lambda r: f"echo: {r.messages[-1].content}") as (server, backend, hits):
        client = _client(server, concurrency=1)
        first = _request("one", max_tokens=7, temperature=0.5, top_p=0.9, top_k=3, seed=11)
        results = client.complete_batch([first, _request("two")])
    assert [r.text for r in results] == ["echo: one", "echo: two"]
    first = backend.requests[0]
    assert first.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "one"))
    assert (first.max_tokens, first.temperature, first.top_p, first.top_k, first.seed) == (7, 0.5, 0.9, 3, 11)
    assert hits == ["/v1/chat/completions"] * 2


def test_models_endpoint_and_bad_requests():
    with serve(lambda r: "x") as (server, backend, hits):
        models = openai.OpenAI(base_url=server.base_url, api_key="k").models.list()
        assert [m.id for m in models.data] == ["test-model"]
        url = f"{server.base_url}/chat/completions"
        streamed = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}], "stream": True})
        bad_role = httpx.post(url, json={"messages": [{"role": "robot", "content": "x"}]})
        text_parts = [{"type": "text", "text": "hey"}]
        parts = httpx.post(url, json={"messages": [{"role": "developer", "content": "sys"},
                                                   {"role": "user", "content": text_parts}]})
    assert streamed.status_code == 400 and "stream" in streamed.json()["error"]["message"]
    assert bad_role.status_code == 400 and "'robot'" in bad_role.json()["error"]["message"]
    assert parts.status_code == 200
    assert backend.requests[-1].messages == (ChatMessage("system", "sys"), ChatMessage("user", "hey"))


def test_concurrent_requests_are_batched_by_the_server():
    with serve(lambda r: r.messages[-1].content.upper(), max_batch=4, batch_window_s=1.0) as (server, backend, _):
        results = _client(server, concurrency=4).complete_batch([_request(t) for t in "abcd"])
    assert [r.text for r in results] == ["A", "B", "C", "D"]
    assert backend.batches == [4]


def test_server_error_twice_then_ok_is_retried_with_backoff():
    calls = []

    def flaky(r):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("model crashed")
        return "finally"

    sleeps = []
    with serve(flaky) as (server, _, hits):
        result = _client(server, sleeps, max_attempts=4).complete(_request())
    assert result.text == "finally"
    assert len(hits) == 3 and sleeps == [0.01, 0.02]


def test_persistent_server_error_gives_up_with_a_failed_result():
    sleeps = []
    with serve(lambda r: 1 / 0) as (server, _, hits):
        result = _client(server, sleeps, max_attempts=3).complete(_request())
    assert result.failed and "HTTP 500" in result.error and "ZeroDivisionError" in result.error
    assert len(hits) == 3 and sleeps == [0.01, 0.02]


def test_client_errors_are_not_retried():
    sleeps = []
    with serve(lambda r: "x") as (server, backend, hits):
        client = OpenAIBackend(model="m", base_url=server.base_url + "/missing", api_key=SECRET,
                               retry=RetryPolicy(max_attempts=4), sleep=sleeps.append)
        result = client.complete(_request())
    assert result.failed and "HTTP 404" in result.error and "not retried" in result.error
    assert hits == ["/v1/missing/chat/completions"] and sleeps == [] and backend.requests == []


def test_key_and_url_from_environment_and_never_in_name_or_logs(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with serve(lambda r: "fine") as (server, _, hits):
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        client = OpenAIBackend(model="test-model", retry=RetryPolicy(max_attempts=2, backoff_s=0.0))
        assert client.complete(_request()).text == "fine"
    assert client.base_url == server.base_url and len(hits) == 1
    assert SECRET not in client.name and SECRET not in repr(client) and SECRET not in caplog.text


def test_missing_key_for_the_public_api_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend(model="gpt-4o-mini")
    with pytest.raises(ValueError, match="model"):
        OpenAIBackend(model="", base_url="http://127.0.0.1:1/v1")


def test_batcher_answers_queued_requests_then_stops_on_close():
    from agent_safety.server import RequestBatcher

    backend = ScriptedBackend(lambda r: r.messages[-1].content)
    batcher = RequestBatcher(backend, max_batch=8, batch_window_s=5.0)
    futures = [batcher.submit(_request(t)) for t in "xyz"]
    batcher.close()
    assert [f.result(timeout=5).text for f in futures] == ["x", "y", "z"]
    batcher._thread.join(timeout=5)
    assert not batcher._thread.is_alive() and backend.batches == [3]


def test_a_request_the_backend_fails_is_an_http_error_of_its_kind():
    from agent_safety.backends import failed_result

    def reply(r):
        text = r.messages[-1].content
        if text == "long":
            return failed_result("context too long: 9000 prompt tokens (not retried)")
        return failed_result("generate crashed", retryable=True) if text == "crash" else "ok"

    with serve(reply) as (server, _, hits):
        url = f"{server.base_url}/chat/completions"
        statuses = [httpx.post(url, json={"messages": [{"role": "user", "content": t}]}).status_code
                    for t in ("long", "crash", "fine")]
        result = _client(server, max_attempts=3).complete(_request("long"))
    assert statuses == [400, 502, 200]
    assert result.failed and "context too long" in result.error and len(hits) == 4  # the 400 is not retried
