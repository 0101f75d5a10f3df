"""Reward functions selected by name, and their weighted sum for a batch of responses.

Every reward function has the signature `fn(responses, references, *, timeout_s) -> np.ndarray [n]`
(float32; `timeout_s` matters only to those that call math-verify).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rl_scaling.rewards.boxed import THINK_CLOSE, boxed_spans, text_after_think
from rl_scaling.rewards.grading import DEFAULT_TIMEOUT_S, grade_batch

RewardFn = Callable[..., np.ndarray]


def correctness_reward(
    responses: Sequence[str],
    references: Sequence[str | int | float],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """[n] float32: 1.0 where the final answer equals the reference (see `grade`), else 0.0."""
    return np.asarray(grade_batch(responses, references, timeout_s=timeout_s), dtype=np.float32)


def is_well_formatted(response: str) -> bool:
    """Exactly one final `\\boxed{}` after some reasoning.

    The answer part (text after the last `</think>`, or the whole response) holds exactly one balanced,
    non-empty `\\boxed{...}`/`\\fbox{...}` (boxes nested inside it do not count), and reasoning precedes
    it: non-blank text before the box in the answer part, or a non-blank `<think>` block before it.
    """
    answer_part = text_after_think(response)
    spans = boxed_spans(answer_part)
    if len(spans) != 1:
        return False
    # A second, unbalanced box (an answer cut off mid-way) is not listed in `spans`; count commands.
    commands = answer_part.count("\\boxed") + answer_part.count("\\fbox")
    if commands != 1 + _nested(spans):
        return False
    start, _, content = spans[0]
    if not content.strip():
        return False
    reasoning = answer_part[:start]
    if THINK_CLOSE in response:
        reasoning = response.rpartition(THINK_CLOSE)[0].replace("<think>", "") + reasoning
    return bool(reasoning.strip())


def _nested(spans: list[tuple[int, int, str]]) -> int:
    """Number of box commands nested inside the listed boxes."""
    return sum(content.count("\\boxed") + content.count("\\fbox") for _, _, content in spans)


def format_reward(
    responses: Sequence[str],
    references: Sequence[str | int | float],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """[n] float32: 1.0 where `is_well_formatted(response)`; references are unused."""
    del references, timeout_s
    return np.asarray([is_well_formatted(r) for r in responses], dtype=np.float32)


REWARD_FNS: dict[str, RewardFn] = {
    "correctness": correctness_reward,
    "format": format_reward,
}


def get_reward_fn(name: str) -> RewardFn:
    """The reward function registered as `name`; KeyError listing the known names otherwise."""
    try:
        return REWARD_FNS[name]
    except KeyError:
        raise KeyError(f"unknown reward function {name!r}; known: {sorted(REWARD_FNS)}") from None


def compute_rewards(
    responses: Sequence[str],
    references: Sequence[str | int | float],
    names_and_weights: Mapping[str, float],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """[n] float32: sum over `name -> weight` of `weight * REWARD_FNS[name](responses, references)`.

    Raises KeyError for an unknown name, ValueError for an empty mapping, a non-finite weight or
    `responses`/`references` of different lengths.
    """
    if len(responses) != len(references):
        raise ValueError(
            f"responses and references differ in length: {len(responses)} vs {len(references)}"
        )
    if not names_and_weights:
        raise ValueError(f"names_and_weights is empty; known reward functions: {sorted(REWARD_FNS)}")
    fns = {name: get_reward_fn(name) for name in names_and_weights}
    total = np.zeros(len(responses), dtype=np.float32)
    for name, weight in names_and_weights.items():
        if not math.isfinite(float(weight)):
            raise ValueError(f"weight of reward {name!r} is not finite: {weight!r}")
        if weight == 0:
            continue
        total += np.float32(weight) * fns[name](responses, references, timeout_s=timeout_s)
    return total
