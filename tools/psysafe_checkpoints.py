"""One PsySafe grid over a list of checkpoints: PDR and questionnaire score against training step
(agent_safety.checkpoint_sweep.evaluate_checkpoints).

    python tools/psysafe_checkpoints.py --config=configs/psysafe/grpo_checkpoints.py \\
        --run_dir=runs/grpo_demo --base=smollm2-135m-instruct --out=runs/psysafe_by_step
    python tools/psysafe_checkpoints.py --config=... --checkpoint=runs/a/checkpoints/step_00000050 \\
        --checkpoint=/abs/step_00000105 --out=DIR

--run_dir: every checkpoint under a run directory (a GRPO run's checkpoints/step_XXXXXXXX/), its step from its
metadata; --checkpoint (repeatable): checkpoint directories by path, relative or absolute; --base: a model
without steps (a known name or an HF directory) evaluated as step 0. The config's agents run each checkpoint
in turn (backend.model_path replaced), everything else as configured: give the judge one fixed model. Each
checkpoint's dialogues go to OUT/step_XXXXXXXX/ (rerun the command to resume); OUT/table.md, OUT/table.csv
and OUT/by_step.png gather them. Exit status 1 while any dialogue is failed.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "path to a configs/psysafe/*.py file", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "output directory: one workdir per checkpoint, the table and the plot")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "a training run's directory: evaluate every checkpoint in it")
_CHECKPOINTS = flags.DEFINE_multi_string("checkpoint", [], "a checkpoint directory (repeatable)")
_BASE = flags.DEFINE_string("base", None, "a model without steps (name or path), evaluated as step 0")


def main(argv) -> None:
    del argv
    from common.platform_flags import apply_platform_defaults

    apply_platform_defaults()  # before JAX starts: XLA reads its GPU flags then
    from agent_safety.checkpoint_sweep import PLOT, TABLE_CSV, TABLE_MD, evaluate_checkpoints, resolve_checkpoints
    from common.compile_cache import enable_compilation_cache

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    checkpoints = resolve_checkpoints(_CHECKPOINTS.value, _RUN_DIR.value, _BASE.value)
    enable_compilation_cache()
    _, failed = evaluate_checkpoints(_CONFIG.value, checkpoints, _OUT.value)
    for name in (TABLE_MD, TABLE_CSV, PLOT):
        print(f"{_OUT.value}/{name}")
    if failed:
        print(f"{failed} dialogues failed (see each step's report.md); rerun the same command to retry them",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "out"])
    app.run(main)
