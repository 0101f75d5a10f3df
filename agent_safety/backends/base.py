"""The one interface every model backend implements: a batch of chat requests in, one result each out.

Backends are adapters (scripted test double, in-process JAX sampler, OpenAI-compatible HTTP). The
multi-agent engine only ever calls `complete_batch`, once per system step, with the next message of
every active dialogue — so a batching backend turns a whole step into one forward pass.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

VALID_ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    """One chat message: `role` is "system", "user" or "assistant"; `content` is plain text."""

    role: str
    content: str

    def __post_init__(self):
        if self.role not in VALID_ROLES:
            raise ValueError(f"chat message role must be one of {VALID_ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"chat message content must be str, got {type(self.content).__name__}")

    def as_dict(self) -> dict:
        return {"role": self.role, "content": self.content}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A conversation to continue plus sampling settings.

    max_tokens: upper bound on generated tokens. temperature 0 means greedy. top_k 0 means off.
    seed: sampling seed (backends that batch may combine the seeds of one batch into one).
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "messages", tuple(self.messages))
        if not self.messages:
            raise ValueError("a chat request needs at least one message")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one batched sampler call."""
        return (self.max_tokens, self.temperature, self.top_p, self.top_k)


@dataclasses.dataclass(frozen=True)
class ChatResult:
    """The generated reply. finish_reason: "stop" (end token/stop), "length" (hit max_tokens) or "error".

    error: set when the request failed for good (after any retries); then text is "" and the caller
    fails only the dialogue that asked. A secret-free one-line description.
    retryable: for a failed request, whether the fault was of a kind that may pass (a 5xx, a timeout)
    rather than a refusal of this request (a content filter, a context too long).
    """

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    retryable: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


def failed_result(error: str, retryable: bool = False) -> ChatResult:
    """The result of a request that failed for good."""
    return ChatResult(text="", finish_reason="error", error=error, retryable=retryable)


class ChatBackend(abc.ABC):
    """Turns chat requests into replies. `name` describes the backend in results (never a secret)."""

    name: str = "backend"

    @abc.abstractmethod
    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Returns one `ChatResult` per request, in order. A request that fails for good gets a failed
        result (`failed_result`) instead of raising, so the other requests of the batch still count."""


def messages_from_dicts(messages: Sequence[dict]) -> tuple[ChatMessage, ...]:
    """[{"role": ..., "content": ...}, ...] -> ChatMessage tuple, naming the bad index on error."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        out.append(ChatMessage(m["role"], m["content"]))
    return tuple(out)
