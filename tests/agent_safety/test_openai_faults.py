"""OpenAIBackend against a fake endpoint on 127.0.0.1, one fault at a time: what is retried (429 with
Retry-After, 5xx, timeouts, dropped and refused connections, malformed JSON, empty `choices`), what is not
(content filter, context too long), and that a request failing for good gives a failed result for that
request only. Waits go to a fake clock, so no test sleeps for a backoff."""

import socket

import pytest

from agent_safety.backends import ChatMessage, ChatRequest, RetryPolicy
from agent_safety.backends.openai_backend import OpenAIBackend
from tests.agent_safety.fake_clock import FakeClock
from tests.agent_safety.fake_endpoint import (DROP, EMPTY_CHOICES, MALFORMED_JSON, NOT_AN_OBJECT, FakeEndpoint,
                                              Reply, completion, error)

SECRET = "sk-fault-suite-secret-789"


def _request(text="hi"):
    return ChatRequest(messages=(ChatMessage("user", text),), max_tokens=8)


def _backend(endpoint, clock, timeout_s=5.0, concurrency=1, **policy):
    policy = {"max_attempts": 4, "max_total_s": 60.0, "backoff_s": 1.0, "backoff_max_s": 8.0, "jitter": 0.0,
              **policy}
    return OpenAIBackend(model="fake", base_url=endpoint.base_url, api_key=SECRET, timeout_s=timeout_s,
                         retry=RetryPolicy(**policy), concurrency=concurrency,
                         sleep=clock.sleep, clock=clock.monotonic, rng=lambda: 0.5)


def _complete(script, **kw):
    """(result, fake clock, number of HTTP requests) of one request against `script`."""
    clock = FakeClock()
    with FakeEndpoint(script) as endpoint:
        result = _backend(endpoint, clock, **kw).complete(_request())
    return result, clock, len(endpoint.requests)


@pytest.mark.parametrize("fault", [
    error(500, "internal error"), error(502, "bad gateway"), error(503, "overloaded"),
    error(429, "rate limited"), MALFORMED_JSON, EMPTY_CHOICES, NOT_AN_OBJECT, DROP,
], ids=["500", "502", "503", "429", "malformed-json", "empty-choices", "not-an-object", "dropped-connection"])
def test_transient_faults_are_retried_with_exponential_backoff(fault):
    result, clock, hits = _complete([fault, fault, completion("fine")])
    assert not result.failed and result.text == "fine" and hits == 3
    assert clock.sleeps == [1.0, 2.0]


def test_backoff_is_capped_and_jittered():
    result, clock, hits = _complete([error(503, "busy")] * 5 + [completion("ok")], max_attempts=6,
                                    backoff_s=2.0, backoff_max_s=5.0, jitter=0.5)
    assert result.text == "ok" and hits == 6
    assert clock.sleeps == [1.5, 3.0, 3.75, 3.75, 3.75]  # min(2 * 2**k, 5) * (1 - 0.5 * 0.5)


@pytest.mark.parametrize("headers, wait", [((("Retry-After", "7"),), 7.0), ((("retry-after-ms", "250"),), 0.25),
                                           ((("Retry-After", "soon"),), 1.0)])
def test_retry_after_is_honoured(headers, wait):
    result, clock, hits = _complete([error(429, "slow down", headers=headers), completion("ok")])
    assert result.text == "ok" and hits == 2 and clock.sleeps == [wait]


def test_persistent_fault_gives_up_after_max_attempts_with_a_failed_result():
    result, clock, hits = _complete([error(503, "overloaded")] * 10, max_attempts=3)
    assert result.failed and result.text == "" and result.finish_reason == "error"
    assert hits == 3 and clock.sleeps == [1.0, 2.0]
    assert "HTTP 503" in result.error and "overloaded" in result.error and "gave up after 3 attempts" in result.error


def test_total_time_bound_stops_retrying_before_a_long_wait():
    result, clock, hits = _complete([error(429, "later", headers=(("Retry-After", "120"),)), completion("ok")],
                                    max_total_s=30.0)
    assert result.failed and hits == 1 and clock.sleeps == []
    assert "max_total_s=30" in result.error


@pytest.mark.parametrize("status, code, message", [
    (400, "content_filter", "The response was filtered due to the prompt triggering the content policy."),
    (400, "context_length_exceeded", "This model's maximum context length is 8192 tokens."),
    (404, None, "model not found"),
])
def test_client_errors_fail_at_once_without_retries(status, code, message):
    result, clock, hits = _complete([error(status, message, code), completion("never")])
    assert result.failed and hits == 1 and clock.sleeps == []
    assert f"HTTP {status}" in result.error and "not retried" in result.error and message[:20] in result.error
    if code:
        assert code in result.error


def test_withheld_reply_is_a_content_filter_failure():
    result, _, hits = _complete([completion("", finish_reason="content_filter"), completion("never")])
    assert result.failed and hits == 1 and "content filter" in result.error


def test_error_descriptions_never_hold_the_key():
    result, _, _ = _complete([error(401, f"Incorrect API key provided: {SECRET}.", "invalid_api_key")])
    assert result.failed and SECRET not in result.error and "<hidden>" in result.error


def test_timeouts_are_retried_and_bounded():
    slow = Reply(body=completion("late").body, delay_s=0.3)
    result, clock, hits = _complete([slow, completion("fast")], timeout_s=0.05)
    assert result.text == "fast" and hits == 2 and clock.sleeps == [1.0]
    result, _, hits = _complete([slow] * 3, timeout_s=0.05, max_attempts=2)
    assert result.failed and hits == 2 and "timeout" in result.error


def test_refused_connection_is_retried_then_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    clock = FakeClock()
    backend = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET,
                            retry=RetryPolicy(max_attempts=3, backoff_s=0.5, jitter=0.0),
                            sleep=clock.sleep, clock=clock.monotonic)
    result = backend.complete(_request())
    assert result.failed and "connection error" in result.error and clock.sleeps == [0.5, 1.0]


def test_one_failing_request_fails_alone_in_a_concurrent_batch():
    def script(body):
        text = body["messages"][-1]["content"]
        return error(400, "filtered", "content_filter") if text == "bad" else completion(text.upper())

    clock = FakeClock()
    with FakeEndpoint(script) as endpoint:
        results = _backend(endpoint, clock, concurrency=4).complete_batch([_request(t) for t in
                                                                          ("a", "bad", "c", "d")])
    assert [r.text for r in results] == ["A", "", "C", "D"]
    assert [r.failed for r in results] == [False, True, False, False]
    assert len(endpoint.requests) == 4
