"""An OpenAI-compatible chat server (`/v1/chat/completions`, `/v1/models`) over ANY `ChatBackend`: a proxy in
front of another endpoint (`OpenAIBackend`) or the scripted demo backend.

A local model is served by `common.serving` instead (`tools/serve.py`, and `tools/psysafe_server.py
--backend=jax`): requests join the engine's running batch as they arrive, with streaming, n > 1, stop strings
and log-probabilities. Here, concurrent HTTP requests are gathered by `RequestBatcher` into one `complete_batch`
call (up to `max_batch` requests, waiting at most `batch_window_s` for company). Streaming and n > 1 are not
supported (HTTP 400). A request the backend fails for good answers 400 when it was refused (a context too long),
else 502. `ServerThread` (from `common.serving`) runs an app on a loopback port inside this process.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from agent_safety.backends.base import ChatBackend, ChatMessage, ChatRequest
from common.serving.thread import ServerThread

__all__ = ["RequestBatcher", "ServerThread", "chat_request_from_body", "make_app"]

ROLE_ALIASES = {"developer": "system"}


class RequestBatcher:
    """One worker thread: takes queued requests, batches them, calls the backend, fills futures."""

    def __init__(self, backend: ChatBackend, max_batch: int = 32, batch_window_s: float = 0.01):
        self.backend = backend
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="psysafe-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> Future:
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def close(self) -> None:
        """Ends the worker thread after the requests queued so far are answered."""
        self._queue.put(None)

    def _gather(self) -> tuple[list, bool]:
        """(up to max_batch queued requests, whether close() was called)."""
        batch, deadline = [], 0.0
        while len(batch) < self.max_batch:
            try:  # wait as long as it takes for the first request, then at most the window for more
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0) if batch else None)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if not batch:
                deadline = time.monotonic() + self.batch_window_s
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        closed = False
        while not closed:
            batch, closed = self._gather()
            if batch:
                self._answer(batch)

    def _answer(self, batch: list) -> None:
        try:
            results = self.backend.complete_batch([r for r, _ in batch])
        except Exception as error:  # noqa: BLE001 - reported to every waiting client as HTTP 500
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: Any = ""


class _ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[_Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    n: int = 1
    stream: bool = False


def _text_of(content: Any) -> str:
    """OpenAI content is a string or a list of parts; only text parts are supported."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError(f"unsupported message content of type {type(content).__name__}")


def chat_request_from_body(body: _ChatBody, default_max_tokens: int) -> ChatRequest:
    """Validated HTTP body -> ChatRequest; ValueError names the offending field."""
    if body.stream:
        raise ValueError("'stream': true is not supported by this server")
    if body.n != 1:
        raise ValueError(f"'n' must be 1, got {body.n}")
    messages = tuple(ChatMessage(ROLE_ALIASES.get(m.role, m.role), _text_of(m.content)) for m in body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens or default_max_tokens
    return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=body.temperature,
                       top_p=body.top_p, top_k=body.top_k, seed=body.seed or 0)


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def make_app(backend: ChatBackend, model_name: str = "psysafe", max_batch: int = 32,
             batch_window_s: float = 0.01, default_max_tokens: int = 256) -> FastAPI:
    """A FastAPI app serving `backend` under the model id `model_name`."""
    batcher = RequestBatcher(backend, max_batch=max_batch, batch_window_s=batch_window_s)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="psysafe chat server", lifespan=lifespan)

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "psysafe"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: _ChatBody):
        try:
            request = chat_request_from_body(body, default_max_tokens)
        except (ValueError, TypeError) as error:
            return _error(400, str(error), "invalid_request_error")
        try:
            result = batcher.submit(request).result()
        except Exception as error:  # noqa: BLE001 - any backend failure is the server's fault
            return _error(500, f"backend error: {type(error).__name__}: {error}", "server_error")
        if result.failed:  # a refusal of this request is the client's 400, any other failure the server's 502
            return _error(502 if result.retryable else 400, result.error,
                          "server_error" if result.retryable else "invalid_request_error")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.model or model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens},
        }

    return app
