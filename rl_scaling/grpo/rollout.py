"""Rollouts: G samples per prompt through a `common.rollout.Rollout` (the shared sampler), packed into training
arrays.

Packing layout, per sequence i (N = prompts x G): [left pad | prompt | response | right pad] in a
[N, P + R] token array; `start[i]` is the first prompt slot; the response occupies slots P..P+len-1.
Target of slot t is token t+1, so the log-probabilities of the response tokens are read from the logits
at slots P-1 .. P+R-2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.rollout import Rollout


@dataclasses.dataclass
class Rollouts:
    """G completions of each prompt, in group order (prompt 0's G samples first)."""

    prompt_ids: list[list[int]]  # [N] (each prompt repeated G times)
    response_ids: list[list[int]]  # [N]
    sampler_logprobs: list[list[float]]  # [N], per response token
    truncated: np.ndarray  # [N] bool: hit max_new_tokens without a stop token
    group_size: int


def sample_rollouts(rollout: Rollout, params, prompt_ids: list[list[int]], *, group_size: int,
                    max_new_tokens: int, temperature: float, top_p: float, top_k: int, seed: int,
                    stop_token_ids) -> Rollouts:
    """G completions of each prompt under the policy's `params`."""
    repeated = [p for p in prompt_ids for _ in range(group_size)]
    out = rollout.generate(params, repeated, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, seed=seed, stop_token_ids=stop_token_ids)
    truncated = np.array([r == "length" for r in out.finish_reasons])
    return Rollouts(repeated, out.token_ids, out.logprobs, truncated, group_size)


@dataclasses.dataclass
class PackedBatch:
    tokens: np.ndarray  # int32 [N, P + R]
    start: np.ndarray  # int32 [N]
    targets: np.ndarray  # int32 [N, R]: the response tokens (pad after the end)
    mask: np.ndarray  # float32 [N, R]: 1 on response tokens that count in the loss
    prompt_len: int  # P

    @property
    def response_len(self) -> int:
        return self.targets.shape[1]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack_rollouts(rollouts: Rollouts, *, pad_id: int, mask_truncated: bool, length_multiple: int = 16,
                  max_response_len: int | None = None) -> PackedBatch:
    """Left-pads prompts to P and right-pads responses to R (each rounded up to `length_multiple`, so
    that the jitted training step sees few distinct shapes)."""
    n = len(rollouts.prompt_ids)
    P = round_up(max(len(p) for p in rollouts.prompt_ids), length_multiple)
    longest = max(max((len(r) for r in rollouts.response_ids), default=1), 1)
    R = round_up(longest, length_multiple)
    if max_response_len is not None:
        R = min(R, max(max_response_len, longest))
    tokens = np.full((n, P + R), pad_id, np.int32)
    targets = np.full((n, R), pad_id, np.int32)
    mask = np.zeros((n, R), np.float32)
    start = np.zeros((n,), np.int32)
    for i, (p, r) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
        tokens[i, P - len(p):P] = p
        tokens[i, P:P + len(r)] = r
        targets[i, :len(r)] = r
        start[i] = P - len(p)
        if not (mask_truncated and rollouts.truncated[i]):
            mask[i, :len(r)] = 1.0
    return PackedBatch(tokens, start, targets, mask, P)
