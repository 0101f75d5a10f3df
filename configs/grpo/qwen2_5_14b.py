"""Qwen2.5-14b with the RL scaling study's recipe. `--config=configs/grpo/qwen2_5_14b.py:tpu,instruct`."""

from configs.grpo.paper_recipe import recipe


def get_config(arg: str = ""):
    return recipe("14b", arg)
