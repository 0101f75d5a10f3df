"""`PromptStream`: batches of problems in a fixed order, with an exactly restorable position."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

from rl_scaling.data.problem import Problem


def problems_fingerprint(problems: Sequence[Problem]) -> int:
    """CRC-32 of the problem ids in order: a plain int that changes when the data or its order does."""
    crc = 0
    for p in problems:
        crc = zlib.crc32(p.id.encode("utf-8") + b"\0", crc)
    return crc


class PromptStream(Iterator[list[Problem]]):
    """Yields `prompts_per_step` problems per step, in the given order, never shuffled.

    Step k of epoch e is `problems[k * prompts_per_step : (k + 1) * prompts_per_step]`; each epoch has
    `len(problems) // prompts_per_step` steps (the remainder is dropped, as in the paper's one-epoch
    run). `num_epochs=None` repeats forever. `state_dict()` is plain ints; `load_state_dict` resumes
    exactly, and refuses a state saved over different data or a different batch size.
    """

    def __init__(self, problems: Sequence[Problem], prompts_per_step: int, num_epochs: int | None = 1):
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        if prompts_per_step > len(problems):
            raise ValueError(
                f"prompts_per_step={prompts_per_step} exceeds the {len(problems)} problems available"
            )
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
        self._problems = list(problems)
        self.prompts_per_step = prompts_per_step
        self.num_epochs = num_epochs
        self.steps_per_epoch = len(self._problems) // prompts_per_step
        self.step = 0  # batches yielded so far
        self._fingerprint = problems_fingerprint(self._problems)

    @property
    def total_steps(self) -> int | None:
        """Number of batches the stream yields in all; None when endless."""
        return None if self.num_epochs is None else self.num_epochs * self.steps_per_epoch

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def __iter__(self) -> PromptStream:
        return self

    def __next__(self) -> list[Problem]:
        if self.total_steps is not None and self.step >= self.total_steps:
            raise StopIteration
        start = (self.step % self.steps_per_epoch) * self.prompts_per_step
        self.step += 1
        return self._problems[start : start + self.prompts_per_step]

    def state_dict(self) -> dict[str, int]:
        """{"step", "num_problems", "prompts_per_step", "fingerprint"}: all plain ints."""
        return {
            "step": self.step,
            "num_problems": len(self._problems),
            "prompts_per_step": self.prompts_per_step,
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from `state_dict()`; ValueError naming the key that does not match this stream."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ValueError(f"stream state lacks keys {missing}; got keys {sorted(state)}")
        for key in ("num_problems", "prompts_per_step", "fingerprint"):
            if int(state[key]) != expected[key]:
                raise ValueError(
                    f"stream state was saved with {key}={state[key]}, this stream has {expected[key]}"
                )
        step = int(state["step"])
        if step < 0 or (self.total_steps is not None and step > self.total_steps):
            raise ValueError(f"stream state step={step} is outside [0, {self.total_steps}]")
        self.step = step
