"""`grade` and `grade_batch`: the paper's binary correctness reward with a bounded time per answer.

Both run `equivalence.grade_unbounded` in the process-wide `GradingPool` (started on first use, size
`$RL_GRADING_WORKERS` or the number of cores). They are safe to call from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rl_scaling.rewards.worker_pool import GradingPool

DEFAULT_TIMEOUT_S = 5.0

_default_pool: GradingPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> GradingPool:
    """The process-wide grading pool (created on first call; workers start on the first task)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = GradingPool()
        return _default_pool


def set_default_pool(pool: GradingPool) -> None:
    """Replace the process-wide pool (e.g. `GradingPool(num_workers=16)`); the old one is closed."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is not None and _default_pool is not pool:
            _default_pool.close()
        _default_pool = pool


def grade(response: str, reference: str | int | float, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """1.0 if `response`'s final answer equals `reference`, else 0.0; 0.0 after `timeout_s` seconds.

    Final answer: the last `\\boxed{}`/`\\fbox{}` after the last `</think>` (normalised string equality,
    then math-verify symbolic equality); without a box, math-verify on the whole text. `reference` may
    be raw: a GSM8K solution (`... #### 1,000`), a solution with `\\boxed{}`, AMC's `27.0`, AIME's `"025"`.
    """
    return default_pool().grade_many([response], [reference], timeout_s)[0]


def grade_batch(
    responses: Sequence[str],
    references: Sequence[str | int | float],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[float]:
    """`[grade(r, ref, timeout_s) for r, ref in zip(...)]`, in parallel over the pool's workers.

    Args:
      responses: [n] model outputs.
      references: [n] reference answers, raw or clean.
      timeout_s: bound per response, in seconds of wall-clock time on a worker.
    Returns:
      [n] floats in {0.0, 1.0}.
    """
    return default_pool().grade_many(responses, references, timeout_s)
