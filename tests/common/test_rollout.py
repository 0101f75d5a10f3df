"""common.rollout.pick_rollout_engine: the rule the facade's `generate` and the GRPO trainer share."""

import pytest

from common.rollout import pick_rollout_engine


def test_auto_is_the_paged_engine_on_an_accelerator_and_the_static_sampler_on_a_cpu():
    assert pick_rollout_engine("auto", "cpu") == "static"
    assert pick_rollout_engine("auto", "gpu") == pick_rollout_engine("auto", "tpu") == "paged"  # pods too
    for platform in ("cpu", "gpu", "tpu"):  # a named engine is taken as named
        assert pick_rollout_engine("paged", platform) == "paged"
        assert pick_rollout_engine("static", platform) == "static"
    with pytest.raises(ValueError, match=r"grpo.rollout_engine must be one of \('auto', 'paged', 'static'\), got 'vllm'"):
        pick_rollout_engine("vllm", "gpu", "grpo.rollout_engine")
