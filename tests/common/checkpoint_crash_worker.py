"""A GRPO run (tiny config, a checkpoint every step) that dies like a killed job while saving step 2:
`os._exit(17)` after the step's parameters are written and before its optimiser state, so nothing cleans up.

    python tests/common/checkpoint_crash_worker.py WORKDIR [--no-crash]

With --no-crash it runs (resuming from WORKDIR's latest checkpoint) to step 2 normally.
"""

import os
import sys
from pathlib import Path

from common.config_file import load_config
from rl_scaling.grpo import checkpoints
from rl_scaling.grpo.trainer import GRPOTrainer

workdir = sys.argv[1]
if "--no-crash" not in sys.argv:
    real_save_params = checkpoints.save_params

    def save_params_then_die(path, tree):
        if "step_00000002" in str(path) and path.name == "opt_state":
            os._exit(17)
        real_save_params(path, tree)

    checkpoints.save_params = save_params_then_die

cfg = load_config(Path(__file__).resolve().parents[2] / "configs/grpo/tiny.py")
cfg.num_steps = 2
cfg.checkpoint.every = 1
cfg.eval.every = 0
cfg.eval.num_samples = 8  # the held-out batch is then the training batch: one sampler compile
GRPOTrainer(cfg, workdir).train()
