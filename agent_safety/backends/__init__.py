"""Chat backends: one interface (`ChatBackend.complete_batch`), several adapters, one factory."""

from __future__ import annotations

import time

from agent_safety.backends.base import ChatBackend, ChatMessage, ChatRequest, ChatResult, failed_result
from agent_safety.backends.retry import RetryPolicy
from agent_safety.backends.scripted import ScriptedBackend

BACKEND_KINDS = ("scripted", "jax", "openai")


def _scripted_policy(name: str, delay_s: float):
    if name != "demo":
        raise ValueError(f"unknown scripted policy {name!r}; known: ('demo',)")
    from agent_safety.demo_policy import demo_reply

    if not delay_s:
        return demo_reply

    def slow_reply(request):
        time.sleep(delay_s)
        return demo_reply(request)

    return slow_reply


def retry_policy(cfg) -> RetryPolicy:
    """The fault-handling keys of a backend config (see `run_config`) as a `RetryPolicy`."""
    return RetryPolicy(max_attempts=int(cfg["max_attempts"]), max_total_s=float(cfg["max_request_s"]),
                       backoff_s=float(cfg["backoff_s"]), backoff_max_s=float(cfg["backoff_max_s"]),
                       jitter=float(cfg["jitter"]))


def make_backend(cfg) -> ChatBackend:
    """A backend from a `run_config.backend_config()`-shaped mapping (see that module for the keys)."""
    kind = cfg["kind"]
    if kind == "scripted":
        return ScriptedBackend(_scripted_policy(cfg["policy"], float(cfg["delay_s"])), name="scripted:demo")
    if kind == "jax":
        from agent_safety.backends.jax_backend import JaxBackend

        if not cfg["model_path"]:
            raise ValueError("backend kind 'jax' needs model_path (e.g. --config.backend.model_path=DIR)")
        return JaxBackend.from_pretrained(cfg["model_path"], dtype=cfg["dtype"], max_batch=int(cfg["max_batch"]),
                                          attention=cfg.get("attention", "auto"),
                                          chat_template=cfg.get("chat_template", ""),
                                          engine=cfg.get("engine", "auto"))
    if kind == "openai":
        from agent_safety.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model=cfg["model"], base_url=cfg["base_url"] or None, api_key=cfg["api_key"] or None,
                             timeout_s=float(cfg["timeout_s"]), retry=retry_policy(cfg),
                             concurrency=int(cfg["concurrency"]))
    raise ValueError(f"unknown backend kind {kind!r}; known: {BACKEND_KINDS}")


__all__ = ["ChatBackend", "ChatMessage", "ChatRequest", "ChatResult", "ScriptedBackend", "make_backend",
           "BACKEND_KINDS", "RetryPolicy", "failed_result", "retry_policy"]
