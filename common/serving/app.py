"""The OpenAI-compatible HTTP API over a `ModelServer` (FastAPI).

    POST /v1/chat/completions   messages rendered with the chat template; stream, n, stop, max_tokens, seed,
                                temperature, top_p, top_k (extra body), logprobs / top_logprobs (<= 20)
    POST /v1/completions        a text prompt (or several, or token ids); logprobs: top log-probs per token
    GET  /v1/models, /v1/models/{id}
    GET  /health

Handlers only check a request, hand it to the engine loop and read its updates; streamed responses are
server-sent events (`data: {chunk}` ... `data: [DONE]`) as the official `openai` client reads them. With an
api_key every /v1 route wants `Authorization: Bearer <key>` (401 otherwise; the key is never logged or echoed).
Every error is OpenAI's JSON: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from common.serving.generation import Generation
from common.serving.model_server import ModelServer
from common.serving.protocol import ApiError, ChatBody, CompletionBody, ResponseShape, error_body, model_card, usage

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks that its client is still there


def make_app(server: ModelServer, api_key: str | None = None) -> FastAPI:
    """The app serving `server` (started with the app, closed with it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if not server.loop.alive:
            server.start()
        yield
        server.close()

    app = FastAPI(title="OpenAI-compatible model server", lifespan=lifespan)
    app.state.model_server = server
    expected = f"Bearer {api_key}".encode() if api_key else None

    async def authorized(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or incorrect API key: send it as 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    _error_handlers(app)
    v1 = dict(dependencies=[Depends(authorized)])

    @app.get("/health")
    async def health():
        if not server.loop.alive:
            raise ApiError(503, "the engine loop is not running", "server_error")
        return {"status": "ok"}

    @app.get("/v1/models", **v1)
    async def list_models():
        return {"object": "list", "data": [model_card(server.model_id, server.created)]}

    @app.get("/v1/models/{model_id:path}", **v1)
    async def get_model(model_id: str):
        server.check_model(model_id)
        return model_card(server.model_id, server.created)

    @app.post("/v1/chat/completions", **v1)
    async def chat_completions(body: ChatBody, request: Request):
        return await _respond(server, body, request, chat=True)

    @app.post("/v1/completions", **v1)
    async def completions(body: CompletionBody, request: Request):
        return await _respond(server, body, request, chat=False)

    return app


async def _respond(server: ModelServer, body, request: Request, chat: bool):
    plan = server.plan(body)  # ApiError -> its 4xx, before anything reaches the engine
    if not server.loop.alive:
        raise ApiError(503, "the engine loop is not running", "server_error")
    generation = Generation(server.loop, server.tokenizer, plan)
    shape = ResponseShape(chat, server.model_id)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(generation, shape, include_usage), media_type="text/event-stream")
    task = asyncio.ensure_future(generation.whole())
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()  # its sequences leave the engine
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return JSONResponse(status_code=499, content=error_body("client disconnected", "client_error"))
    choices = task.result()
    return shape.whole(choices, usage(generation.prompt_tokens, generation.completion_tokens))


def _event(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream(generation: Generation, shape: ResponseShape, include_usage: bool):
    """Server-sent events: per choice a first chunk (chat: the role), content chunks, a chunk with its
    finish_reason; a usage chunk when asked; then [DONE]. An engine failure mid-stream is an error event."""
    if shape.chat:
        for c in generation.choices:
            yield _event(shape.chunk(c.index, "", first=True))
    try:
        async for updates in generation.updates():
            for u in updates:
                if u.text or u.logprobs:
                    yield _event(shape.chunk(u.index, u.text, u.logprobs, text_start=u.text_start))
                if u.finish_reason is not None:
                    yield _event(shape.chunk(u.index, None, finish_reason=u.finish_reason))
    except ApiError as error:
        yield _event(error.body())
    else:
        if include_usage:
            yield _event(shape.usage_chunk(usage(generation.prompt_tokens, generation.completion_tokens)))
    yield "data: [DONE]\n\n"


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return JSONResponse(status_code=error.status, content=error.body())

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                             for e in error.errors()[:5])
        first = error.errors()[0]["loc"] if error.errors() else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return JSONResponse(status_code=400, content=error_body(f"invalid request: {problems}",
                                                                "invalid_request_error", param))

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(status_code=error.status_code, content=error_body(str(error.detail), kind))

    @app.exception_handler(Exception)
    async def server_error(request, error: Exception):
        log.exception("request failed")
        return JSONResponse(status_code=500, content=error_body(f"{type(error).__name__}: {error}", "server_error"))
