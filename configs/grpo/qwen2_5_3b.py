"""Qwen2.5-3b with the RL scaling study's recipe. `--config=configs/grpo/qwen2_5_3b.py:tpu,instruct`."""

from configs.grpo.paper_recipe import recipe


def get_config(arg: str = ""):
    return recipe("3b", arg)
