"""The engine loop: one background thread owns the engine's scheduler; requests join it as they arrive.

    loop = EngineLoop(engine, params).start()
    handle = loop.submit(sequences, sink)      # any thread; sink(events) is called on the loop's thread
    loop.cancel(handle)                        # the client went away: its sequences leave the batch

Between two engine iterations (`Engine.step`: admit, one prefill call, one decode step) the loop takes what
was submitted or cancelled since, so a request joins the running batch at the next iteration instead of
waiting for the batch to finish. After an iteration each request's sink gets one list of `TokenEvent`s (its
sequences that got a token). An exception inside an iteration fails the requests in flight (`Failure`, HTTP
500) and the loop goes on with a new scheduler; nothing a request submits reaches the loop unchecked
(`Engine.check_request` runs in the caller), so one request's mistake never fails another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from typing import Callable, Sequence

import jax

from common.engine import Engine
from common.engine.scheduler import ShardedScheduler
from common.engine.scheduler import Sequence as EngineSequence

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TokenEvent:
    """What one iteration gave one sequence of a request: index (its place in the request's list), the new
    token, its log-probability, its top log-probabilities ((ids, log-probs) or None), finish_reason once done
    ("stop": an end token, "length": the token budget)."""

    index: int
    token: int
    logprob: float
    top: tuple[list[int], list[float]] | None
    finish_reason: str | None


@dataclasses.dataclass
class Failure:
    """The request cannot go on (the engine failed, or the loop is closing): status is the HTTP status."""

    status: int
    message: str


Sink = Callable[[list[TokenEvent] | Failure], None]


class Handle:
    """A submitted request: its sequences (in the engine) and where its events go."""

    def __init__(self, sequences: Sequence[EngineSequence], sink: Sink):
        self.sequences = list(sequences)
        self.sink = sink

    def send(self, item: list[TokenEvent] | Failure) -> None:
        try:
            self.sink(item)
        except Exception:  # noqa: BLE001 - a broken sink (a closed event loop) must not stop the engine loop
            log.exception("a request's sink failed; its events are dropped")


class EngineLoop:
    """Runs `engine` over a scheduler on a daemon thread. params: the parameters to decode from (their inference
    copy is made once, on the loop's thread: `Engine.inference_weights`)."""

    def __init__(self, engine: Engine, params, name: str = "engine-loop"):
        self.engine = engine
        self._params = params
        self._inbox: queue.Queue = queue.Queue()
        self._live: dict[EngineSequence, tuple[Handle, int]] = {}  # sequence -> (its request, its index there)
        self._sent: dict[EngineSequence, int] = {}  # sequence -> tokens of it sent
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.iterations = 0  # engine steps run (tests, logs)
        self.failures = 0  # iterations that raised

    # ---- any thread ----------------------------------------------------------------------------------

    def start(self) -> "EngineLoop":
        self._thread.start()
        return self

    def submit(self, sequences: Sequence[EngineSequence], sink: Sink) -> Handle:
        """Queue checked sequences (`Engine.check_request`); each iteration's events for them go to sink."""
        handle = Handle(sequences, sink)
        self._inbox.put(("add", handle, None))
        return handle

    def cancel(self, handle: Handle, indices: Sequence[int] | None = None) -> None:
        """Drop the request's sequences (those at `indices`, default all) that still run; no event follows
        for them."""
        self._inbox.put(("cancel", handle, indices))

    def close(self, timeout_s: float = 10.0) -> None:
        """Fail what is in flight (503) and end the thread."""
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> int:
        """Sequences submitted and not finished or cancelled."""
        return len(self._live)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the loop's thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        mesh = self.engine.mesh
        with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
            params = self.engine.inference_weights(self._params)
            scheduler = self.engine.new_scheduler()
            while self._take(scheduler, block=scheduler.done):
                if scheduler.done:
                    continue
                try:
                    self._deliver(self.engine.step(scheduler, params))
                    self.iterations += 1
                except Exception as error:  # noqa: BLE001 - fails the requests in flight, not the server
                    log.exception("engine iteration failed; failing %d sequences in flight", len(self._live))
                    self.failures += 1
                    self._fail_all(Failure(500, f"the engine failed: {type(error).__name__}: {error}"))
                    self.engine.drop_pool()  # the failed call may have consumed it
                    scheduler = self.engine.new_scheduler()
        self._fail_all(Failure(503, "the server is shutting down"))

    def _take(self, scheduler: ShardedScheduler, block: bool) -> bool:
        """Applies everything queued (waiting for one item when `block`); False once closed."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if item is None:
                return False
            block = False
            kind, handle, indices = item
            if kind == "add":
                for i, seq in enumerate(handle.sequences):
                    scheduler.add(seq)
                    self._live[seq] = (handle, i)
            else:
                for i in range(len(handle.sequences)) if indices is None else indices:
                    seq = handle.sequences[i]
                    if self._live.pop(seq, None) is not None:
                        self._sent.pop(seq, None)
                        scheduler.cancel(seq)

    def _deliver(self, got: list[EngineSequence]) -> None:
        """Events for every token the iteration gave (a sequence prefilled and decoded in one iteration got two,
        and is listed twice)."""
        events: dict[Handle, list[TokenEvent]] = {}
        for seq in dict.fromkeys(got):
            if seq not in self._live:
                continue
            handle, i = self._live[seq]
            for k in range(self._sent.get(seq, 0), len(seq.generated)):
                last = k == len(seq.generated) - 1
                top = seq.top[k] if seq.top_logprobs else None
                events.setdefault(handle, []).append(TokenEvent(i, seq.generated[k], seq.logprobs[k], top,
                                                                seq.finish_reason if last else None))
            self._sent[seq] = len(seq.generated)
            if seq.finish_reason is not None:
                del self._live[seq], self._sent[seq]
        for handle, items in events.items():
            handle.send(items)

    def _fail_all(self, failure: Failure) -> None:
        handles = {handle for handle, _ in self._live.values()}
        self._live.clear()
        self._sent.clear()
        for handle in handles:
            handle.send(failure)
