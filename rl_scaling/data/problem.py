"""`Problem`: one math problem as every part of rl_scaling sees it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Problem:
    """One math problem.

    Attributes:
      id: unique within its source, e.g. `gsm8k/test/17`, `aime24/60`, `arith-L1-s0-3`.
      question: the problem text, without any instruction or chat template.
      reference: the clean reference answer (`"72"`, `"\\frac{1}{2}"`), gradable by
        `rl_scaling.rewards.grade`.
      difficulty: higher is harder, None when unknown. From a pass rate p it is 1 - p; for the
        synthetic task it is the level.
      source: the data set it came from (`gsm8k`, a parquet file's stem, `synthetic_arithmetic`).
    """

    id: str
    question: str
    reference: str
    difficulty: float | None = None
    source: str = ""
