"""Sampler behaviour on a tiny random model: early stop, stop ids, buckets, batch padding, errors."""

import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.model import Decoder
from common.sampler import PromptTooLongError, Sampler, bucket, call_shape


@pytest.fixture(scope="module")
def sampler():
    return Sampler(Decoder(get_preset("tiny"), rngs=nnx.Rngs(3)), max_cache_length=128)


PROMPTS = [[5, 9, 13], [7, 1, 4, 4, 30, 2], [100], [8, 8]]


def test_decoding_stops_when_every_sequence_has_stopped(sampler):
    free = sampler.sample(PROMPTS, max_new_tokens=50, stop_token_ids=[])
    assert free.decode_steps == 50 and all(len(t) == 50 for t in free.token_ids)
    assert free.finish_reasons == ["length"] * 4
    # stop on each sequence's third greedy token: identical prefixes, and the loop ends after 3 steps
    stops = sorted({t[2] for t in free.token_ids})
    out = sampler.sample(PROMPTS, max_new_tokens=50, stop_token_ids=stops)
    assert out.decode_steps <= 3
    for full, cut, reason in zip(free.token_ids, out.token_ids, out.finish_reasons):
        first_stop = next(i for i, t in enumerate(full) if t in stops)
        assert cut == full[:first_stop + 1] and reason == "stop"


def test_several_stop_ids_and_logprobs_align(sampler):
    out = sampler.sample(PROMPTS, max_new_tokens=20, temperature=1.0, seed=1, stop_token_ids=[3, 4, 5])
    for ids, lps, reason in zip(out.token_ids, out.logprobs, out.finish_reasons):
        assert len(ids) == len(lps)
        assert (reason == "stop") == (ids[-1] in (3, 4, 5))
        assert not any(t in (3, 4, 5) for t in ids[:-1])


def test_prompt_length_buckets_reuse_one_program(sampler):
    before = len(sampler.compile_keys)
    sampler.sample([[1, 2, 3]], max_new_tokens=8, temperature=1.0, top_k=5)
    sampler.sample([[1, 2, 3, 4, 5, 6, 7, 8, 9]], max_new_tokens=8, temperature=0.5, top_k=5)
    sampler.sample([[4] * 12], max_new_tokens=8, temperature=0.9, top_k=5)
    assert len(sampler.compile_keys) == before + 1  # one bucket (16 tokens), temperature is traced
    assert bucket(3, 16) == bucket(16, 16) == 16 and bucket(17, 16) == 32


def test_the_cache_is_the_prompt_bucket_plus_the_new_token_bucket():
    assert call_shape(200, 48, 4096) == (256, 256 + 64)  # not bucket(200 + 48) = 512 slots read per step
    assert call_shape(100, 1000, 4096) == (128, 128 + 1024)
    assert call_shape(100, 1000, 1100) == (100, 1100)  # both capped by the cache the sampler holds
    assert call_shape(3, 5, 4096) == (16, 32)


def test_batch_padding_does_not_change_results(sampler):
    alone = sampler.sample(PROMPTS[:3], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    padded = sampler.sample(PROMPTS[:3], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    assert alone.token_ids == padded.token_ids  # 3 prompts run in a batch bucket of 4
    one = sampler.sample(PROMPTS[:1], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    assert one.token_ids[0] == alone.token_ids[0]  # per-row keys: independent of the batch


def test_errors(sampler):
    with pytest.raises(PromptTooLongError, match="needs 130 cache slots, but the cache holds 128"):
        sampler.sample([list(range(1, 101))], max_new_tokens=30)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.sample([[1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler.sample([[1]], max_new_tokens=0)
