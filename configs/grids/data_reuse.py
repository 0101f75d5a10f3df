"""Data-reuse study: fixed 100 steps x 512 prompts, a stratified subset of 51200/tau problems
repeated tau times in curriculum order. Fit on tau=1 with --select tau=1; fit.py draws the
final-L-vs-tau figure when the table has a varying tau column."""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "data_reuse"
    config.base_config = "configs/grpo/base.py"
    config.sizes = ("qwen2_5_0_5b", "qwen2_5_1_5b", "qwen2_5_7b")
    config.variants = ("base",)
    config.seeds = (0, 1, 2)
    config.settings = ml_collections.ConfigDict({"tau": (1, 2, 4, 5, 10, 20, 25, 50, 100)})
    config.overrides = ml_collections.ConfigDict({"num_steps": 100, "eval": {"every": 1}})
    config.override_keys = ml_collections.ConfigDict(
        {"model": "", "variant": "", "tau": "data.reuse_tau"})
    config.templated_overrides = ml_collections.ConfigDict(
        {"model": {"path": "checkpoints/{model}-{variant}"}})
    return config
