"""Held-out evaluation: pass@1 at a sampling temperature, averaged over several samples per problem."""

from __future__ import annotations

import numpy as np

from common.rollout import Rollout
from rl_scaling.rewards import grade_batch


def pass_at_1(rollout: Rollout, params, tokenizer, prompt_ids: list[list[int]], references: list[str], *,
              num_samples: int, temperature: float, max_new_tokens: int, seed: int, stop_token_ids,
              timeout_s: float = 5.0, batch_size: int = 64) -> float:
    """Mean over problems of the share of `num_samples` samples graded correct (test loss L = 1 - this), under
    the policy's `params`."""
    if not prompt_ids:
        raise ValueError("no held-out problems to evaluate")
    repeated = [p for p in prompt_ids for _ in range(num_samples)]
    refs = [r for r in references for _ in range(num_samples)]
    texts = []
    for lo in range(0, len(repeated), batch_size):
        out = rollout.generate(params, repeated[lo:lo + batch_size], max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed + lo, stop_token_ids=stop_token_ids)
        texts += [tokenizer.decode(ids, skip_special_tokens=True) for ids in out.token_ids]
    scores = np.asarray(grade_batch(texts, refs, timeout_s=timeout_s)).reshape(len(prompt_ids), num_samples)
    return float(scores.mean())
