"""Sampler behaviour on a tiny random model: early stop, stop ids, buckets, batch padding, errors."""

import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.model import Decoder
from common.sampler import PromptTooLongError, Sampler, bucket, call_shape, length_bucket


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
    lengths = [length_bucket(n, 16) for n in (3, 16, 17, 24, 25, 33, 49, 65, 97, 129, 200, 257)]
    assert lengths == [16, 16, 24, 24, 32, 48, 64, 96, 128, 192, 256, 384]


def test_the_cache_is_the_prompt_bucket_plus_the_new_token_bucket():
    assert call_shape(200, 40, 4096) == (256, 256 + 48)  # not the bucket of 240 = 256 + 128 slots read per step
    assert call_shape(100, 1000, 4096) == (128, 128 + 1024)
    assert call_shape(100, 1000, 1100) == (100, 1100)  # both capped by the cache the sampler holds
    assert call_shape(3, 5, 4096) == (16, 32)
    assert call_shape(70, 48, 4096) == (96, 96 + 48)


def test_batch_padding_does_not_change_results(sampler):
    alone = sampler.sample(PROMPTS[:3], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    padded = sampler.sample(PROMPTS[:3], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    assert alone.token_ids == padded.token_ids  # 3 prompts run in a batch bucket of 4
    one = sampler.sample(PROMPTS[:1], max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[])
    assert one.token_ids[0] == alone.token_ids[0]  # per-row keys: independent of the batch


def test_grouped_prefill_gives_the_same_samples_as_one_padded_prefill():
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(5))
    grouped = Sampler(model, max_cache_length=256)
    single = Sampler(model, max_cache_length=256, adaptive_prefill=False)
    prompts = [[5, 9, 13], list(range(1, 120)), [8, 8], [7] * 20, [3, 1, 4, 1, 5]]
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 20, "seed": 4}):
        a = grouped.sample(prompts, max_new_tokens=24, stop_token_ids=[], **kwargs)
        b = single.sample(prompts, max_new_tokens=24, stop_token_ids=[], **kwargs)
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(np.concatenate(a.logprobs), np.concatenate(b.logprobs), atol=2e-5)
    assert any(k[0] == "prefill_group" for k in grouped.compile_keys)  # the grouped path really ran
    assert not any(k[0] == "prefill_group" for k in single.compile_keys)


def test_shared_prefix_prefill_gives_the_same_samples_as_one_padded_prefill():
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(6))
    adaptive = Sampler(model, max_cache_length=256)
    single = Sampler(model, max_cache_length=256, adaptive_prefill=False)
    system = list(range(100, 140))
    prompts = [system + [5, 9, 13], system + list(range(1, 26)), system + [8] * 7, system + [3, 1, 4, 1, 5, 9, 2]]
    for kwargs in ({"temperature": 0.0}, {"temperature": 0.8, "top_p": 0.9, "seed": 2}):
        a = adaptive.sample(prompts, max_new_tokens=20, stop_token_ids=[], **kwargs)
        b = single.sample(prompts, max_new_tokens=20, stop_token_ids=[], **kwargs)
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(np.concatenate(a.logprobs), np.concatenate(b.logprobs), atol=2e-5)
    assert [k[:3] for k in adaptive.compile_keys] == [("prefix", 4, 40)] * 2  # greedy, top-p: 40 shared tokens


def test_prefix_groups_and_length_groups_together_give_the_same_samples():
    # two "attacks": 9 prompts under one 48-token system prompt, 3 under another of 20, and 4 plain ones
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(8))
    adaptive = Sampler(model, max_cache_length=256)
    single = Sampler(model, max_cache_length=256, adaptive_prefill=False)
    long_system, short_system = list(range(100, 148)), list(range(300, 320))
    prompts = ([long_system + [i + 1] * (1 + i % 4) for i in range(9)] + [short_system + [7, i + 2] for i in range(3)]
               + [[5 + i] * (3 + 5 * i) for i in range(4)])
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "seed": 9}):
        a = adaptive.sample(prompts, max_new_tokens=16, stop_token_ids=[], **kwargs)
        b = single.sample(prompts, max_new_tokens=16, stop_token_ids=[], **kwargs)
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(np.concatenate(a.logprobs), np.concatenate(b.logprobs), atol=2e-5)
    groups = sorted(k[1:4] for k in adaptive.compile_keys if k[0] == "prefill_group")
    assert any(prefix == 48 for _, prefix, _ in groups) and len(groups) >= 2


def test_grpo_groups_share_each_prompts_prefill_and_sample_the_same():
    # GRPO's shape: every prompt G times. Each prompt's copies become a group that prefills it once.
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(4))
    adaptive = Sampler(model, max_cache_length=256)
    single = Sampler(model, max_cache_length=256, adaptive_prefill=False)
    prompts = [p for p in ([5 + i for i in range(40)], [9] * 70, [3, 1, 4] * 12) for _ in range(4)]
    a = adaptive.sample(prompts, max_new_tokens=12, temperature=1.0, seed=3, stop_token_ids=[])
    b = single.sample(prompts, max_new_tokens=12, temperature=1.0, seed=3, stop_token_ids=[])
    assert a.token_ids == b.token_ids
    np.testing.assert_allclose(np.concatenate(a.logprobs), np.concatenate(b.logprobs), atol=2e-5)
    # the 70-token prompt's 4 copies prefill it once (64 shared + 16); the two shorter prompts' copies are
    # cheaper as one length group of 8 than as two more groups
    groups = sorted(k[1:4] for k in adaptive.compile_keys if k[0] == "prefill_group")
    assert groups == [(4, 64, 16), (8, 0, 48)]


def test_errors(sampler):
    with pytest.raises(PromptTooLongError, match="needs 130 cache slots, but the cache holds 128"):
        sampler.sample([list(range(1, 101))], max_new_tokens=30)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.sample([[1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler.sample([[1]], max_new_tokens=0)


def test_the_sampler_refuses_ids_outside_the_vocabulary_and_nan_logits():
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0))  # 512 rows
    with pytest.raises(ValueError, match=r"pad id 151643 is outside .*vocab_size 512"):
        Sampler(model, max_cache_length=64, pad_id=151643)
    sampler = Sampler(model, max_cache_length=64)
    with pytest.raises(ValueError, match=r"prompt 1 holds token id 512, outside .*vocab_size 512"):
        sampler.sample([[1, 2], [3, 512]], max_new_tokens=4)
    assert np.isfinite(np.concatenate(sampler.sample([[1, 2], [3, 4, 5]], max_new_tokens=4).logprobs)).all()
    model.final_norm[...] = model.final_norm[...] * np.nan
    sampler.update_params(model)
    with pytest.raises(FloatingPointError, match=r"sequence\(s\) \[0, 1\] of 2 got NaN"):
        sampler.sample([[1, 2], [3, 4, 5]], max_new_tokens=4)


def test_the_sampler_is_a_rollout_that_takes_parameters_per_call():
    """The Rollout protocol: parameters go in with each call and nothing is set on the sampler."""
    import jax

    from common.rollout import Rollout

    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(1))
    sampler = Sampler(model, max_cache_length=64)
    assert isinstance(sampler, Rollout)
    state = nnx.state(model)
    other = jax.tree.map(lambda a: a * 2, state)
    held = sampler.state
    mine = sampler.generate(state, PROMPTS, max_new_tokens=6)
    theirs = sampler.generate(other, PROMPTS, max_new_tokens=6)
    assert sampler.state is held  # generate leaves the sampler's own parameters alone
    assert mine.token_ids == sampler.sample(PROMPTS, max_new_tokens=6).token_ids
    assert theirs.token_ids != mine.token_ids
    fresh = Sampler(Decoder(get_preset("tiny"), rngs=nnx.Rngs(1)), max_cache_length=64)
    fresh.update_params(nnx.merge(nnx.graphdef(model), other))
    assert fresh.sample(PROMPTS, max_new_tokens=6).token_ids == theirs.token_ids
