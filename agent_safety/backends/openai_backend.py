"""Backend for any OpenAI-compatible `/v1/chat/completions` endpoint, through the official client.

Secrets: the API key comes from the argument or `OPENAI_API_KEY` and is handed to the client only;
`name`, `repr` and error descriptions never contain it, so nothing that logs or stores the backend leaks it.
Faults (`classify_error`, policy in `retry.py`): 408, 409, 429, 5xx, timeouts, dropped connections and
malformed replies (invalid JSON, no `choices`) are retried with backoff, honouring Retry-After; any other
4xx (a content filter, a context that is too long) is not. A request that fails for good becomes a failed
`ChatResult` for that request alone — the rest of the batch is unaffected.
Batches: requests of one `complete_batch` are sent concurrently from a thread pool.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import openai
import pydantic

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult, failed_result
from agent_safety.backends.retry import (AttemptFailure, RequestFailed, RetryPolicy, call_with_retries,
                                         retry_after_seconds)

RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every status >= 500


class MalformedReply(Exception):
    """A 200 response that is not a usable chat completion (no choices, no message, not an object)."""


class ContentFiltered(Exception):
    """The endpoint answered but withheld the reply (finish_reason "content_filter")."""


def _error_message(error: openai.APIStatusError) -> str:
    """The server's own message and code (the client unwraps {"error": {...}} into `body`)."""
    body = error.body if isinstance(error.body, dict) else {}
    message, code = str(body.get("message") or error.message), body.get("code")
    return f"{code}: {message}" if code and str(code) not in message else message


def classify_error(error: Exception) -> AttemptFailure:
    """Retryable or not, with a one-line description; unknown exceptions (bugs) are re-raised."""
    if isinstance(error, openai.APITimeoutError):
        return AttemptFailure(True, "timeout")
    if isinstance(error, openai.APIConnectionError):
        return AttemptFailure(True, f"connection error: {error.__cause__ or error}")
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        retryable = status in RETRYABLE_STATUS or status >= 500
        wait = retry_after_seconds(error.response.headers) if retryable else None
        return AttemptFailure(retryable, f"HTTP {status}: {_error_message(error)}"[:500], wait)
    if isinstance(error, (MalformedReply, json.JSONDecodeError, pydantic.ValidationError,
                          openai.APIResponseValidationError)):
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        return AttemptFailure(True, f"malformed reply: {first_line[:300]}")
    if isinstance(error, ContentFiltered):
        return AttemptFailure(False, f"content filter: {error}")
    raise error


def result_from_response(response) -> ChatResult:
    """A ChatResult from a parsed completion; raises MalformedReply / ContentFiltered on unusable ones."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedReply(f"no choices in the reply ({type(response).__name__})")
    choice = choices[0]
    if getattr(choice, "message", None) is None:
        raise MalformedReply("the first choice has no message")
    if choice.finish_reason == "content_filter":
        raise ContentFiltered("finish_reason content_filter")
    usage = response.usage
    return ChatResult(
        text=choice.message.content or "", finish_reason=choice.finish_reason or "stop",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


class OpenAIBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible server.

    base_url / api_key: fall back to OPENAI_BASE_URL / OPENAI_API_KEY. timeout_s: per HTTP attempt (never
    beyond what remains of retry.max_total_s). retry: attempts, total time, backoff (`RetryPolicy`).
    concurrency: parallel requests. sleep / clock / rng: injectable for tests.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60.0, retry: RetryPolicy = RetryPolicy(), concurrency: int = 8,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        if not model:
            raise ValueError("OpenAIBackend needs a model name (config key 'model')")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if base_url is None:
                raise ValueError("no API key: set config 'api_key' or the OPENAI_API_KEY environment variable")
            api_key = "unused"  # local servers accept any key; the client insists on one
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.retry = retry
        self.concurrency = max(1, int(concurrency))
        self._sleep, self._clock, self._rng = sleep, clock, rng
        self._secret = api_key
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.name = f"openai:{model}@{base_url or 'api.openai.com'}"

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def complete(self, request: ChatRequest) -> ChatResult:
        """One request with retries; a failed result (never an exception) when it fails for good."""
        try:
            return call_with_retries(lambda seconds_left: self._call(request, seconds_left), classify_error,
                                     self.retry, self._sleep, self._clock, self._rng, label=self.name)
        except RequestFailed as failure:
            return failed_result(str(failure).replace(self._secret, "<hidden>"), failure.retryable)

    def _call(self, request: ChatRequest, seconds_left: float) -> ChatResult:
        extra = {"top_k": request.top_k} if request.top_k > 0 else None
        response = self._client.chat.completions.create(
            model=self.model, messages=[m.as_dict() for m in request.messages],
            max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
            seed=request.seed, extra_body=extra, timeout=max(min(self.timeout_s, seconds_left), 0.001),
        )
        return result_from_response(response)

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self.complete(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self.complete, requests))
