"""The retry policy as pure functions: backoff with jitter, Retry-After parsing, attempt and time bounds."""

import pytest
from tests.agent_safety.fake_clock import FakeClock

from agent_safety.backends.retry import (AttemptFailure, RequestFailed, RetryPolicy, backoff_delay,
                                         call_with_retries, retry_after_seconds)


def test_backoff_doubles_up_to_the_cap_and_jitter_shortens_it():
    policy = RetryPolicy(backoff_s=1.0, backoff_max_s=6.0, jitter=0.0)
    assert [backoff_delay(k, policy, 0.9) for k in range(5)] == [1.0, 2.0, 4.0, 6.0, 6.0]
    jittered = RetryPolicy(backoff_s=1.0, backoff_max_s=6.0, jitter=1.0)
    assert backoff_delay(2, jittered, 0.0) == 4.0 and backoff_delay(2, jittered, 0.75) == 1.0


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "3"}, 3.0), ({"retry-after": "1.5"}, 1.5), ({"Retry-After-Ms": "200"}, 0.2),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0), ({"Retry-After": "-4"}, 0.0),
    ({"Retry-After": "whenever"}, None), ({}, None),
])
def test_retry_after_seconds(headers, seconds):
    assert retry_after_seconds(headers, now=1445412480.0) == seconds  # 07:28:00 that day


def test_policy_is_validated():
    for bad in ({"max_attempts": 0}, {"max_total_s": 0}, {"jitter": 1.5}, {"backoff_s": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def _run(outcomes, policy, classify=lambda e: AttemptFailure(True, str(e))):
    """call_with_retries over attempts that raise or return `outcomes` in turn; (result or error, clock,
    seconds_left seen by each attempt)."""
    clock, seen, outcomes = FakeClock(), [], list(outcomes)

    def attempt(seconds_left):
        seen.append(seconds_left)
        clock.now += 1.0  # each attempt takes a second
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    try:
        result = call_with_retries(attempt, classify, policy, clock.sleep, clock.monotonic, lambda: 0.0)
    except RequestFailed as failure:
        result = failure
    return result, clock, seen


def test_attempts_are_bounded_and_each_attempt_sees_the_time_left():
    policy = RetryPolicy(max_attempts=3, max_total_s=100.0, backoff_s=2.0, jitter=0.0)
    result, clock, seen = _run([OSError("a"), OSError("b"), OSError("c"), "never"], policy)
    assert isinstance(result, RequestFailed) and result.attempts == 3 and result.retryable
    assert "gave up after 3 attempts" in str(result) and str(result).startswith("c")
    assert clock.sleeps == [2.0, 4.0] and seen == [100.0, 97.0, 92.0]


def test_total_time_is_bounded():
    policy = RetryPolicy(max_attempts=10, max_total_s=10.0, backoff_s=2.0, jitter=0.0)
    result, clock, _ = _run([OSError("x")] * 10, policy)
    assert isinstance(result, RequestFailed) and result.attempts == 3  # 1 + 2 + 1 + 4 + 1 = 9 s; +8 s > 10
    assert clock.sleeps == [2.0, 4.0]


def test_not_retryable_fails_at_once_and_unknown_errors_pass_through():
    policy = RetryPolicy(max_attempts=5)
    result, clock, _ = _run([ValueError("filtered"), "never"], policy,
                            classify=lambda e: AttemptFailure(False, f"HTTP 400: {e}"))
    assert isinstance(result, RequestFailed) and not result.retryable and result.attempts == 1
    assert str(result) == "HTTP 400: filtered (not retried)" and clock.sleeps == []

    def reraise(error):
        raise error

    with pytest.raises(KeyError):
        _run([KeyError("bug")], policy, classify=reraise)


def test_server_wait_is_used_instead_of_backoff():
    policy = RetryPolicy(max_attempts=3, backoff_s=1.0, jitter=0.0)
    result, clock, _ = _run([OSError("x"), "ok"], policy, classify=lambda e: AttemptFailure(True, "429", 7.5))
    assert result == "ok" and clock.sleeps == [7.5]
