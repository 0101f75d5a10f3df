"""In-process backend over the shared JAX generator (`common.generate`: the paged engine or the static sampler).

One `complete_batch` call renders every request with the chat template (the tokenizer's own, or the bundled
one the backend's `chat_template` setting names: tokenizers of tiny test models have none) and decodes them
together: requests that share sampling settings go into ONE `generate` call (chunked by `max_batch`).
A request whose prompt plus max_tokens exceeds the model's context fails alone (a failed result, not
retried); nothing else here is transient, so there are no retries.
"""

from __future__ import annotations

import zlib
from typing import Sequence

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult, failed_result


def render_prompt_ids(tokenizer, request: ChatRequest, chat_template: str = "") -> list[int]:
    """A request rendered with the chat template (with generation prompt) -> prompt token ids.
    chat_template: a bundled template's name (`common.chat.available_chat_templates()`); "" = the tokenizer's."""
    from common.chat import render_chat

    text = render_chat(tokenizer, [m.as_dict() for m in request.messages], add_generation_prompt=True,
                       template=chat_template or None)
    # The template already holds any BOS/special tokens; adding them again would double them.
    return list(tokenizer.encode(text, add_special_tokens=False))


def check_chat_template(tokenizer, chat_template: str, model_name: str) -> None:
    """Raises ValueError, before any request, when no template would render a chat: `chat_template` names no
    bundled template, or is "" and the tokenizer has none. The message names the setting to change."""
    from common.chat import available_chat_templates

    setting = "the backend's chat_template (config key backend.chat_template or judge_backend.chat_template)"
    if chat_template and chat_template not in available_chat_templates():
        raise ValueError(f"{setting} is {chat_template!r}, not a bundled template; available: "
                         f"{available_chat_templates()}")
    if not chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {model_name} has no chat template: set {setting} to one of "
                         f"{available_chat_templates()}, e.g. --config.backend.chat_template=chatml")


def combined_seed(requests: Sequence[ChatRequest]) -> int:
    """One sampler seed for a batch, derived from the requests' seeds (stable across runs)."""
    return zlib.crc32(",".join(str(r.seed) for r in requests).encode()) & 0x7FFFFFFF


class JaxBackend(ChatBackend):
    """Chat completion through `common.generate` on a model loaded by `common.load_pretrained`.

    stop_token_ids: decoding stops at any of these; default `common.tokenizer.end_token_ids(tokenizer)`.
    max_batch: most prompts per `generate` call (memory bound).
    max_context: most tokens (prompt + new) per sequence; default the model's max_position_embeddings.
    chat_template: a bundled template's name (`common.chat.available_chat_templates()`) to render chats with;
        "" = the tokenizer's own (an error at construction when it has none).
    engine: what generates (`common.api.rollout_for`: "paged", "static", "auto"); the same samples either way.
    """

    def __init__(self, model, tokenizer, stop_token_ids: Sequence[int] | None = None,
                 max_batch: int = 64, name: str = "jax", max_context: int | None = None, chat_template: str = "",
                 engine: str = "auto"):
        check_chat_template(tokenizer, chat_template, name)
        self.engine = engine
        self.chat_template = chat_template
        self.model = model
        self.max_context = max_context or getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.tokenizer = tokenizer
        if stop_token_ids is None:
            from common.tokenizer import end_token_ids

            stop_token_ids = end_token_ids(tokenizer)
        self.stop_token_ids = list(stop_token_ids)
        self.max_batch = max_batch
        self.name = name
        self.generate_calls = 0  # how many sampler calls were made (for tests and logs)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", attention: str = "auto", **kwargs) -> "JaxBackend":
        """Loads an HF directory, a GGUF file or an orbax checkpoint directory via `common`; `attention`: the
        attention backend (`common.attention.select_backend`)."""
        from common import load_pretrained

        model, tokenizer = load_pretrained(path, dtype=dtype, mesh=None, attention=attention)
        return cls(model, tokenizer, name=kwargs.pop("name", f"jax:{path}"), **kwargs)

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        from common import generate

        prompts = [render_prompt_ids(self.tokenizer, r, self.chat_template) for r in requests]
        results = [self._context_failure(len(p), r.max_tokens) for p, r in zip(prompts, requests)]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            if results[i] is None:
                groups.setdefault(r.sampling_key(), []).append(i)
        for (max_tokens, temperature, top_p, top_k), indices in groups.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start:start + self.max_batch]
                outs = generate(
                    self.model, self.tokenizer, [prompts[i] for i in chunk], max_new_tokens=max_tokens,
                    temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=combined_seed([requests[i] for i in chunk]),
                    stop_token_ids=self.stop_token_ids, engine=self.engine,
                )
                self.generate_calls += 1
                for i, out in zip(chunk, outs):
                    results[i] = self._result(prompts[i], out, max_tokens)
        return results

    def _context_failure(self, prompt_tokens: int, max_tokens: int) -> ChatResult | None:
        if self.max_context and prompt_tokens + max_tokens > self.max_context:
            return failed_result(f"context too long: {prompt_tokens} prompt tokens + max_tokens {max_tokens} > "
                                 f"{self.max_context} (not retried)")
        return None

    def _result(self, prompt: list[int], out, max_tokens: int) -> ChatResult:
        ids = list(out.token_ids)
        stopped = bool(ids) and ids[-1] in self.stop_token_ids
        if stopped:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        reason = "length" if len(out.token_ids) >= max_tokens and not stopped else "stop"
        return ChatResult(text=text.strip(), finish_reason=reason,
                          prompt_tokens=len(prompt), completion_tokens=len(out.token_ids))
