"""Rollouts: G samples per prompt through a `common.rollout.Rollout` (the shared sampler), in calls of a
bounded number of sequences, packed into training arrays.

Calls: a step's N = prompts x G sequences go to the sampler in calls of at most `sequences_per_call` (the
trainer's memory bound, `rl_scaling.grpo.setup.sequences_per_call`), each call whole prompt groups. The
first call samples with the step's seed, each later one with a seed derived from the step's and the call's
first sequence (`call_seed`): one call per step samples exactly as an unchunked step, and a run samples the
same on every resume; but the samples depend on the call size (the sampler draws row r of a call from
fold_in(seed, r), one seed per call), so a run that changes `sequences_per_call` draws other samples.

Packing layout, per sequence i: [left pad | prompt | response | right pad] in a [N, P + R] token array;
`start[i]` is the first prompt slot; the response occupies slots P..P+len-1. Target of slot t is token
t+1, so the log-probabilities of the response tokens are read from the logits at slots P-1 .. P+R-2.
P and R come from a fixed ladder (`padded_length`: 16, 32, 64, ..., or with `grpo.length_ladder = "halves"`
16, 24, 32, 48, ..., up to the run's maxima), so a run compiles a bounded number of update and log-prob
programs.
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
    calls: int = 1  # sampler calls that generated them


def rollout_calls(num_prompts: int, group_size: int, sequences_per_call: int) -> list[tuple[int, int]]:
    """[lo, hi) sequence ranges of a step's sampler calls, in order: as many whole prompt groups per call as
    `sequences_per_call` holds; when one group is bigger than that, each group's samples over several
    calls of `sequences_per_call`. sequences_per_call 0: one call."""
    n = num_prompts * group_size
    if sequences_per_call <= 0 or sequences_per_call >= n:
        return [(0, n)] if n else []
    per_call = sequences_per_call // group_size * group_size or sequences_per_call
    return [(lo, min(lo + per_call, n)) for lo in range(0, n, per_call)]


def call_seed(seed: int, first_sequence: int) -> int:
    """The sampling seed of the call whose first sequence is `first_sequence` of a step sampled with `seed`:
    `seed` itself for the first call, else a hash of both (in [0, 2^31 - 1))."""
    if first_sequence == 0:
        return seed
    return int(np.random.SeedSequence([seed, first_sequence]).generate_state(1)[0] % (2**31 - 1))


def sample_rollouts(rollout: Rollout, params, prompt_ids: list[list[int]], *, group_size: int,
                    max_new_tokens: int, temperature: float, top_p: float, top_k: int, seed: int,
                    stop_token_ids, sequences_per_call: int = 0) -> Rollouts:
    """G completions of each prompt under the policy's `params`, in calls of at most `sequences_per_call`
    sequences (0: one call)."""
    repeated = [p for p in prompt_ids for _ in range(group_size)]
    tokens, logprobs, reasons = [], [], []
    calls = rollout_calls(len(prompt_ids), group_size, sequences_per_call)
    for lo, hi in calls:
        out = rollout.generate(params, repeated[lo:hi], max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k, top_p=top_p, seed=call_seed(seed, lo), stop_token_ids=stop_token_ids)
        tokens += out.token_ids
        logprobs += out.logprobs
        reasons += out.finish_reasons
    truncated = np.array([r == "length" for r in reasons], bool)
    return Rollouts(repeated, tokens, logprobs, truncated, group_size, calls=len(calls))


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


def padded_length(n: int, smallest: int, largest: int | None = None, halves: bool = False) -> int:
    """The padded length of n tokens: the smallest `smallest` x 2^k >= n (halves: or `smallest` x 1.5 x 2^k:
    16, 24, 32, 48, 64, 96, ...), at most `largest` (never below n). With lengths up to L a run meets at most
    log2(L / smallest) + 2 of them, twice that with halves; padding is below half of a padded length, below a
    third with halves (the update's and the log-probs' time grow with it)."""
    length = max(smallest, 1)
    while length < n:
        if halves and length % 2 == 0 and length * 3 // 2 >= n:
            length = length * 3 // 2
            break
        length *= 2
    if largest is not None:
        length = min(length, largest)
    return max(length, n)


def pack_rollouts(rollouts: Rollouts, *, pad_id: int, mask_truncated: bool, min_bucket: int = 16,
                  max_prompt_len: int | None = None, max_response_len: int | None = None,
                  halves: bool = False) -> PackedBatch:
    """Left-pads prompts to P and right-pads responses to R, each `padded_length` of the longest (from
    `min_bucket` doubling, capped at `max_prompt_len` / `max_response_len`), so that the jitted training
    step sees few distinct shapes."""
    n = len(rollouts.prompt_ids)
    P = padded_length(max(len(p) for p in rollouts.prompt_ids), min_bucket, max_prompt_len, halves)
    R = padded_length(max(max((len(r) for r in rollouts.response_ids), default=1), 1), min_bucket,
                      max_response_len, halves)
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
