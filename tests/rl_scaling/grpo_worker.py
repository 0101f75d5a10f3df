"""One process of a GRPO run for tests/rl_scaling/test_multiprocess.py (started by tests.multiprocess):

    python tests/rl_scaling/grpo_worker.py WORKDIR NUM_STEPS [--sigterm=STEP:PROCESS]

The tiny config with fsdp over every device of the job, a checkpoint every 2 steps, no periodic
evaluation. Resumes from WORKDIR's latest checkpoint, as `tools/train_grpo.py` does. With --sigterm, process
PROCESS alone sends itself SIGTERM as it starts step STEP (a preemption notice that reaches one host).
"""

import os
import signal
import sys
from pathlib import Path

from common.distributed import initialize

initialize()  # before anything touches a device

import jax  # noqa: E402

from common.config_file import load_config  # noqa: E402
from rl_scaling.grpo.trainer import GRPOTrainer  # noqa: E402


def worker_config(num_steps: int):
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/grpo/tiny.py")
    cfg.num_steps = num_steps
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    cfg.checkpoint.every = 2
    cfg.eval.every = 0
    cfg.eval.num_samples = 8  # 16 held-out x 8 = the training batch: the sampler compiles once
    return cfg


def sigterm_during(trainer: GRPOTrainer, step: int, process: int) -> None:
    """Process `process` sends itself SIGTERM as it starts step `step`; the others get no signal."""
    real_train_step = trainer.train_step

    def train_step():
        if trainer.step + 1 == step and jax.process_index() == process:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_train_step()

    trainer.train_step = train_step


if __name__ == "__main__":
    workdir, num_steps = sys.argv[1], int(sys.argv[2])
    trainer = GRPOTrainer(worker_config(num_steps), workdir)
    for arg in sys.argv[3:]:
        if arg.startswith("--sigterm="):
            sigterm_during(trainer, *map(int, arg.removeprefix("--sigterm=").split(":")))
    trainer.train()
    print(f"process {jax.process_index()}/{jax.process_count()} devices={jax.device_count()} step={trainer.step}")
