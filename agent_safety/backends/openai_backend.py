"""Backend for any OpenAI-compatible `/v1/chat/completions` endpoint, through the official client.

Secrets: the API key comes from the argument or `OPENAI_API_KEY` and is handed to the client only;
`name` and `repr` never contain it, so nothing that logs or stores the backend can leak it.
Retries: timeouts, connection errors and 5xx responses are retried with exponential backoff
(`backoff_s * 2**attempt`, capped at `backoff_max_s`); 4xx responses are not retried.
Batches: requests of one `complete_batch` are sent concurrently from a thread pool.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import openai

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult

log = logging.getLogger(__name__)


def is_retryable(error: Exception) -> bool:
    """Timeouts, dropped connections and server errors (HTTP >= 500) are worth another try."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def backoff_delays(max_retries: int, backoff_s: float, backoff_max_s: float) -> list[float]:
    """Seconds to wait before retry 1..max_retries: backoff_s, 2*backoff_s, 4*backoff_s, ... capped."""
    return [min(backoff_s * 2 ** i, backoff_max_s) for i in range(max_retries)]


class OpenAIBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible server.

    base_url / api_key: fall back to OPENAI_BASE_URL / OPENAI_API_KEY. timeout_s: per HTTP attempt.
    max_retries: extra attempts after the first on retryable errors. concurrency: parallel requests.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 4, backoff_s: float = 1.0,
                 backoff_max_s: float = 30.0, concurrency: int = 8,
                 sleep: Callable[[float], None] = time.sleep):
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
        self.delays = backoff_delays(max_retries, backoff_s, backoff_max_s)
        self.concurrency = max(1, int(concurrency))
        self._sleep = sleep
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.name = f"openai:{model}@{base_url or 'api.openai.com'}"

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def complete(self, request: ChatRequest) -> ChatResult:
        """One request, with retries on retryable errors; the last error is raised when they run out."""
        for attempt in range(len(self.delays) + 1):
            try:
                return self._call(request)
            except Exception as error:  # noqa: BLE001 - classified just below
                if not is_retryable(error) or attempt == len(self.delays):
                    raise
                log.warning("%s: attempt %d failed (%s); retrying in %.2fs",
                            self.name, attempt + 1, type(error).__name__, self.delays[attempt])
                self._sleep(self.delays[attempt])
        raise AssertionError("unreachable")

    def _call(self, request: ChatRequest) -> ChatResult:
        extra = {"top_k": request.top_k} if request.top_k > 0 else None
        response = self._client.chat.completions.create(
            model=self.model, messages=[m.as_dict() for m in request.messages],
            max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
            seed=request.seed, extra_body=extra,
        )
        choice = response.choices[0]
        usage = response.usage
        return ChatResult(
            text=choice.message.content or "", finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self.complete(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self.complete, requests))
