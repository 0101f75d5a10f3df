"""GRPO training from a config file.

    python tools/train_grpo.py --config=configs/grpo/tiny.py --workdir=runs/tiny
    python tools/train_grpo.py --config=configs/grpo/smollm2_demo.py --config.num_steps=5 --workdir=runs/demo

Rerunning with the same --workdir resumes from its latest checkpoint. SIGTERM / SIGINT checkpoint and stop.
The trainer is rl_scaling.grpo.trainer.GRPOTrainer; the config's keys are rl_scaling.grpo.defaults'.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "GRPO config file (configs/grpo/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: metrics, TensorBoard logs, checkpoints")


def main(argv):
    del argv
    from common.platform_flags import apply_platform_defaults

    apply_platform_defaults()  # before JAX starts: XLA reads its GPU flags then
    from common.compile_cache import enable_compilation_cache
    from rl_scaling.grpo.trainer import GRPOTrainer

    enable_compilation_cache()

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    cfg = _CONFIG.value
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    trainer = GRPOTrainer(cfg, workdir)
    result = trainer.train()
    if result:
        print(" ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
