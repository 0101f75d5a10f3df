"""A request that fails for good fails its dialogue only.

The engine and the pre-chat defences send every batch through `complete_or_fail`: a failed result (the
backend gave up after its retries, or refused at once: a content filter, a context too long) — or an
exception from the whole batch — marks each asking dialogue failed (`dialogue.failure`), which finishes
it. The run stores it as failed with the error, goes on with the other dialogues, and the next run runs
it again. Replies are returned for the requests that succeeded, None for the others.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult, failed_result

if TYPE_CHECKING:
    from agent_safety.dialogue import Dialogue

log = logging.getLogger(__name__)


def fail_dialogue(dialogue: "Dialogue", stage: str, error: str) -> None:
    """Marks `dialogue` failed at `stage` ("agent turn", "questionnaire", "judge", ...); the first
    failure is the one kept."""
    if dialogue.failure is None:
        dialogue.failure = {"stage": stage, "error": error}
        log.warning("dialogue %s failed at %s: %s", dialogue.key.as_dict(), stage, error)


def batch_results(backend: ChatBackend, requests: Sequence[ChatRequest]) -> list[ChatResult]:
    """`backend.complete_batch(requests)`, with an exception of the whole call turned into a failed result
    for every request (a backend that crashes fails the dialogues it was serving, not the run)."""
    try:
        results = backend.complete_batch(requests)
    except Exception as error:  # noqa: BLE001 - recorded per dialogue, the run goes on
        log.exception("%s: a batch of %d requests failed as a whole", backend.name, len(requests))
        return [failed_result(f"{type(error).__name__}: {error}", retryable=True)] * len(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"{backend.name} returned {len(results)} results for {len(requests)} requests")
    return results


def complete_or_fail(backend: ChatBackend, askers: Sequence["Dialogue"], requests: Sequence[ChatRequest],
                     stage: str) -> list[ChatResult | None]:
    """One batch; request i was asked for dialogue askers[i]. Failed requests fail their dialogue and give
    None in the returned list."""
    if not requests:
        return []
    replies: list[ChatResult | None] = []
    for dialogue, result in zip(askers, batch_results(backend, requests)):
        if result.failed:
            fail_dialogue(dialogue, stage, result.error)
            replies.append(None)
        else:
            replies.append(result)
    return replies
