"""The full CPU miniature of the RL scaling study (docs/miniature.md): 5 sizes, ~25k to ~1M non-embedding
parameters (40x), pretrained briefly on synthetic arithmetic with worked answers, then GRPO with one recipe
(the settings: `rl_scaling.miniature.defaults`).

    python tools/miniature.py --out runs/miniature
"""

from rl_scaling.miniature.defaults import default_study_config


def get_config():
    return default_study_config()
