"""The rollout engine: continuous batching over a paged KV cache (`Engine`, a `common.rollout.Rollout`).

pages.py: the host's book of the page pool (free list, reference counts, shared prefix pages); scheduler.py:
admission, prefill chunks, decode steps, preemption; programs.py: the one device program (a pass over the
paged cache, then a sample per sequence); engine.py: the loop that ties them — `generate` for a list of prompts,
or `new_scheduler` + `step` for requests that join while others run (a server), each with its own `Sampling`.
The device side of the cache is `common.paged_kv`; attention over it is the backend's `attend_paged`
(`common.attention`), or a whole pass of the backend's own (`paged_forward`: the CPU kernels' decode layer).
"""

from common.engine.engine import Engine, PromptTooLongError, pages_for_budget
from common.engine.scheduler import Sampling, Scheduler, Sequence

__all__ = ["Engine", "PromptTooLongError", "pages_for_budget", "Sampling", "Scheduler", "Sequence"]
