"""The whole RL scaling study in miniature on a CPU, in one command (rl_scaling.miniature.study).

    python tools/miniature.py --out runs/miniature [--config configs/miniature/study.py] \
        [--config.pretrain.steps=200 ...]
    python tools/miniature.py --config configs/miniature/reduced.py --out /tmp/mini   # ~1 min
    python tools/miniature.py --out runs/miniature --publish docs/miniature   # + copy report, tables, figures

Rerunning with the same --out resumes: finished stages and finished GRPO runs are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

STUDY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "miniature" / "study.py"

_CONFIG = config_flags.DEFINE_config_file("config", str(STUDY_CONFIG), "study config file (configs/miniature/*.py)",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "output directory (data, checkpoints, runs, table, fits, report)")
_PUBLISH = flags.DEFINE_string("publish", None, "afterwards, copy the report, tables and figures into this folder "
                               "under flat names (docs/miniature for the documented run)")


def main(argv):
    del argv
    from rl_scaling.miniature.study import publish, run_study

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    start = time.perf_counter()
    result = run_study(_CONFIG.value, _OUT.value)
    print(f"miniature done in {(time.perf_counter() - start) / 60:.1f} min (this invocation); "
          f"report: {result['report']}")
    if _PUBLISH.value:
        print(f"published {len(publish(_OUT.value, _PUBLISH.value))} files to {_PUBLISH.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["out"])
    app.run(main)
