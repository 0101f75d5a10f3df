"""The rollout engine (continuous batching over a paged KV cache) against the static sampler and the dense
attention reference, on tiny random models: ragged prompts, page boundaries, chunked prefill, preemption,
shared prompt pages, and samples that do not depend on the batch a sequence ran in."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.attention import reference_attention
from common.attention.paged import paged_reference_attention
from common.config import get_preset
from common.engine import Engine, PromptTooLongError
from common.engine.pages import OutOfPages, PageCache, page_keys
from common.engine.scheduler import Scheduler, Sequence, Work
from common.model import Decoder
from common.paged_kv import NULL_PAGE, PageView, write_pages
from common.sampler import Sampler

PROMPTS = [[5, 9, 13], [7, 1, 4, 4, 30, 2], [100], [8, 8], [5, 9, 13] + [2] * 17 + [7], list(range(40, 73))]


@pytest.fixture(scope="module")
def model():
    return Decoder(get_preset("tiny"), rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def static(model):
    return Sampler(model, max_cache_length=128)


# ---- attention over pages ------------------------------------------------------------------------


def test_paged_attention_equals_the_dense_reference_on_ragged_rows_and_page_boundaries():
    rng = np.random.default_rng(0)
    L, K, G, h, page, N = 2, 2, 3, 8, 4, 16
    lengths = [1, 4, 5, 11]  # one token, a full page, one past it, a ragged tail
    T = 3  # the last T tokens of each row are this call's queries (fewer when the row is shorter)
    k_pool = np.zeros((K, L, N, page, h), np.float32)
    v_pool = np.zeros_like(k_pool)
    free = list(rng.permutation(np.arange(1, N)))  # pages in scrambled order
    table = np.full((len(lengths), 4), NULL_PAGE, np.int32)
    dense_k, dense_v = [], []
    for b, n in enumerate(lengths):
        for j in range(-(-n // page)):
            table[b, j] = free.pop()
        k, v = rng.normal(size=(2, n, K, h)).astype(np.float32)
        dense_k.append(k)
        dense_v.append(v)
        for p in range(n):
            k_pool[:, 1, table[b, p // page], p % page] = k[p]
            v_pool[:, 1, table[b, p // page], p % page] = v[p]
    positions = np.stack([np.arange(n - T, n) for n in lengths])  # a 1-token row's early queries: padding-like
    q = rng.normal(size=(len(lengths), T, K * G, h)).astype(np.float32)
    view = PageView(page_table=table, positions=np.maximum(positions, 0), lengths=np.asarray(lengths, np.int32))
    out = np.asarray(paged_reference_attention(q, k_pool, v_pool, 1, view))
    for b, n in enumerate(lengths):
        S = 16
        k = np.zeros((1, S, K, h), np.float32)
        v = np.zeros_like(k)
        k[0, :n], v[0, :n] = dense_k[b], dense_v[b]
        mask = np.arange(S)[None, None, :] <= view.positions[b][None, :, None]
        ref = np.asarray(reference_attention(q[b:b + 1], k, v, mask, accumulate_f32=True))
        np.testing.assert_allclose(out[b], ref[0], atol=1e-5)


def test_writes_land_in_the_listed_pages_and_padding_in_the_null_page():
    pool = np.zeros((1, 1, 6, 2, 1), np.float32)
    view = PageView(page_table=np.array([[3, 5, 0]], np.int32), positions=np.array([[1, 2, 3, 4]], np.int32),
                    lengths=np.array([3], np.int32))  # positions 1, 2 real; 3, 4 padding
    new = np.array([[[[1.0]], [[2.0]], [[9.0]], [[9.0]]]], np.float32)  # [B, T, K, h]
    out = np.asarray(write_pages(jnp.asarray(pool), new, 0, view))[0, 0, :, :, 0]
    assert out[3, 1] == 1.0 and out[5, 0] == 2.0
    assert out[[1, 2, 4]].sum() == 0 and set(out[NULL_PAGE]) <= {0.0, 9.0}


# ---- the page book -------------------------------------------------------------------------------


def test_page_cache_counts_shares_and_reclaims():
    cache = PageCache(5, 2)
    a = cache.allocate(3)
    assert NULL_PAGE not in a and cache.available == 1
    with pytest.raises(OutOfPages):
        cache.allocate(2)
    keys = page_keys([1, 2, 3, 4, 5], 2)
    assert len(keys) == 2 and page_keys([1, 2, 3, 9], 2)[0] == keys[0] != page_keys([1, 2, 3, 9], 2)[1]
    cache.publish(a[0], keys[0])
    cache.publish(a[1], keys[1])
    pages, ready = cache.match(keys)
    assert pages == a[:2] and not ready  # pending until their prefill ran
    cache.release(pages)
    cache.ready(a[0])
    cache.ready(a[1])
    pages, ready = cache.match(keys)
    assert pages == a[:2] and ready and cache.refs(a[0]) == 2
    cache.release(pages + a)  # every user gone: the two cached pages stay cached, the third is free
    assert cache.available == 4 and cache.in_use == 0
    assert cache.match(keys)[0] == a[:2]
    cache.release(a[:2])
    cache.allocate(4)  # reclaims the cached pages, least recently released first
    assert cache.match(keys)[0] == []
    with pytest.raises(ValueError, match="released more often"):
        PageCache(3, 2).release([1])


def test_a_group_of_copies_shares_its_prompt_pages():
    cache = PageCache(64, 4)
    sched = Scheduler(cache, max_slots=8, prefill_chunk=64, prefill_tokens=256)
    prompt = list(range(1, 19))  # 18 tokens: 4 full pages and a tail of 2
    for i in range(8):
        sched.add(Sequence(i, prompt, 4))
    sched.admit()
    assert len(sched.running) == 1  # the copies wait for the first one's pages to be prefilled
    work = sched.prefill_work()
    sched.computed(work)
    sched.admit()
    assert len(sched.running) == 8
    first, copies = sched.running[0], sched.running[1:]
    assert all(s.pages[:4] == first.pages[:4] for s in copies)
    assert cache.in_use == 4 + 8  # the shared pages once, a tail page each
    # each copy's tail page is a copy of the first one's (its 2 prompt tokens but the last computed): it decodes next
    assert sched.take_copies() == [(first.pages[4], s.pages[4]) for s in copies] and sched.take_copies() == []
    assert all(s.computed == 17 and s.pending == 1 for s in copies)


def test_admission_is_bounded_by_free_pages_and_decode_preempts_the_newest():
    sched = Scheduler(PageCache(5, 2), max_slots=8, prefill_chunk=8, prefill_tokens=8)
    seqs = [Sequence(i, [10 + i, 20 + i, 30 + i, 40 + i], 8) for i in range(3)]
    for s in seqs:
        sched.add(s)
    sched.admit()
    assert sched.running == seqs[:2] and list(sched.waiting) == seqs[2:]  # 2 pages each, 4 free
    sched.computed(sched.prefill_work())
    for s in seqs[:2]:
        sched.sampled(s, 1, -0.5)
    work = sched.decode_work()  # each needs a third page: none is free, the newest is preempted
    assert [r[0] for r in work.rows] == [seqs[0]] and sched.preemptions == 1
    assert list(sched.waiting)[0] is seqs[1] and seqs[1].computed == 0 and seqs[1].generated == [1]


def test_a_prompt_tail_is_copied_only_from_a_running_sequence_that_computed_it():
    prompt = list(range(1, 19))  # pages of 4: 4 full pages and a tail of 2
    sched = Scheduler(PageCache(64, 4), max_slots=8, prefill_chunk=8, prefill_tokens=8)
    seqs = [Sequence(i, prompt, 4) for i in range(4)]
    sched.add(seqs[0])
    sched.admit()
    sched.computed(sched.prefill_work())  # a chunk of 8 tokens
    sched.computed(sched.prefill_work())  # 16: the full pages are ready, the tail is not computed
    sched.add(seqs[1])
    sched.admit()
    assert sched.take_copies() == [] and seqs[1].computed == 16  # no tail to copy yet: it prefills its own
    sched.computed(sched.prefill_work())  # both tails: seqs[0] is the prompt's donor
    sched.add(seqs[2])
    sched.admit()
    assert sched.take_copies() == [(seqs[0].pages[4], seqs[2].pages[4])] and seqs[2].computed == 17
    for seq in sched.running[::-1]:  # a donor that leaves its pages is forgotten
        sched.preempt(seq)
    assert sched.tail_donors == {}
    sched.add(seqs[3])
    sched.admit()
    assert sched.take_copies() == [] and all(s.computed == 16 for s in seqs[:4])


def test_a_preempted_sequence_matches_its_full_pages_still_cached_when_readmitted():
    sched = Scheduler(PageCache(12, 2), max_slots=8, prefill_chunk=8, prefill_tokens=8)
    seq = Sequence(0, [10, 20, 30], 8)  # pages of 2: one full prompt page
    sched.add(seq)
    sched.admit()
    for token in range(4):
        work = sched.decode_work() if token else sched.prefill_work()
        sched.computed(work)
        sched.sampled(seq, 40 + token, -1.0)
    assert seq.length == 7 and seq.computed == 6  # 3 full pages: the prompt's and two past it
    kept = seq.pages[:3]
    sched.preempt(seq)
    sched.admit()
    assert seq.pages[:3] == kept and seq.computed == 6 and seq.pending == 1  # nothing to recompute: it decodes
    sched.preempt(seq)
    other = Sequence(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], 1)
    sched.add(other)
    sched.waiting.rotate(1)  # the other one first: 10 of the 11 pages, 2 of them reclaimed from the victim's cached 3
    sched.admit()
    sched.cancel(other)
    sched.admit()  # released last first, its last pages went first: it keeps its first page and recomputes the rest
    assert seq.pages[:1] == kept[:1] and seq.computed == 2


def _drive(sched: Scheduler) -> None:
    """Runs a scheduler to the end as the engine would, each sequence to its token budget."""
    while not sched.done:
        sched.admit()
        for next_work in (sched.prefill_work, sched.decode_work):
            work = next_work()
            sched.computed(work)
            for seq, first, n in work.rows:
                if first + n == seq.length:
                    sched.sampled(seq, 5, -1.0)


def test_admission_keeps_pages_for_the_growth_of_running_sequences():
    """Three 4-token prompts (2 pages of 2) that each make 8 tokens (6 pages at the end) in a pool of 8 free
    pages: admitted while their prompts fit, all three start and then preempt each other as they lengthen; with
    the whole remaining budget reserved, one runs at a time and nothing is preempted."""
    def run(reserve):
        sched = Scheduler(PageCache(9, 2), max_slots=8, prefill_chunk=8, prefill_tokens=8, growth_reserve=reserve)
        for i in range(3):
            sched.add(Sequence(i, [10 + i, 20 + i, 30 + i, 40 + i], 8))
        sched.admit()
        admitted = len(sched.running)
        _drive(sched)
        return admitted, sched.preemptions
    greedy, reserved = run(0.0), run(1.0)
    assert greedy[0] == 3 and greedy[1] > 0
    assert reserved == (1, 0)
    half = Scheduler(PageCache(9, 2), max_slots=8, prefill_chunk=8, prefill_tokens=8, growth_reserve=0.5)
    for i in range(3):
        half.add(Sequence(i, [10 + i, 20 + i, 30 + i, 40 + i], 8))
    half.admit()  # the second: its 2 pages + 2 for the first's expected 4 tokens + 2 for its own = 6 of 6 free
    assert len(half.running) == 2


# ---- the engine ----------------------------------------------------------------------------------

LAYOUTS = [  # growth_reserve=0: admitted while the prompt fits, so the small pools preempt
    dict(page_size=16, max_slots=8),  # everything at once
    dict(page_size=4, max_slots=2, num_pages=18, growth_reserve=0),  # two slots, refills, a preemption
    dict(page_size=4, max_slots=8, num_pages=24, prefill_chunk=4),  # chunked prefill, the default growth reserve
    dict(page_size=4, max_slots=8, num_pages=24, prefill_chunk=4, growth_reserve=0),  # preemptions
    # several decode steps a round trip: stops and budgets inside one, pages short for the steps ahead, preemptions
    dict(page_size=4, max_slots=2, num_pages=18, decode_steps=4, growth_reserve=0),
    dict(page_size=4, max_slots=8, num_pages=24, prefill_chunk=4, decode_steps=3, growth_reserve=0),
]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_engine_draws_the_static_samplers_tokens_in_any_layout(model, static, temperature):
    ref = static.sample(PROMPTS, max_new_tokens=30, temperature=temperature, seed=4, stop_token_ids=[3])
    for layout in LAYOUTS:
        engine = Engine(model, max_cache_length=128, **layout)
        out = engine.sample(PROMPTS, max_new_tokens=30, temperature=temperature, seed=4, stop_token_ids=[3])
        assert out.token_ids == ref.token_ids, layout
        assert out.finish_reasons == ref.finish_reasons
        np.testing.assert_allclose(np.concatenate(out.logprobs), np.concatenate(ref.logprobs), atol=1e-5)
    assert engine.stats["preemptions"] > 0


def test_several_decode_steps_a_round_trip_meet_the_host_less_and_change_no_token(model):
    """decode_steps=4: four decode steps are dispatched back to back and their tokens read once, so the host
    waits for the device about a quarter as often, and the tokens and log-probs are one step a wait's. The first
    iteration prefills five prompts (a token each) in three calls (one a length bucket: 16, 24 and 48 tokens) and
    decodes one step (a prompt was prefilled: one step only), where the one-token prompt [100] gets its first
    token; its other 30 of the budget of 31 take 30 round trips a step at a time, 8 at four (the last one's final
    two steps padding)."""
    one = Engine(model, max_cache_length=128, page_size=8, max_slots=8, decode_steps=1)
    four = Engine(model, max_cache_length=128, page_size=8, max_slots=8, decode_steps=4)
    kw = dict(max_new_tokens=31, temperature=1.0, top_p=0.9, seed=3)
    a, b = one.sample(PROMPTS, **kw), four.sample(PROMPTS, **kw)
    assert b.token_ids == a.token_ids and b.finish_reasons == a.finish_reasons == ["length"] * len(PROMPTS)
    np.testing.assert_allclose(np.concatenate(b.logprobs), np.concatenate(a.logprobs), atol=1e-5)
    assert one.stats["round_trips"] == one.stats["calls"] == 4 + 30
    assert four.stats["round_trips"] == 4 + 8 and four.stats["calls"] == 4 + 8 * 4
    with pytest.raises(ValueError, match="decode_steps"):
        Engine(model, decode_steps=0)


def test_pages_for_the_steps_ahead_are_taken_only_while_free_ones_last():
    scheduler = Scheduler(PageCache(6, 4), max_slots=2, prefill_chunk=16, prefill_tokens=64)
    a, b = Sequence(0, [1, 2, 3, 4], 10), Sequence(1, [5, 6, 7, 8], 2)
    for seq in (a, b):
        scheduler.add(seq)
    scheduler.admit()  # one page each
    scheduler.computed(scheduler.prefill_work())
    for seq in (a, b):
        scheduler.sampled(seq, 9, -1.0)  # length 5: the next step writes position 4, in a second page
    scheduler.decode_work(steps=8)
    # a: 8 steps ahead need positions 4..11 = pages 2 and 3, both taken; b: its budget of 2 leaves 1 step
    # (position 4: one more page); the pool (5 pages) is then empty
    assert (len(a.pages), len(b.pages), scheduler.pages.available) == (3, 2, 0)
    assert scheduler.decode_steps(a, 8) == 8 and scheduler.decode_steps(b, 8) == 1
    a.pages.pop()  # as if the last page had not been free: a's steps stop where its pages do
    assert scheduler.decode_steps(a, 8) == 4


def test_samples_do_not_depend_on_the_neighbours(model):
    engine = Engine(model, max_cache_length=128, page_size=8, max_slots=4)
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    together = engine.sample(PROMPTS, **kw)
    fewer = engine.sample(PROMPTS[:3], **kw)  # sequences 0..2 with other neighbours, other slots, other pages
    assert fewer.token_ids == together.token_ids[:3]
    for lps in together.logprobs:
        assert np.all(np.isfinite(lps)) and np.all(np.asarray(lps) <= 0)


def test_group_copies_share_pages_and_sample_independently(model, static):
    prompt = list(range(40, 73))
    kw = dict(max_new_tokens=10, temperature=1.0, seed=2)
    ref = static.sample([prompt] * 8, **kw)
    engine = Engine(model, max_cache_length=128, page_size=8, max_slots=8)
    out = engine.sample([prompt] * 8, **kw)
    assert out.token_ids == ref.token_ids and len({tuple(t) for t in out.token_ids}) > 1
    # the first copy prefills 33 tokens; the other seven only their last one (4 shared pages)
    assert engine.stats["row_tokens"] < 2 * 48 + 8 * 10 * 8


def test_group_copies_copy_the_prompt_tail_page_and_decode_at_once(model, static):
    prompt = list(range(40, 78))  # pages of 8: 4 shared full pages and a tail of 6
    kw = dict(max_new_tokens=10, temperature=1.0, seed=2)
    ref = static.sample([prompt] * 8, **kw)
    engine = Engine(model, max_cache_length=128, page_size=8, max_slots=8)
    out = engine.sample([prompt] * 8, **kw)
    assert out.token_ids == ref.token_ids
    np.testing.assert_allclose(np.concatenate(out.logprobs), np.concatenate(ref.logprobs), atol=1e-5)
    # one prefill call (the first copy's 38 tokens in 48) and its second token alone; then the others copy its tail
    # page and all eight decode together: ten calls of 8 rows, no prefill of the tails
    assert engine.stats["page_copies"] == 7
    assert engine.stats["round_trips"] == 2 + 10 and engine.stats["row_tokens"] == 48 + 8 + 10 * 8


def test_requests_that_cannot_fit_fail_clearly(model):
    engine = Engine(model, max_cache_length=128, page_size=4, num_pages=6)
    with pytest.raises(PromptTooLongError, match="needs 21 pages"):
        engine.sample([list(range(1, 80))], max_new_tokens=4)
    with pytest.raises(PromptTooLongError, match="positions"):
        Engine(model, max_cache_length=16).sample([[1] * 10], max_new_tokens=8)
    with pytest.raises(ValueError, match="empty"):
        engine.sample([[]], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.sample([[1]], max_new_tokens=0)


def test_call_rows_are_rounded_to_multiples_of_eight_on_one_cpu_and_to_powers_of_two_elsewhere(model):
    rows = lambda engine, width=1: [engine._rows(n, width) for n in (1, 3, 8, 9, 33, 64, 65)]
    assert rows(Engine(model, max_slots=64)) == [8, 8, 8, 16, 40, 64, 65]  # the default on one CPU device
    assert rows(Engine(model, max_slots=64), 16) == [1, 4, 8, 16, 40, 64, 65]  # prefill: padding rows cost 16 tokens
    assert rows(Engine(model, max_slots=64, row_step=0)) == [8, 8, 8, 16, 64, 64, 65]
    assert rows(Engine(model, max_slots=64, row_step=0), 16) == [8, 8, 8, 16, 64, 64, 65]
    assert rows(Engine(model, max_slots=60, row_step=8, min_rows=16)) == [16, 16, 16, 16, 40, 64, 65]


def test_prefill_chunks_of_different_lengths_go_in_one_call_a_length_bucket_where_padding_costs(model):
    """On one CPU device (row_step) a prompt's 3-token tail does not ride, padded to 40 tokens, in the call of
    another prompt's 40; elsewhere (row_step 0: padding is nearly free, calls are not) one call takes both."""
    seqs = [Sequence(i, list(range(1, n + 1)), 4) for i, n in enumerate((40, 3, 20))]
    works = [Work([(seqs[0], 0, 40), (seqs[1], 0, 3), (seqs[2], 0, 20)])]
    split = [(width, [r[0].id for r in w[0].rows]) for w, width in Engine(model)._prefill_calls(works)]
    assert split == [(48, [0]), (24, [2]), (16, [1])]
    one = [(width, [r[0].id for r in w[0].rows]) for w, width in Engine(model, row_step=0)._prefill_calls(works)]
    assert one == [(48, [0, 1, 2])]
    with pytest.raises(ValueError, match="growth_reserve"):
        Engine(model, growth_reserve=1.5)


def test_a_bfloat16_engine_runs_on_the_cpu():
    """XLA:CPU has no bfloat16 x bfloat16 -> float32 batched product: the paged reference multiplies in float32."""
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(3), dtype="bfloat16", attention="xla")
    out = Engine(model, max_cache_length=64, page_size=4, max_slots=4).sample(PROMPTS[:3], max_new_tokens=6)
    assert [len(t) for t in out.token_ids] == [6, 6, 6] and np.all(np.isfinite(np.concatenate(out.logprobs)))


def test_on_a_mesh_the_engine_decodes_from_a_tensor_split_copy_and_samples_the_same(model, static):
    import jax
    from jax.sharding import PartitionSpec

    from common.engine.weights import inference_shardings
    from common.sharding import make_mesh

    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4])
    ref = static.sample(PROMPTS, max_new_tokens=8, temperature=1.0, seed=1)
    engine = Engine(model, mesh=mesh, max_cache_length=128, page_size=8, max_slots=4, weights_dtype="float32")
    out = engine.sample(PROMPTS, max_new_tokens=8, temperature=1.0, seed=1)
    assert out.token_ids == ref.token_ids
    specs = {tuple(p): v.sharding.spec for p, v in nnx.to_flat_state(engine.inference_weights(engine.state))}
    assert all("fsdp" not in str(spec) for spec in specs.values())  # nothing split over fsdp: no all-gather
    assert specs[("layers", "mlp", "down_kernel")] == PartitionSpec(None, "tensor", None)
    assert jax.tree.leaves(inference_shardings(nnx.state(model), mesh))


def test_on_a_mesh_with_four_batch_shards_each_shard_has_its_own_pool_and_samples_do_not_change(model, static):
    """Per-shard pools: the page axis split over data x fsdp, each shard's rows reading only its own pages, in
    a pool small enough that shards preempt; the tokens stay the static sampler's."""
    import jax

    from common.engine import Sampling, Sequence
    from common.sharding import make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    prompts = [PROMPTS[5], PROMPTS[4]] * 4 + PROMPTS[:4]  # 3 a shard, two long ones together on three shards
    ref = static.sample(prompts, max_new_tokens=12, temperature=1.0, seed=4)
    engine = Engine(model, mesh=mesh, max_cache_length=128, page_size=4, num_pages=16, max_slots=8,
                    weights_dtype="float32", growth_reserve=0)
    assert (engine.shards, engine.shard_slots) == (4, 2)
    out = engine.sample(prompts, max_new_tokens=12, temperature=1.0, seed=4)
    assert out.token_ids == ref.token_ids
    np.testing.assert_allclose(np.concatenate(out.logprobs), np.concatenate(ref.logprobs), atol=1e-4)
    assert engine.stats["preemptions"] > 0  # 15 pages a shard; 45 + 33 tokens need 21
    pool = engine._pool().k
    assert pool.shape[2] == 4 * 16 and pool.sharding.spec[2] == ("data", "fsdp")
    assert {s.data.shape[2] for s in pool.addressable_shards} == {16}  # a chip holds its shard's pages only
    assert all(key[0] % 4 == 0 for key in engine.compile_keys)  # every call has the same rows on each shard

    scheduler, params = engine.new_scheduler(), engine.inference_weights(engine.state)
    seqs = [Sequence(i, p, 5, Sampling(seed=2)) for i, p in enumerate(PROMPTS[:5])]
    for seq in seqs:  # requests joining a running engine go to the least loaded shard
        scheduler.add(seq)
    assert sorted(seq.shard for seq in seqs) == [0, 0, 1, 2, 3]
    while not scheduler.done:
        engine.step(scheduler, params)
    assert [s.generated for s in seqs] == static.sample(PROMPTS[:5], max_new_tokens=5, seed=2).token_ids
    assert scheduler.pages_in_use == 0


def test_on_a_mesh_a_prompt_tail_page_is_copied_within_each_shard(model, static):
    import jax

    from common.sharding import make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    prompt = list(range(40, 78))  # pages of 4: 9 full pages and a tail of 2
    kw = dict(max_new_tokens=6, temperature=1.0, seed=4)
    ref = static.sample([prompt] * 8, **kw)
    engine = Engine(model, mesh=mesh, max_cache_length=128, page_size=4, max_slots=8, weights_dtype="float32")
    out = engine.sample([prompt] * 8, **kw)
    assert out.token_ids == ref.token_ids
    np.testing.assert_allclose(np.concatenate(out.logprobs), np.concatenate(ref.logprobs), atol=1e-4)
    assert engine.stats["page_copies"] == 4  # two copies a shard: the second copies the first's tail page


def test_a_shard_with_free_slots_takes_waiting_sequences_from_a_shard_with_a_backlog():
    from common.engine import Sequence
    from common.engine.pages import PageCache
    from common.engine.scheduler import Scheduler, ShardedScheduler

    shards = ShardedScheduler([Scheduler(PageCache(32, 4), max_slots=2, prefill_chunk=16, prefill_tokens=64)
                               for _ in range(3)])
    seqs = [Sequence(i, [1, 2, 3], 4) for i in range(7)]
    for seq in seqs:
        shards.add(seq, 0)  # all on shard 0, as contiguous blocks may leave them
    shards.admit()
    assert [len(s.running) for s in shards.shards] == [2, 2, 2] and len(shards.waiting) == 1
    assert [seq.shard for seq in seqs] == [0, 0, 0, 2, 2, 1, 1]  # taken from the back of the queue
    assert all(seq.pages for s in shards.shards for seq in s.running)  # each admitted into its new shard's pool


def test_requests_with_their_own_sampling_join_a_running_scheduler(model):
    from common.engine import Sampling, Sequence

    engine = Engine(model, max_cache_length=128, page_size=8, max_slots=4)
    greedy = engine.sample([PROMPTS[1]], max_new_tokens=10)
    hot = engine.sample([PROMPTS[5]], max_new_tokens=10, temperature=0.8, top_k=30, seed=9)
    scheduler = engine.new_scheduler()
    params = engine.inference_weights(engine.state)
    a = Sequence(0, PROMPTS[1], 10, Sampling())
    b = Sequence(0, PROMPTS[5], 10, Sampling(temperature=0.8, top_k=30, seed=9))
    scheduler.add(a)
    for _ in range(3):
        engine.step(scheduler, params)
    scheduler.add(b)  # joins while a decodes
    while not scheduler.done:
        engine.step(scheduler, params)
    assert a.generated == greedy.token_ids[0] and b.generated == hot.token_ids[0]
    c = Sequence(1, PROMPTS[0], 50, Sampling())
    scheduler.add(c)
    engine.step(scheduler, params)
    scheduler.cancel(c)
    assert scheduler.done and scheduler.pages_in_use == 0 and c.finish_reason == "cancelled"


@pytest.mark.parametrize("temperature,decode_steps", [(0.0, 1), (1.0, 1), (1.0, 4)])
def test_top_logprobs_come_from_their_own_program_and_change_no_sample(model, temperature, decode_steps):
    from common.engine import Sampling, Sequence

    engine = Engine(model, max_cache_length=128, page_size=8, max_slots=4, decode_steps=decode_steps)
    plain = engine.sample(PROMPTS[:3], max_new_tokens=6, temperature=temperature, seed=5)
    scheduler, params = engine.new_scheduler(), engine.inference_weights(engine.state)
    seqs = [Sequence(i, p, 6, Sampling(temperature, seed=5), top_logprobs=0 if i == 1 else 3)
            for i, p in enumerate(PROMPTS[:3])]
    for seq in seqs:
        scheduler.add(seq)
    while not scheduler.done:
        engine.step(scheduler, params)
    assert [s.generated for s in seqs] == plain.token_ids and seqs[1].top == []
    np.testing.assert_allclose(np.concatenate([s.logprobs for s in seqs]), np.concatenate(plain.logprobs), atol=1e-5)
    for seq in (seqs[0], seqs[2]):
        assert len(seq.top) == 6
        for token, lp, (ids, lps) in zip(seq.generated, seq.logprobs, seq.top):
            assert len(ids) == 3 and lps == sorted(lps, reverse=True)
            if token in ids:  # the sampled token's log-probability is of the same distribution
                assert lps[ids.index(token)] == pytest.approx(lp, abs=1e-5)
            if temperature == 0.0:
                assert ids[0] == token
    assert {len(k) for k in engine.compile_keys} == {4, 5}  # (rows, tokens, pages, mode[, top])
