"""Preemption: SIGTERM or SIGINT make the run finish its current step, save, and stop, and every process of a
multi-host job stops at the same step.

A signal reaches the processes of a job at different moments, or only some of them (a maintenance event on
one worker, a `kill` by hand). Each process records it in its own flag (`StopSignal`); after every step all
processes exchange their flags (`any_process`: one all-gather of one integer per process) and all stop after
the first step at which any flag was set, so they save the same step and exit together.
"""

from __future__ import annotations

import contextlib
import signal

import numpy as np
from tqdm.auto import tqdm

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """A flag that SIGTERM / SIGINT set while `installed()` is active (the previous handlers return after)."""

    def __init__(self):
        self.requested = False

    def _request(self, signum, frame) -> None:
        self.requested = True
        tqdm.write(f"signal {signum}: checkpointing after this step")

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._request) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any of them. Every process must call it, at the same
    point of the program (it is a collective); with one process it returns `flag`."""
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
