"""One model served under one id: its tokenizer and chat template, the engine and its loop, and the checks
that turn an OpenAI request body into engine sequences (`Plan`) or a 4xx naming what is wrong.

Every check runs in the HTTP handler, before anything reaches the engine loop: a request that is too long or
malformed fails alone and never touches the batch others run in.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

from common.chat import chat_prompt_ids
from common.engine import Engine, Sampling, Sequence
from common.serving.loop import EngineLoop
from common.serving.protocol import MAX_TOP_LOGPROBS, ApiError, ChatBody, CompletionBody

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}
MAX_N = 128  # choices per request
MAX_STOP_STRINGS = 16


@dataclasses.dataclass
class Plan:
    """A checked request. Choice i (of prompt i // n) is engine sequence id i: with the request's seed, its
    random stream, so n choices of one prompt differ, and a request with a seed draws the same choices whatever
    else runs. top: top log-probabilities per token (None: no log-probabilities at all)."""

    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: Sampling
    stop: list[str]
    top: int | None

    def sequences(self) -> list[Sequence]:
        return [Sequence(i * self.n + j, prompt, self.max_tokens, self.sampling, top_logprobs=self.top or 0)
                for i, prompt in enumerate(self.prompts) for j in range(self.n)]

    def choice_prompts(self) -> list[list[int]]:
        return [p for p in self.prompts for _ in range(self.n)]


class ModelServer:
    """model and tokenizer as `common.load_pretrained` gives them, served as `model_id`. chat_template: a bundled
    template's name (`common.chat`), None: the tokenizer's own. stop_token_ids: None = the tokenizer's end ids.
    engine: an `Engine` over the model (default: max_slots sequences at once, pages of page_size tokens, a pool
    of memory_bytes or the engine's default, contexts of max_model_len tokens or the model's, decode_steps decode
    steps a host round trip or the engine's default)."""

    def __init__(self, model, tokenizer, model_id: str, *, chat_template: str | None = None,
                 stop_token_ids=None, engine: Engine | None = None, max_slots: int = 64, page_size: int = 16,
                 memory_bytes: int | None = None, max_model_len: int | None = None, decode_steps: int | None = None):
        from common.tokenizer import end_token_ids

        self.tokenizer = tokenizer
        self.model_id = model_id
        self.chat_template = chat_template
        self.stop_ids = frozenset(end_token_ids(tokenizer) if stop_token_ids is None else stop_token_ids)
        pad_id = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
        self.engine = engine or Engine(model, max_slots=max_slots, page_size=page_size, memory_bytes=memory_bytes,
                                       max_cache_length=max_model_len, pad_id=pad_id, decode_steps=decode_steps)
        self.loop = EngineLoop(self.engine, self.engine.state)
        self.created = int(time.time())

    def start(self) -> "ModelServer":
        self.loop.start()
        return self

    def close(self) -> None:
        self.loop.close()

    @property
    def context_limit(self) -> int:
        """Most tokens (prompt + new) one sequence can hold: the engine's positions and its page pool."""
        engine = self.engine
        return min(engine.max_cache_length, (engine.num_pages - 1) * engine.page_size)

    # ---- request bodies -> a Plan ---------------------------------------------------------------------

    def check_model(self, model: str | None) -> None:
        if model and model != self.model_id:
            raise ApiError(404, f"The model `{model}` does not exist (this server serves `{self.model_id}`).",
                           param="model", code="model_not_found")

    def chat_prompt(self, body: ChatBody) -> list[int]:
        messages = []
        for i, m in enumerate(body.messages):
            role = ROLE_ALIASES.get(m.role, m.role)
            if role not in ROLES:
                raise ApiError(400, f"messages[{i}]: unknown role {m.role!r}; known: {list(ROLES)}, 'developer'",
                               param="messages")
            messages.append({"role": role, "content": _text_of(m.content, f"messages[{i}]")})
        try:
            return chat_prompt_ids(self.tokenizer, messages, template=self.chat_template)
        except ValueError as error:
            raise ApiError(400, str(error), param="messages") from None

    def text_prompts(self, body: CompletionBody) -> list[list[int]]:
        p = body.prompt
        items = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else list(p)
        if not items:
            raise ApiError(400, "prompt is empty", param="prompt")
        return [self.tokenizer.encode(x, add_special_tokens=False) if isinstance(x, str) else list(x)
                for x in items]

    def plan(self, body: ChatBody | CompletionBody) -> Plan:
        """The checked request, or ApiError (400 / 404) naming the parameter."""
        self.check_model(body.model)
        if body.unsupported():
            field = body.unsupported()[0]
            raise ApiError(400, f"{field!r} is not supported by this server", param=field)
        chat = isinstance(body, ChatBody)
        prompts = [self.chat_prompt(body)] if chat else self.text_prompts(body)
        if not 1 <= body.n <= MAX_N:
            raise ApiError(400, f"n must be between 1 and {MAX_N}, got {body.n}", param="n")
        top = self._top_logprobs(body, chat)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP_STRINGS:
            raise ApiError(400, f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}", param="stop")
        seed = secrets.randbits(31) if body.seed is None else body.seed % 2**31  # the engine's seeds are int32
        top_k = body.top_k if body.top_k and body.top_k > 0 else 0
        sampling = Sampling(1.0 if body.temperature is None else body.temperature, top_k,
                            1.0 if body.top_p is None else body.top_p, seed,
                            frozenset() if body.ignore_eos else self.stop_ids)
        try:
            sampling.mode
        except ValueError as error:
            raise ApiError(400, str(error), param=str(error).split()[0]) from None
        max_tokens = self._max_tokens(body, prompts)
        name = "messages" if chat else "prompt"
        for i, prompt in enumerate(prompts):
            try:
                self.engine.check_request(prompt, max_tokens, name if len(prompts) == 1 else f"{name}[{i}]")
            except ValueError as error:
                raise ApiError(400, str(error), param=name) from None
        return Plan(prompts, body.n, max_tokens, sampling, stop, top)

    def _max_tokens(self, body, prompts: list[list[int]]) -> int:
        given = body.max_completion_tokens if getattr(body, "max_completion_tokens", None) is not None \
            else body.max_tokens
        if given is not None:
            if given < 1:
                raise ApiError(400, f"max_tokens must be at least 1, got {given}", param="max_tokens")
            return given
        longest = max(len(p) for p in prompts)
        if longest >= self.context_limit:
            raise ApiError(400, f"the prompt has {longest} tokens; this server's context holds {self.context_limit} "
                           "(prompt and completion together)", param="messages" if hasattr(body, "messages")
                           else "prompt")
        return self.context_limit - longest

    @staticmethod
    def _top_logprobs(body, chat: bool) -> int | None:
        if chat:
            if body.top_logprobs and not body.logprobs:
                raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            top = (body.top_logprobs or 0) if body.logprobs else None
        else:
            top = body.logprobs
        if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
            raise ApiError(400, f"top log-probabilities must be between 0 and {MAX_TOP_LOGPROBS}, got {top}",
                           param="top_logprobs" if chat else "logprobs")
        return top


def _text_of(content, where: str) -> str:
    """OpenAI content is a string or a list of parts; only text parts are supported."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
            raise ApiError(400, f"{where}: only text content parts are supported", param="messages")
        return "".join(p.get("text", "") for p in content)
    raise ApiError(400, f"{where}: content must be a string or a list of text parts", param="messages")
