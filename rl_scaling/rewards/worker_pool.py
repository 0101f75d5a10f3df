"""A small pool of killable grading processes: every task is bounded in wall-clock time.

Why not `concurrent.futures.ProcessPoolExecutor`: a task stuck in sympy (`9^{9^{9^{9^9}}}`) cannot be
cancelled there. Here each worker holds one task at a time; when a task passes its bound the worker is
killed (SIGKILL), the task scores 0.0 and a fresh worker is started in the background.

Workers are fresh interpreters running `rl_scaling.rewards.grading_worker.serve` (the equivalent of the
'spawn' start method without re-importing the caller's `__main__`), so a parent that has JAX loaded is
never forked; they start lazily on the first task and are killed at interpreter exit. Calls are
thread-safe (one batch at a time) and work from any thread: no signals are used.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import selectors
import shlex
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence

WORKER_COMMAND = (sys.executable, "-c", "from rl_scaling.rewards.grading_worker import serve; serve()")


def default_num_workers() -> int:
    """`$RL_GRADING_WORKERS` if set, else the number of CPU cores (at most 32)."""
    env = os.environ.get("RL_GRADING_WORKERS")
    if env:
        n = int(env)
        if n < 1:
            raise ValueError(f"RL_GRADING_WORKERS must be >= 1, got {env!r}")
        return n
    return max(1, min(32, os.cpu_count() or 1))


class _Worker:
    """One worker process and the parent's view of it: 'starting', 'idle' or 'busy'."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["JAX_PLATFORMS"] = "cpu"  # should anything import JAX, it must not claim an accelerator
        self.process = subprocess.Popen(
            list(WORKER_COMMAND),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C meant for the trainer does not reach the graders
        )
        self.fd = self.process.stdout.fileno()
        self.state = "starting"
        self.started_at = time.monotonic()
        self.task: int | None = None
        self.deadline = float("inf")
        self.tasks_done = 0
        self._buffer = b""

    def send(self, task_id: int, response: str, reference: str | int | float, timeout_s: float) -> None:
        line = json.dumps({"id": task_id, "response": response, "reference": reference}) + "\n"
        self.process.stdin.write(line.encode("utf-8"))
        self.process.stdin.flush()
        self.state, self.task = "busy", task_id
        self.deadline = time.monotonic() + timeout_s

    def read_messages(self) -> list[dict] | None:
        """Complete messages now available; None when the worker has closed its pipe (died)."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        try:
            self.process.kill()
        except ProcessLookupError:
            pass
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class GradingPool:
    """`num_workers` grading processes; `grade_many` grades a batch with a per-task time bound.

    Attributes:
      num_timeouts: tasks killed for passing their bound since the pool was made.
      num_crashes: tasks whose worker died on its own (scored 0.0).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        startup_timeout_s: float = 120.0,
        max_tasks_per_worker: int = 20_000,
    ) -> None:
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.startup_timeout_s = startup_timeout_s
        self.max_tasks_per_worker = max_tasks_per_worker  # recycle to bound sympy's cache growth
        self.num_timeouts = 0
        self.num_crashes = 0
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        _LIVE_POOLS.add(self)

    def grade_many(
        self,
        responses: Sequence[str],
        references: Sequence[str | int | float],
        timeout_s: float,
    ) -> list[float]:
        """Scores (0.0/1.0) of `responses[i]` against `references[i]`, each task bounded by `timeout_s`.

        The bound counts from the moment a warm worker receives the task; a task over it scores 0.0.
        """
        if len(responses) != len(references):
            raise ValueError(
                f"responses and references differ in length: {len(responses)} vs {len(references)}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        for i, (resp, ref) in enumerate(zip(responses, references)):
            if not isinstance(resp, str):
                raise TypeError(f"responses[{i}] must be str, got {type(resp).__name__}")
            if isinstance(ref, bool) or not isinstance(ref, (str, int, float)):
                raise TypeError(f"references[{i}] must be str or a number, got {type(ref).__name__}")
        if not responses:
            return []
        with self._lock:
            return self._run(list(responses), list(references), float(timeout_s))

    def _run(self, responses: list[str], references: list, timeout_s: float) -> list[float]:
        scores = [0.0] * len(responses)
        pending = collections.deque(range(len(responses)))
        self._fill_workers()
        selector = selectors.DefaultSelector()
        try:
            for worker in self._workers:
                selector.register(worker.fd, selectors.EVENT_READ, worker)
            while pending or any(w.state == "busy" for w in self._workers):
                for worker in self._workers:
                    if worker.state == "idle" and pending:
                        task = pending.popleft()
                        try:
                            worker.send(task, responses[task], references[task], timeout_s)
                        except (BrokenPipeError, OSError):
                            pending.appendleft(task)  # not the task's fault: retry on a new worker
                            self._replace(worker, selector)
                now = time.monotonic()
                wake = min(
                    [w.deadline for w in self._workers if w.state == "busy"]
                    + [w.started_at + self.startup_timeout_s for w in self._workers]
                )
                timeout = None if wake == float("inf") else max(0.0, wake - now)
                for key, _ in selector.select(timeout=timeout):
                    worker = key.data
                    messages = worker.read_messages()
                    if messages is None:  # the worker died on its own
                        if worker.state == "busy":
                            self.num_crashes += 1
                            scores[worker.task] = 0.0
                        elif worker.state == "starting":
                            self._raise_startup_failure(worker)
                        self._replace(worker, selector)
                        continue
                    for message in messages:
                        self._handle(worker, message, scores)
                    if worker.tasks_done >= self.max_tasks_per_worker and worker.state == "idle":
                        self._replace(worker, selector)
                now = time.monotonic()
                for worker in list(self._workers):
                    if worker.state == "busy" and now > worker.deadline:
                        self.num_timeouts += 1
                        scores[worker.task] = 0.0
                        self._replace(worker, selector)
                    elif worker.state == "starting" and now > worker.started_at + self.startup_timeout_s:
                        self._raise_startup_failure(worker)
        finally:
            selector.close()
        return scores

    @staticmethod
    def _handle(worker: _Worker, message: dict, scores: list[float]) -> None:
        if message.get("ready"):
            worker.state = "idle"
            worker.started_at = float("inf")  # no start-up deadline once warm
        elif "id" in message and message["id"] == worker.task:
            scores[worker.task] = float(message["score"])
            worker.state, worker.task, worker.deadline = "idle", None, float("inf")
            worker.tasks_done += 1

    def _fill_workers(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker())

    def _replace(self, worker: _Worker, selector: selectors.BaseSelector) -> None:
        """Kill `worker` and start its successor now, so it warms up while the others work."""
        selector.unregister(worker.fd)
        worker.kill()
        successor = _Worker()
        self._workers[self._workers.index(worker)] = successor
        selector.register(successor.fd, selectors.EVENT_READ, successor)

    def _raise_startup_failure(self, worker: _Worker) -> None:
        code = worker.process.poll()
        self.close()
        raise RuntimeError(
            f"grading worker `{shlex.join(WORKER_COMMAND)}` did not start within "
            f"{self.startup_timeout_s} s (exit code {code}); its error is on stderr above"
        )

    def close(self) -> None:
        """Kill every worker; the pool starts fresh ones if used again."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill()


_LIVE_POOLS: weakref.WeakSet[GradingPool] = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()
