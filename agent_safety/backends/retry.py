"""Retrying one request: which failures earn another try, how long to wait, when to give up.

A backend classifies each failed attempt (`AttemptFailure`): retryable (429, 5xx, timeout, dropped
connection, malformed reply) or not (a 4xx such as a content filter or a context that is too long).
`call_with_retries` tries again after a wait — the server's Retry-After when it sent one, else
exponential backoff `backoff_s * 2**k` capped at `backoff_max_s`, shortened by a random jitter so that
many clients do not retry in step — until the request succeeds, `max_attempts` attempts were made, or
the next wait would take the request past `max_total_s` seconds. Then it raises `RequestFailed`, which
the backend turns into a failed `ChatResult` for that request alone.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from typing import Callable, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """max_attempts: attempts per request, the first included (>= 1). max_total_s: seconds one request
    may take, attempts and waits together. backoff_s / backoff_max_s: first and largest backoff wait.
    jitter: each backoff wait is scaled by a random factor in [1 - jitter, 1] (0 = none, 1 = full)."""

    max_attempts: int = 5
    max_total_s: float = 600.0
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_total_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"max_total_s must be > 0 and backoff times >= 0, got {self}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")


@dataclasses.dataclass(frozen=True)
class AttemptFailure:
    """What one failed attempt means. description: short, secret-free ("HTTP 503: overloaded").
    retry_after_s: the server's requested wait, if it named one."""

    retryable: bool
    description: str
    retry_after_s: float | None = None


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or out of attempts or time. str() says which."""

    def __init__(self, message: str, retryable: bool, attempts: int):
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


def backoff_delay(retry_index: int, policy: RetryPolicy, random_fraction: float) -> float:
    """Seconds before retry `retry_index` (0 = the first retry): min(backoff_s * 2**k, backoff_max_s),
    scaled by 1 - jitter * random_fraction (random_fraction in [0, 1))."""
    base = min(policy.backoff_s * 2 ** retry_index, policy.backoff_max_s)
    return base * (1.0 - policy.jitter * random_fraction)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asked for: `retry-after-ms`, or `retry-after` as seconds or an HTTP date;
    None when absent or unreadable. `now`: the current Unix time (for dates; default time.time())."""
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000.0, 0.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def next_wait(failure: AttemptFailure, retry_index: int, policy: RetryPolicy, random_fraction: float) -> float:
    """The server's Retry-After when given (honoured as is, no jitter), else the backoff delay."""
    if failure.retry_after_s is not None:
        return failure.retry_after_s
    return backoff_delay(retry_index, policy, random_fraction)


def call_with_retries(attempt: Callable[[float], T], classify: Callable[[Exception], AttemptFailure],
                      policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic,
                      rng: Callable[[], float] = random.random, label: str = "request") -> T:
    """`attempt(seconds_left)` until it returns (seconds_left: what remains of max_total_s, to bound the
    attempt's own timeout); raises `RequestFailed` when a failure is not retryable or the
    policy's attempts or time run out. Exceptions that `classify` re-raises pass through untouched."""
    start = clock()
    for k in range(policy.max_attempts):
        try:
            return attempt(max(policy.max_total_s - (clock() - start), 0.0))
        except Exception as error:  # noqa: BLE001 - classify decides, and may re-raise
            failure = classify(error)
        attempts = k + 1
        if not failure.retryable:
            raise RequestFailed(f"{failure.description} (not retried)", False, attempts)
        if attempts == policy.max_attempts:
            raise RequestFailed(f"{failure.description} (gave up after {attempts} attempts)", True, attempts)
        wait = next_wait(failure, k, policy, rng())
        elapsed = clock() - start
        if elapsed + wait > policy.max_total_s:
            raise RequestFailed(f"{failure.description} (gave up after {attempts} attempts and {elapsed:.1f} s: "
                                f"waiting {wait:.1f} s more would pass max_total_s={policy.max_total_s:g})",
                                True, attempts)
        log.warning("%s: attempt %d failed (%s); retrying in %.2f s", label, attempts, failure.description, wait)
        sleep(wait)
    raise AssertionError("unreachable")
