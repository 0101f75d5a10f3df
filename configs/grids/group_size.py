"""Group-size study: G in {4, 8, 16, 32} samples per prompt at fixed prompts per step."""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "group_size"
    config.base_config = "configs/grpo/base.py"
    config.sizes = ("qwen2_5_0_5b", "qwen2_5_1_5b", "qwen2_5_7b")
    config.variants = ("base",)
    config.seeds = (0, 1, 2)
    config.settings = ml_collections.ConfigDict({"G": (4, 8, 16, 32)})
    config.overrides = ml_collections.ConfigDict({"num_steps": 0, "eval": {"every": 1},
                                                  "data": {"num_epochs": 1}})
    config.override_keys = ml_collections.ConfigDict(
        {"model": "", "variant": "", "G": "grpo.group_size"})
    config.templated_overrides = ml_collections.ConfigDict(
        {"model": {"path": "checkpoints/{model}-{variant}"}})
    return config
