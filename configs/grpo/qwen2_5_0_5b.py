"""Qwen2.5-0.5b with the RL scaling study's recipe. `--config=configs/grpo/qwen2_5_0_5b.py:tpu,instruct`."""

from configs.grpo.paper_recipe import recipe


def get_config(arg: str = ""):
    return recipe("0_5b", arg)
