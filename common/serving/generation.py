"""One HTTP request while it generates: its choices' text as tokens arrive from the engine loop, read by the
handler on the asyncio event loop.

The engine loop's thread hands each iteration's events over with `call_soon_threadsafe`; everything that
touches the tokenizer (detokenization, stop strings) runs on the event loop's thread, so the tokenizer is
never used from two threads at once. A choice that meets a stop string is cancelled in the engine at once; a
request whose reader goes away (a client that disconnects) has all its sequences cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import AsyncIterator

from common.serving.loop import EngineLoop, Failure, TokenEvent
from common.serving.model_server import Plan
from common.serving.protocol import ApiError, token_logprob
from common.serving.text import IncrementalDetokenizer, StopStrings


@dataclasses.dataclass
class Update:
    """What one iteration added to one choice: text (possibly ""), the log-probability entries of its tokens
    (None when the request asked for none), finish_reason once it ends; text_start: characters sent before."""

    index: int
    text: str
    logprobs: list[dict] | None
    finish_reason: str | None
    text_start: int


class Choice:
    """One choice's text, tokens and log-probabilities as its tokens arrive."""

    def __init__(self, index: int, tokenizer, prompt: list[int], stop: list[str], logprobs: bool):
        self.index = index
        self.tokenizer = tokenizer
        self.detokenizer = IncrementalDetokenizer(tokenizer, prompt)
        self.stops = StopStrings(stop)
        self.logprobs = logprobs
        self.tokens = 0  # generated tokens that count (up to the one that completed a stop string)
        self.sent = 0  # characters sent
        self.finish_reason: str | None = None

    def take(self, event: TokenEvent) -> Update | None:
        """The token's update; None once the choice has ended (tokens the engine made before its cancel)."""
        if self.finish_reason is not None:
            return None
        self.tokens += 1
        entries = [token_logprob(self.tokenizer, event.token, event.logprob, event.top)] if self.logprobs else None
        piece = self.detokenizer.add(event.token)
        if event.finish_reason is not None:
            piece += self.detokenizer.flush()
        text = self.stops.add(piece, final=event.finish_reason is not None)
        self.finish_reason = "stop" if self.stops.stopped else event.finish_reason
        start, self.sent = self.sent, self.sent + len(text)
        return Update(self.index, text, entries, self.finish_reason, start)


class Generation:
    """A checked request (`Plan`) on its way through the engine loop. `updates()` submits it and yields each
    iteration's updates; `prompt_tokens` / `completion_tokens` count what the usage reports."""

    def __init__(self, loop: EngineLoop, tokenizer, plan: Plan):
        self.loop = loop
        self.plan = plan
        self.choices = [Choice(i, tokenizer, p, plan.stop, plan.top is not None)
                        for i, p in enumerate(plan.choice_prompts())]
        self.prompt_tokens = sum(len(p) for p in plan.prompts)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    async def updates(self) -> AsyncIterator[list[Update]]:
        """Each iteration's updates until every choice has ended. Raises ApiError (500) when the engine fails;
        leaving early (an exception, a cancelled task) cancels what still runs."""
        events: asyncio.Queue = asyncio.Queue()
        aloop = asyncio.get_running_loop()
        handle = self.loop.submit(self.plan.sequences(), lambda item: aloop.call_soon_threadsafe(events.put_nowait,
                                                                                                 item))
        try:
            while not self.done:
                item = await events.get()
                if isinstance(item, Failure):
                    for c in self.choices:
                        c.finish_reason = c.finish_reason or "error"
                    raise ApiError(item.status, item.message, "server_error")
                out, stopped = [], []
                for event in item:
                    update = self.choices[event.index].take(event)
                    if update is None:
                        continue
                    out.append(update)
                    if update.finish_reason is not None and event.finish_reason is None:
                        stopped.append(event.index)  # a stop string: the engine still runs it
                if stopped:
                    self.loop.cancel(handle, stopped)
                if out:
                    yield out
        finally:
            if not self.done:
                self.loop.cancel(handle)

    async def whole(self) -> list[dict]:
        """Every choice at once: dicts of index, text, logprobs (entries or None), finish_reason."""
        texts = [[] for _ in self.choices]
        entries = [[] if self.plan.top is not None else None for _ in self.choices]
        async for updates in self.updates():
            for u in updates:
                texts[u.index].append(u.text)
                if u.logprobs is not None:
                    entries[u.index] += u.logprobs
        return [{"index": c.index, "text": "".join(texts[c.index]), "logprobs": entries[c.index],
                 "finish_reason": c.finish_reason} for c in self.choices]
