"""Math rewards for GRPO: the paper's binary correctness reward (bounded in time) and a format reward.

    from rl_scaling.rewards import grade, grade_batch, compute_rewards
    grade("... so the answer is \\\\boxed{72}.", "Natalia sold ... #### 72")   # -> 1.0

Modules: `boxed` (find the final answer), `references` (clean reference answers of each data set),
`equivalence` (string + math-verify comparison, unbounded), `worker_pool` / `grading_worker`
(killable grading processes), `grading` (`grade`, `grade_batch`), `registry` (rewards by name).
"""

from rl_scaling.rewards.boxed import boxed_spans, last_boxed, text_after_think
from rl_scaling.rewards.equivalence import grade_unbounded, normalise_answer
from rl_scaling.rewards.grading import DEFAULT_TIMEOUT_S, default_pool, grade, grade_batch, set_default_pool
from rl_scaling.rewards.references import REFERENCE_FIELDS, clean_reference, extract_reference_answer
from rl_scaling.rewards.registry import (
    REWARD_FNS,
    compute_rewards,
    correctness_reward,
    format_reward,
    get_reward_fn,
    is_well_formatted,
)
from rl_scaling.rewards.worker_pool import GradingPool

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GradingPool",
    "REFERENCE_FIELDS",
    "REWARD_FNS",
    "boxed_spans",
    "clean_reference",
    "compute_rewards",
    "correctness_reward",
    "default_pool",
    "extract_reference_answer",
    "format_reward",
    "get_reward_fn",
    "grade",
    "grade_batch",
    "grade_unbounded",
    "is_well_formatted",
    "last_boxed",
    "normalise_answer",
    "set_default_pool",
    "text_after_think",
]
