"""The rollout engine: continuous batching over a paged KV cache (`Engine`, a `common.rollout.Rollout`).

pages.py: the host's book of the page pool (free list, reference counts, shared prefix pages); scheduler.py:
admission, prefill chunks, decode steps, preemption; programs.py: the one device program (a pass over the
paged cache, then a sample per sequence); engine.py: the loop that ties them. The device side of the cache is
`common.paged_kv`; attention over it is the backend's `attend_paged` (`common.attention`).
"""

from common.engine.engine import Engine, PromptTooLongError, pages_for_budget

__all__ = ["Engine", "PromptTooLongError", "pages_for_budget"]
