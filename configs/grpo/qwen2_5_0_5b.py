"""Qwen2.5-0.5B with the RL scaling study's recipe (`rl_scaling.grpo.defaults.paper_recipe`):
`--config=configs/grpo/qwen2_5_0_5b.py:tpu,instruct` (hardware tpu | gpu, variant base | instruct)."""

from rl_scaling.grpo.defaults import paper_recipe


def get_config(arg: str = ""):
    return paper_recipe("qwen2_5_0_5b", arg)
