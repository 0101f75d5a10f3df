"""The engine's decode step compiled for Qwen2.5-7B on v5p-64 (issue 19, item 7): from the inference copy of the
weights, with one page pool per batch shard, it all-gathers nothing — no weights, no pages, no keys — while the same
step from the trainer's fsdp-split parameters gathers the weights each step. On a tensor-4 layout the Pallas
paged kernel's shard_map over tensor compiles inside the engine's over the batch axes. The page copy of admission
(a prompt's tail page) copies within each shard's pool in place."""

from tests.common.tpu_compile import run_tpu_compile

MIB = 2**20


def test_the_7b_decode_step_on_v5p_64_gathers_no_weights():
    report = run_tpu_compile(["tests/common/engine_aot_worker.py"], timeout=600)
    inference, trainer, tensor4 = report["inference"], report["trainer"], report["tensor4"]
    assert inference["all_gather_bytes"] == []  # each shard reads its own pages with whole weights
    assert sum(trainer["all_gather_bytes"]) > 2**30  # the trainer's float32 weights, gathered for the step
    # at tensor 4 the weights are split over tensor: only small activations move (no weights, no pages)
    assert max(tensor4["all_gather_bytes"], default=0) < MIB, tensor4["all_gather_bytes"][:5]
    # the copy (bfloat16, whole on every chip at tensor 1) and a shard's 2048-page pool fit a v5p chip's 95 GiB
    assert inference["total"] < 40 * 2**30 and tensor4["total"] < inference["total"] / 2
    # the donated pool is written in place: no pool-sized copy in the layer loop (there were two, k and v,
    # while the scatter's window held the kv heads: 3.5 GiB here), only a layer's weights and activations
    pool = inference["alias"]  # the pool is the step's only donated input
    assert pool > 2**30 and inference["temporaries"] < pool / 4, (inference["temporaries"], pool)
    copy = report["page_copy"]  # in place on the donated pool, nothing gathered across shards
    assert copy["all_gather_bytes"] == [] and copy["alias"] == pool and copy["temporaries"] < pool / 64, copy
