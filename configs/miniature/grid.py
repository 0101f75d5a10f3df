"""The miniature's GRPO grid: every size of the family, one variant, the recipe of
configs/miniature/grpo.py. `tools/miniature.py` fills in what depends on its output
directory and family: sizes, seeds (the study's `seeds`), param_counts (non-embedding N), data.source and
each run's model.path.
"""

import ml_collections


def get_config():
    g = ml_collections.ConfigDict()
    g.name = "miniature"
    g.base_config = "configs/miniature/grpo.py"
    g.sizes = ()  # from the study's family
    g.variants = ("base",)  # pretrained, not instruction-tuned
    g.seeds = (0,)
    g.settings = ml_collections.ConfigDict()
    g.overrides = ml_collections.ConfigDict()
    g.override_keys = ml_collections.ConfigDict({"model": "", "variant": ""})
    return g
