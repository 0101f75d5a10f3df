"""Every GRPO setting at its default (`rl_scaling.grpo.defaults.default_config`, the record of what a run
can change). Override from the command line with `--config.<key>=<value>` (e.g. `--config.grpo.group_size=16`)."""

from rl_scaling.grpo.defaults import default_config


def get_config():
    return default_config()
