"""The OpenAI wire format this server speaks: request bodies (pydantic), the error object, and the JSON of
responses, stream chunks and log-probabilities, as the official `openai` client reads them.

Fields the client may send that change nothing here are accepted and ignored (`user`, `metadata`, ...);
fields whose meaning this server does not implement (penalties, logit_bias, tools, a JSON response format,
echo, suffix, best_of) are refused with a 400 naming the field rather than silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

MAX_TOP_LOGPROBS = 20  # as OpenAI's API (and the engine's `TOP_LOGPROBS`)


class ApiError(Exception):
    """A request the server refuses: HTTP status, message, OpenAI error type, the offending parameter."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    """What both endpoints take. top_k and ignore_eos are extra fields (the client's `extra_body`), as vLLM's."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None  # None: 1.0
    top_p: float | None = None
    top_k: int | None = None  # 0 or -1: off
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False  # generate through the end token (load tests)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None

    def unsupported(self) -> list[str]:
        """Fields set to something this server does not do."""
        out = [f for f in ("presence_penalty", "frequency_penalty") if getattr(self, f)]
        return out + (["logit_bias"] if self.logit_bias else [])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: Any = None


class ChatBody(_Common):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list | None = None
    response_format: dict | None = None

    def unsupported(self) -> list[str]:
        out = super().unsupported() + (["tools"] if self.tools else [])
        if self.response_format and self.response_format.get("type", "text") != "text":
            out.append("response_format")
        return out


class CompletionBody(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None  # the number of top log-probabilities per token
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> list[str]:
        out = super().unsupported() + (["echo"] if self.echo else []) + (["suffix"] if self.suffix else [])
        return out + (["best_of"] if self.best_of not in (None, 1, self.n) else [])


# ---- responses ----------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "qwen-rl-research"}


def token_logprob(tokenizer, token: int, logprob: float, top: tuple[list[int], list[float]] | None) -> dict:
    """One token of chat `logprobs.content`: its text (decoded alone, special tokens kept), log-probability,
    UTF-8 bytes, and the most likely tokens at its step."""

    def entry(t: int, lp: float) -> dict:
        text = tokenizer.decode([t])
        return {"token": text, "logprob": float(lp), "bytes": list(text.encode("utf-8"))}

    out = entry(token, logprob)
    out["top_logprobs"] = [entry(t, lp) for t, lp in zip(*top)] if top else []
    return out


def completion_logprobs(entries: list[dict], text_start: int) -> dict:
    """The legacy completions' `logprobs` object from chat-style entries (`token_logprob`)."""
    offsets, at = [], text_start
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


class ResponseShape:
    """The JSON objects of one response: chat or legacy completions, whole or as stream chunks."""

    def __init__(self, chat: bool, model_id: str):
        self.chat, self.model_id = chat, model_id
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_id}

    def _logprobs(self, entries: list[dict] | None, text_start: int = 0):
        if entries is None:
            return None
        return {"content": entries} if self.chat else completion_logprobs(entries, text_start)

    def whole(self, choices: list[dict], counts: dict) -> dict:
        """choices: dicts of index, text, logprobs (entries or None), finish_reason."""
        out = []
        for c in choices:
            item = {"index": c["index"], "logprobs": self._logprobs(c["logprobs"]), "finish_reason": c["finish_reason"]}
            if self.chat:
                item["message"] = {"role": "assistant", "content": c["text"]}
            else:
                item["text"] = c["text"]
            out.append(item)
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": out, "usage": counts}

    def chunk(self, index: int, text: str | None, logprobs: list[dict] | None = None,
              finish_reason: str | None = None, first: bool = False, text_start: int = 0) -> dict:
        """One stream chunk for one choice: first (chat) carries the role; text None: no content field."""
        item: dict = {"index": index, "logprobs": self._logprobs(logprobs, text_start), "finish_reason": finish_reason}
        if self.chat:
            delta: dict = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            item["delta"] = delta
        else:
            item["text"] = text or ""
        return {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [item]}

    def usage_chunk(self, counts: dict) -> dict:
        return {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [],
                "usage": counts}
