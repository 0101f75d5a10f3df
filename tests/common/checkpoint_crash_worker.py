"""A GRPO run (tiny config, a checkpoint every step, 3 steps) killed with SIGKILL while its asynchronous save
of step 2 is in flight: the save's background writer waits until step 3 has started, then kills the process
before the save commits, so nothing cleans up.

    python tests/common/checkpoint_crash_worker.py WORKDIR [--no-crash]

With --no-crash it runs (resuming from WORKDIR's latest checkpoint) to step 3 normally.
"""

import os
import signal
import sys
import threading
from pathlib import Path

from common.config_file import load_config
from rl_scaling.grpo import checkpoints
from rl_scaling.grpo.trainer import GRPOTrainer


def kill_during_save_of_step_2(trainer: GRPOTrainer) -> None:
    """Step 3 starts while step 2's save is in flight; the save's writer then sends SIGKILL."""
    step_3_started = threading.Event()
    real_train_step, real_write = trainer.train_step, checkpoints.write_step_files

    def train_step():
        if trainer.step == 2:
            step_3_started.set()
        return real_train_step()

    def write_then_die(item_dir, files, tokenizer):
        if item_dir.parent.name.startswith("step_00000002"):
            step_3_started.wait(120)
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(item_dir, files, tokenizer)

    trainer.train_step = train_step
    checkpoints.write_step_files = write_then_die


if __name__ == "__main__":
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/grpo/tiny.py")
    cfg.num_steps = 3
    cfg.checkpoint.every = 1
    cfg.eval.every = 0
    cfg.eval.num_samples = 8  # the held-out batch is then the training batch: one sampler compile
    trainer = GRPOTrainer(cfg, sys.argv[1])
    if "--no-crash" not in sys.argv:
        kill_during_save_of_step_2(trainer)
    trainer.train()
