"""common.rollout.pick_rollout_engine: the rule the facade's `generate` and the GRPO trainer share."""

import pytest

from common.rollout import pick_rollout_engine


def test_auto_is_the_paged_engine_on_an_accelerator_with_one_batch_shard_and_the_static_sampler_elsewhere():
    assert pick_rollout_engine("auto", "cpu") == "static"
    assert pick_rollout_engine("auto", "gpu") == pick_rollout_engine("auto", "tpu") == "paged"
    # the page pool is whole on every chip: split over batch shards only by the sampler's cache
    assert pick_rollout_engine("auto", "tpu", batch_shards=32) == pick_rollout_engine("auto", "gpu", batch_shards=8) \
        == "static"
    for platform in ("cpu", "gpu", "tpu"):  # a named engine is taken as named
        for shards in (1, 4):
            assert pick_rollout_engine("paged", platform, batch_shards=shards) == "paged"
            assert pick_rollout_engine("static", platform, batch_shards=shards) == "static"
    with pytest.raises(ValueError, match=r"grpo.rollout_engine must be one of \('auto', 'paged', 'static'\), got 'vllm'"):
        pick_rollout_engine("vllm", "gpu", "grpo.rollout_engine")
