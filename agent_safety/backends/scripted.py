"""The test double: replies come from a list or a function, and every request is recorded."""

from __future__ import annotations

import threading
from typing import Callable, Sequence, Union

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult

ReplySource = Union[Sequence[Union[str, ChatResult]], Callable[[ChatRequest], Union[str, ChatResult]]]


class ScriptedBackend(ChatBackend):
    """Replies with fixed strings (in order) or with `reply(request)`; keeps `requests` and `batches`.

    `batches` holds the size of every `complete_batch` call, so tests can check that a system step is
    one call. A reply may be a `ChatResult` (e.g. `failed_result(...)`: one request failing for good);
    a reply function may raise to simulate a backend failing as a whole. Thread-safe.
    """

    def __init__(self, replies: ReplySource, name: str = "scripted"):
        self.name = name
        self._lock = threading.Lock()
        self._fn = replies if callable(replies) else None
        self._queue = None if callable(replies) else list(replies)
        self.requests: list[ChatRequest] = []
        self.batches: list[int] = []

    def _reply(self, request: ChatRequest) -> Union[str, ChatResult]:
        if self._fn is not None:
            return self._fn(request)
        with self._lock:
            if not self._queue:
                raise RuntimeError(
                    f"ScriptedBackend {self.name!r} ran out of replies after {len(self.requests)} requests"
                )
            return self._queue.pop(0)

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        with self._lock:
            self.requests.extend(requests)
            self.batches.append(len(requests))
        replies = [self._reply(r) for r in requests]
        return [r if isinstance(r, ChatResult) else ChatResult(text=r) for r in replies]
