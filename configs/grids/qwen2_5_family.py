"""The paper's main grid: every Qwen2.5 dense size, base and instruct, 3 seeds (42 runs).

    python tools/grid.py run --print --grid configs/grids/qwen2_5_family.py --root runs/family
    python tools/grid.py gather --grid configs/grids/qwen2_5_family.py --root runs/family \
        --out runs/family/table.parquet
    python tools/fit_scaling_law.py --metrics runs/family/table.parquet --variant base --x C \
        --protocol inter --out runs/family/fit_base_c --paper-bounds

Table sizes N are the non-embedding parameter counts of the common.config presets.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "qwen2_5_family"
    config.base_config = "configs/grpo/base.py"
    config.sizes = ("qwen2_5_0_5b", "qwen2_5_1_5b", "qwen2_5_3b", "qwen2_5_7b", "qwen2_5_14b",
                    "qwen2_5_32b", "qwen2_5_72b")
    config.variants = ("base", "instruct")
    config.seeds = (0, 1, 2)
    config.settings = ml_collections.ConfigDict()
    # Paper: held-out evaluation every step, one epoch of the curriculum (num_steps 0 = one pass).
    # Set data.source to the study's training set (the paper's 54k problems are not shipped).
    config.overrides = ml_collections.ConfigDict({"num_steps": 0, "eval": {"every": 1},
                                                  "data": {"num_epochs": 1}})
    config.override_keys = ml_collections.ConfigDict({"model": "", "variant": ""})
    # Base and instruct checkpoints of every size, converted under our names.
    config.templated_overrides = ml_collections.ConfigDict(
        {"model": {"path": "checkpoints/{model}-{variant}"}})
    return config
