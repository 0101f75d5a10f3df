"""Qwen2.5-7b with the RL scaling study's recipe. `--config=configs/grpo/qwen2_5_7b.py:tpu,instruct`."""

from configs.grpo.paper_recipe import recipe


def get_config(arg: str = ""):
    return recipe("7b", arg)
