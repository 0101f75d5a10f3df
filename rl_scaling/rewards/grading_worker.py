"""One grading worker process (started by rl_scaling.rewards.worker_pool): `serve()` is its whole program.

Protocol (one JSON object per line): the parent writes `{"id": int, "response": str, "reference":
str|number}` to stdin; the worker answers `{"id": int, "score": 0.0|1.0}` on its private result pipe
(the original stdout). After start-up it sends `{"ready": true}` once. It exits on end of input or
when its parent dies. It is a fresh interpreter (no fork of a JAX process) and imports no JAX.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _exit_when_orphaned(parent_pid: int, poll_s: float = 1.0) -> None:
    """Background thread: leave when the parent process is gone (its pid changes to the reaper's)."""
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent_pid:
            os._exit(0)


def main() -> None:
    # The protocol gets a private copy of stdout; fd 1 goes to stderr so stray prints cannot corrupt it.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    results = os.fdopen(result_fd, "w", buffering=1, encoding="utf-8")
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()

    from rl_scaling.rewards.equivalence import grade_unbounded

    grade_unbounded("\\boxed{\\frac{1}{2}}", "0.5")  # warm-up: load sympy and the LaTeX parser now
    results.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        try:
            score = grade_unbounded(task["response"], task["reference"])
        except Exception as exc:  # noqa: BLE001 - a grading error scores 0, never kills the worker
            print(f"grading_worker: {type(exc).__name__}: {exc}", file=sys.stderr)
            score = 0.0
        results.write(json.dumps({"id": task["id"], "score": score}) + "\n")



def serve() -> None:
    """main(), leaving quietly when the parent has gone away (nothing to report to)."""
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(0)
