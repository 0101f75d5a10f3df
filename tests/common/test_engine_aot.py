"""The engine's decode step compiled for Qwen2.5-7B on v5p-64 (issue 19, item 7): from the inference copy of the
weights it all-gathers no weights — only the step's new keys and values (rows x kv heads x head dim) — while the
same step from the trainer's fsdp-split parameters gathers every layer's weights each step."""

from tests.common.tpu_compile import run_tpu_compile

MIB = 2**20


def test_the_7b_decode_step_on_v5p_64_gathers_no_weights():
    report = run_tpu_compile(["tests/common/engine_aot_worker.py"], timeout=600)
    inference, trainer = report["inference"], report["trainer"]
    # the largest weight of a 7B layer is tens of MiB; the step's new keys for 256 rows are 256 KiB
    assert max(inference["all_gather_bytes"], default=0) < MIB, inference["all_gather_bytes"][:5]
    assert sum(trainer["all_gather_bytes"]) > 1000 * sum(inference["all_gather_bytes"])
    # the copy (bfloat16, whole on every chip at tensor 1) and a 2048-page pool fit a v5p chip's 95 GiB
    assert inference["total"] < 40 * 2**30
